"""
The bench's load generator, client side.  It runs in the bench's own
process; every stream is a thread that blocks in C{sendfile} (sending from a
page-cached file) or C{splice} (receiving into C{/dev/null} through a 1 MiB
pipe), so the generator spends a few system calls per megabyte and leaves the
CPU to the proxy under test.  The backend is L{splicetx.bench._backend}.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import threading
import time
from typing import Any

from splicetx.bench._wire import (
    CONNECT_REPLY,
    COUNT,
    DOWNLOAD,
    ECHO,
    ECHO_THEN_CLOSE,
    KEEPALIVE_REQUEST,
    REPLY,
    UPLOAD,
    header,
    preambleBytes,
    recvExactly,
    sendFor,
    sinkAll,
)

HOST = "127.0.0.1"


def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((HOST, port))
    except BaseException:
        s.close()
        raise
    return s


def bulk(
    port: int,
    streams: int,
    upload: bool,
    seconds: float,
    fileFD: int,
    fileSize: int,
    devnull: int,
) -> dict[str, Any]:
    """
    Move bytes through C{port} on C{streams} connections at once for about
    C{seconds}: upload (client to backend) or download.

    @return: C{bytes} (delivered end to end), C{seconds} (from the common
        start until the last stream finished), C{errors}, C{error}.
    """
    barrier = threading.Barrier(streams + 1, timeout=60)
    moved = [0] * streams
    ends = [0.0] * streams
    errors: list[str] = []

    def stream(i: int) -> None:
        try:
            s = _connect(port)
        except OSError as e:
            errors.append(f"connect: {e}")
            barrier.abort()
            return
        try:
            # Truly blocking (a timeout makes the fd non-blocking, and
            # sendfile/splice would see EAGAIN); join() bounds the wait.
            s.settimeout(None)
            barrier.wait()
            if upload:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(header(UPLOAD))
                sendFor(s, fileFD, fileSize, seconds, framed=True)
                moved[i] = COUNT.unpack(recvExactly(s, COUNT.size))[0]
            else:
                s.sendall(header(DOWNLOAD, int(seconds * 1000)))
                moved[i] = sinkAll(s, devnull)
            ends[i] = time.monotonic()
        except (OSError, threading.BrokenBarrierError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            s.close()

    threads = [
        threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)
    ]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.monotonic()
    for t in threads:
        t.join(seconds + 180)
    end = max([e for e in ends if e] or [time.monotonic()])
    return {
        "bytes": sum(moved),
        "seconds": max(end - start, 1e-9),
        "errors": len(errors),
        "error": errors[0] if errors else None,
    }


def latency(port: int, count: int, size: int = 1024, warmup: int = 200) -> dict:
    """
    Ping-pong C{size}-byte messages through C{port}, one at a time.

    @return: C{p50us}, C{p99us}, C{meanus}, C{count}, C{errors}, C{error}.
    """
    msg = os.urandom(size)
    buf = bytearray(size)
    view = memoryview(buf)
    samples: list[int] = []
    clock = time.perf_counter_ns
    try:
        s = _connect(port)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(header(ECHO))
        recvInto = s.recv_into
        send = s.sendall
        for i in range(warmup + count):
            t0 = clock()
            send(msg)
            got = 0
            while got < size:
                n = recvInto(view[got:])
                if not n:
                    raise ConnectionError("end of stream during ping-pong")
                got += n
            t1 = clock()
            if i >= warmup:
                samples.append(t1 - t0)
        if buf != msg:
            raise ValueError("echo mismatch")
        s.close()
    except (OSError, ValueError) as e:
        return {"errors": 1, "error": f"{type(e).__name__}: {e}", "count": len(samples)}
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] / 1000.0

    return {
        "p50us": pct(0.50),
        "p99us": pct(0.99),
        "meanus": sum(samples) / len(samples) / 1000.0,
        "count": len(samples),
        "errors": 0,
        "error": None,
    }


# Linux's IP_BIND_ADDRESS_NO_PORT (Python 3.12 names it): bind() takes only
# the address, and connect() picks the port knowing the whole 4-tuple.
_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Starts at a place of this process's own, so that two bench runs within
# a minute of each other do not reuse each other's addresses either.
_churnRuns = itertools.count(os.getpid() % (250 * 250))


def _bindSource(sock: socket.socket, source: str) -> None:
    """
    Make C{sock}'s connections come from C{source}, the port left to
    C{connect()}.
    """
    sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))


def churnSource() -> str:
    """
    A loopback source address of its own for one churn run (127.1.x.y), or
    127.0.0.1 where such an address cannot be bound.

    Churn's backend closes first (see L{churn}), so a client's socket
    normally leaves no TIME_WAIT behind; one that does (a proxy that resets,
    a client that gives up) must not make the next run's connects hunt for
    free ports among the ones this run left on a shared 127.0.0.1.
    """
    n = next(_churnRuns) % (250 * 250)
    source = f"127.1.{n // 250}.{n % 250 + 1}"
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _bindSource(probe, source)
    except OSError:
        return HOST
    finally:
        probe.close()
    return source


def churn(
    port: int,
    seconds: float,
    workers: int = 4,
    preamble: str | None = None,
    target: int = 0,
) -> dict[str, Any]:
    """
    Open a connection, echo 100 bytes, see it closed, close; repeat on
    C{workers} threads for C{seconds}, from a source address of the run's
    own (L{churnSource}).  With a C{preamble} (see L{preambleBytes}), each
    connection sends it first; a ClientHello comes back with the echo.

    The backend closes first (mode C{Q}), and the client closes once the
    proxy has passed that end of stream on.  Whoever closes first keeps the
    connection's 4-tuple in TIME_WAIT for 60 s: when the client closed
    first, every proxy closed its connection to the backend first, and each
    run left some 30,000 such sockets on 127.0.0.1 towards the backend's
    one port.  The next proxy's connects then hunted for free ports among
    them (the kernel walks the ports a TIME_WAIT socket holds), and a
    proxy's CPU per connection grew with the table (splicetx 1.18x
    HAProxy's with it empty, 1.44x with 131,000 in it, one run each:
    docs/benchmarks.md).  With the backend closing first, the TIME_WAIT
    sockets are the backend's, on its listening port, which nobody
    connects from.

    @return: C{conns} (completed), C{failures}, C{seconds}, C{connsPerSec},
        C{error} (the first failure), C{source} (the client address).
    """
    source = churnSource()
    payload = os.urandom(100)
    before = preambleBytes(preamble, target)
    first = before + header(ECHO_THEN_CLOSE, len(payload)) + payload
    # What comes back: a ClientHello (echoed by the backend, see _wire) or a
    # CONNECT proxy's answer, then the payload.
    echoed = payload
    if preamble == "sni":
        echoed = before + payload
    elif preamble == "connect":
        echoed = CONNECT_REPLY + payload
    ok = [0] * workers
    bad = [0] * workers
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(10)
                _bindSource(s, source)
                s.connect((HOST, port))
                s.sendall(first)
                if recvExactly(s, len(echoed)) != echoed:
                    raise ValueError("echo mismatch")
                if s.recv(1):
                    raise ValueError("bytes after the echo")
                ok[i] += 1
            except (OSError, ValueError) as e:
                bad[i] += 1
                if len(errors) < 5:
                    errors.append(f"{type(e).__name__}: {e}")
            finally:
                s.close()

    start = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    return {
        "conns": sum(ok),
        "failures": sum(bad),
        "seconds": took,
        "connsPerSec": sum(ok) / took,
        "error": errors[0] if errors else None,
        "source": source,
    }


def openIdle(
    port: int, count: int, batch: int = 100, batchSeconds: float = 10.0
) -> tuple[list, int, str | None]:
    """
    Open C{count} connections through C{port}, each proven end to end with a
    100-byte echo, and leave them open.

    Connections are opened C{batch} at a time; a batch gets C{batchSeconds}
    in all (not each connection: a proxy out of file descriptors leaves
    them unanswered in its backlog), and opening stops after a batch of
    which none succeeded (the proxy holds no more).

    @return: the sockets, the number of failures, the first error.
    """
    payload = b"i" * 100
    first = header(ECHO) + payload
    socks: list[socket.socket] = []
    failures = 0
    error = None
    for startAt in range(0, count, batch):
        deadline = time.monotonic() + batchSeconds
        pending = []
        held = len(socks)
        for _ in range(min(batch, count - startAt)):
            try:
                s = _connect(port, max(0.1, deadline - time.monotonic()))
                s.sendall(first)
                pending.append(s)
            except OSError as e:
                failures += 1
                error = error or f"{type(e).__name__}: {e}"
        for s in pending:
            try:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                if recvExactly(s, len(payload)) != payload:
                    raise ValueError("echo mismatch")
                socks.append(s)
            except (OSError, ValueError) as e:
                failures += 1
                error = error or f"{type(e).__name__}: {e}"
                s.close()
        if len(socks) == held:
            break
    return socks, failures, error


def freshConnections(
    port: int, tries: int = 50, giveUpAfter: int = 5
) -> dict[str, Any]:
    """
    Time C{tries} new connections through C{port}, one after another: each
    from before C{connect()} until its 100-byte echo is back, then closed.
    (The idle load runs this while it holds its idle connections.)  Stops
    after C{giveUpAfter} failures in a row: the proxy serves no new
    connection (a full one leaves them waiting in its backlog until the
    timeout).

    @return: C{freshTries} (made), C{freshP50Ms}, C{freshMaxMs} (over the
        tries that succeeded; absent when none did), C{freshFailures},
        C{freshError}.
    """
    payload = b"f" * 100
    first = header(ECHO) + payload
    times: list[float] = []
    failures = 0
    error = None
    made = inARow = 0
    while made < tries and inARow < giveUpAfter:
        made += 1
        t0 = time.perf_counter()
        try:
            s = _connect(port, 5.0)
            try:
                s.sendall(first)
                if recvExactly(s, len(payload)) != payload:
                    raise ValueError("echo mismatch")
                times.append(time.perf_counter() - t0)
                inARow = 0
            finally:
                s.close()
        except (OSError, ValueError) as e:
            failures += 1
            inARow += 1
            error = error or f"{type(e).__name__}: {e}"
    out: dict[str, Any] = {
        "freshTries": made,
        "freshFailures": failures,
        "freshError": error,
    }
    if times:
        times.sort()
        out["freshP50Ms"] = times[len(times) // 2] * 1e3
        out["freshMaxMs"] = times[-1] * 1e3
    return out


def keepalive(
    port: int,
    seconds: float,
    conns: int = 50,
    response: int = 1024,
) -> dict[str, Any]:
    """
    Many small messages over many keep-alive connections: open C{conns}
    connections, then on each send a L{KEEPALIVE_REQUEST}-byte request and
    wait for its C{response}-byte answer, again and again for C{seconds}
    (one request outstanding per connection, all connections at once, from
    one C{epoll} loop), then close them.

    @return: C{requests} (answered), C{conns}, C{seconds}, C{requestsPerSec},
        C{failures}, C{error}.
    """
    import select

    request = b"q" * KEEPALIVE_REQUEST
    socks: list[socket.socket] = []
    error = None
    failures = 0
    for _ in range(conns):
        try:
            s = _connect(port)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(header(REPLY, response))
            s.setblocking(False)
            socks.append(s)
        except OSError as e:
            failures += 1
            error = error or f"{type(e).__name__}: {e}"
    ep = select.epoll()
    pending: dict[int, list[Any]] = {}
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    try:
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
            pending[s.fileno()] = [s, 0]
            s.send(request)
        while pending and time.monotonic() < deadline:
            for fd, _ in ep.poll(0.5):
                entry = pending.get(fd)
                if entry is None:
                    continue
                s = entry[0]
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data = b""
                    error = error or f"{type(e).__name__}: {e}"
                if not data:
                    failures += 1
                    error = error or "end of stream during keep-alive"
                    ep.unregister(fd)
                    del pending[fd]
                    continue
                entry[1] += len(data)
                if entry[1] >= response:
                    entry[1] -= response
                    done += 1
                    s.send(request)
    finally:
        took = time.monotonic() - start
        ep.close()
        for s in socks:
            s.close()
    return {
        "requests": done,
        "conns": len(socks),
        "seconds": took,
        "requestsPerSec": done / max(took, 1e-9),
        "failures": failures,
        "error": error,
    }


def iperf3Bulk(port: int, streams: int, upload: bool, seconds: float) -> dict[str, Any]:
    """
    Run C{iperf3} as the client through C{port} (an iperf3 server must be
    upstream of it).

    @return: like L{bulk}.
    """
    import json

    argv = [
        "iperf3",
        "-c",
        HOST,
        "-p",
        str(port),
        "-t",
        str(max(1, round(seconds))),
        "-P",
        str(streams),
        "-Z",
        "-J",
    ]
    if not upload:
        argv.append("-R")
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60
        ).stdout
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(data["error"])
        recv = data["end"]["sum_received"]
        return {
            "bytes": int(recv["bytes"]),
            "seconds": float(recv["seconds"]),
            "errors": 0,
            "error": None,
        }
    except (
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
        subprocess.SubprocessError,
    ) as e:
        return {"bytes": 0, "seconds": 1.0, "errors": 1, "error": f"iperf3: {e}"}
