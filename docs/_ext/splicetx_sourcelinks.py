"""
Links from the guides to files outside docs/ (deploy/, examples/, src/).

The guides link the repository's files by relative path
(C{[deploy/](../deploy/README.md)}) so that they work on GitHub.  Sphinx
builds only docs/, so such a link would be a missing document; this extension
turns each one that names an existing file or directory of the checkout into
a link to it under C{splicetx_source_url} (the repository's file browser at
the commit built), and leaves every other link to myst, which warns about it.
"""

from pathlib import Path

from docutils import nodes
from sphinx import addnodes


def _outsideTarget(app, docname, node):
    """
    The path of the checkout's file or directory that C{node} links to, if
    it is outside the documentation sources, else C{None}.
    """
    srcdir = Path(app.srcdir).resolve()
    root = srcdir.parent
    target = node["reftarget"]
    if node.get("refdomain") == "doc":
        # myst gives a missing document as a path without its suffix.
        candidates = [
            (srcdir / f"{target}{suffix}").resolve()
            for suffix in app.config.source_suffix
        ]
    else:
        path = target.split("#", 1)[0]
        candidates = [((srcdir / docname).parent / path).resolve()]
    for candidate in candidates:
        if (
            candidate.exists()
            and candidate.is_relative_to(root)
            and not candidate.is_relative_to(srcdir)
        ):
            return candidate.relative_to(root)
    return None


def _linkOutside(app, doctree):
    docname = app.env.docname
    base = app.config.splicetx_source_url
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("reftype") != "myst" or node["reftarget"] in app.env.found_docs:
            continue
        path = _outsideTarget(app, docname, node)
        if path is None:
            continue
        reference = nodes.reference("", "", refuri=f"{base}{path.as_posix()}")
        reference["classes"].append("source-link")
        reference += node.children
        node.replace_self(reference)


def setup(app):
    app.add_config_value("splicetx_source_url", "", "env")
    app.connect("doctree-read", _linkOutside)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
