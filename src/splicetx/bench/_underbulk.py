"""
The "latency under bulk" load: how long a small request waits behind bulk
transfers relayed by the same proxy process (docs/design-decisions.md rule
10).

One measurement, for one proxy, is three phases of about C{seconds} each:

  1. a 1 KiB ping-pong connection alone: its p50/p99/p99.9 round trip;
  2. C{streams} bulk upload streams alone: their Gbit/s;
  3. the same bulk streams with the ping-pong connection running through the
     same proxy: the ping's p50/p99/p99.9 and the bulk's Gbit/s.

The ping-pong runs in a process of its own (L{Pinger}), so that the bench's
bulk threads do not hold the GIL it needs between a reply and the next
request.  Once connected it keeps the round trips that start between two
instants of the shared monotonic clock: under bulk, from a tenth of a second
after the streams start until as long before they stop, so that every
sample it keeps is one under bulk.  The bulk
streams use the built-in generator even under C{--iperf3}: the ping must go
through the same proxy process, and only the bench's own backend echoes.
Nothing is pinned: the bulk needs both CPUs.

The ping asks at a fixed pace, one request every L{PING_INTERVAL} (1 ms),
in both phases and for every proxy alike.  Interactive traffic (a shell, an
RPC client, Redis commands) sends when it has something to say; a client
that asks again the instant it has its answer instead makes a proxy that
answers faster do more round trips, spend more CPU on them and take it from
the bulk streams, so the bulk share would reward a slow answer.  (Measured
back to back on this 2-core machine, even C{direct}, with no proxy at all,
kept only 0.87 of its bulk rate beside the ping.)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from splicetx.bench._wire import ECHO, header

#: The load's id in the run plan, results and C{--loads}.
FAMILY = "underbulk"

#: Bulk streams beside the ping-pong connection (C{--underbulk-streams}).
DEFAULT_STREAMS = 4

#: The proxies it runs for (besides the splice engine at its default pipe
#: size): no proxy as the floor, the plain loop, portforward and HAProxy.
KINDS = ("direct", "plainloop", "portforward", "haproxy")

#: Seconds the ping keeps samples after the bulk streams start, and stops
#: keeping them before they end.
MARGIN = 0.1


def applies(spec: Any, spliceDefault: str) -> bool:
    """
    Whether the load runs for proxy C{spec}: the splice engine at the default
    pipe size (one process), and the kinds in L{KINDS} (not their preamble
    configurations: its clients send none).
    """
    if spec.kind == "splicetx":
        return spec.name == spliceDefault and not spec.workers
    return spec.kind in KINDS and not getattr(spec, "preamble", None)


def percentiles(samplesNs: list[int]) -> dict[str, float]:
    """
    p50, p99 and p99.9 (microseconds) and the count of round-trip samples
    given in nanoseconds.
    """
    s = sorted(samplesNs)
    if not s:
        return {"count": 0}

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] / 1000.0

    return {
        "p50us": pct(0.50),
        "p99us": pct(0.99),
        "p999us": pct(0.999),
        "count": len(s),
    }


#: Seconds from the start of one round trip to the start of the next: the
#: small flow asks at a fixed pace (1,000 requests/s), as interactive
#: traffic does, rather than back to back.
PING_INTERVAL = 0.001


def pingFor(
    port: int,
    window: Any,
    size: int = 1024,
    out: Any = None,
    interval: float = PING_INTERVAL,
) -> dict[str, Any]:
    """
    Ping-pong C{size}-byte messages through C{port}, one at a time, one
    every C{interval} seconds (back to back when a round trip takes
    longer; C{0}: always back to back).  After
    the first round trip (connection set-up) it says C{ready} on C{out} and
    calls C{window()} for the instants C{(start, until)} (C{time.monotonic()}
    seconds, a clock all processes share); it keeps the round trips that
    start between them, and warms up with the ones before.

    @return: L{percentiles} of the kept round trips, plus C{error} (or
        C{None}).
    """
    msg = os.urandom(size)
    buf = bytearray(size)
    view = memoryview(buf)
    samples: list[int] = []
    clock = time.monotonic_ns
    step = int(interval * 1e9)
    sleep = time.sleep
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(header(ECHO))
        recvInto = s.recv_into
        send = s.sendall
        begin = end = None
        while True:
            t0 = clock()
            if end is not None and t0 >= end:
                break
            send(msg)
            got = 0
            while got < size:
                n = recvInto(view[got:])
                if not n:
                    raise ConnectionError("end of stream during ping-pong")
                got += n
            t1 = clock()
            if begin is None:
                if out is not None:
                    out.write("ready\n")
                    out.flush()
                start, until = window()
                begin, end = int(start * 1e9), int(until * 1e9)
            elif t0 >= begin:
                samples.append(t1 - t0)
            if step:
                wait = t0 + step - clock()
                if wait > 0:
                    sleep(wait / 1e9)
        if buf != msg:
            raise ValueError("echo mismatch")
        s.close()
    except (OSError, ValueError) as e:
        return {**percentiles(samples), "error": f"{type(e).__name__}: {e}"}
    return {**percentiles(samples), "error": None}


class Pinger:
    """
    L{pingFor} in a process of its own (C{python -m
    splicetx.bench._underbulk --port P}): L{ready} waits until it has made
    its first round trip, L{keep} tells it which instants to keep, and
    L{result} reads what it measured.
    """

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splicetx.bench._underbulk", "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ready(self, timeout: float = 60.0) -> bool:
        """
        Wait for the process's first round trip; C{False} if it failed.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return False
        return self.proc.stdout.readline().strip() == "ready"

    def keep(self, start: float, until: float) -> None:
        """
        Keep the round trips starting between C{start} and C{until}.
        """
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{start!r} {until!r}\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def result(self, timeout: float) -> dict[str, Any]:
        """
        Wait for the process and return what it measured.
        """
        proc = self.proc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"count": 0, "error": "ping-pong process timed out"}
        try:
            r = json.loads(out)
        except ValueError:
            why = " ".join((err or "").split())[-200:] or f"exit {proc.returncode}"
            return {"count": 0, "error": f"ping-pong process failed: {why}"}
        if not r.get("count") and not r.get("error"):
            r["error"] = "no round trip in the window"
        return r


def measure(port: int, streams: int, seconds: float, bulk: Any) -> dict[str, Any]:
    """
    The three phases (see the module docstring) through C{port}.

    @param bulk: C{bulk(seconds) -> dict} runs the bulk streams (like
        L{splicetx.bench._loadgen.bulk}: C{bytes}, C{seconds}, C{error}).
    @return: C{alone*} (the ping alone), C{busy*} (the ping under bulk)
        p50/p99/p99.9 in microseconds and counts, C{bulkGbps} (without the
        ping), C{bulkPingGbps} (with it), their ratio C{bulkShare}, the ratio
        of the p99s C{p99Growth}, and C{error}.
    """
    errors: list[str] = []
    pinger = Pinger(port)
    pinger.ready()
    now = time.monotonic()
    pinger.keep(now + MARGIN, now + MARGIN + seconds)
    alone = pinger.result(seconds + 60)
    if alone.get("error"):
        errors.append(f"ping alone: {alone['error']}")
    plain = bulk(seconds)
    if plain.get("error"):
        errors.append(f"bulk alone: {plain['error']}")
    # The ping keeps the round trips from MARGIN after the bulk streams
    # start until MARGIN before they stop.
    pinger = Pinger(port)
    pinger.ready()
    now = time.monotonic()
    pinger.keep(now + MARGIN, now + max(2 * MARGIN, seconds - MARGIN))
    mixed = bulk(seconds)
    busy = pinger.result(seconds + 60)
    if mixed.get("error"):
        errors.append(f"bulk with ping: {mixed['error']}")
    if busy.get("error"):
        errors.append(f"ping under bulk: {busy['error']}")

    def rate(r: dict) -> float:
        return r["bytes"] * 8 / r["seconds"] / 1e9 if r.get("bytes") else 0.0

    out: dict[str, Any] = {"streams": streams}
    for prefix, r in (("alone", alone), ("busy", busy)):
        for key in ("p50us", "p99us", "p999us", "count"):
            if key in r:
                out[prefix + key[0].upper() + key[1:]] = r[key]
    out["bulkGbps"] = rate(plain)
    out["bulkPingGbps"] = rate(mixed)
    if out["bulkGbps"]:
        out["bulkShare"] = out["bulkPingGbps"] / out["bulkGbps"]
    if out.get("aloneP99us") and out.get("busyP99us"):
        out["p99Growth"] = out["busyP99us"] / out["aloneP99us"]
    out["error"] = errors[0] if errors else None
    return out


def targets(summary: dict, splice: str) -> list[tuple[str, Any, float, bool, str]]:
    """
    The fairness targets for the splice engine at its default settings
    (C{splice}): C{(name, value, goal, higherIsBetter, unit)} for each
    figure measured.
    """
    from splicetx.bench._figures import med

    busy99 = med(summary, splice, FAMILY, "busyP99us")
    growth = med(summary, splice, FAMILY, "p99Growth")
    share = med(summary, splice, FAMILY, "bulkShare")
    out: list[tuple[str, Any, float, bool, str]] = []
    if busy99 is not None:
        out.append(
            ("underbulk: ping p99 under bulk (µs)", busy99, 1000.0, False, " µs")
        )
    if growth is not None:
        out.append(("underbulk: ping p99 under bulk vs alone", growth, 2.0, False, "x"))
    if share is not None:
        out.append(
            ("underbulk: bulk rate with the ping vs without", share, 0.95, True, "")
        )
    return out


def markdownLines(summary: dict, proxies: list[str], meta: dict) -> list[str]:
    """
    The report's "latency under bulk" section (no lines when nothing ran).
    """
    from splicetx.bench._figures import cell as _cell
    from splicetx.bench._figures import fmt as _fmt
    from splicetx.bench._figures import med

    rows = [p for p in proxies if FAMILY in summary.get(p, {})]
    if not rows:
        return []
    n = meta.get("underbulkStreams", DEFAULT_STREAMS)
    lines = [
        "## Latency under bulk",
        "",
        f"A 1 KiB ping-pong connection alone, then {n} bulk upload streams "
        "alone, then both at once through the same proxy process (not "
        "pinned). Round trips in µs; the bulk share is Gbit/s with the ping "
        "over Gbit/s without it.",
        "",
        "| proxy | alone p50 | alone p99 | alone p99.9 | under bulk p50 "
        "| under bulk p99 | under bulk p99.9 | p99 × alone | bulk Gbit/s "
        "| bulk Gbit/s with ping | bulk share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in rows:
        cells = [f"**{p}**"]
        for key in ("aloneP50us", "aloneP99us", "aloneP999us"):
            cells.append(_cell(summary, p, FAMILY, key, 0))
        for key in ("busyP50us", "busyP99us", "busyP999us"):
            cells.append(_cell(summary, p, FAMILY, key, 0))
        cells.append(_fmt(med(summary, p, FAMILY, "p99Growth")))
        cells.append(_cell(summary, p, FAMILY, "bulkGbps", 1))
        cells.append(_cell(summary, p, FAMILY, "bulkPingGbps", 1))
        cells.append(_fmt(med(summary, p, FAMILY, "bulkShare")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """
    The ping-pong process: run L{pingFor}, print its result as JSON.
    """
    p = argparse.ArgumentParser(prog="python -m splicetx.bench._underbulk")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)

    def window() -> tuple[float, float]:
        start, until = sys.stdin.readline().split()
        return float(start), float(until)

    print(json.dumps(pingFor(args.port, window, out=sys.stdout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
