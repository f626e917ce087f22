# -*- test-case-name: tests.test_fastforward -*-
"""
The fast path of a plain forward (L{splicetx._fastforward}) and the general
path it stands in for, side by side: the same scenarios over real loopback
sockets on every reactor, once with the factory's C{fastPath} on and once
off, and the same results, log records and ends expected of both.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.address import IPv6Address
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx import DONE, RESET, AccessControl
from splicetx._ops.status import connectionStatus
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._pool.sni import SNIRouter
from splicetx._proxy.fastconn import FastConnection
from splicetx._proxy.fastpath import fastPathRefusal
from splicetx._proxy.poolproxy import PoolProxyFactory
from splicetx._proxy.proxyheader import LOCAL, buildV2Header
from splicetx._relay.pipes import PipePool
from splicetx._relay.socketloop import loopFor
from splicetx.proxy import (
    HALF_CLOSE_TIMEOUT,
    IDLE_TIMEOUT,
    REJECTED,
    UPSTREAM_FAILED,
    SpliceProxyFactory,
    SpliceProxyProtocol,
)
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from ._cli_support import blackholePort
from ._cores import makeCoreTests
from .test_proxy import (
    LOOPBACK,
    EchoFactory,
    capturedEvents,
    closedByProxy,
    connectClient,
    stopAll,
)
from .test_sni import pythonHello


@implementer(IHalfCloseableProtocol)
class Silent(protocol.Protocol):
    """
    Reads everything and never answers nor closes, not even after the
    client's end of stream (an upstream that hangs after the request).
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass


class ResetAfterFirstBytes(protocol.Protocol):
    """
    Resets the connection as soon as the first bytes arrive.
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.abortConnection()


class ReplyAndClose(protocol.Protocol):
    """
    Sends a reply at once and closes (an upstream that has finished).
    """

    def connectionMade(self) -> None:
        self.transport.write(b"bye\n")
        self.transport.loseConnection()


def serverFactory(kind: type) -> protocol.Factory:
    f = EchoFactory()
    f.protocol = kind
    return f


def freePort() -> int:
    """
    A loopback port nothing listens on (bound, then closed).
    """
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    number: int = s.getsockname()[1]
    s.close()
    return number


def listeningProxy(reactor: Any, upstream: Any, **kwargs: Any) -> Any:
    """
    A factory forwarding to C{upstream} (a port number on the loopback, a
    pool, or an SNI router of pools), listening on the loopback, its port
    given to C{addListeningPort} (where the fast path attaches).

    @return: C{(factory, port)}.
    """
    if isinstance(upstream, SNIRouter):
        factory = PoolProxyFactory(None, upstream, reactor=reactor, **kwargs)
    elif isinstance(upstream, UpstreamPool):
        factory = PoolProxyFactory(upstream, reactor=reactor, **kwargs)
    else:
        factory = SpliceProxyFactory(
            TCP4ClientEndpoint(reactor, LOOPBACK, upstream), reactor=reactor, **kwargs
        )
    port = reactor.listenTCP(0, factory, interface=LOOPBACK)
    factory.addListeningPort(port)
    return factory, port


class _Counting:
    """
    Counts the connections the gate saw start (both paths report there).
    """

    def __init__(self, gate: Any) -> None:
        self.startedCount = 0
        original = gate.connectionStarted

        def started(conn: Any) -> None:
            self.startedCount += 1
            self.kinds.append(type(conn))
            original(conn)

        self.kinds: list[type] = []
        gate.connectionStarted = started


class PathHelpers(ReactorTestMixin):
    """
    What the scenarios of both paths use; C{fast} says which path the
    factory is set to take.
    """

    fast = True
    scenarioTimeout = 20.0

    def proxy(self, reactor: Any, upstream: Any, **kwargs: Any) -> Any:
        """
        A L{listeningProxy} with C{fastPath} as this class says, counting
        its connections' kinds.
        """
        factory, port = listeningProxy(reactor, upstream, fastPath=self.fast, **kwargs)
        factory.counting = _Counting(factory._gate)
        return factory, port

    def assertPath(self, factory: Any) -> None:
        """
        The connections took the path this class is about.
        """
        kinds = set(factory.counting.kinds)
        if self.fast:
            self.assertEqual(kinds, {FastConnection})
        else:
            self.assertNotIn(FastConnection, kinds)

    def events(self) -> list[dict[str, Any]]:
        events, stop = capturedEvents()
        self.addCleanup(stop)
        return events

    def waitEnded(self, reactor: Any, factory: Any, count: int = 1) -> Any:
        return _waitEnded(reactor, factory, count)

    @inlineCallbacks
    def closedClient(self, reactor: Any, factory: Any, port: Any) -> Any:
        """
        A client connects and the proxy closes it; wait for its record.
        """
        client = connectClient(reactor, port)
        yield client.made
        yield closedByProxy(client)
        yield self.waitEnded(reactor, factory)


class PathScenarios(PathHelpers):
    """
    Scenarios that must end the same way on both paths.
    """

    def test_relaysBothWays(self) -> None:
        """
        300 kB go up and come back intact; one record says done, with the
        client, the upstream's address, the splice engine and both counts.
        """
        data = payload(300_000, seed=5)
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port)
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(data)
            yield client.lost
            yield self.waitEnded(reactor, factory)
            upPort = up.getHost().port
            yield stopAll([up, port])
            return client.digest(), upPort, factory

        received, upPort, factory = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertPath(factory)
        [event] = events
        self.assertEqual(
            (
                event["reason"],
                event["engine"],
                event["upstream"],
                event["bytesClientToUpstream"],
                event["bytesUpstreamToClient"],
            ),
            (DONE, "splice", f"{LOOPBACK}:{upPort}", len(data), len(data)),
        )
        self.assertTrue(event["client"].startswith(f"{LOOPBACK}:"))
        self.assertEqual(factory.liveProtocols, set())

    def test_refusedUpstream(self) -> None:
        """
        An upstream that refuses closes the client; the record says upstream
        failed, naming the address and the refusal.
        """
        events = self.events()
        dead = freePort()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port = self.proxy(reactor, dead)
            yield self.closedClient(reactor, factory, port)
            yield stopAll([port])
            return factory

        factory = self.runScenario(scenario)
        self.assertPath(factory)
        [event] = events
        self.assertEqual((event["reason"], event["engine"]), (UPSTREAM_FAILED, "none"))
        self.assertIn(f"cannot connect to {LOOPBACK}:{dead}", event["detail"])
        self.assertIn("refused", event["detail"].lower())

    def test_connectTimeout(self) -> None:
        """
        An upstream that never answers the SYN closes the client after the
        connect timeout, recorded as timed out.
        """
        events = self.events()
        hole, fillers = blackholePort()
        self.addCleanup(hole.close)
        for f in fillers:
            self.addCleanup(f.close)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port = self.proxy(
                reactor, hole.getsockname()[1], connectTimeout=0.3
            )
            start = reactor.seconds()
            yield self.closedClient(reactor, factory, port)
            yield stopAll([port])
            return factory, reactor.seconds() - start

        factory, took = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertGreaterEqual(took, 0.3)
        [event] = events
        self.assertEqual(event["reason"], UPSTREAM_FAILED)
        self.assertIn("timed out after 0.3 s", event["detail"])

    def test_upstreamResetMidTransfer(self) -> None:
        """
        An upstream that resets once bytes flow ends the connection as a
        reset, and the client's connection goes too.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            upFactory = serverFactory(ResetAfterFirstBytes)
            up = reactor.listenTCP(0, upFactory, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"x" * 1000)
            yield client.lost
            yield self.waitEnded(reactor, factory)
            yield stopAll([up, port])
            return factory

        factory = self.runScenario(scenario)
        self.assertPath(factory)
        [event] = events
        self.assertIn(event["reason"], (RESET, DONE))
        self.assertEqual(event["engine"], "splice")

    def test_idleTimeout(self) -> None:
        """
        A connection on which nothing moves is closed after the idle
        timeout.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port, idleTimeout=0.3)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"ping")
            yield client.lost
            yield self.waitEnded(reactor, factory)
            yield stopAll([up, port])
            return factory, echo.received

        factory, received = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(b"".join(received), b"ping")
        [event] = events
        self.assertEqual(event["reason"], IDLE_TIMEOUT)
        self.assertGreaterEqual(event["duration"], 0.3)
        self.assertEqual(event["bytesUpstreamToClient"], 4)

    def test_halfCloseTimeout(self) -> None:
        """
        The client finished and the upstream sends nothing more: the
        connection is reset after the half-close timeout.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            silent = serverFactory(Silent)
            up = reactor.listenTCP(0, silent, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port, halfCloseTimeout=0.3)
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"request")
            yield client.lost
            yield self.waitEnded(reactor, factory)
            yield stopAll([up, port])
            return factory

        factory = self.runScenario(scenario)
        self.assertPath(factory)
        [event] = events
        self.assertEqual(event["reason"], HALF_CLOSE_TIMEOUT)
        self.assertIn("the upstream sent nothing", event["detail"])

    def test_drainClosesFinishedAndAbortsRest(self) -> None:
        """
        A drain closes at once a connection whose upstream finished and whose
        client has everything, and aborts at its timeout one still busy.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            done = reactor.listenTCP(
                0, serverFactory(ReplyAndClose), interface=LOOPBACK
            )
            busy = reactor.listenTCP(0, serverFactory(Silent), interface=LOOPBACK)
            finished, port1 = self.proxy(reactor, done.getHost().port)
            waiting, port2 = self.proxy(reactor, busy.getHost().port)
            a = connectClient(reactor, port1, "finished")
            b = connectClient(reactor, port2, "busy")
            yield gatherResults([a.made, b.made])
            b.transport.write(b"x")
            yield a.eof
            while not (finished.liveProtocols and waiting.liveProtocols):
                yield deferLater(reactor, 0.01, lambda: None)
            counts = yield gatherResults([finished.drain(5.0), waiting.drain(0.3)])
            for c in (a, b):
                if not c.lost.called:
                    c.transport.loseConnection()
            yield gatherResults([a.lost, b.lost])
            yield stopAll([done, busy])
            return counts, finished, waiting

        counts, finished, waiting = self.runScenario(scenario)
        self.assertPath(finished)
        self.assertPath(waiting)
        self.assertEqual(counts, [0, 1])
        reasons = sorted(e["reason"] for e in events)
        self.assertEqual(reasons, ["cancelled", "closed"])

    def test_maxConnections(self) -> None:
        """
        With the limit reached, a second client's bytes reach the upstream
        only after the first connection ended.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port, maxConnections=1)
            first = connectClient(reactor, port, "first")
            yield first.made
            first.transport.write(b"1")
            while not echo.received:
                yield deferLater(reactor, 0.01, lambda: None)
            second = connectClient(reactor, port, "second")
            yield second.made
            second.transport.write(b"2")
            yield deferLater(reactor, 0.3, lambda: None)
            before = list(echo.received)
            first.transport.loseConnection()
            yield first.lost
            while len(echo.received) < 2:
                yield deferLater(reactor, 0.01, lambda: None)
            second.transport.loseConnection()
            yield second.lost
            yield self.waitEnded(reactor, factory, 2)
            yield stopAll([up, port])
            return before, list(echo.received), factory

        before, after, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(before, [b"1"])
        self.assertEqual(after, [b"1", b"2"])

    def deniedEnd(self, sendFirst: bytes) -> list[str]:
        """
        A client the rules deny connects (and sends C{sendFirst} before the
        proxy has even accepted it); how did its connection end, as its own
        socket saw it: C{"reset"} or C{"eof"}?  Also the record's reason.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = self.proxy(
                reactor, up.getHost().port, acl=AccessControl(deny=["127.0.0.1"])
            )
            # Connected by the kernel's backlog, before the reactor accepts.
            client = socket.create_connection((LOOPBACK, port.getHost().port), 10)
            self.addCleanup(client.close)
            client.sendall(sendFirst)
            yield self.waitEnded(reactor, factory)
            yield stopAll([up, port])
            try:
                end = "eof" if client.recv(100) == b"" else "data"
            except ConnectionResetError:
                end = "reset"
            return factory, end, echo.built

        factory, end, built = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(built, 0)
        return [end, *(f"{e['reason']}: {e['detail']}" for e in events)]

    def test_deniedAfterSendingIsReset(self) -> None:
        """
        A denied client that already sent bytes gets a reset before any
        upstream connection, recorded as rejected with the rule, on both
        paths.
        """
        self.assertEqual(
            self.deniedEnd(b"GET / HTTP/1.0\r\n\r\n"),
            ["reset", f"{REJECTED}: 127.0.0.1 denied by rule 127.0.0.1"],
        )

    def test_deniedSilentIsReset(self) -> None:
        """
        A denied client that sent nothing gets a reset too: one answer to a
        denied client, whatever it did first.
        """
        self.assertEqual(
            self.deniedEnd(b""),
            ["reset", f"{REJECTED}: 127.0.0.1 denied by rule 127.0.0.1"],
        )

    def test_poolFailsOver(self) -> None:
        """
        Through a pool whose first member refuses, every client reaches the
        live member; the record names it and the pool.
        """
        events = self.events()
        dead = freePort()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            live = up.getHost().port
            members = [
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, p), clock=reactor)
                for p in (dead, live)
            ]
            pool = UpstreamPool(members, name="p", reactor=reactor)
            factory, port = self.proxy(reactor, pool)
            digests = []
            for i in range(3):
                client = connectClient(reactor, port)
                yield client.made
                yield client.send(b"hello %d" % i)
                yield client.lost
                digests.append(client.digest())
            yield self.waitEnded(reactor, factory, 3)
            yield stopAll([up, port])
            return factory, digests, live, members

        factory, digests, live, members = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(digests, [digest(b"hello %d" % i) for i in range(3)])
        self.assertEqual([e["reason"] for e in events], [DONE] * 3)
        self.assertEqual({e["upstream"] for e in events}, {f"{LOOPBACK}:{live}"})
        self.assertEqual({e["pool"] for e in events}, {"p"})
        self.assertEqual((members[0].connections, members[1].connections), (0, 3))
        self.assertGreaterEqual(members[0].failures["refused"], 1)
        self.assertEqual((members[0].active, members[1].active), (0, 0))

    def test_poolAllRefused(self) -> None:
        """
        When no member of a pool can be reached the client is closed and the
        record says every upstream failed.
        """
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            members = [
                Upstream(
                    TCP4ClientEndpoint(reactor, LOOPBACK, freePort()), clock=reactor
                )
                for _ in range(2)
            ]
            pool = UpstreamPool(members, name="p", reactor=reactor)
            factory, port = self.proxy(reactor, pool)
            yield self.closedClient(reactor, factory, port)
            yield stopAll([port])
            return factory

        factory = self.runScenario(scenario)
        self.assertPath(factory)
        [event] = events
        self.assertEqual(event["reason"], UPSTREAM_FAILED)
        self.assertIn("every upstream failed in pool p", event["detail"])

    def test_statusRowWhileRelaying(self) -> None:
        """
        The status page's row of a relaying connection has its state, engine
        and live byte counts.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = self.proxy(reactor, up.getHost().port)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"12345")
            while client.received < 5:
                yield deferLater(reactor, 0.01, lambda: None)
            [conn] = factory.liveProtocols
            row = connectionStatus(conn, factory, reactor.seconds())
            client.transport.loseConnection()
            yield client.lost
            yield self.waitEnded(reactor, factory)
            upPort = up.getHost().port
            yield stopAll([up, port])
            return factory, row, upPort

        factory, row, upPort = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(
            (row["state"], row["engine"], row["upstream"]),
            ("relaying", "splice", f"{LOOPBACK}:{upPort}"),
        )
        self.assertEqual(
            (row["bytesClientToUpstream"], row["bytesUpstreamToClient"]), (5, 5)
        )
        self.assertTrue(row["client"].startswith(f"{LOOPBACK}:"))


def _waitEnded(reactor: Any, factory: Any, count: int) -> Any:
    @inlineCallbacks
    def wait() -> Any:
        while factory.liveProtocols or factory.counting.startedCount < count:
            yield deferLater(reactor, 0.01, lambda: None)

    return wait()


class FastPathScenarios(PathScenarios):
    fast = True


class GeneralPathScenarios(PathScenarios):
    fast = False


globals().update(makeCoreTests(FastPathScenarios))
globals().update(makeReactorTests(GeneralPathScenarios))


class RecordingMetrics:
    """
    Records the refusals it is told of (the other metrics are ignored).
    """

    def __init__(self) -> None:
        self.refused: list[str] = []

    def connectionOpened(self, forward: str = "default") -> None:
        pass

    def connectionClosed(self, forward: str = "default") -> None:
        pass

    def connectionRefused(self, reason: str, forward: str = "default") -> None:
        self.refused.append(reason)

    def connectFailed(self, failure: Any, forward: str = "default") -> str:
        return "error"

    def relayFinished(self, result: Any, forward: str = "default") -> None:
        pass


def _v1(source: str = "192.0.2.7", port: int = 5000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 80\r\n".encode()


class PreambleScenarios(PathHelpers):
    """
    A PROXY header (v1, v2; good, bad, slow, from an untrusted peer) and a
    TLS ClientHello routed by its server name, on both paths: the same
    records, refusals, metrics and bytes upstream.
    """

    @inlineCallbacks
    def exchange(
        self, reactor: Any, upstream: Any, chunks: list[bytes], **kw: Any
    ) -> Any:
        """
        Through a proxy to C{upstream} (an echo port, or a router of pools),
        send C{chunks} one reactor turn apart, half-close, and collect the
        echo until the proxy closes.

        @return: C{(echoed, factory)}.
        """
        factory, port = self.proxy(reactor, upstream, **kw)
        client = connectClient(reactor, port)
        client.keep = True
        try:
            yield client.made
        except ConnectError:
            # A refusal by reset (an untrusted balancer) may reach the client
            # while it connects, on the path that refuses at the accept.
            yield self.waitEnded(reactor, factory)
            yield stopAll([port])
            return b"", factory
        for chunk in chunks:
            client.transport.write(chunk)
            yield deferLater(reactor, 0.02, lambda: None)
        if client.eof.called:
            # The proxy closed first.
            client.transport.loseConnection()
        elif not client.lost.called:
            client.sentEOF = True
            client.transport.loseWriteConnection()
        yield client.lost
        yield self.waitEnded(reactor, factory)
        yield stopAll([port])
        return b"".join(client.chunks), factory

    def echoed(self, chunks: list[bytes], body: bytes, **kw: Any) -> Any:
        """
        Run L{exchange} against an echo server.

        @return: C{(echoed, what the server received, factory)}.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            got, factory = yield self.exchange(reactor, up.getHost().port, chunks, **kw)
            yield stopAll([up])
            return got, b"".join(echo.received), factory

        got, received, factory = self.runScenario(scenario)
        self.assertPath(factory)
        return got, received

    def test_proxyV1(self) -> None:
        """
        A PROXY v1 line and the bytes after it in the same segment, then
        more: the upstream gets exactly the bytes after the header; the
        record names the header's source as the client and the balancer as
        its peer.
        """
        events = self.events()
        body = payload(50_000, seed=3)
        got, received = self.echoed(
            [_v1() + body[:100], body[100:]], body, acceptProxyProtocol=True
        )
        self.assertEqual((got, received), (body, body))
        [event] = events
        self.assertEqual(
            (event["reason"], event["client"], event["bytesClientToUpstream"]),
            (DONE, "192.0.2.7:5000", len(body)),
        )
        self.assertTrue(event["peer"].startswith(f"{LOOPBACK}:"))

    def test_proxyV2Split(self) -> None:
        """
        A PROXY v2 header (IPv6 source, a TLV) that arrives in three pieces,
        the last with the first bytes of the stream: the upstream gets the
        stream byte-exact.
        """
        events = self.events()
        header = buildV2Header(
            IPv6Address("TCP", "2001:db8::1", 4000),
            IPv6Address("TCP", "2001:db8::2", 443),
            tlvs=[(0xEE, b"x" * 40)],
        )
        body = b"after the header" * 10
        got, received = self.echoed(
            [header[:5], header[5:30], header[30:] + body],
            body,
            acceptProxyProtocol=True,
        )
        self.assertEqual((got, received), (body, body))
        [event] = events
        self.assertEqual(
            (event["reason"], event["client"]), (DONE, "[2001:db8::1]:4000")
        )

    def test_proxyLocal(self) -> None:
        """
        A v2 LOCAL header (a health check) carries no address: the client is
        the peer, and the record has no C{peer} field.
        """
        events = self.events()
        got, received = self.echoed(
            [buildV2Header(None, None, command=LOCAL) + b"ping"],
            b"ping",
            acceptProxyProtocol=True,
        )
        self.assertEqual((got, received), (b"ping", b"ping"))
        [event] = events
        self.assertTrue(event["client"].startswith(f"{LOOPBACK}:"))
        self.assertNotIn("peer", event)

    def assertRefused(
        self, events: list[Any], metrics: Any, metric: str, detail: str
    ) -> None:
        [event] = events
        self.assertEqual((event["reason"], event["engine"]), (REJECTED, "none"))
        self.assertIn(detail, event["detail"])
        self.assertEqual(metrics.refused, [metric])

    def test_proxyBadHeader(self) -> None:
        """
        A client that sends no PROXY header is refused; nothing reaches the
        upstream.
        """
        events = self.events()
        metrics = RecordingMetrics()
        got, received = self.echoed(
            [b"GET / HTTP/1.0\r\n\r\n"],
            b"",
            acceptProxyProtocol=True,
            metrics=metrics,
        )
        self.assertEqual((got, received), (b"", b""))
        self.assertRefused(
            events, metrics, "proxy_protocol", "missing PROXY protocol header"
        )

    def test_proxyHeaderTimeout(self) -> None:
        """
        A header that does not complete in time is refused with what came.
        """
        events = self.events()
        metrics = RecordingMetrics()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port = self.proxy(
                reactor,
                freePort(),
                acceptProxyProtocol=True,
                proxyProtocolTimeout=0.3,
                metrics=metrics,
            )
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"PROXY TCP4 1")
            yield closedByProxy(client)
            yield self.waitEnded(reactor, factory)
            yield stopAll([port])
            return factory

        self.assertPath(self.runScenario(scenario))
        self.assertRefused(
            events,
            metrics,
            "proxy_protocol_timeout",
            "no complete PROXY protocol header within 0.3 s (got 12 bytes)",
        )

    def test_proxyUntrusted(self) -> None:
        """
        A peer outside C{proxyProtocolFrom} is refused before its header is
        read.
        """
        events = self.events()
        metrics = RecordingMetrics()
        got, received = self.echoed(
            [_v1() + b"data"],
            b"",
            acceptProxyProtocol=True,
            proxyProtocolFrom=["10.0.0.0/8"],
            metrics=metrics,
        )
        self.assertEqual((got, received), (b"", b""))
        self.assertRefused(
            events,
            metrics,
            "proxy_protocol_untrusted",
            "PROXY protocol not trusted from this peer",
        )

    def test_proxySourceDenied(self) -> None:
        """
        The access rules judge the header's source, not the balancer.
        """
        events = self.events()
        metrics = RecordingMetrics()
        got, received = self.echoed(
            [_v1() + b"data"],
            b"",
            acceptProxyProtocol=True,
            acl=AccessControl(deny=["192.0.2.0/24"]),
            metrics=metrics,
        )
        self.assertEqual((got, received), (b"", b""))
        self.assertRefused(events, metrics, "acl", "192.0.2.0/24")

    def test_leftDuringHeader(self) -> None:
        """
        A client that leaves with half a header ends as closed before the
        relay started.
        """
        events = self.events()
        got, received = self.echoed([b"PROXY TCP4"], b"", acceptProxyProtocol=True)
        self.assertEqual((got, received), (b"", b""))
        [event] = events
        self.assertEqual((event["reason"], event["engine"]), ("closed", "none"))
        self.assertIn("connection closed before the relay started", event["detail"])

    def test_statusRowDuringHeader(self) -> None:
        """
        A client still sending its header has a status row: connecting, no
        engine, the peer as the client.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port = self.proxy(reactor, freePort(), acceptProxyProtocol=True)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"PROXY ")
            while not factory.liveProtocols:
                yield deferLater(reactor, 0.01, lambda: None)
            yield deferLater(reactor, 0.05, lambda: None)
            [conn] = factory.liveProtocols
            row = connectionStatus(conn, factory, reactor.seconds())
            client.transport.loseConnection()
            yield client.lost
            yield self.waitEnded(reactor, factory)
            yield stopAll([port])
            return factory, row

        factory, row = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual((row["state"], row["engine"]), ("connecting", None))
        self.assertTrue(row["client"].startswith(f"{LOOPBACK}:"))

    @inlineCallbacks
    def routedPools(self, reactor: Any, names: list[str]) -> Any:
        """
        An echo server and a one-member pool per name.

        @return: C{(servers, pools, ports)} by name.
        """
        servers, pools, ports = {}, {}, []
        for name in names:
            servers[name] = EchoFactory()
            up = reactor.listenTCP(0, servers[name], interface=LOOPBACK)
            ports.append(up)
            ep = TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port)
            pools[name] = UpstreamPool(
                [Upstream(ep, clock=reactor)], name=name, reactor=reactor
            )
        yield deferLater(reactor, 0, lambda: None)
        return servers, pools, ports

    def sni(self, chunks: list[bytes], default: bool = True, **kw: Any) -> Any:
        """
        Send C{chunks} through a proxy that routes C{www.example.com} to
        pool C{www} and (with C{default}) other names to C{other}.

        @return: C{(echoed, received by name)}.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            servers, pools, ports = yield self.routedPools(reactor, ["www", "other"])
            router = SNIRouter(
                {"www.example.com": pools["www"]},
                default=pools["other"] if default else None,
            )
            got, factory = yield self.exchange(reactor, router, chunks, **kw)
            yield stopAll(ports)
            received = {n: b"".join(s.received) for n, s in servers.items()}
            return got, received, factory

        got, received, factory = self.runScenario(scenario)
        self.assertPath(factory)
        return got, received

    def test_sniRouted(self) -> None:
        """
        The ClientHello (in two pieces) routes the client; the upstream gets
        the ClientHello and everything after it, byte-exact, and the record
        names the pool and the server name.
        """
        events = self.events()
        hello = pythonHello("www.example.com")
        stream = hello + b"after the hello"
        got, received = self.sni([hello[:50], hello[50:] + b"after", b" the hello"])
        self.assertEqual(got, stream)
        self.assertEqual(received, {"www": stream, "other": b""})
        [event] = events
        self.assertEqual(
            (event["reason"], event["pool"], event["serverName"]),
            (DONE, "www", "www.example.com"),
        )
        self.assertEqual(event["bytesClientToUpstream"], len(stream))

    def test_sniDefaultAfterProxyHeader(self) -> None:
        """
        A PROXY header, then a ClientHello without a route: the default
        pool, the header's source as the client.
        """
        events = self.events()
        hello = pythonHello("other.org")
        got, received = self.sni([_v1() + hello + b"x"], acceptProxyProtocol=True)
        self.assertEqual(received, {"www": b"", "other": hello + b"x"})
        self.assertEqual(got, hello + b"x")
        [event] = events
        self.assertEqual(
            (event["client"], event["pool"], event["serverName"]),
            ("192.0.2.7:5000", "other", "other.org"),
        )

    def test_sniNoRoute(self) -> None:
        """
        A name without a route and no default pool is refused.
        """
        events = self.events()
        metrics = RecordingMetrics()
        got, received = self.sni([pythonHello("x.org")], default=False, metrics=metrics)
        self.assertEqual((got, received), (b"", {"www": b"", "other": b""}))
        self.assertRefused(
            events, metrics, "sni_no_route", "no route for server name x.org"
        )

    def test_sniBadHello(self) -> None:
        """
        Bytes that are not TLS are refused.
        """
        events = self.events()
        metrics = RecordingMetrics()
        got, received = self.sni([b"GET / HTTP/1.0\r\n\r\n"], metrics=metrics)
        self.assertEqual((got, received), (b"", {"www": b"", "other": b""}))
        self.assertRefused(events, metrics, "sni", "not TLS")

    def test_sniTimeout(self) -> None:
        """
        Part of a ClientHello, and no more in time: refused, with what came.
        """
        events = self.events()
        metrics = RecordingMetrics()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            servers, pools, ports = yield self.routedPools(reactor, ["www"])
            router = SNIRouter({"www.example.com": pools["www"]})
            factory, port = self.proxy(reactor, router, sniTimeout=0.3, metrics=metrics)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(pythonHello("www.example.com")[:20])
            yield client.lost
            yield self.waitEnded(reactor, factory)
            yield stopAll([port, *ports])
            return factory, servers["www"].received

        factory, received = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(received, [])
        self.assertRefused(
            events, metrics, "sni_timeout", "ClientHello timeout: none within 0.3 s"
        )
        self.assertIn("got 20 bytes", events[0]["detail"])


class FastPreambleScenarios(PreambleScenarios):
    fast = True


class GeneralPreambleScenarios(PreambleScenarios):
    fast = False


globals().update(makeReactorTests(FastPreambleScenarios))
globals().update(makeReactorTests(GeneralPreambleScenarios))


class FastPathOnlyMixin(ReactorTestMixin):
    """
    What only the fast path has: who may take it, and its socket loop.
    """

    scenarioTimeout = 20.0

    def test_whoTakesIt(self) -> None:
        """
        A plain factory on a TCP port takes the fast path, and so does one
        that accepts PROXY headers or routes by SNI; a protocol subclass, a
        factory that overrides a hook or a PROXY header sent upstream run
        the protocol's hooks over lean transports (the port is attached
        too); the copy engine or C{fastPath = False} take the general path.
        """

        class Custom(SpliceProxyProtocol):
            pass

        class Recording(SpliceProxyFactory):
            def relayFinished(self, proto: Any, result: Any) -> None:
                pass

        def scenario(reactor: Any) -> Any:
            endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, 9)
            factories = {
                "plain": SpliceProxyFactory(endpoint, reactor=reactor),
                "subclass": SpliceProxyFactory(endpoint, reactor=reactor),
                "hook": Recording(endpoint, reactor=reactor),
                "accept": SpliceProxyFactory(
                    endpoint, reactor=reactor, acceptProxyProtocol=True
                ),
                "sni": PoolProxyFactory(
                    None,
                    SNIRouter({"a.example": UpstreamPool([Upstream(endpoint)])}),
                    reactor=reactor,
                ),
                "proxy": SpliceProxyFactory(
                    endpoint, reactor=reactor, sendProxyProtocol=1
                ),
                "copy": SpliceProxyFactory(endpoint, reactor=reactor, engine="copy"),
                "off": SpliceProxyFactory(endpoint, reactor=reactor),
            }
            factories["subclass"].protocol = Custom
            factories["off"].fastPath = False
            out = {}
            for name, factory in factories.items():
                port = reactor.listenTCP(0, factory, interface=LOOPBACK)
                out[name] = fastPathRefusal(factory, port)
                factory.addListeningPort(port)
                out[name + " attached"] = factory._fast is not None
                port.stopListening()
            return out

        out = self.runScenario(scenario)
        for name in ("plain", "accept", "sni", "subclass", "hook", "proxy"):
            self.assertIsNone(out[name], name)
            self.assertTrue(out[name + " attached"], name)
        for name in ("copy", "off"):
            self.assertIsNotNone(out[name], name)
            self.assertFalse(out[name + " attached"], name)

    def test_flowsWaitForPipes(self) -> None:
        """
        With fewer pipes allowed than directions in flight (a client that
        does not read holds the one pipe), the other flows wait for it:
        every byte of every connection arrives, each ends done, and the
        shortage is logged.
        """
        data = [payload(n, seed=n) for n in (8_000_000, 200_000, 200_000)]
        events, stop = capturedEvents()
        self.addCleanup(stop)
        warnings: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("splicetxEvent") == "pipes-exhausted":
                warnings.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = listeningProxy(
                reactor, up.getHost().port, pipePool=PipePool(64 << 10, maxPipes=1)
            )
            clients = [connectClient(reactor, port, str(i)) for i in range(3)]
            yield gatherResults([c.made for c in clients])
            slow = clients[0]
            slow.transport.pauseProducing()
            sent = [c.send(d) for c, d in zip(clients, data, strict=True)]
            yield deferLater(reactor, 0.5, lambda: None)
            slow.transport.resumeProducing()
            yield gatherResults(sent)
            yield gatherResults([c.lost for c in clients])
            while factory.liveProtocols:
                yield deferLater(reactor, 0.01, lambda: None)
            yield stopAll([up, port])
            return [c.digest() for c in clients], factory

        digests, factory = self.runScenario(scenario)
        self.assertIsNotNone(factory._fast)
        self.assertEqual(digests, [digest(d) for d in data])
        self.assertEqual([e["reason"] for e in events], [DONE] * 3)
        self.assertEqual(
            sorted(e["bytesUpstreamToClient"] for e in events),
            sorted(len(d) for d in data),
        )
        self.assertTrue(warnings)
        self.assertIn("pipe limit reached (1 pipes)", warnings[0]["why"])

    def test_reactorShutdownEndsConnections(self) -> None:
        """
        When the reactor drops the socket loop (as it does at shutdown), a
        relaying connection ends, recorded as closed, the listening port
        closes, and the loop leaves the reactor.
        """
        events, stop = capturedEvents()
        self.addCleanup(stop)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory, port = listeningProxy(reactor, up.getHost().port)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"x")
            while not echo.received:
                yield deferLater(reactor, 0.01, lambda: None)
            loop = loopFor(reactor)
            registered = loop in reactor.getReaders()
            reactor.removeReader(loop)
            loop.connectionLost(Failure(ConnectionLost()))
            yield client.lost
            live = len(factory.liveProtocols)
            yield deferLater(reactor, 0, lambda: None)
            listening = port.connected
            yield stopAll([up])
            return registered, live, loop in reactor.getReaders(), listening

        registered, live, after, listening = self.runScenario(scenario)
        self.assertTrue(registered)
        self.assertEqual(live, 0)
        self.assertFalse(after)
        # The listening socket is a member of the loop too: it closed.
        self.assertFalse(listening)
        [event] = events
        self.assertEqual(event["reason"], "closed")
        self.assertIn("lost", event["detail"])


globals().update(makeCoreTests(FastPathOnlyMixin))
