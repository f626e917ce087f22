"""
The bench's tracer helpers: stop C{strace} and C{perf} the way they write
their summaries, wait for C{perf record}'s control-pipe C{ack}, and read
their reports (call counts, sample shares by DSO or symbol).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

__all__ = [
    "parseStrace",
    "perfReport",
    "parsePerfReport",
    "classifyDso",
]


def parseStrace(path: str) -> dict[str, int]:
    """
    Read the call counts out of an C{strace -c} summary.
    """
    calls: dict[str, int] = {}
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        return calls
    for line in lines:
        parts = line.split()
        if len(parts) < 5 or not parts[0][0].isdigit() or parts[-1] == "total":
            continue
        try:
            calls[parts[-1]] = calls.get(parts[-1], 0) + int(parts[3])
        except ValueError:
            continue
    return calls


def interruptTracer(proc: subprocess.Popen, timeout: float) -> None:
    """
    Stop a tracer (strace, perf) the way it writes its summary: SIGINT, then
    SIGKILL if it has not exited after C{timeout} seconds.
    """
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def awaitAck(fd: int, timeout: float) -> bool:
    """
    Wait up to C{timeout} seconds for C{perf record --control} to answer
    C{ack} on C{fd}; C{False} if it exits or stays silent.
    """
    deadline = time.monotonic() + timeout
    got = b""
    while b"ack" not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False
        got += chunk
    return True


def perfReport(path: str, key: str) -> dict[str, float]:
    """
    The sample shares (percent) of a C{perf record} file, by C{key}
    (C{dso} or C{sym}), from C{perf report --stdio}.
    """
    try:
        out = subprocess.run(
            ["perf", "report", "-i", path, "--stdio", "--no-children"]
            + ["--sort", key, "-g", "none"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parsePerfReport(out, key)


def parsePerfReport(out: str, key: str) -> dict[str, float]:
    """
    Parse C{perf report --stdio --sort KEY -g none} output into
    C{{name: percent}}; kernel symbols get a C{" (kernel)"} suffix.
    """
    shares: dict[str, float] = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line.split()[0]:
            continue
        pct, _, name = line.partition("%")
        try:
            value = float(pct)
        except ValueError:
            continue
        name = name.strip()
        if key == "sym" and name.startswith("["):
            # "[k] tcp_sendmsg" / "[.] _PyEval_EvalFrameDefault"
            kind, _, name = name.partition(" ")
            name = name.strip() + (" (kernel)" if kind == "[k]" else "")
        shares[name] = shares.get(name, 0.0) + value
    return shares


def classifyDso(dso: str) -> str:
    """
    C{kernel}, C{python} (the interpreter) or C{other} (C extensions, libc,
    a C proxy's own code) for a C{perf report} DSO name.
    """
    if dso.startswith("[kernel") or dso.startswith("[vdso") or dso == "[unknown]":
        return "kernel" if dso.startswith("[kernel") else "other"
    base = os.path.basename(dso)
    if base.startswith("libpython") or base.startswith("python"):
        return "python"
    return "other"
