"""
One fixed-size transfer through each splicetx engine: the headline figure of
the relay core (throughput and CPU seconds per GB of the splice engine against
the copy engine).

Run it as::

    python -m splicetx.bench.transfer                # 1 GiB, splice and copy
    python -m splicetx.bench.transfer --size 256M --proxies splice-1m,copy,direct

Everything runs on 127.0.0.1: a sink (a thread of this process that splices
what it receives into C{/dev/null}), the proxy under test as its own process
(C{twist splice-proxy}, or the bench's stand-in), and a sender that
C{sendfile}s a page-cached file.  CPU time is the proxy process tree's, from
psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Any

from splicetx.bench import _proxies
from splicetx.bench._procstats import TreeMeter
from splicetx.bench._wire import sinkAll

HOST = "127.0.0.1"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parseByteSize(text: str) -> int:
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        n = float(t[: -len(unit)] if unit else t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M)")
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(n * _UNITS[unit])


def _sink(listener: socket.socket, total: int, result: dict[str, Any]) -> None:
    # The readiness probe of the proxy may connect first: sink every
    # connection until one has delivered the whole transfer.
    with open(os.devnull, "wb") as devnull:
        while result.get("bytes", 0) < total:
            conn, _ = listener.accept()
            with conn:
                result["bytes"] = sinkAll(conn, devnull.fileno())
                result["end"] = time.monotonic()


def _send(port: int, fileFD: int, fileSize: int, total: int) -> float:
    s = socket.create_connection((HOST, port))
    start = time.monotonic()
    left = total
    with s:
        while left:
            offset = 0
            while offset < fileSize and left:
                n = os.sendfile(
                    s.fileno(), fileFD, offset, min(fileSize - offset, left)
                )
                offset += n
                left -= n
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    return start


def transfer(
    spec: Any, total: int, fileFD: int, fileSize: int, workDir: str
) -> dict[str, Any]:
    """
    Move C{total} bytes through the proxy C{spec} once.
    """
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(8)
    result: dict[str, Any] = {}
    sink = threading.Thread(target=_sink, args=(listener, total, result), daemon=True)
    sink.start()
    proxy = _proxies.start(spec, listener.getsockname()[1], "auto", workDir)
    try:
        err = _proxies.waitListening(proxy)
        if err:
            raise SystemExit(f"{spec.name}: {err}")
        meter = TreeMeter(proxy.pid)
        meter.start()
        start = _send(proxy.port, fileFD, fileSize, total)
        sink.join(600)
        stats = meter.stop()
    finally:
        proxy.stop()
        listener.close()
    seconds = result["end"] - start
    gb = result["bytes"] / 1e9
    cpu = stats.get("user", 0.0) + stats.get("system", 0.0)
    return {
        "proxy": spec.name,
        "label": spec.label,
        "launcher": proxy.launcher,
        "bytes": result["bytes"],
        "seconds": seconds,
        "gbitPerSecond": result["bytes"] * 8 / seconds / 1e9,
        "cpuSecondsPerGB": cpu / gb if stats else None,
        "userPerGB": stats["user"] / gb if stats else None,
        "systemPerGB": stats["system"] / gb if stats else None,
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run the transfers and print a Markdown table (and JSON with C{--json}).
    """
    p = argparse.ArgumentParser(
        prog="python -m splicetx.bench.transfer", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--size", type=parseByteSize, default=1 << 30, help="bytes to move (default 1G)"
    )
    p.add_argument(
        "--proxies",
        default="splice-1m,copy",
        help="bench proxy names (default splice-1m,copy)",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    specs = {s.name: s for s in _proxies.allSpecs(1 << 20)}
    wanted = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in specs]
    if unknown:
        p.error(f"unknown proxy {unknown[0]!r}; known: {', '.join(specs)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="splicetx-transfer-") as work:
        path = os.path.join(work, "payload")
        fileSize = min(args.size, 64 << 20)
        with open(path, "wb") as f:
            f.write(os.urandom(fileSize))
        fd = os.open(path, os.O_RDONLY)
        try:
            for name in wanted:
                print(
                    f"{name}: moving {args.size} bytes ...", file=sys.stderr, flush=True
                )
                rows.append(transfer(specs[name], args.size, fd, fileSize, work))
        finally:
            os.close(fd)
    print("| proxy | bytes | seconds | Gbit/s | CPU-s/GB (user + sys) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        cpu = (
            "n/a"
            if r["cpuSecondsPerGB"] is None
            else (
                f"{r['cpuSecondsPerGB']:.3f} "
                f"({r['userPerGB']:.3f} + {r['systemPerGB']:.3f})"
            )
        )
        print(
            f"| {r['proxy']} | {r['bytes']} | {r['seconds']:.2f} "
            f"| {r['gbitPerSecond']:.2f} | {cpu} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
