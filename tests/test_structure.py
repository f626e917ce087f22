"""
The shape of the package, checked: the layers of C{src/splicetx/} import one
way (bottom up, as C{CONTRIBUTING.md} and each layer's C{__init__} say), no
module takes part in an import cycle (function-level imports count), no
private name is imported from another module, docs and examples import only
public modules, and every public module exports exactly the names
C{docs/api.md} documents.

Tests are white-box and may reach private names; the rules here are about
the package and what users read.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "splicetx"

#: The layers, bottom up: each may import only itself and those before it.
LAYERS = ("_relay", "_pool", "_proxy", "_udp", "_ops", "_config", "_app")

#: The public modules: thin shells over the layers (the shipped test helpers
#: and the benchmark, public packages too, are checked on their own).
PUBLIC = (
    "splicetx",
    "splicetx.proxy",
    "splicetx.pools",
    "splicetx.tls",
    "splicetx.endpoints",
    "splicetx.service",
)


def modules() -> dict[str, Path]:
    """
    Every module of the package, by dotted name.
    """
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """
    The C{(module, importedName)} pairs a module imports from the package,
    wherever the import statement stands; C{importedName} is C{""} for a
    plain C{import} and the submodule's name when a package's submodule is
    imported.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("splicetx")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("splicetx"):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    out.append((submodule, ""))
                else:
                    out.append((base, alias.name))
    return out


def layerOf(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


class LayerTests(SynchronousTestCase):
    """
    The layers import one way, without cycles or private names.
    """

    def setUp(self) -> None:
        self.modules = modules()
        self.graph = {
            name: imports(name, path, self.modules)
            for name, path in self.modules.items()
        }

    def test_layersExist(self) -> None:
        """
        Each layer is a subpackage whose C{__init__} says what is in it.
        """
        for layer in LAYERS:
            init = PACKAGE / layer / "__init__.py"
            self.assertTrue(init.exists(), layer)
            self.assertTrue(ast.get_docstring(ast.parse(init.read_text())), layer)

    def test_layerMapsItsModules(self) -> None:
        """
        Each layer's C{__init__} docstring names every module in it.
        """
        unnamed = []
        for layer in LAYERS:
            doc = ast.get_docstring(
                ast.parse((PACKAGE / layer / "__init__.py").read_text())
            )
            for path in sorted((PACKAGE / layer).glob("*.py")):
                if path.stem != "__init__" and f"C{{{path.stem}}}" not in (doc or ""):
                    unnamed.append(f"{layer}/{path.name}")
        self.assertEqual(unnamed, [])

    def test_oneWay(self) -> None:
        """
        A module of a layer imports only its own layer and the layers below
        it, and never a public shell.
        """
        wrong = []
        for name, edges in self.graph.items():
            mine = layerOf(name)
            if mine is None:
                continue
            for target, _ in edges:
                theirs = layerOf(target)
                if target in PUBLIC or target.startswith(
                    ("splicetx.testing", "splicetx.bench")
                ):
                    wrong.append(f"{name} imports the public {target}")
                elif theirs is not None and theirs > mine:
                    wrong.append(f"{name} imports {target}, a layer above it")
        self.assertEqual(wrong, [])

    def test_noCycle(self) -> None:
        """
        No module takes part in an import cycle, counting imports inside
        functions and C{TYPE_CHECKING} blocks.
        """
        edges = {
            name: {
                t
                for t, _ in targets
                if t in self.modules and t != name and not name.startswith(t + ".")
            }
            for name, targets in self.graph.items()
        }
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        cycles = []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in edges[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

        for v in edges:
            if v not in index:
                visit(v)
        self.assertEqual(cycles, [])

    def test_noPrivateNames(self) -> None:
        """
        No module imports a C{_name} (other than a submodule) from another.
        """
        wrong = [
            f"{name} imports {imported} from {target}"
            for name, edges in self.graph.items()
            for target, imported in edges
            if imported.startswith("_") and not imported.startswith("__")
        ]
        self.assertEqual(wrong, [])

    def test_sizes(self) -> None:
        """
        No module is past 800 lines.
        """
        long = [
            f"{name}: {n}"
            for name, path in self.modules.items()
            if (n := path.read_text().count("\n")) > 800
        ]
        self.assertEqual(long, [])


_PRIVATE_IMPORT = re.compile(r"^\s*(?:from|import)\s+splicetx(?:\.\w+)*\._", re.M)


class UserFacingTests(SynchronousTestCase):
    """
    What users read and copy imports only public modules.
    """

    def test_docsAndExamples(self) -> None:
        """
        No doc, example or deploy recipe imports C{splicetx._anything}.
        """
        files = [
            ROOT / "README.md",
            *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "examples").rglob("*.py")),
            *sorted((ROOT / "deploy").rglob("*")),
        ]
        wrong = [
            str(f.relative_to(ROOT))
            for f in files
            if f.is_file() and _PRIVATE_IMPORT.search(f.read_text(errors="replace"))
        ]
        self.assertEqual(wrong, [])

    def test_docsPrivateImportNoticed(self) -> None:
        """
        The check above would see a private import written in a doc.
        """
        self.assertTrue(_PRIVATE_IMPORT.search("from splicetx._proxy.tls import x"))
        self.assertTrue(_PRIVATE_IMPORT.search("    import splicetx._ops.metrics"))
        self.assertFalse(_PRIVATE_IMPORT.search("from splicetx.tls import x"))


def documentedNames() -> dict[str, set[str]]:
    """
    The public names C{docs/api.md} lists, by module: under a
    C{## `module`} heading, each table row's first cell in backquotes.
    """
    names: dict[str, set[str]] = {}
    module = None
    for line in (ROOT / "docs" / "api.md").read_text().splitlines():
        heading = re.match(r"^## `([\w.]+)`", line)
        if heading:
            module = heading.group(1)
            names[module] = set()
            continue
        row = re.match(r"^\| `(\w+)`", line)
        if row and module is not None:
            names[module].add(row.group(1))
    return names


class ExportTests(SynchronousTestCase):
    """
    The public names are exactly the documented ones.
    """

    def test_documented(self) -> None:
        """
        Each public module's C{__all__} is the list C{docs/api.md} gives,
        and every name in it exists.
        """
        documented = documentedNames()
        self.assertEqual(sorted(documented), sorted([*PUBLIC, "splicetx.testing"]))
        for module, names in documented.items():
            mod = importlib.import_module(module)
            self.assertEqual(set(mod.__all__), names, module)
            for name in names:
                self.assertTrue(hasattr(mod, name), f"{module}.{name}")
