# -*- test-case-name: tests.test_lifecycle -*-
"""
The life of a connection through C{twist splice-proxy}, as a real
subprocess: the half-close timeout, a drain that exits once the transfers
in flight are done, TCP keepalive on both sockets and trusted PROXY
protocol sources.  Every child is killed in cleanup; every scenario is
bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from splicetx import CLOSED, DONE
from splicetx._relay.tcpoptions import TCPKeepalive, delivered, setKeepalive
from splicetx.testing import ReactorTestMixin, makeReactorTests

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    closedWithin,
    connectProxy,
    readAll,
    runAsync,
    startServer,
)
from ._harness import makePair
from .test_proxy import EchoFactory, connectClient, proxyTo, stopAll


class _Case(SynchronousTestCase):
    """
    Starts proxies that are killed in cleanup.
    """

    def forward(self, upstreamPort: int, *extra: str) -> ProxyProcess:
        p = ProxyProcess(
            [
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--connect",
                f"tcp:{LOOPBACK}:{upstreamPort}",
                *extra,
            ]
        )
        self.addCleanup(p.kill)
        return p


async def _start(make: Any) -> tuple[ProxyProcess, int]:
    proxy = make()
    port = await asyncio.to_thread(proxy.listeningPort)
    return proxy, port


class HalfCloseTimeoutTests(_Case):
    """
    --half-close-timeout: a half-closed connection is closed once the other
    direction has been silent that long, never while it still moves.
    """

    def test_silentUpstreamAfterClientEOF(self) -> None:
        """
        A client that sent its request and its FIN to an upstream that never
        answers is cut after --half-close-timeout (with no idle timeout).
        """
        held: list[asyncio.StreamWriter] = []

        async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await readAll(r)
            held.append(w)

        async def scenario() -> tuple[ProxyProcess, bool]:
            server, uport = await startServer(mute)
            proxy, port = await _start(
                lambda: self.forward(
                    uport, "--half-close-timeout", "0.5", "--idle-timeout", "0"
                )
            )
            r, w = await connectProxy(port)
            w.write(b"request")
            w.write_eof()
            closed = await closedWithin(r, 10)
            w.close()
            server.close()
            return proxy, closed

        proxy, closed = runAsync(scenario(), 30)
        self.assertTrue(closed)
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "half-close timeout")
        self.assertIn("the upstream sent nothing", event["detail"])

    def test_clientThatNeverClosesGetsEverything(self) -> None:
        """
        A client that received the whole reply but never closes is closed
        cleanly after --half-close-timeout, with every byte delivered.
        """
        reply = b"r" * 200_000

        held: list[asyncio.StreamWriter] = []

        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(3)
            w.write(reply)
            w.write_eof()
            await w.drain()
            held.append(w)

        async def scenario() -> tuple[ProxyProcess, bytes, list[Any]]:
            server, uport = await startServer(answer)
            proxy, port = await _start(
                lambda: self.forward(uport, "--half-close-timeout", "0.5")
            )
            r, w = await connectProxy(port)
            w.write(b"get")
            got = await asyncio.wait_for(readAll(r), 10)
            # The client never closes: the proxy must, and logs it then.
            events = await asyncio.to_thread(proxy.waitForConnections, 1, 10)
            w.close()
            server.close()
            return proxy, got, events

        proxy, got, [event] = runAsync(scenario(), 30)
        self.assertEqual(got, reply)
        self.assertEqual(event["reason"], "half-close timeout")
        self.assertEqual(event["bytesUpstreamToClient"], len(reply))

    def test_slowHalfClosedStreamIsNotCut(self) -> None:
        """
        A half-closed connection whose other direction keeps moving (a byte
        every 0.1 s, for several times the timeout) is never cut.
        """
        pieces = 25

        async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await readAll(r)
            for i in range(pieces):
                w.write(b"%02d" % i)
                await w.drain()
                await asyncio.sleep(0.1)
            w.write_eof()
            await w.drain()
            w.close()

        async def scenario() -> tuple[ProxyProcess, bytes]:
            server, uport = await startServer(trickle)
            proxy, port = await _start(
                lambda: self.forward(uport, "--half-close-timeout", "0.6")
            )
            r, w = await connectProxy(port)
            w.write(b"request")
            w.write_eof()
            got = await asyncio.wait_for(readAll(r), 20)
            w.close()
            server.close()
            return proxy, got

        proxy, got = runAsync(scenario(), 40)
        self.assertEqual(got, b"".join(b"%02d" % i for i in range(pieces)))
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "done")


class DrainTests(_Case):
    """
    SIGTERM with a transfer in flight and a client that never closes: the
    transfer completes and the process exits soon after, well before
    --drain-timeout.
    """

    def test_drainExitsAfterTransferEvenIfClientNeverCloses(self) -> None:
        """
        The paced reply in flight at SIGTERM arrives whole; the connection
        is closed once the client has it all (the client never closes, and
        no half-close or idle timeout is set), and the process exits with
        status 0 long before the 60 s drain timeout.
        """
        chunk = b"d" * 65536
        chunks = 12
        started = asyncio.Event()

        async def paced(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(3)
            for i in range(chunks):
                w.write(chunk)
                await w.drain()
                if i == 0:
                    started.set()
                await asyncio.sleep(0.05)
            w.write_eof()
            await w.drain()

        async def scenario() -> tuple[ProxyProcess, bytes, int]:
            server, uport = await startServer(paced)
            proxy, port = await _start(
                lambda: self.forward(
                    uport,
                    "--drain-timeout",
                    "60",
                    "--half-close-timeout",
                    "0",
                    "--idle-timeout",
                    "0",
                )
            )
            r, w = await connectProxy(port)
            w.write(b"get")
            await asyncio.wait_for(started.wait(), 10)
            proxy.signal(signal.SIGTERM)
            got = await asyncio.wait_for(readAll(r), 20)
            status = await asyncio.to_thread(proxy.wait, 15)
            w.close()
            server.close()
            return proxy, got, status

        proxy, got, status = runAsync(scenario(), 45)
        self.assertEqual(got, chunk * chunks)
        self.assertEqual(status, 0)
        [event] = proxy.connections()
        self.assertEqual(event["reason"], "closed")
        self.assertIn("draining", event["detail"])
        drained = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "drained")
        self.assertEqual(drained["aborted"], 0)


def _keepaliveTimers(localPort: int, remotePort: int) -> list[str]:
    """
    The C{ss -o} lines of the established sockets whose local port is
    C{localPort} or whose remote port is C{remotePort}.
    """
    out = subprocess.run(
        [
            "ss",
            "-tnoH",
            "state",
            "established",
            f"( sport = :{localPort} or dport = :{remotePort} )",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


class KeepaliveTests(_Case):
    """
    --tcp-keepalive: both sockets of a connection have a keepalive timer.
    """

    def setUp(self) -> None:
        if shutil.which("ss") is None:
            raise SkipTest("needs ss (iproute2)")

    def scenario(self, *extra: str, timers: int = 0) -> list[str]:
        """
        Relay one connection through C{twist splice-proxy} with C{extra},
        a connect timeout of 1 s (so the fast connections are checked every
        0.25 s: the upstream socket's keepalive goes on at the first check),
        and return C{ss}'s lines for the proxy's two sockets once both are up
        and C{timers} of them have a keepalive timer (or after 5 s).
        """

        async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await readAll(r)
            w.close()

        extra = ("--connect-timeout", "1", *extra)

        async def run() -> list[str]:
            server, uport = await startServer(hold)
            proxy, port = await _start(lambda: self.forward(uport, *extra))
            r, w = await connectProxy(port)
            w.write(b"x")
            await w.drain()
            # The proxy's two sockets: the accepted client socket (local
            # port: the proxy's) and its upstream socket (remote port: the
            # upstream's), once both are up.
            lines: list[str] = []
            for _ in range(100):
                lines = await asyncio.to_thread(_keepaliveTimers, port, uport)
                withTimer = sum("timer:(keepalive" in line for line in lines)
                if len(lines) >= 2 and withTimer >= timers:
                    break
                await asyncio.sleep(0.05)
            if not timers:
                # Past two checks of the connection: nothing went on later.
                await asyncio.sleep(0.6)
                lines = await asyncio.to_thread(_keepaliveTimers, port, uport)
            w.close()
            server.close()
            return lines

        return list(runAsync(run(), 30))

    def test_onByDefault(self) -> None:
        """
        By default the proxy's two sockets (the accepted client socket and
        the upstream socket) carry a keepalive timer (C{ss -o}): the client
        socket from the accept, the upstream socket from the connection's
        first check.
        """
        lines = self.scenario(timers=2)
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(sum("timer:(keepalive" in line for line in lines), 2, lines)

    def test_off(self) -> None:
        """
        --tcp-keepalive 0 leaves keepalive off on both sockets.
        """
        lines = self.scenario("--tcp-keepalive", "0")
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(sum("keepalive" in line for line in lines), 0, lines)


class KeepaliveSocketTests(SynchronousTestCase):
    """
    L{setKeepalive} and L{delivered} on real loopback sockets.
    """

    def pair(self, family: int = socket.AF_INET) -> tuple[socket.socket, ...]:
        if family == socket.AF_UNIX:
            a, b = socket.socketpair()
        else:
            listener = socket.socket()
            self.addCleanup(listener.close)
            listener.bind((LOOPBACK, 0))
            listener.listen(1)
            a = socket.create_connection(listener.getsockname())
            b, _ = listener.accept()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def test_tcpSocketGetsAllFour(self) -> None:
        """
        On a TCP socket the four options are set as given.
        """
        a, _ = self.pair()

        class T:
            socket = a

        self.assertTrue(setKeepalive(T(), TCPKeepalive(7, 3, 4)))
        self.assertEqual(a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        self.assertEqual(
            (
                a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                a.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ),
            (7, 3, 4),
        )

    def test_unixSocketLeftAlone(self) -> None:
        """
        A UNIX socket is skipped (keepalive means nothing there).
        """
        a, _ = self.pair(socket.AF_UNIX)

        class T:
            socket = a

        self.assertFalse(setKeepalive(T(), TCPKeepalive(7, 3, 4)))
        self.assertEqual(a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)

    def test_deliveredOnceAcknowledged(self) -> None:
        """
        L{delivered} is true once the peer acknowledged every byte, false
        while a transport still buffers some.
        """
        a, b = self.pair()
        a.sendall(b"x" * 1000)

        class T:
            socket = a
            dataBuffer = b""
            offset = 0
            _tempDataLen = 0

        for _ in range(200):
            if delivered(T()):
                break
            time.sleep(0.01)
        self.assertTrue(delivered(T()))
        T.dataBuffer = b"pending"
        self.assertFalse(delivered(T()))


_HEADER = b"PROXY TCP4 10.1.2.3 127.0.0.1 4444 80\r\n"


class TrustedProxySourceTests(_Case):
    """
    --proxy-protocol-from: a PROXY header is believed only from the named
    sources.
    """

    def scenario(self, *extra: str) -> tuple[ProxyProcess, bytes]:
        async def echoOnce(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await readAll(r)
            w.write(data)
            w.write_eof()
            await w.drain()
            w.close()

        async def run() -> tuple[ProxyProcess, bytes]:
            server, uport = await startServer(echoOnce)
            proxy, port = await _start(
                lambda: self.forward(uport, "--accept-proxy-protocol", *extra)
            )
            try:
                r, w = await connectProxy(port)
            except (ConnectionError, OSError):
                # An untrusted balancer is reset, which may reach the client
                # during its connect (the lean path refuses at the accept).
                server.close()
                return proxy, b""
            try:
                # A refused client may be closed before its end of stream
                # goes out (the lean path refuses it at the accept).
                w.write(_HEADER + b"hello")
                w.write_eof()
                got = await asyncio.wait_for(readAll(r), 10)
            except (ConnectionError, OSError):
                got = b""
            w.close()
            server.close()
            return proxy, got

        result: tuple[ProxyProcess, bytes] = runAsync(run(), 30)
        return result

    def test_trustedSource(self) -> None:
        """
        From a listed source the header is believed: the client is the
        header's address and its bytes are relayed.
        """
        proxy, got = self.scenario("--proxy-protocol-from", "127.0.0.0/8")
        self.assertEqual(got, b"hello")
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["client"], "10.1.2.3:4444")
        self.assertEqual(event["reason"], "done")

    def test_untrustedSource(self) -> None:
        """
        From any other source the connection is refused and logged, so a
        claimed address cannot slip past --deny.
        """
        proxy, got = self.scenario(
            "--proxy-protocol-from", "10.0.0.0/8", "--deny", "127.0.0.1"
        )
        self.assertEqual(got, b"")
        [event] = proxy.waitForConnections(1)
        self.assertEqual(event["reason"], "rejected")
        self.assertIn("PROXY protocol not trusted", event["detail"])
        self.assertIn("not matched by any allow rule", event["detail"])


class EndedDirectionsMixin(ReactorTestMixin):
    """
    L{Relay.endedDirections} and L{Relay.halfClosed} follow the engine's
    state on real sockets.
    """

    @inlineCallbacks
    def _halfClose(self, reactor: Any, engine: str) -> Any:
        pair = yield makePair(reactor, engine=engine)
        before = (pair.relay.endedDirections, pair.relay.halfClosed)
        yield pair.client.send(b"up")
        yield pair.server.eof
        middle = (pair.relay.endedDirections, pair.relay.halfClosed)
        yield pair.server.send(b"down")
        result = yield pair.result
        yield pair.allClosed()
        return before, middle, result, pair.relay.halfClosed

    def check(self, engine: str) -> None:
        before, middle, result, after = self.runScenario(
            lambda r: self._halfClose(r, engine)
        )
        self.assertEqual(before, ((False, False), False))
        self.assertEqual(middle, ((True, False), True))
        self.assertEqual(result.reason, DONE)
        self.assertFalse(after)

    def test_splice(self) -> None:
        """The splice engine reports the ended direction, then both."""
        self.check("splice")

    def test_copy(self) -> None:
        """The copy engine reports the ended direction, then both."""
        self.check("copy")


@implementer(IHalfCloseableProtocol)
class _AnswerAndFinish(protocol.Protocol):
    """
    An upstream that sends a reply and its FIN as soon as it is connected,
    then keeps its side open.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"the whole reply")
        self.transport.loseWriteConnection()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class ProxyLifecycleMixin(ReactorTestMixin):
    """
    The factory's keepalive and drain on real loopback connections.
    """

    scenarioTimeout = 20.0

    def test_keepaliveOnBothSockets(self) -> None:
        """
        With C{tcpKeepalive}, the client's and the upstream's sockets both
        have C{SO_KEEPALIVE} and the given idle, interval and count.
        """
        seen, inherited = self.runScenario(lambda r: self.keepalive(r, False))
        self.assertEqual(seen, [(1, 7, 3, 4), (1, 7, 3, 4)])
        self.assertFalse(inherited)

    def test_keepaliveInheritedFromListeningPort(self) -> None:
        """
        A port given to C{addListeningPort} carries the settings itself, and
        the client sockets it accepts inherit them (no setsockopt each).
        """
        seen, inherited = self.runScenario(lambda r: self.keepalive(r, True))
        self.assertEqual(seen, [(1, 7, 3, 4), (1, 7, 3, 4)])
        self.assertTrue(inherited)

    def keepalive(self, reactor: Any, viaPort: bool) -> Any:
        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            # An idle timeout of 0.4 s: the connection is checked every
            # 0.1 s, and the upstream socket gets its keepalive at the first
            # check (a connection that ends before never needs it).
            factory = proxyTo(
                reactor,
                up.getHost().port,
                tcpKeepalive=TCPKeepalive(7, 3, 4),
                idleTimeout=0.4,
            )
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            if viaPort:
                factory.addListeningPort(port)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            echoed: Deferred[bytes] = Deferred()
            client.onData = lambda data: echoed.called or echoed.callback(data)
            client.transport.write(b"x")
            yield echoed
            [proto] = factory.liveProtocols
            yield deferLater(reactor, 0.25, lambda: None)
            seen = [
                _keepaliveOf(proto.transport.socket),
                _keepaliveOf(proto.upstream.transport.socket),
            ]
            client.transport.loseConnection()
            yield done
            yield stopAll([up, port])
            return seen, port in factory._keepalivePorts

        return scenario(reactor)

    def test_drainClosesFinishedConnection(self) -> None:
        """
        Draining, a connection whose upstream finished and whose client has
        everything is closed at once (the client never closes), so the drain
        ends with nothing aborted.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            upFactory = protocol.Factory.forProtocol(_AnswerAndFinish)
            upFactory.noisy = False
            up = reactor.listenTCP(0, upFactory, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            factory.addListeningPort(port)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            client.keep = True
            yield client.eof
            aborted = yield factory.drain(30)
            result = yield done
            # The proxy closed its socket; the client, which had the FIN
            # already, closes its own.
            if not client.lost.called:
                client.transport.loseConnection()
            yield client.lost
            yield stopAll([up])
            return aborted, result, b"".join(client.chunks)

        aborted, result, got = self.runScenario(scenario)
        self.assertEqual(aborted, 0)
        self.assertEqual(got, b"the whole reply")
        self.assertEqual(result.reason, CLOSED)
        self.assertIn("draining", result.detail)

    def test_drainServesTheBacklog(self) -> None:
        """
        A client the kernel had already connected (in the listen queue, not
        accepted yet) when the drain starts is accepted and served, not
        reset by the closing port.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            factory.addListeningPort(port)
            # Keep the reactor from accepting: the client waits in the queue.
            port.stopReading()
            client = connectClient(reactor, port)
            client.keep = True
            yield client.made
            client.send(b"queued")
            draining = factory.drain(10)
            yield client.lost
            aborted = yield draining
            yield stopAll([up])
            return aborted, b"".join(client.chunks), factory.results

        aborted, got, results = self.runScenario(scenario)
        self.assertEqual(aborted, 0)
        self.assertEqual(got, b"queued")
        self.assertEqual([r.reason for r in results], [DONE])


def _keepaliveOf(sock: socket.socket) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


globals().update(makeReactorTests(EndedDirectionsMixin))
globals().update(makeReactorTests(ProxyLifecycleMixin))
