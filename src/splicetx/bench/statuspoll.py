"""
What serving the status page costs the relaying: connection churn through
one C{twist splice-proxy --metrics} process, with and without a client
polling C{/status.json} every half second, interleaved.

Run it as::

    python -m splicetx.bench.statuspoll                    # 4 reps x 3 s
    python -m splicetx.bench.statuspoll --reps 6 --seconds 5 --idle 500

The proxy relays to the bench's echo backend on 127.0.0.1; C{--idle}
connections are held open through it the whole time, so every snapshot has
that many live connections to describe.  Each run opens a connection,
echoes 100 bytes and closes, on C{--threads} threads, for C{--seconds}; the
arms alternate (off, on, off, on, ...) so that a neighbour's load on a
shared machine falls on both.  Reported: connections per second and the
proxy's CPU time per thousand connections, per run and as medians, and how
long the snapshots took to fetch; and first, with no churn, the proxy's CPU
time per snapshot over C{--snapshots} back-to-back polls (the figure least
disturbed by a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from splicetx.bench._wire import ECHO, header, recvExactly

HOST = "127.0.0.1"


def _freePort() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def _waitForPort(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def churn(port: int, seconds: float, threads: int) -> int:
    """
    Echo 100 bytes per connection on C{threads} threads for C{seconds}.

    @return: the number of connections completed.
    """
    first = header(ECHO) + b"x" * 100
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, port), timeout=10) as s:
                    s.sendall(first)
                    recvExactly(s, 100)
                done[i] += 1
            except OSError:
                pass

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(done)


def pollUntilStdinCloses(url: str, interval: float) -> int:
    """
    The poller process: GET C{url} once and print C{ready}, then every
    C{interval} seconds until standard input closes, then print one JSON
    line: C{took}, C{sizes}, C{live} (the first fetch not counted).
    """
    stop = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    out: dict[str, list[Any]] = {"took": [], "sizes": [], "live": []}
    urllib.request.urlopen(url, timeout=10).read()
    print("ready", flush=True)
    stop.wait(interval)
    while not stop.is_set():
        start = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as f:
            body = f.read()
        out["took"].append(time.monotonic() - start)
        out["sizes"].append(len(body))
        out["live"].append(json.loads(body)["connectionsLive"])
        stop.wait(interval)
    print(json.dumps(out), flush=True)
    return 0


class Poller:
    """
    A separate process (so that it does not take the load generator's GIL)
    that GETs C{/status.json} every C{interval} seconds while in the
    C{with} block.

    @ivar result: C{took} (seconds per fetch), C{sizes} and C{live} lists,
        after the block.
    """

    def __init__(self, port: int, interval: float = 0.5) -> None:
        self.args = [
            sys.executable,
            "-m",
            "splicetx.bench.statuspoll",
            "--poll",
            f"http://{HOST}:{port}/status.json",
            "--interval",
            str(interval),
        ]
        self.result: dict[str, list[Any]] = {}

    def __enter__(self) -> Poller:
        self._proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # its first fetch is done: it polls
        return self

    def __exit__(self, *exc: Any) -> None:
        out, _ = self._proc.communicate(timeout=30)
        self.result = json.loads(out)


def main(argv: list[str] | None = None) -> int:
    """
    Run the comparison and print a table (and JSON with C{--json}).
    """
    p = argparse.ArgumentParser(prog="python -m splicetx.bench.statuspoll")
    p.add_argument("--reps", type=int, default=4, help="runs per arm (4)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per run (3)")
    p.add_argument("--threads", type=int, default=4, help="churn threads (4)")
    p.add_argument("--idle", type=int, default=200, help="held connections (200)")
    p.add_argument("--interval", type=float, default=0.5, help="poll period (0.5)")
    p.add_argument(
        "--snapshots", type=int, default=200, help="back-to-back polls (200)"
    )
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--poll", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.poll:
        return pollUntilStdinCloses(a.poll, a.interval)

    tmp = tempfile.NamedTemporaryFile(prefix="splicetx-statuspoll-")
    tmp.write(b"\0" * 4096)
    tmp.flush()
    backend = subprocess.Popen(
        [sys.executable, "-m", "splicetx.bench._backend", "--file", tmp.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert backend.stdout is not None
    bport = int(backend.stdout.readline())
    pport, mport = _freePort(), _freePort()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twisted",
            "--log-level=warn",
            "splice-proxy",
            "--listen",
            f"tcp:{pport}:interface={HOST}",
            "--connect",
            f"tcp:{HOST}:{bport}",
            "--metrics",
            f"tcp:{mport}:interface={HOST}",
        ],
        stdout=subprocess.DEVNULL,
    )
    held: list[socket.socket] = []
    runs: list[dict[str, Any]] = []
    polls: dict[str, list[Any]] = {"took": [], "sizes": [], "live": []}
    perSnapshot = 0.0
    try:
        _waitForPort(pport)
        _waitForPort(mport)
        for _ in range(a.idle):
            s = socket.create_connection((HOST, pport), timeout=10)
            s.sendall(header(ECHO) + b"i")
            recvExactly(s, 1)
            held.append(s)
        churn(pport, 0.5, a.threads)  # warm up
        # The proxy's CPU per snapshot, with no churn: back-to-back polls.
        url = f"http://{HOST}:{mport}/status.json"
        urllib.request.urlopen(url, timeout=10).read()
        cpu = _cpuSeconds(proxy.pid)
        for _ in range(a.snapshots):
            with urllib.request.urlopen(url, timeout=10) as f:
                f.read()
        perSnapshot = (_cpuSeconds(proxy.pid) - cpu) / a.snapshots
        print(
            f"{a.snapshots} back-to-back snapshots of {a.idle} live connections: "
            f"proxy CPU {1000 * perSnapshot:.2f} ms each "
            f"({100 * perSnapshot / a.interval:.2f} % of a core at one per "
            f"{a.interval:g} s)",
            flush=True,
        )
        for rep in range(a.reps):
            for polling in (False, True) if rep % 2 == 0 else (True, False):

                def measured() -> tuple[int, float, float]:
                    # Around the churn only (not the poller's start-up).
                    cpu = _cpuSeconds(proxy.pid)
                    start = time.monotonic()
                    conns = churn(pport, a.seconds, a.threads)
                    took = time.monotonic() - start
                    return conns, took, _cpuSeconds(proxy.pid) - cpu

                if polling:
                    with Poller(mport, a.interval) as poller:
                        conns, took, cpu = measured()
                    for key in polls:
                        polls[key] += poller.result[key]
                else:
                    conns, took, cpu = measured()
                runs.append(
                    {
                        "polling": polling,
                        "conns": conns,
                        "connsPerSec": conns / took,
                        "cpuMsPerKConn": 1e6 * cpu / max(1, conns),
                    }
                )
                print(
                    f"rep {rep} {'polling' if polling else 'quiet  '}: "
                    f"{conns / took:8.0f} conn/s, proxy CPU "
                    f"{1e6 * cpu / max(1, conns):6.1f} ms per 1000 conns",
                    flush=True,
                )
    finally:
        for s in held:
            s.close()
        proxy.terminate()
        try:
            proxy.wait(40)
        except subprocess.TimeoutExpired:
            proxy.kill()
        backend.kill()
        tmp.close()

    def median(polling: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["polling"] == polling)

    quiet, busy = median(False, "connsPerSec"), median(True, "connsPerSec")
    cq, cb = median(False, "cpuMsPerKConn"), median(True, "cpuMsPerKConn")
    print()
    print("| arm | median conn/s | median proxy CPU ms / 1000 conns |")
    print("|---|---:|---:|")
    print(f"| no poller | {quiet:.0f} | {cq:.1f} |")
    print(f"| /status.json every {a.interval:g} s | {busy:.0f} | {cb:.1f} |")
    print(
        f"| change | {100 * (busy / quiet - 1):+.1f} % | {100 * (cb / cq - 1):+.1f} % |"
    )
    if polls["took"]:
        print(
            f"\n{len(polls['took'])} snapshots of "
            f"{statistics.median(polls['live']):.0f}"
            f" live connections: median {1000 * statistics.median(polls['took']):.1f}"
            f" ms to fetch, {statistics.median(polls['sizes']) / 1024:.0f} KiB"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "args": vars(a),
                    "cpuPerSnapshot": perSnapshot,
                    "runs": runs,
                    "polls": polls,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
