"""
The command line of C{python -m splicetx.bench}: its options, the proxies of
a C{--quick} run and the load families.
"""

from __future__ import annotations

import argparse

from splicetx.bench import _underbulk

__all__ = ["QUICK_PROXIES", "LOAD_FAMILIES", "CHURN_WORKERS", "KEEPALIVE_CONNS"]

QUICK_PROXIES = (
    "direct",
    "splice-64k",
    "splice-1m",
    "copy",
    "portforward",
    "plainloop",
)
LOAD_FAMILIES = ("bulk", "latency", "churn", "idle", "keepalive", _underbulk.FAMILY)
CHURN_WORKERS = 4
#: Connections of the keep-alive load.
KEEPALIVE_CONNS = 50


def argumentParser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m splicetx.bench",
        description=(
            "Measure splicetx against no proxy, twist portforward, a plain "
            "Python splice loop, socat and haproxy, on 127.0.0.1.  Writes "
            "results.md, results.json and results.png into --out."
        ),
    )
    p.add_argument("--out", default="bench-results", help="output directory")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in under a minute: fewer proxies, short loads, 1 rep",
    )
    p.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    p.add_argument(
        "--seconds", type=float, help="seconds per bulk run (default 2; quick 0.3)"
    )
    p.add_argument(
        "--proxies",
        help="comma-separated proxies (default: all available; quick: "
        + ",".join(QUICK_PROXIES)
        + ")",
    )
    p.add_argument(
        "--loads",
        default=",".join(LOAD_FAMILIES),
        help="comma-separated load families: " + ",".join(LOAD_FAMILIES),
    )
    p.add_argument("--streams", default="1,8", help="bulk stream counts (default 1,8)")
    p.add_argument(
        "--directions", default="up,down", help="bulk directions (default up,down)"
    )
    p.add_argument("--pings", type=int, help="ping-pong round trips (default 20000)")
    p.add_argument(
        "--underbulk-streams",
        type=int,
        default=_underbulk.DEFAULT_STREAMS,
        help="bulk upload streams beside the 1 KiB ping-pong of the underbulk "
        f"load (default {_underbulk.DEFAULT_STREAMS})",
    )
    p.add_argument("--churn-seconds", type=float, help="seconds per churn run (3)")
    p.add_argument(
        "--keepalive-seconds", type=float, help="seconds per keep-alive run (3)"
    )
    p.add_argument("--idle-conns", type=int, help="idle connections (default 2000)")
    p.add_argument(
        "--strace",
        action="store_true",
        help="add syscalls per GB from a separate run under strace -c -f",
    )
    p.add_argument(
        "--perf",
        action="store_true",
        help="add where each proxy's CPU goes (kernel, Python interpreter, other "
        "code; top symbols) from separate untimed runs under perf record",
    )
    p.add_argument(
        "--iperf3",
        action="store_true",
        help="generate the bulk loads with iperf3 instead of the built-in generator",
    )
    p.add_argument(
        "--splicetx-launcher",
        choices=("auto", "cli", "standin"),
        default="auto",
        help="start splicetx with 'twist splice-proxy' (cli) or the bench's "
        "stand-in script; auto: the CLI when installed",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin client, backend and proxy to one CPU for the latency test",
    )
    p.add_argument(
        "--fresh-process",
        action="store_true",
        help="start every proxy afresh for each repetition after the first: "
        "the spread between processes (address layout, hash seed) then shows "
        "in the min-max instead of one process's draw counting for all reps",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    p.add_argument(
        "--tls",
        action="store_true",
        help="run the TLS termination loads instead (splicetx --listen ssl:, "
        "HAProxy ssl, twist portforward on ssl:); see splicetx.bench.tls",
    )
    return p
