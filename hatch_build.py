"""
The build hook that compiles splicetx's optional C core, the extension
C{splicetx._relay._ccore} from the source files in L{SOURCES}
(docs/design-decisions.md, "A compiled core, optional").

It runs the C compiler Python was built with (C{sysconfig}'s C{CC}, or
C{$CC} when set) on those files together, with nothing but Python's
headers: no Cython, no setuptools.  A wheel then carries the extension
(and is tagged for this platform); an editable install (C{pip install
-e .}) builds it in place, next to its source.  Without a compiler, or
when the compile fails, or with C{SPLICETX_NO_EXTENSIONS=1}, it says so in
one line and the build goes on: the pure-Python core runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_CORE = Path("src") / "splicetx" / "_relay"
#: The core's source files, one idea each: the module and the relay's hot
#: loop, the ClientHello reading for SNI routes and the PROXY header reading
#: (their shared declarations are in C{_ccore.h}).
SOURCES = (_CORE / "_ccore.c", _CORE / "_ccore_hello.c", _CORE / "_ccore_proxy.c")


def compileCore(sources: list[Path], out: Path) -> str | None:
    """
    Compile C{sources} into the extension module C{out}.

    @return: C{None} when built, else why not (one line).
    """
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    flags = os.environ.get("SPLICETX_CFLAGS", "-O2")
    argv = [
        *cc,
        "-shared",
        "-fPIC",
        "-Wall",
        *shlex.split(flags),
        f"-I{include}",
        *map(str, sources),
        "-o",
        str(out),
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no C compiler ({cc[0]}: {e})"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"the compile failed ({last})"
    return None


class CoreBuildHook(BuildHookInterface):
    """
    Compile the C core into the wheel, or in place for an editable install.
    """

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("SPLICETX_NO_EXTENSIONS", "") not in ("", "0"):
            print("splicetx: SPLICETX_NO_EXTENSIONS is set: pure-Python core only")
            return
        root = Path(self.root)
        sources = [root / s for s in SOURCES]
        name = "_ccore" + sysconfig.get_config_var("EXT_SUFFIX")
        if version == "editable":
            # Built beside the source, then renamed into place: a process
            # that imports the core while another install rebuilds it (CI
            # makes venvs while the suite runs) sees the old file or the
            # new one, never half of one.
            out = sources[0].with_name(name)
            partial = out.with_name(f".{name}.{os.getpid()}.tmp")
            why = compileCore(sources, partial)
            if why is None:
                os.replace(partial, out)
            else:
                partial.unlink(missing_ok=True)
        else:
            out = Path(tempfile.mkdtemp(prefix="splicetx-ccore-")) / name
            why = compileCore(sources, out)
        if why is not None:
            print(
                f"splicetx: compiled core not built, {why}: the pure-Python "
                "core will run",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(out)] = f"splicetx/_relay/{name}"
