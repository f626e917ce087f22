"""
Sphinx configuration of splicetx's documentation site.

The guides are the Markdown files of this directory, read by myst-parser and
written so that they read the same on GitHub.  The API reference is built by
pydoctor through its Sphinx extension, as Twisted's own documentation is, from
the one pydoctor configuration in pyproject.toml ([tool.pydoctor]) that
.ci/apidocs uses too; it replaces the placeholder api/index.md.  Twisted's
names resolve from an inventory made offline from the installed Twisted
(.ci/twisted-inventory), so the build needs no network.

Build it with .ci/docs (warnings are errors, every reference must resolve).
"""

import os
import subprocess
import sys
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_root / "src"))
# The pydoctor system class named in [tool.pydoctor].
sys.path.insert(0, str(_root / "docs" / "_ext"))

from splicetx import __version__  # noqa: E402

project = "splicetx"
author = "splicetx developers"
copyright = "splicetx developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
    "splicetx_sourcelinks",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/README.md"]

# GitHub's heading anchors (docs/operations.md#timeouts-and-drain), so that
# the links between the guides work on GitHub and here alike.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"splicetx {release}"
html_theme_options = {
    "description": "Twisted-native zero-copy TCP relay",
    "fixed_sidebar": True,
    "page_width": "1180px",
}


def _sourceURL():
    """
    Where the guides' links to deploy/, examples/ and src/ lead: the
    repository at the commit built on Read the Docs, else
    C{SPLICETX_SOURCE_URL}, else this checkout's files.
    """
    if os.environ.get("SPLICETX_SOURCE_URL"):
        return os.environ["SPLICETX_SOURCE_URL"]
    clone = os.environ.get("READTHEDOCS_GIT_CLONE_URL", "")
    commit = os.environ.get("READTHEDOCS_GIT_COMMIT_HASH", "")
    if clone.startswith("https://github.com/") and commit:
        return f"{clone.removesuffix('.git')}/tree/{commit}/"
    return _root.as_uri() + "/"


# docs/_ext/splicetx_sourcelinks.py
splicetx_source_url = _sourceURL()

# -- Twisted's API, offline ---------------------------------------------------

_twistedAPI = "https://docs.twisted.org/en/stable/api/"
_twistedInventory = subprocess.run(
    [str(_root / ".ci" / "twisted-inventory")],
    check=True,
    capture_output=True,
    text=True,
).stdout.strip()

# The guides link Twisted's names ({py:class}`twisted.internet.defer.Deferred`);
# splicetx's own come from the pydoctor build below (its 'main-api-docs').
intersphinx_mapping = {"twisted": (_twistedAPI, _twistedInventory)}

# -- The API reference: pydoctor -----------------------------------------------

pydoctor_args = [
    f"--config={_root / 'pyproject.toml'}",
    f"--project-base-dir={_root}",
    f"--intersphinx-file={_twistedInventory}::{_twistedAPI.rstrip('/')}",
    "--html-output={outdir}/api",
    str(_root / "src" / "splicetx"),
]
# Relative to each page, so the site works from a file:// checkout as well as
# on Read the Docs.
pydoctor_url_path = "api/"
