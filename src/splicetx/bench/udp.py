"""
The UDP bench: datagrams per second and the proxy's CPU time per datagram,
for 64 B and 1,200 B datagrams, request/response and one-way, through
splicetx and its peers in the same run: C{direct} (no proxy), C{splicetx}
(C{twist splice-proxy --listen udp:...}), C{socat} (C{UDP-LISTEN,fork}),
C{nginx} (C{stream} with C{listen ... udp}, from C{nginx-light} and
C{libnginx-mod-stream}) and C{rinetd} (0.70+, C{/udp} forwards).  A peer
that is not installed is left out with the reason.

Run it as::

    python -m splicetx.bench.udp                      # 10 s per case
    python -m splicetx.bench.udp --quick              # a smoke run
    python -m splicetx.bench.udp --proxies direct,splicetx --seconds 20

Everything runs on 127.0.0.1.  The upstream is its own process (an echo for
request/response, a counting sink for one-way); the clients are this
process.  Request/response keeps one datagram in flight on each of
C{--clients} sockets (each a session); one-way sends as fast as this
process can from those sockets and counts what reaches the sink (the rest
was dropped on the way).  CPU time is the proxy process tree's, from
psutil; C{direct} has none.  Only one-way figures measure the proxy's
ceiling when the sender is faster than the proxy; request/response
measures the round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from splicetx.bench._procstats import TreeMeter

HOST = "127.0.0.1"
PROXIES = ("direct", "splicetx", "socat", "nginx", "rinetd")
SIZES = (64, 1200)
MODES = ("rr", "oneway")

#: The upstream process: C{echo} answers every datagram, C{sink} counts
#: them; it prints its port, and its count when its standard input closes.
_UPSTREAM = r"""
import socket, sys, threading
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
count = [0]
def serve():
    recv, send = s.recvfrom, s.sendto
    while True:
        data, addr = recv(65535)
        count[0] += 1
        if mode == "echo":
            send(data, addr)
threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
print(count[0], flush=True)
"""


def freeUDPPort() -> int:
    """
    A UDP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def unavailable(name: str) -> str | None:
    """
    Why a proxy cannot run here, or C{None}.
    """
    tool = {"socat": "socat", "nginx": "nginx", "rinetd": "rinetd"}.get(name)
    if tool and not shutil.which(tool):
        return f"{tool} is not installed"
    if name == "nginx" and not os.path.exists(
        "/usr/lib/nginx/modules/ngx_stream_module.so"
    ):
        return "the nginx stream module is not installed (libnginx-mod-stream)"
    return None


def proxyCommand(name: str, listen: int, upstream: int, work: str) -> list[str]:
    """
    The command line of a proxy relaying UDP C{listen} to C{upstream}.
    """
    if name == "splicetx":
        return [
            sys.executable,
            "-m",
            "twisted",
            "--reactor=epoll",
            "--log-level=warn",
            "--log-file=-",
            "splice-proxy",
            "--listen",
            f"udp:{listen}:interface={HOST}",
            "--connect",
            f"udp:{HOST}:{upstream}",
        ]
    if name == "socat":
        return [
            "socat",
            f"UDP4-LISTEN:{listen},bind={HOST},fork,reuseaddr",
            f"UDP4:{HOST}:{upstream}",
        ]
    if name == "nginx":
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
                f"pid {work}/nginx.pid;\nerror_log {work}/nginx.err warn;\n"
                "daemon off;\nworker_processes 1;\n"
                "events { worker_connections 4096; }\n"
                f"stream {{ server {{ listen {HOST}:{listen} udp; "
                f"proxy_pass {HOST}:{upstream}; proxy_timeout 60s; }} }}\n"
            )
        return ["nginx", "-c", conf, "-e", f"{work}/nginx.err"]
    if name == "rinetd":
        conf = os.path.join(work, "rinetd.conf")
        with open(conf, "w") as f:
            f.write(f"{HOST} {listen}/udp {HOST} {upstream}/udp [timeout=60]\n")
        return ["rinetd", "-f", "-c", conf]
    raise ValueError(f"unknown proxy {name!r}")


def waitRelays(port: int, timeout: float = 30.0) -> bool:
    """
    Whether a datagram sent to C{port} comes back (through the proxy to
    the echo upstream) within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(b"ping", (HOST, port))
            try:
                if s.recv(64) == b"ping":
                    return True
            except OSError:
                time.sleep(0.1)
    return False


def waitBound(port: int, timeout: float = 30.0) -> bool:
    """
    Whether something binds UDP C{port} on 127.0.0.1 within C{timeout}
    seconds (for one-way runs, which have no echo to wait for).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return True
        time.sleep(0.1)
    return False


def requestResponse(port: int, size: int, clients: int, seconds: float) -> int:
    """
    Keep one datagram in flight per client socket for C{seconds}; return
    the replies received.
    """
    payload = b"r" * size
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((HOST, port))
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    done = 0

    def send(s: Any) -> None:
        try:
            s.send(payload)
        except OSError:
            pass  # refused (ICMP) or a full buffer: counted as a loss

    try:
        for s in socks:
            send(s)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            events = sel.select(0.5)
            if not events:
                # A datagram was lost: put one back in flight everywhere.
                for s in socks:
                    send(s)
                continue
            for key, _ in events:
                s = key.fileobj
                try:
                    while True:
                        s.recv(65535)  # type: ignore[union-attr]
                        done += 1
                except BlockingIOError:
                    pass
                except OSError:
                    pass  # an ICMP error from the proxy's port
                send(s)
    finally:
        for s in socks:
            s.close()
        sel.close()
    return done


def oneWay(port: int, size: int, clients: int, seconds: float) -> int:
    """
    Send datagrams as fast as possible for C{seconds}; return how many were
    sent (the sink counts how many arrived).
    """
    payload = b"o" * size
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(clients)]
    for s in socks:
        s.connect((HOST, port))
    sent = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for s in socks:
                for _ in range(16):
                    try:
                        s.send(payload)
                        sent += 1
                    except OSError:
                        pass
    finally:
        for s in socks:
            s.close()
    return sent


def runCase(
    name: str, mode: str, size: int, clients: int, seconds: float, work: str
) -> dict[str, Any]:
    """
    One proxy, one mode, one size: start the upstream and the proxy, load,
    and return the figures.
    """
    upstream = subprocess.Popen(
        [sys.executable, "-c", _UPSTREAM, "echo" if mode == "rr" else "sink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None and upstream.stdin is not None
    upstreamPort = int(upstream.stdout.readline())
    proxy = None
    row: dict[str, Any] = {"proxy": name, "mode": mode, "size": size}
    try:
        port = upstreamPort
        if name != "direct":
            port = freeUDPPort()
            proxy = subprocess.Popen(
                proxyCommand(name, port, upstreamPort, work),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if mode == "rr" and not waitRelays(port):
            row["error"] = "no reply through the proxy"
            return row
        if mode == "oneway" and proxy is not None and not waitBound(port):
            row["error"] = "the proxy did not bind its port"
            return row
        meter = TreeMeter(proxy.pid if proxy is not None else None)
        meter.start()
        start = time.monotonic()
        if mode == "rr":
            count = requestResponse(port, size, clients, seconds)
        else:
            row["sent"] = oneWay(port, size, clients, seconds)
        elapsed = time.monotonic() - start
        stats = meter.stop()
        if mode == "oneway":
            time.sleep(0.2)  # the last datagrams in flight
            upstream.stdin.close()
            count = int(upstream.stdout.readline() or 0)
        row["datagrams"] = count
        row["seconds"] = elapsed
        row["perSecond"] = count / elapsed if elapsed else 0.0
        cpu = stats.get("user", 0.0) + stats.get("system", 0.0) if stats else None
        row["cpuMicrosPerDatagram"] = (
            cpu / count * 1e6 if cpu is not None and count and proxy else None
        )
        return row
    finally:
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(10)
        if not upstream.stdin.closed:
            upstream.stdin.close()
        upstream.wait(10)


def main(argv: list[str] | None = None) -> int:
    """
    Run the cases and print a Markdown table (and JSON with C{--json}).
    """
    p = argparse.ArgumentParser(
        prog="python -m splicetx.bench.udp", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--proxies", default=",".join(PROXIES))
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--seconds", type=float, default=10.0, help="per case")
    p.add_argument("--clients", type=int, default=16, help="client sockets")
    p.add_argument("--quick", action="store_true", help="a smoke run: 0.5 s a case")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 0.5
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        p.error(f"unknown proxy {unknown[0]!r}; known: {', '.join(PROXIES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="splicetx-udp-bench-") as work:
        for name in names:
            why = unavailable(name)
            if why is not None:
                print(f"{name}: skipped ({why})", file=sys.stderr)
                rows.append({"proxy": name, "skipped": why})
                continue
            for mode in modes:
                for size in sizes:
                    print(f"{name} {mode} {size} B ...", file=sys.stderr, flush=True)
                    rows.append(
                        runCase(name, mode, size, args.clients, args.seconds, work)
                    )
    print("| proxy | mode | size | datagrams/s | CPU µs/datagram | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['proxy']} | | | | | skipped: {r['skipped']} |")
            continue
        cpu = r.get("cpuMicrosPerDatagram")
        note = r.get("error", "")
        if "sent" in r and r.get("datagrams") is not None:
            lost = r["sent"] - r["datagrams"]
            note = note or f"{lost} of {r['sent']} lost"
        print(
            f"| {r['proxy']} | {r['mode']} | {r['size']} "
            f"| {r.get('perSecond', 0):.0f} "
            f"| {'n/a' if cpu is None else f'{cpu:.1f}'} | {note} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
