# -*- test-case-name: tests.test_cli -*-
"""
Subprocess tests of C{twist splice-proxy}: the real command, driven over
loopback with asyncio peers; every child is killed in cleanup.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx._app.tap import Options, makeService
from splicetx._config.endpoints import clientEndpoint, withBacklog
from splicetx._relay.pipes import PipePool
from splicetx.testing import digest

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    blackholePort,
    closedWithin,
    connectProxy,
    cpuSeconds,
    echoChunks,
    listenOverflows,
    readAll,
    refusedSoon,
    refusingPort,
    runAsync,
    sendAll,
    startServer,
    twistCommand,
    waitUntil,
)

MiB = 1 << 20


class _ProxyTestCase(SynchronousTestCase):
    """
    Starts proxies that are killed in cleanup.
    """

    def proxy(self, args: list[str], **kwargs: Any) -> ProxyProcess:
        p = ProxyProcess(args, **kwargs)
        self.addCleanup(p.kill)
        return p

    def forward(self, upstreamPort: int, *extra: str, **kwargs: Any) -> ProxyProcess:
        return self.proxy(
            [
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--connect",
                f"tcp:{LOOPBACK}:{upstreamPort}",
                *extra,
            ],
            **kwargs,
        )


async def _startProxy(make: Any) -> tuple[ProxyProcess, int]:
    """
    Start a proxy (C{make()}) from inside the event loop without blocking it.
    """
    proxy = make()
    port = await asyncio.to_thread(proxy.listeningPort)
    return proxy, port


class IntegrityTests(_ProxyTestCase):
    """
    Bytes arrive intact both ways, through both engines.
    """

    def _bothWaysAtOnce(self, engine: str) -> None:
        toUpstream = os.urandom(4 * MiB)
        toClient = os.urandom(3 * MiB + 17)
        seen: dict[str, str] = {}

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            got, _ = await asyncio.gather(readAll(r), sendAll(w, toClient))
            seen["upstream"] = digest(got)
            w.close()

        async def scenario() -> ProxyProcess:
            server, uport = await startServer(upstream)
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--engine", engine)
            )
            r, w = await connectProxy(port)
            got, _ = await asyncio.gather(readAll(r), sendAll(w, toUpstream))
            seen["client"] = digest(got)
            w.close()
            await waitUntil(lambda: "upstream" in seen)
            server.close()
            return proxy

        proxy = runAsync(scenario(), 30)
        self.assertEqual(seen["client"], digest(toClient))
        self.assertEqual(seen["upstream"], digest(toUpstream))
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "done")
        self.assertEqual(event["engine"], engine)
        self.assertEqual(event["bytesClientToUpstream"], len(toUpstream))
        self.assertEqual(event["bytesUpstreamToClient"], len(toClient))
        self.assertTrue(event["client"].startswith(f"{LOOPBACK}:"))

    def test_spliceBothWays(self) -> None:
        """
        4 MiB up and 3 MiB down at the same time arrive byte-exact through
        the splice engine, and one event logs the connection.
        """
        self._bothWaysAtOnce("splice")

    def test_copyBothWays(self) -> None:
        """
        The same through the copy engine (--engine copy).
        """
        self._bothWaysAtOnce("copy")


class HalfCloseTests(_ProxyTestCase):
    """
    An end of stream from one side half-closes the other; the other
    direction keeps flowing.
    """

    def test_clientFinishesFirst(self) -> None:
        """
        Client sends and half-closes; the upstream reads to the end, then
        answers (request, FIN, response) and the client gets it all.
        """
        request = os.urandom(MiB + 3)
        response = os.urandom(2 * MiB + 5)
        seen: dict[str, str] = {}

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            seen["upstream"] = digest(await readAll(r))
            await sendAll(w, response)
            w.close()

        async def scenario() -> ProxyProcess:
            server, uport = await startServer(upstream)
            proxy, port = await _startProxy(lambda: self.forward(uport))
            r, w = await connectProxy(port)
            await sendAll(w, request)
            seen["client"] = digest(await readAll(r))
            w.close()
            await waitUntil(lambda: "upstream" in seen)
            server.close()
            return proxy

        proxy = runAsync(scenario(), 30)
        self.assertEqual(
            seen, {"upstream": digest(request), "client": digest(response)}
        )
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "done")

    def test_upstreamFinishesFirst(self) -> None:
        """
        The upstream sends and half-closes first (a banner); the client reads
        to the end, then sends, and the upstream still receives everything.
        """
        banner = os.urandom(MiB + 11)
        request = os.urandom(MiB // 2 + 1)
        seen: dict[str, str] = {}

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await sendAll(w, banner)
            seen["upstream"] = digest(await readAll(r))
            w.close()

        async def scenario() -> ProxyProcess:
            server, uport = await startServer(upstream)
            proxy, port = await _startProxy(lambda: self.forward(uport))
            r, w = await connectProxy(port)
            seen["client"] = digest(await readAll(r))
            await sendAll(w, request)
            await waitUntil(lambda: "upstream" in seen)
            w.close()
            server.close()
            return proxy

        proxy = runAsync(scenario(), 30)
        self.assertEqual(seen, {"upstream": digest(request), "client": digest(banner)})
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "done")


class BurstTests(_ProxyTestCase):
    """
    Many connections at once.
    """

    def test_fiveHundredConcurrent(self) -> None:
        """
        500 clients connecting at once all complete their exchange; the
        proxy's listen queue is the --backlog default (1024), so nothing
        overflows.
        """
        count = 500

        async def one(port: int, i: int) -> bool:
            data = i.to_bytes(4, "big") * 256
            r, w = await connectProxy(port)
            await sendAll(w, data)
            got = await readAll(r)
            w.close()
            return got == data

        async def scenario() -> tuple[ProxyProcess, list[bool], float, int]:
            server, uport = await startServer(echoChunks)
            proxy, port = await _startProxy(lambda: self.forward(uport))
            queue = _listenQueueLimit(port)
            before = listenOverflows()
            start = time.monotonic()
            results = await asyncio.gather(*(one(port, i) for i in range(count)))
            elapsed = time.monotonic() - start
            overflows = listenOverflows() - before
            server.close()
            sys.stderr.write(
                f"\n[500-connection burst: {elapsed:.2f} s, listen queue {queue}, "
                f"host ListenOverflows +{overflows}]\n"
            )
            return proxy, results, elapsed, queue

        proxy, results, elapsed, queue = runAsync(scenario(), 60)
        self.assertEqual(results.count(True), count)
        self.assertEqual(queue, 1024)
        events = proxy.waitForConnections(count, timeout=20)
        self.assertEqual({e["reason"] for e in events}, {"done"})


def _listenQueueLimit(port: int) -> int:
    """
    The backlog of the listening socket on C{port} (ss shows it as Send-Q).
    """
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    fields = out.split()
    return int(fields[2]) if len(fields) > 2 else -1


class UpstreamFailureTests(_ProxyTestCase):
    """
    A refused or hanging upstream closes the client promptly, is logged, and
    the proxy keeps serving.
    """

    def test_refused(self) -> None:
        """
        With the upstream refusing, each client is closed well under a
        second, the reason is logged, and the proxy keeps serving.
        """
        refusing = refusingPort()
        self.addCleanup(refusing.close)
        uport = refusing.getsockname()[1]

        async def scenario() -> tuple[ProxyProcess, list[float]]:
            proxy, port = await _startProxy(lambda: self.forward(uport))
            took = []
            for _ in range(2):
                start = time.monotonic()
                r, w = await connectProxy(port)
                w.write(b"hello")
                self.assertTrue(await closedWithin(r, 5))
                took.append(time.monotonic() - start)
                w.close()
            return proxy, took

        proxy, took = runAsync(scenario(), 30)
        self.assertLess(max(took), 1.0)
        events = proxy.waitForConnections(2)
        for event in events:
            self.assertEqual(event["reason"], "upstream failed")
            self.assertIn("refused", event["detail"].lower())
            self.assertEqual(event["engine"], "none")
        self.assertIsNone(proxy.proc.poll())

    def test_connectTimeout(self) -> None:
        """
        An upstream that never answers the SYN closes the client after
        --connect-timeout, logged as timed out.
        """
        hole, fillers = blackholePort()
        self.addCleanup(hole.close)
        for f in fillers:
            self.addCleanup(f.close)
        uport = hole.getsockname()[1]

        async def scenario() -> tuple[ProxyProcess, float]:
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--connect-timeout", "0.4")
            )
            start = time.monotonic()
            r, w = await connectProxy(port)
            closed = await closedWithin(r, 5)
            w.close()
            self.assertTrue(closed)
            return proxy, time.monotonic() - start

        proxy, took = runAsync(scenario(), 30)
        self.assertGreaterEqual(took, 0.3)
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "upstream failed")
        self.assertIn("timed out after 0.4 s", event["detail"])


class TimeoutAndLimitTests(_ProxyTestCase):
    """
    --idle-timeout and --max-connections.
    """

    def test_idleTimeout(self) -> None:
        """
        A silent connection is closed after --idle-timeout and logged as
        such, while a connection exchanging bytes more often survives.
        """

        async def pingEvery(port: int, interval: float, times: int) -> int:
            r, w = await connectProxy(port)
            answered = 0
            for i in range(times):
                w.write(b"ping%d" % i)
                await w.drain()
                if await asyncio.wait_for(r.read(100), 2):
                    answered += 1
                await asyncio.sleep(interval)
            w.close()
            return answered

        async def silent(port: int) -> bool:
            r, w = await connectProxy(port)
            w.write(b"hi")
            await r.read(100)
            closed = await closedWithin(r, 5)
            w.close()
            return closed

        async def scenario() -> tuple[ProxyProcess, int, bool]:
            server, uport = await startServer(echoChunks)
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--idle-timeout", "0.6")
            )
            answered, closed = await asyncio.gather(
                pingEvery(port, 0.15, 8), silent(port)
            )
            server.close()
            return proxy, answered, closed

        proxy, answered, closed = runAsync(scenario(), 30)
        self.assertEqual(answered, 8)
        self.assertTrue(closed)
        events = proxy.waitForConnections(2)
        reasons = sorted(e["reason"] for e in events)
        self.assertIn("idle timeout", reasons)
        self.assertEqual(reasons.count("idle timeout"), 1)

    def test_maxConnections(self) -> None:
        """
        Beyond --max-connections the proxy stops accepting: the extra client
        waits in the listen queue (not dropped) and is served once a slot
        frees.
        """

        async def ping(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
            w.write(b"x")
            await w.drain()
            return await r.read(10)

        async def scenario() -> tuple[ProxyProcess, bytes | None, bytes]:
            server, uport = await startServer(echoChunks)
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--max-connections", "2")
            )
            c1 = await connectProxy(port)
            c2 = await connectProxy(port)
            self.assertEqual(await asyncio.wait_for(ping(*c1), 5), b"x")
            self.assertEqual(await asyncio.wait_for(ping(*c2), 5), b"x")
            c3 = await connectProxy(port)
            try:
                early = await asyncio.wait_for(ping(*c3), 0.5)
            except asyncio.TimeoutError:
                early = None
            c1[1].close()
            late = await asyncio.wait_for(c3[0].read(10), 5)
            for _, w in (c2, c3):
                w.close()
            server.close()
            return proxy, early, late

        proxy, early, late = runAsync(scenario(), 30)
        self.assertIsNone(early)
        self.assertEqual(late, b"x")
        events = proxy.waitForConnections(3)
        self.assertEqual(len(events), 3)


class DrainTests(_ProxyTestCase):
    """
    SIGTERM: stop listening at once, let live transfers finish for up to
    --drain-timeout, then abort the rest; exit status 0.
    """

    def test_transferInFlightCompletes(self) -> None:
        """
        A transfer running when SIGTERM arrives completes within the drain
        time while new connections are refused at once; exit status 0.
        """
        data = os.urandom(MiB)
        seen: dict[str, Any] = {}

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            received = digest(await readAll(r))
            w.write(received.encode())
            w.write_eof()
            await w.drain()
            w.close()

        async def scenario() -> ProxyProcess:
            server, uport = await startServer(upstream)
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--drain-timeout", "10")
            )
            r, w = await connectProxy(port)
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            for i, chunk in enumerate(chunks):
                w.write(chunk)
                await w.drain()
                if i == 0:
                    proxy.signal(signal.SIGTERM)
                    seen["refused"] = await refusedSoon(port)
                await asyncio.sleep(0.03)
            w.write_eof()
            seen["reply"] = (await readAll(r)).decode()
            w.close()
            server.close()
            return proxy

        proxy = runAsync(scenario(), 30)
        self.assertEqual(proxy.wait(10), 0)
        self.assertTrue(seen["refused"])
        self.assertEqual(seen["reply"], digest(data))
        # Probes that got in before the signal was handled are logged too.
        [event] = [
            e for e in proxy.connections() if e["bytesClientToUpstream"] == len(data)
        ]
        self.assertEqual(event["reason"], "done")
        drained = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "drained")
        self.assertEqual(drained["aborted"], 0)

    def test_cutAfterDrainTimeout(self) -> None:
        """
        A connection still open when --drain-timeout expires is cut; the
        process then exits with status 0 (SIGINT drains like SIGTERM).
        """

        async def scenario() -> tuple[ProxyProcess, bool]:
            server, uport = await startServer(echoChunks)
            proxy, port = await _startProxy(
                lambda: self.forward(uport, "--drain-timeout", "0.5")
            )
            r, w = await connectProxy(port)
            w.write(b"hello")
            self.assertEqual(await asyncio.wait_for(r.read(10), 5), b"hello")
            proxy.signal(signal.SIGINT)
            early = await closedWithin(r, 0.2)
            closed = early or await closedWithin(r, 5)
            w.close()
            server.close()
            return proxy, closed and not early

        proxy, cutLate = runAsync(scenario(), 30)
        self.assertTrue(cutLate)
        self.assertEqual(proxy.wait(10), 0)
        [event] = proxy.connections()
        self.assertIn("drain timeout", event["detail"])
        drained = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "drained")
        self.assertEqual(drained["aborted"], 1)


class DeploymentTests(_ProxyTestCase):
    """
    systemd socket activation, plugin discovery and reactor selection.
    """

    def test_systemdSocketActivation(self) -> None:
        """
        A listening socket passed as systemd does (fd 3, LISTEN_FDS=1,
        LISTEN_FDNAMES, LISTEN_PID=<pid>) is adopted with
        --listen systemd:domain=INET:index=0.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((LOOPBACK, 0))
        listener.listen(128)
        lport = listener.getsockname()[1]
        fd = listener.fileno()

        async def scenario() -> tuple[ProxyProcess, bytes]:
            server, uport = await startServer(echoChunks)
            # bash, not sh: dash cannot redirect from fds above 9.
            command = [
                "bash",
                "-c",
                "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=proxy.socket; "
                f'exec "$@" 3<&{fd} {fd}<&-',
                "bash",
                *twistCommand(
                    [
                        "--listen",
                        "systemd:domain=INET:index=0",
                        "--connect",
                        f"tcp:{LOOPBACK}:{uport}",
                    ]
                ),
            ]
            proxy, port = await _startProxy(
                lambda: self.proxy([], command=command, pass_fds=[fd])
            )
            self.assertEqual(port, lport)
            listener.close()
            r, w = await connectProxy(lport)
            await sendAll(w, b"activated")
            got = await readAll(r)
            w.close()
            server.close()
            return proxy, got

        proxy, got = runAsync(scenario(), 30)
        self.assertEqual(got, b"activated")
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["engine"], "splice")

    def test_twistHelpListsPlugin(self) -> None:
        """
        C{twist --help} lists the splice-proxy sub-command.
        """
        out = subprocess.run(
            [sys.executable, "-m", "twisted", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(out.returncode, 0)
        self.assertIn("splice-proxy", out.stdout)

    def test_reactors(self) -> None:
        """
        C{twist --reactor=NAME splice-proxy} works with epoll, poll, select,
        asyncio and splicetx, splicing on each; with no C{--reactor} it runs
        on splicetx's (L{splicetx.reactor}).  The start log names the
        reactor.
        """
        names = ["epoll", "poll", "select", "asyncio", "splicetx", None]
        classes = {
            "epoll": "EPollReactor",
            "poll": "PollReactor",
            "select": "SelectReactor",
            "asyncio": "AsyncioSelectorReactor",
            "splicetx": "SpliceEPollReactor",
            None: "SpliceEPollReactor",
        }
        data = os.urandom(256 * 1024)

        async def through(port: int) -> bytes:
            r, w = await connectProxy(port)
            await sendAll(w, data)
            got = await readAll(r)
            w.close()
            return got

        async def scenario() -> list[ProxyProcess]:
            server, uport = await startServer(echoChunks)
            started = await asyncio.gather(
                *(
                    _startProxy(
                        lambda name=name: self.forward(
                            uport,
                            twistArgs=[f"--reactor={name}"] if name else [],
                        )
                    )
                    for name in names
                )
            )
            results = await asyncio.gather(*(through(port) for _, port in started))
            server.close()
            for got in results:
                self.assertEqual(digest(got), digest(data))
            return [p for p, _ in started]

        proxies = runAsync(scenario(), 45)
        for name, proxy in zip(names, proxies, strict=True):
            [event] = proxy.waitForConnections(1)
            self.assertEqual((name, event["engine"]), (name, "splice"))
            started = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "core")
            self.assertEqual((name, started["reactor"]), (name, classes[name]))


class FileDescriptorExhaustionTests(_ProxyTestCase):
    """
    Running out of file descriptors neither spins nor crashes.
    """

    def test_outOfDescriptors(self) -> None:
        """
        With a 64-descriptor limit and no --max-connections, a burst of 60
        clients exhausts the table: the proxy stays up, does not spin the
        accept loop, and serves new clients once the burst is gone.
        """
        import resource

        def lowLimit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        async def hold(port: int) -> Any:
            try:
                return await asyncio.wait_for(connectProxy(port), 5)
            except (OSError, asyncio.TimeoutError):
                return None

        async def scenario() -> tuple[ProxyProcess, float, bytes]:
            server, uport = await startServer(echoChunks)
            proxy, port = await _startProxy(
                lambda: self.forward(
                    uport, "--max-connections", "0", preexec_fn=lowLimit
                )
            )
            clients = [
                c for c in await asyncio.gather(*(hold(port) for _ in range(60)))
            ]
            await asyncio.sleep(0.3)
            before = cpuSeconds(proxy.pid)
            await asyncio.sleep(1.0)
            spent = cpuSeconds(proxy.pid) - before
            for c in clients:
                if c is not None:
                    c[1].close()
            await asyncio.sleep(0.3)
            got = b""
            for _ in range(20):
                try:
                    r, w = await connectProxy(port)
                    await sendAll(w, b"still here")
                    got = await asyncio.wait_for(readAll(r), 5)
                    w.close()
                except (ConnectionError, OSError):
                    got = b""
                if got:
                    break
                await asyncio.sleep(0.1)
            server.close()
            return proxy, spent, got

        proxy, spent, got = runAsync(scenario(), 45)
        self.assertIsNone(proxy.proc.poll())
        self.assertLess(spent, 0.5)
        self.assertEqual(got, b"still here")


def _ipv6Loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class IPv6Tests(_ProxyTestCase):
    """
    IPv6 on both sides.
    """

    def test_tcp6BothSides(self) -> None:
        """
        --listen tcp6 with a bracketed interface and --connect tcp6:[::1]:PORT
        relay over IPv6 loopback.
        """
        if not _ipv6Loopback():
            raise SkipTest("no IPv6 loopback")

        async def scenario() -> tuple[ProxyProcess, bytes]:
            server = await asyncio.start_server(echoChunks, "::1", 0)
            uport = server.sockets[0].getsockname()[1]
            proxy, port = await _startProxy(
                lambda: self.proxy(
                    [
                        "--listen",
                        "tcp6:0:interface=[::1]",
                        "--connect",
                        f"tcp6:[::1]:{uport}",
                    ]
                )
            )
            r, w = await asyncio.open_connection("::1", port)
            await sendAll(w, b"over six")
            got = await readAll(r)
            w.close()
            server.close()
            return proxy, got

        proxy, got = runAsync(scenario(), 30)
        self.assertEqual(got, b"over six")
        [event] = proxy.waitForConnections(1)
        self.assertTrue(event["client"].startswith("[::1]:"), event["client"])
        self.assertTrue(event["upstream"].startswith("[::1]:"), event["upstream"])


class OptionsTests(SynchronousTestCase):
    """
    Option parsing and endpoint-string helpers, in process.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.exitOnUsageError = False
        options.parseOptions(list(args))
        return options

    def test_defaultsAndConversions(self) -> None:
        """
        Numbers become numbers, --listen is repeatable and gets the default
        backlog, max-connections defaults to auto.
        """
        o = self.parse(
            "--listen",
            "tcp:8989",
            "--listen",
            "unix:/tmp/x.sock:backlog=7",
            "--connect",
            "tcp:127.0.0.1:8080",
            "--pipe-size",
            "256K",
            "--idle-timeout",
            "1.5",
        )
        self.assertEqual(
            o["listen"], ["tcp:8989:backlog=1024", "unix:/tmp/x.sock:backlog=7"]
        )
        self.assertEqual(o["pipe-size"], 256 * 1024)
        self.assertEqual(o["idle-timeout"], 1.5)
        self.assertEqual(o["connect-timeout"], 30.0)
        self.assertEqual(o["max-connections"], "auto")
        self.assertIsNone(o["max-pipes"])
        self.assertEqual(o["engine"], "auto")

    def test_maxConnectionsZeroIsUnlimited(self) -> None:
        """
        --max-connections 0 means no limit (None).
        """
        o = self.parse(
            "--listen", "tcp:1", "--connect", "tcp:h:1", "--max-connections", "0"
        )
        self.assertIsNone(o["max-connections"])

    def test_usageErrorExitsWithOneLine(self) -> None:
        """
        By default a usage error exits with status 64 (the one-line message
        goes to stderr) instead of raising UsageError.
        """
        options = Options()
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(["--listen", "tcp:1"])
        self.assertEqual(caught.exception.code, 64)
        self.assertEqual(
            err.getvalue().count("\n"), 1, f"one line expected: {err.getvalue()!r}"
        )

    def test_withBacklog(self) -> None:
        """
        backlog= is added to tcp/tcp6/unix/ssl strings that lack it, and
        only to those.
        """
        self.assertEqual(withBacklog("tcp:80", 9), "tcp:80:backlog=9")
        self.assertEqual(withBacklog("TCP6:80", 9), "TCP6:80:backlog=9")
        self.assertEqual(withBacklog("tcp:80:backlog=3", 9), "tcp:80:backlog=3")
        self.assertEqual(
            withBacklog("systemd:domain=INET:index=0", 9), "systemd:domain=INET:index=0"
        )
        self.assertEqual(
            withBacklog("unix:/a\\:b:mode=600", 9), "unix:/a\\:b:mode=600:backlog=9"
        )

    def test_clientEndpoints(self) -> None:
        """
        tcp6 with a bracketed literal builds a TCP6ClientEndpoint, tcp with
        an address Twisted's own; a host name (tcp or tcp6, positional or
        host=) a TCPTarget that resolves through the name cache; ports are
        range-checked.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
        from twisted.internet.testing import MemoryReactor

        from splicetx.endpoints import TCPTarget

        reactor = MemoryReactor()
        e6 = clientEndpoint(reactor, "tcp6:[2001:db8::2]:80:timeout=5")
        self.assertIsInstance(e6, TCP6ClientEndpoint)
        self.assertEqual((e6._host, e6._port, e6._timeout), ("2001:db8::2", 80, 5.0))
        e6b = clientEndpoint(reactor, "tcp6:host=example.com:port=443")
        self.assertIsInstance(e6b, TCPTarget)
        fields = (e6b.host, e6b.port, e6b.family)
        self.assertEqual(fields, ("example.com", 443, socket.AF_INET6))
        self.assertIsInstance(clientEndpoint(reactor, "tcp:h:1"), TCPTarget)
        self.assertIsInstance(
            clientEndpoint(reactor, "tcp:10.0.0.2:1"), TCP4ClientEndpoint
        )
        self.assertRaises(ValueError, clientEndpoint, reactor, "tcp6:h:0")
        self.assertRaises(ValueError, clientEndpoint, reactor, "tcp:h:65536")
        self.assertRaises(ValueError, clientEndpoint, reactor, "tcp6:h:1:color=red")

    def test_parseOnlyReactor(self) -> None:
        """
        The stand-in reactor used while parsing endpoint strings verifies as
        an L{IReactorPluggableNameResolver}.
        """
        from twisted.internet.interfaces import IReactorPluggableNameResolver
        from zope.interface.verify import verifyObject

        from splicetx._config.endpoints import _ParseOnlyReactor

        self.assertTrue(
            verifyObject(IReactorPluggableNameResolver, _ParseOnlyReactor())
        )

    def test_normalConnectionsFollowTwistLogLevel(self) -> None:
        """
        Under C{twist --log-level warn} (or above) the service's factories
        skip the C{info} event of normal connections, which C{twist} would
        drop; at the default level, at C{info}, and without C{twist}'s
        options (C{twistd}, a library user) they log them.
        """
        from twisted.application.twist._options import TwistOptions

        cli = ["splice-proxy", "--listen", "tcp:0", "--connect", "tcp:h:1"]
        seen = {}
        for level in (None, "debug", "info", "warn", "error", "critical"):
            twist = TwistOptions()
            twist.parseOptions(([f"--log-level={level}"] if level else []) + cli)
            seen[level] = makeService(twist.subOptions).config.logNormalConnections
        self.assertEqual(
            seen,
            {
                None: True,
                "debug": True,
                "info": True,
                "warn": False,
                "error": False,
                "critical": False,
            },
        )
        self.assertTrue(makeService(self.parse(*cli[1:])).config.logNormalConnections)

    def test_noFastPath(self) -> None:
        """
        --no-fast-path reaches the factories: their fastPath is off; without
        it, on.
        """
        for args, expected in (((), True), (("--no-fast-path",), False)):
            o = self.parse("--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1", *args)
            service = makeService(o)
            self.assertIs(service.config.fastPath, expected)
            forward = service.config.forwards[0]
            factory = service.buildFactory(
                service.upstreamEndpoint(forward), PipePool(), forward
            )
            self.assertIs(factory.fastPath, expected)

    def test_connectionBandwidth(self) -> None:
        """
        --connection-bandwidth reaches the factories in bytes per second;
        without it, no limit.
        """
        for args, expected in (
            ((), None),
            (("--connection-bandwidth", "10MB/s"), 10 << 20),
        ):
            o = self.parse("--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1", *args)
            service = makeService(o)
            forward = service.config.forwards[0]
            factory = service.buildFactory(
                service.upstreamEndpoint(forward), PipePool(), forward
            )
            self.assertEqual(factory.connectionBandwidth, expected)

    def test_makeService(self) -> None:
        """
        makeService carries every option to the service without starting it.
        """
        o = self.parse(
            "--listen",
            "tcp:0",
            "--connect",
            "tcp:h:1",
            "--engine",
            "copy",
            "--drain-timeout",
            "3",
            "--max-pipes",
            "8",
        )
        service = makeService(o)
        config = service.config
        self.assertEqual(config.listen, ["tcp:0:backlog=1024"])
        self.assertEqual(config.listenGiven, ["tcp:0"])
        self.assertEqual(
            (config.engine, config.drainTimeout, config.maxPipes),
            ("copy", 3.0, 8),
        )
        self.assertFalse(service.running)
