"""
Zero-copy file sending against Twisted's FileSender: one file served to one
client on 127.0.0.1, once per engine, with the server's CPU time (psutil) and,
with C{--strace}, its system calls from a separate untimed run.

Run it as::

    python -m splicetx.bench.sendfile                 # a 1 GiB file
    python -m splicetx.bench.sendfile --size 256M --strace

The server is a separate process running L{splicetx.ZeroCopyFileSender} with
C{engine="auto"} (C{os.sendfile}) or C{engine="filesender"}; the client
splices what it receives into C{/dev/null}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from splicetx.bench._procstats import TreeMeter
from splicetx.bench._wire import sinkAll
from splicetx.bench.transfer import parseByteSize

HOST = "127.0.0.1"
ENGINES = ("auto", "filesender")


def serve(path: str, engine: str) -> int:
    """
    The server process: print the port, serve C{path} to one client, exit.
    """
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from splicetx import ZeroCopyFileSender

    class Serve(Protocol):
        def connectionMade(self) -> None:
            self.file = open(path, "rb")
            sender = ZeroCopyFileSender(
                self.transport, self.file, reactor=reactor, engine=engine
            )
            sender.start().addBoth(self.sent)

        def sent(self, result: Any) -> None:
            self.file.close()
            self.transport.loseConnection()

        def connectionLost(self, reason: Any = None) -> None:
            reactor.stop()

    port = reactor.listenTCP(0, Factory.forProtocol(Serve), interface=HOST)
    print(port.getHost().port, flush=True)
    reactor.run()
    return 0


def _start(path: str, engine: str, prefix: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "splicetx.bench.sendfile",
            "--serve",
            path,
            "--engine",
            engine,
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _fetch(port: int) -> tuple[int, float]:
    s = socket.create_connection((HOST, port))
    start = time.monotonic()
    with s, open(os.devnull, "wb") as devnull:
        n = sinkAll(s, devnull.fileno())
    return n, time.monotonic() - start


def measure(path: str, engine: str) -> dict[str, Any]:
    """
    Serve C{path} once with C{engine}; CPU of the server process.
    """
    proc = _start(path, engine, [])
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        meter = TreeMeter(proc.pid)
        meter.start()
        n, seconds = _fetch(port)
        stats = meter.stop()
    finally:
        proc.kill()
        proc.wait()
    gb = n / 1e9
    return {
        "engine": engine,
        "bytes": n,
        "seconds": seconds,
        "gbPerSecond": gb / seconds,
        "cpuSecondsPerGB": (stats["user"] + stats["system"]) / gb,
        "userPerGB": stats["user"] / gb,
        "systemPerGB": stats["system"] / gb,
    }


def syscalls(path: str, engine: str, work: str) -> dict[str, float]:
    """
    System calls per GB of the server, from a run under C{strace -c -f}.
    """
    out = os.path.join(work, f"strace-{engine}.txt")
    proc = _start(path, engine, ["strace", "-c", "-f", "-o", out])
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        n, _ = _fetch(port)
        proc.wait(60)  # the server exits after one client; strace then reports
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    counts: dict[str, float] = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3]) / (n / 1e9)
    return counts


def main(argv: list[str] | None = None) -> int:
    """
    Run both engines and print a Markdown table.
    """
    p = argparse.ArgumentParser(
        prog="python -m splicetx.bench.sendfile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--size", type=parseByteSize, default=1 << 30, help="file size (1G)")
    p.add_argument("--strace", action="store_true", help="add syscalls per GB")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="auto", choices=ENGINES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.engine)
    if args.strace and shutil.which("strace") is None:
        p.error("--strace needs strace (apt-get install strace)")
    with tempfile.TemporaryDirectory(prefix="splicetx-sendfile-") as work:
        path = os.path.join(work, "file")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size >> 20):
                f.write(block)
            f.write(block[: args.size & ((1 << 20) - 1)])
        rows = [measure(path, e) for e in ENGINES]
        calls = {e: syscalls(path, e, work) for e in ENGINES} if args.strace else {}
    print("| engine | bytes | GB/s | CPU-s/GB (user + sys) | syscalls/GB |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        c = calls.get(r["engine"], {})
        # The calls that move or wait for bytes (start-up imports are noise).
        keys = ("sendfile", "sendto", "read", "epoll_wait", "epoll_ctl")
        top = ", ".join(f"{k} {c[k]:,.0f}" for k in keys if k in c)
        name = "sendfile (auto)" if r["engine"] == "auto" else "FileSender"
        print(
            f"| {name} | {r['bytes']} | {r['gbPerSecond']:.2f} "
            f"| {r['cpuSecondsPerGB']:.3f} ({r['userPerGB']:.3f} + "
            f"{r['systemPerGB']:.3f}) | {top or '—'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
