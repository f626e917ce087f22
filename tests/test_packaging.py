# -*- test-case-name: tests.test_packaging -*-
"""
The distribution as C{pip} gets it: the wheel and sdist this checkout builds,
their file lists and metadata (built offline with the build backend itself).
"""

from __future__ import annotations

import atexit
import email.parser
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import splicetx

ROOT = Path(__file__).resolve().parent.parent

_built: dict[str, Path] = {}

_BUILD = """
import sys
import hatchling.build as backend
out = sys.argv[1]
print(backend.build_wheel(out))
print(backend.build_sdist(out))
"""


def _build() -> tuple[Path, Path]:
    """
    Build the wheel and the sdist of this checkout once per process, into a
    temporary directory removed at exit.

    @return: the wheel's and the sdist's paths.
    @raise SkipTest: when the build backend (hatchling) is not installed.
    """
    if not _built:
        if importlib.util.find_spec("hatchling") is None:
            raise SkipTest("hatchling (the build backend) is not installed")
        out = Path(tempfile.mkdtemp(prefix="splicetx-dist-"))
        atexit.register(shutil.rmtree, out, True)
        # The plugin cache that `twist` writes next to the plugin must never
        # be shipped: make sure there is one to leave out.
        cache = ROOT / "src" / "twisted" / "plugins" / "dropin.cache"
        made = not cache.exists()
        if made:
            # An empty cache: were it left behind, Twisted would rebuild it.
            cache.write_bytes(pickle.dumps({}))
        try:
            result = subprocess.run(
                [sys.executable, "-c", _BUILD, str(out)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            if made:
                cache.unlink(missing_ok=True)
        if result.returncode != 0:
            raise AssertionError(f"build failed: {result.stderr}")
        wheel, sdist = result.stdout.split()[-2:]
        _built["wheel"] = out / wheel
        _built["sdist"] = out / sdist
    return _built["wheel"], _built["sdist"]


def _tracked(under: str) -> list[str]:
    """
    The files git tracks below C{under}, relative to it (empty when this is
    not a git checkout, e.g. an unpacked sdist).
    """
    try:
        result = subprocess.run(
            ["git", "ls-files", "--", under],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return []
    if result.returncode != 0:
        return []
    return [os.path.relpath(p, under) for p in result.stdout.split()]


class WheelTests(SynchronousTestCase):
    """
    The wheel holds the package, its type marker and the twist plugin, and
    nothing that would break other Twisted plugins.
    """

    def names(self) -> set[str]:
        wheel, _ = _build()
        with zipfile.ZipFile(wheel) as z:
            return set(z.namelist())

    def test_pluginAndTypeMarker(self) -> None:
        """
        The wheel has the C{twist splice-proxy}, C{mptcp:} endpoint and
        C{splicetx} reactor plugin modules and C{splicetx/py.typed}.
        """
        names = self.names()
        self.assertIn("twisted/plugins/splicetx_plugin.py", names)
        self.assertIn("twisted/plugins/splicetx_mptcp.py", names)
        self.assertIn("twisted/plugins/splicetx_reactor.py", names)
        self.assertIn("splicetx/py.typed", names)
        self.assertIn("splicetx/__init__.py", names)

    def test_noTwistedPackageFiles(self) -> None:
        """
        No C{twisted/__init__.py} or C{twisted/plugins/__init__.py} (they
        would shadow Twisted's own), no C{dropin.cache}, no bytecode, no tests.
        """
        names = self.names()
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual([n for n in names if n.endswith("dropin.cache")], [])
        self.assertEqual([n for n in names if n.endswith(".pyc")], [])
        self.assertEqual([n for n in names if n.startswith("tests/")], [])
        twisted = {n for n in names if n.startswith("twisted/")}
        self.assertEqual(
            twisted,
            {
                "twisted/plugins/splicetx_plugin.py",
                "twisted/plugins/splicetx_mptcp.py",
                "twisted/plugins/splicetx_reactor.py",
            },
        )

    def test_everyModuleShipped(self) -> None:
        """
        Every file git tracks under C{src/splicetx} is in the wheel.
        """
        tracked = _tracked("src/splicetx")
        if not tracked:
            raise SkipTest("not a git checkout: no list of tracked files")
        names = self.names()
        missing = [p for p in tracked if f"splicetx/{p}" not in names]
        self.assertEqual(missing, [])

    def test_metadataVersion(self) -> None:
        """
        The wheel's metadata version is C{splicetx.__version__}, the one
        place the version is written, and the wheel's name carries it.
        """
        wheel, _ = _build()
        dist = f"splicetx-{splicetx.__version__}.dist-info"
        with zipfile.ZipFile(wheel) as z:
            metadata = email.parser.Parser().parsestr(
                z.read(f"{dist}/METADATA").decode("utf-8")
            )
            entryPoints = z.read(f"{dist}/entry_points.txt").decode("utf-8")
        self.assertEqual(metadata["Name"], "splicetx")
        self.assertEqual(metadata["Version"], splicetx.__version__)
        self.assertTrue(wheel.name.startswith(f"splicetx-{splicetx.__version__}-"))
        self.assertEqual(metadata["Description-Content-Type"], "text/markdown")
        self.assertIn("splicetx.testing._pytestplugin", entryPoints)


def _compiler() -> str | None:
    """
    The C compiler the build hook would run, or C{None} when there is none.
    """
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0])


class CompiledCoreTests(SynchronousTestCase):
    """
    The wheel carries the compiled relay core when a compiler is at hand,
    and a machine without one still builds (a pure wheel, one line said).
    """

    def test_wheelCarriesCore(self) -> None:
        """
        The wheel has C{splicetx/_relay/_ccore} built for this Python and is
        tagged for this platform (not C{py3-none-any}).
        """
        if _compiler() is None:
            raise SkipTest("no C compiler: the wheel is pure (by design)")
        wheel, _ = _build()
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        self.assertIn(f"splicetx/_relay/_ccore{suffix}", names)
        self.assertNotIn("none-any", wheel.name)

    def test_noCompilerFallsBack(self) -> None:
        """
        With no compiler, the wheel still builds, pure, and the build says so
        in one line.
        """
        out = Path(tempfile.mkdtemp(prefix="splicetx-pure-"))
        self.addCleanup(shutil.rmtree, out, True)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _BUILD.replace("print(backend.build_sdist(out))", ""),
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "CC": "/nonexistent/cc"},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        wheel = out / result.stdout.split()[-1]
        self.assertTrue(wheel.name.endswith("-py3-none-any.whl"), wheel.name)
        with zipfile.ZipFile(wheel) as z:
            self.assertEqual(
                [
                    n
                    for n in z.namelist()
                    if "_ccore." in n and not n.endswith((".c", ".h"))
                ],
                [],
            )
        said = [
            line for line in result.stderr.splitlines() if line.startswith("splicetx:")
        ]
        self.assertEqual(len(said), 1, result.stderr)
        self.assertIn("compiled core not built", said[0])


class SdistTests(SynchronousTestCase):
    """
    The sdist carries what its tests need.
    """

    def test_contents(self) -> None:
        """
        The sdist has the sources, the tests, the deploy recipes, the release
        notes and the news fragments, the documentation site's sources and
        C{py.typed}, under a directory named with the version.
        """
        _, sdist = _build()
        top = f"splicetx-{splicetx.__version__}"
        with tarfile.open(sdist) as t:
            names = set(t.getnames())
        for path in [
            "pyproject.toml",
            "README.md",
            "src/splicetx/py.typed",
            "src/twisted/plugins/splicetx_plugin.py",
            "tests/test_packaging.py",
            "deploy/systemd/splicetx.service",
            "deploy/kubernetes/deployment.yaml",
            "changelog.d/README.md",
            "NEWS.md",
            "docs/conf.py",
            "docs/index.md",
            "docs/_ext/splicetx_pydoctor.py",
            # The compiled core's source and the hook that builds it (with
            # the C compiler only: no Cython).
            "hatch_build.py",
            "src/splicetx/_relay/_ccore.c",
            "src/splicetx/_relay/_ccore.h",
            "src/splicetx/_relay/_ccore_hello.c",
            "src/splicetx/_relay/_ccore_proxy.c",
        ]:
            self.assertIn(f"{top}/{path}", names)
        self.assertNotIn(f"{top}/src/twisted/plugins/dropin.cache", names)
