"""
TLS termination: bulk downloads and connection churn through a TLS listener
in front of the bench's plain backend, for splicetx (C{--listen ssl:}, the
copy engine), HAProxy (C{bind ... ssl crt ...}) and Twisted's portforward
behind its own TLS endpoint, in one run on 127.0.0.1::

    python -m splicetx.bench.tls                  # or: python -m splicetx.bench --tls
    python -m splicetx.bench.tls --seconds 5 --churn-seconds 5 --profile

Figures per proxy: Gbit/s and proxy CPU seconds per GB for bulk (1 and 4
streams, download), handshakes/s and proxy CPU seconds per 1000 handshakes
for churn (a full TLS 1.3 handshake, one echoed byte, close; no session
resumption).  The clients (Python C{ssl}) run on the same machine, so the
figures are for comparing the proxies with each other.  With C{--profile},
a separate untimed bulk run of each proxy under C{perf record} says where
its CPU goes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from splicetx.bench._procstats import TreeMeter
from splicetx.bench._wire import DOWNLOAD, ECHO, header, makeSourceFile

HOST = "127.0.0.1"
PROXIES = ("splicetx", "haproxy", "portforward")
LABELS = {
    "splicetx": "splicetx (twist splice-proxy --listen ssl:, copy engine)",
    "haproxy": "HAProxy 1 thread (bind ... ssl crt ...)",
    "portforward": "twist portforward --port ssl:...",
}
GB = 1e9


def makeCertificate(directory: str) -> tuple[str, str, str]:
    """
    A self-signed ECDSA P-256 certificate for 127.0.0.1 (cheap handshakes,
    as a current deployment would use).

    @return: the key, the certificate and both in one file (for HAProxy).
    """
    key = os.path.join(directory, "key.pem")
    cert = os.path.join(directory, "cert.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    both = os.path.join(directory, "both.pem")
    with open(both, "w") as out:
        for path in (cert, key):
            with open(path) as f:
                out.write(f.read())
    return key, cert, both


def _freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def command(
    name: str, port: int, upstream: int, certs: tuple[str, str, str], work: str
) -> list[str]:
    """
    The argv that starts proxy C{name} on C{port} (TLS), relaying to the
    plain C{upstream}.
    """
    key, cert, both = certs
    twist = [
        sys.executable,
        "-m",
        "twisted",
        "--reactor=epoll",
        "--log-level=warn",
        "--log-format=text",
        "--log-file=-",
    ]
    listen = f"ssl:{port}:interface={HOST}:privateKey={key}:certKey={cert}"
    if name == "splicetx":
        return [
            *twist,
            "splice-proxy",
            "--listen",
            listen,
            "--connect",
            f"tcp:{HOST}:{upstream}",
        ]
    if name == "portforward":
        return [
            *twist,
            "portforward",
            "--port",
            listen,
            "--host",
            HOST,
            "--dest_port",
            str(upstream),
        ]
    if name == "haproxy":
        cfg = os.path.join(work, "haproxy-tls.cfg")
        with open(cfg, "w") as f:
            f.write(
                "global\n"
                "    nbthread 1\n"
                "    maxconn 4000\n"
                "    tune.ssl.default-dh-param 2048\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 10s\n"
                "    timeout client 300s\n"
                "    timeout server 300s\n"
                "frontend bench\n"
                f"    bind {HOST}:{port} ssl crt {both}\n"
                "    default_backend upstream\n"
                "backend upstream\n"
                f"    server s1 {HOST}:{upstream}\n"
            )
        return ["haproxy", "-db", "-f", cfg]
    raise ValueError(f"unknown proxy {name!r}")


def _waitPort(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {timeout} s")


def _client() -> ssl.SSLContext:
    # No ALPN (Twisted's own TLS endpoint, under portforward, refuses
    # clients that offer it on Twisted 26.10) and no session reuse.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def bulk(port: int, streams: int, seconds: float) -> dict[str, Any]:
    """
    Download for about C{seconds} on C{streams} TLS connections at once.

    @return: C{bytes}, C{seconds}, C{errors}.
    """
    context = _client()
    moved = [0] * streams
    errors: list[str] = []
    barrier = threading.Barrier(streams + 1, timeout=60)

    def stream(i: int) -> None:
        buf = bytearray(1 << 18)
        try:
            with socket.create_connection((HOST, port), timeout=60) as raw:
                with context.wrap_socket(raw) as s:
                    barrier.wait()
                    s.sendall(header(DOWNLOAD, int(seconds * 1000)))
                    total = 0
                    while True:
                        try:
                            n = s.recv_into(buf)
                        except ssl.SSLEOFError:
                            break
                        if not n:
                            break
                        total += n
                    moved[i] = total
        except (OSError, threading.BrokenBarrierError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.monotonic()
    for t in threads:
        t.join(seconds + 120)
    return {
        "bytes": sum(moved),
        "seconds": time.monotonic() - start,
        "errors": len(errors),
        "error": errors[0] if errors else None,
    }


def churn(port: int, seconds: float, workers: int = 4) -> dict[str, Any]:
    """
    Open TLS connections one after the other on C{workers} threads for
    C{seconds}: full handshake, one echoed byte, close.

    @return: C{connections}, C{seconds}, C{errors}.
    """
    context = _client()
    counts = [0] * workers
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, port), timeout=30) as raw:
                    with context.wrap_socket(raw) as s:
                        s.sendall(header(ECHO) + b"x")
                        if s.recv(1) != b"x":
                            raise OSError("no echo")
                counts[i] += 1
            except OSError as e:
                errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.01)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return {
        "connections": sum(counts),
        "seconds": time.monotonic() - start,
        "errors": len(errors),
        "error": errors[0] if errors else None,
    }


def _measure(pid: int, load: Any) -> dict[str, Any]:
    meter = TreeMeter(pid)
    meter.start()
    result = load()
    cpu = meter.stop()
    result["cpu"] = cpu.get("user", 0.0) + cpu.get("system", 0.0)
    result["user"] = cpu.get("user", 0.0)
    result["system"] = cpu.get("system", 0.0)
    return result


def profile(pid: int, port: int, seconds: float, work: str) -> dict[str, Any]:
    """
    Where the proxy's CPU goes during a bulk download: C{perf record -e
    cpu-clock} on its process while one more (untimed) download runs,
    grouped by library.

    @return: C{shares} (percent by L{category}) and C{topSymbols}; or
        C{error}.
    """
    from splicetx.bench._tracing import perfReport

    if shutil.which("perf") is None:
        return {"error": "perf is not installed"}
    path = os.path.join(work, "perf-tls.data")
    with open(path + ".err", "w") as err:
        recorder = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999"]
            + ["-o", path, "-p", str(pid), "--", "sleep", str(seconds + 0.5)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    time.sleep(0.5)
    bulk(port, 1, seconds)
    recorder.wait(seconds + 60)
    byDso = perfReport(path, "dso")
    if not byDso:
        with open(path + ".err") as f:
            return {"error": "no perf samples: " + " ".join(f.read().split())[-200:]}
    shares: dict[str, float] = collections.defaultdict(float)
    for dso, pct in byDso.items():
        shares[category(dso)] += pct
    top = sorted(perfReport(path, "sym").items(), key=lambda kv: -kv[1])[:8]
    return {"shares": dict(shares), "topSymbols": top}


def category(dso: str) -> str:
    """
    What a C{perf report} DSO name stands for, in this bench's terms.
    """
    base = os.path.basename(dso)
    if dso.startswith("[kernel"):
        return "kernel (TCP, system calls)"
    if "libcrypto" in base or "libssl" in base or base.startswith("_rust"):
        # pyOpenSSL calls the OpenSSL that cryptography links into _rust.
        return "OpenSSL (cipher, handshakes)"
    if base.startswith("libpython") or base.startswith("python"):
        return "Python interpreter (Twisted, pyOpenSSL glue, the relay)"
    if base.startswith("libc") or base.startswith("ld-"):
        return "libc (memcpy, malloc)"
    return "other native code (HAProxy itself, C extensions)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """
    Start the backend once, then each proxy in turn, and run every load
    through it.
    """
    work = tempfile.mkdtemp(prefix="splicetx-bench-tls-")
    procs: list[subprocess.Popen] = []
    try:
        source = os.path.join(work, "source.bin")
        makeSourceFile(source)
        certs = makeCertificate(work)
        backend = subprocess.Popen(
            [sys.executable, "-m", "splicetx.bench._backend", "--file", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(backend)
        assert backend.stdout is not None
        upstream = int(backend.stdout.readline())
        results: dict[str, Any] = {}
        for name in args.proxies:
            if name == "haproxy" and shutil.which("haproxy") is None:
                results[name] = {"skipped": "haproxy is not installed"}
                continue
            port = _freePort()
            log = open(os.path.join(work, f"{name}.log"), "w")
            proc = subprocess.Popen(
                command(name, port, upstream, certs, work),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            try:
                _waitPort(port, proc)
                figures: dict[str, Any] = {}
                for streams in args.streams:
                    figures[f"bulk{streams}"] = _measure(
                        proc.pid, lambda s=streams, p=port: bulk(p, s, args.seconds)
                    )
                figures["churn"] = _measure(
                    proc.pid, lambda p=port: churn(p, args.churn_seconds)
                )
                if args.profile:
                    figures["profile"] = profile(proc.pid, port, args.seconds, work)
                results[name] = figures
            except RuntimeError as e:
                results[name] = {"skipped": str(e)}
            finally:
                proc.terminate()
                proc.wait(30)
                log.close()
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "seconds": args.seconds,
            "churnSeconds": args.churn_seconds,
            "openssl": ssl.OPENSSL_VERSION,
            "results": results,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        shutil.rmtree(work, True)


def markdown(result: dict[str, Any]) -> str:
    """
    The results as a Markdown table.
    """
    lines = [
        "| proxy | load | Gbit/s | handshakes/s | proxy CPU-s/GB | "
        "proxy CPU-s/1000 handshakes | user/sys |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, figures in result["results"].items():
        label = LABELS.get(name, name)
        if "skipped" in figures:
            lines.append(f"| {label} | skipped: {figures['skipped']} | | | | | |")
            continue
        for load, f in figures.items():
            if load == "profile":
                continue
            split = f"{f['user']:.2f}/{f['system']:.2f}"
            if load.startswith("bulk"):
                gbits = f["bytes"] * 8 / f["seconds"] / 1e9
                perGB = f["cpu"] / (f["bytes"] / GB) if f["bytes"] else float("nan")
                lines.append(
                    f"| {label} | bulk download, {load[4:]} stream(s) | "
                    f"{gbits:.2f} | | {perGB:.2f} | | {split} |"
                )
            else:
                rate = f["connections"] / f["seconds"]
                per = f["cpu"] / f["connections"] * 1000 if f["connections"] else 0
                lines.append(
                    f"| {label} | churn (handshake, 1 byte, close) | | "
                    f"{rate:.0f} | | {per:.2f} | {split} |"
                )
    for name, figures in result["results"].items():
        prof = figures.get("profile")
        if not prof:
            continue
        lines.append("")
        label = LABELS.get(name, name)
        if "error" in prof:
            lines.append(f"Profile of {label}: {prof['error']}")
            continue
        lines.append(f"Where the CPU of {label} goes (1-stream bulk, perf samples):")
        lines.append("")
        for k, v in sorted(prof["shares"].items(), key=lambda kv: -kv[1]):
            lines.append(f"- {k}: {v:.0f}%")
        lines.append("")
        lines.append(
            "Top symbols: "
            + ", ".join(f"{sym} {pct:.1f}%" for sym, pct in prof["topSymbols"])
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m splicetx.bench.tls",
        description="TLS termination through splicetx, HAProxy and "
        "twist portforward, on 127.0.0.1.",
    )
    p.add_argument("--seconds", type=float, default=3.0, help="per bulk run (3)")
    p.add_argument("--churn-seconds", type=float, default=3.0, help="per churn run (3)")
    p.add_argument(
        "--streams",
        default="1,4",
        help="bulk stream counts (default 1,4)",
    )
    p.add_argument(
        "--proxies",
        default=",".join(PROXIES),
        help="comma-separated: " + ",".join(PROXIES),
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="add where each proxy's CPU goes (perf record)",
    )
    p.add_argument("--json", help="also write the figures to this file")
    return p


def argumentsFromBench(args: argparse.Namespace) -> list[str]:
    """
    The arguments of L{main} for C{python -m splicetx.bench --tls}: its
    C{--seconds}, C{--churn-seconds}, C{--quick} and C{--perf}; the figures
    go to C{tls.json} in its C{--out}.
    """
    quick = bool(getattr(args, "quick", False))
    seconds = args.seconds or (0.3 if quick else 3.0)
    churnSeconds = args.churn_seconds or (0.3 if quick else 3.0)
    os.makedirs(args.out, exist_ok=True)
    argv = [
        "--seconds",
        str(seconds),
        "--churn-seconds",
        str(churnSeconds),
        "--json",
        os.path.join(args.out, "tls.json"),
    ]
    if quick:
        argv += ["--streams", "1"]
    if getattr(args, "perf", False):
        argv.append("--profile")
    return argv


def main(argv: list[str] | None = None) -> int:
    """
    Run the TLS bench and print its table.
    """
    args = _parser().parse_args(argv)
    args.streams = [int(s) for s in args.streams.split(",") if s.strip()]
    args.proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    unknown = set(args.proxies) - set(PROXIES)
    if unknown:
        sys.stderr.write(f"unknown proxies: {', '.join(sorted(unknown))}\n")
        return 64
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))
    return 0 if any("skipped" not in r for r in result["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
