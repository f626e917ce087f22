# -*- test-case-name: tests.test_proxy -*-
"""
In-process tests of L{splicetx.proxy}: the factory and the protocol hooks,
over real loopback sockets on every reactor.
"""

from __future__ import annotations

import gc
import socket
import weakref
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    inlineCallbacks,
)
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from splicetx import DONE, RelayResult
from splicetx.proxy import (
    IDLE_TIMEOUT,
    REJECTED,
    UPSTREAM_FAILED,
    SpliceProxyFactory,
    SpliceProxyProtocol,
    describeAddress,
    describeEndpoint,
)
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from ._harness import Peer, _clientFactory

LOOPBACK = "127.0.0.1"


@implementer(IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    """
    Echoes every chunk; closes after the client's end of stream.
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class EchoFactory(protocol.Factory):
    protocol = Echo
    noisy = False

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.built = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.built += 1
        return protocol.Factory.buildProtocol(self, addr)


class RecordingFactory(SpliceProxyFactory):
    """
    Keeps every result and fires C{finished[i]} as connections end.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[RelayResult] = []
        self.waiting: list[Deferred[RelayResult]] = []

    def relayFinished(self, proto: SpliceProxyProtocol, result: RelayResult) -> None:
        super().relayFinished(proto, result)
        self.results.append(result)
        if self.waiting:
            self.waiting.pop(0).callback(result)

    def nextResult(self) -> Deferred[RelayResult]:
        d: Deferred[RelayResult] = Deferred()
        self.waiting.append(d)
        return d


def connectClient(reactor: Any, port: Any, name: str = "client") -> Peer:
    """
    Connect a L{Peer} to a listening port; its C{made} fires when connected.
    """
    peer = Peer(reactor, name)
    reactor.connectTCP(LOOPBACK, port.getHost().port, _clientFactory(peer))
    return peer


@inlineCallbacks
def closedByProxy(client: Peer) -> Any:
    """
    Wait until the proxy has closed the client's connection (the client, a
    half-close aware protocol, sees an end of stream), then close it.
    """
    yield client.eof
    if not client.lost.called:
        client.transport.loseConnection()
    yield client.lost


def proxyTo(reactor: Any, upstreamPort: int, **kwargs: Any) -> RecordingFactory:
    """
    A L{RecordingFactory} relaying to C{upstreamPort} on the loopback.
    """
    return RecordingFactory(
        TCP4ClientEndpoint(reactor, LOOPBACK, upstreamPort), reactor=reactor, **kwargs
    )


def stopAll(ports: list[Any]) -> Deferred[Any]:
    return DeferredList([p.stopListening() for p in ports])


def capturedEvents() -> tuple[list[dict[str, Any]], Any]:
    """
    Start collecting the proxy's per-connection log events.
    """
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("splicetxEvent") == "connection":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    return events, lambda: globalLogPublisher.removeObserver(observer)


class ProxyMixin(ReactorTestMixin):
    """
    The proxy between a real client and a real upstream.
    """

    scenarioTimeout = 20.0

    def test_forwardsAndLogsOnce(self) -> None:
        """
        Bytes go both ways intact, the result says done, and exactly one log
        event (with addresses, engine, byte counts) describes the connection.
        """
        data = payload(300_000, seed=3)
        events, stop = capturedEvents()
        self.addCleanup(stop)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(data)
            result = yield done
            yield client.lost
            upPort = up.getHost().port
            yield stopAll([up, port])
            return client.digest(), result, upPort, factory

        received, result, upPort, factory = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertEqual(
            (result.reason, result.bytesAToB, result.bytesBToA),
            (DONE, len(data), len(data)),
        )
        self.assertEqual(factory.liveProtocols, set())
        [event] = events
        self.assertEqual(event["upstream"], f"{LOOPBACK}:{upPort}")
        self.assertTrue(event["client"].startswith(f"{LOOPBACK}:"))
        self.assertEqual(event["engine"], result.engine)
        self.assertEqual(event["bytesClientToUpstream"], len(data))
        self.assertEqual(event["bytesUpstreamToClient"], len(data))
        self.assertEqual(event["reason"], DONE)
        self.assertIn("duration", event)
        self.assertIn("fallbackReason", event)

    def test_quietNormalConnections(self) -> None:
        """
        With C{logNormalConnections} off, a connection that ends normally
        logs nothing while one whose upstream refused is still logged.
        """
        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind((LOOPBACK, 0))
        events, stop = capturedEvents()
        self.addCleanup(stop)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            results = []
            for target in (up.getHost().port, closed.getsockname()[1]):
                factory = proxyTo(reactor, target)
                factory.logNormalConnections = False
                port = reactor.listenTCP(0, factory, interface=LOOPBACK)
                done = factory.nextResult()
                client = connectClient(reactor, port)
                yield client.made
                yield client.send(b"ping")
                results.append((yield done))
                yield closedByProxy(client)
                yield stopAll([port])
            yield stopAll([up])
            return results

        normal, refused = self.runScenario(scenario)
        self.assertEqual(normal.reason, DONE)
        self.assertEqual(refused.reason, UPSTREAM_FAILED)
        self.assertEqual([e["reason"] for e in events], [UPSTREAM_FAILED])

    def test_chooseUpstreamDeferred(self) -> None:
        """
        C{chooseUpstream} may return a Deferred; the client's early bytes
        wait (the client is paused) and are relayed once it fires.
        """

        class Later(SpliceProxyProtocol):
            def chooseUpstream(self) -> Any:
                reactor = self.factory.reactor
                return deferLater(reactor, 0.05, lambda: self.factory.target)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = RecordingFactory(reactor=reactor)
            factory.protocol = Later
            factory.target = TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"early bytes")
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return client.digest(), result

        received, result = self.runScenario(scenario)
        self.assertEqual(received, digest(b"early bytes"))
        self.assertEqual(result.reason, DONE)

    def test_clientRejected(self) -> None:
        """
        C{clientAccepted} returning False closes the client at once, no
        upstream connection is made, and the end is reported as rejected.
        """

        class Refuse(SpliceProxyProtocol):
            def clientAccepted(self) -> bool:
                return False

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            factory.protocol = Refuse
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            result = yield done
            yield closedByProxy(client)
            yield stopAll([up, port])
            return result, echo.built

        result, built = self.runScenario(scenario)
        self.assertEqual((result.reason, result.engine), (REJECTED, "none"))
        self.assertEqual(built, 0)

    def test_upstreamRefused(self) -> None:
        """
        A refused upstream calls C{upstreamFailed} with the failure; the
        default closes the client and reports the reason.
        """
        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind((LOOPBACK, 0))
        seen: list[Failure] = []

        class Watch(SpliceProxyProtocol):
            def upstreamFailed(self, reason: Failure) -> None:
                seen.append(reason)
                super().upstreamFailed(reason)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory = proxyTo(reactor, closed.getsockname()[1])
            factory.protocol = Watch
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            result = yield done
            yield closedByProxy(client)
            yield stopAll([port])
            return result

        result = self.runScenario(scenario)
        [failure] = seen
        self.assertTrue(failure.check(ConnectionRefusedError))
        self.assertEqual(result.reason, UPSTREAM_FAILED)
        self.assertIn("refused", result.detail.lower())

    def test_connectTimeout(self) -> None:
        """
        An upstream endpoint that never connects is cancelled after
        C{connectTimeout}, and C{upstreamFailed} says it timed out.
        """
        cancelled: list[bool] = []

        class Never:
            def connect(self, factory: Any) -> Deferred[Any]:
                return Deferred(lambda d: cancelled.append(True))

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory = RecordingFactory(Never(), reactor=reactor, connectTimeout=0.2)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            result = yield done
            yield closedByProxy(client)
            yield stopAll([port])
            return result

        result = self.runScenario(scenario)
        self.assertEqual(cancelled, [True])
        self.assertEqual(result.reason, UPSTREAM_FAILED)
        self.assertIn("timed out after 0.2 s", result.detail)

    def test_handshakeThenRelay(self) -> None:
        """
        A C{readsHandshake} subclass reads a line, connects with the bytes it
        read past it, replies, and starts the relay with a prefix of its own:
        the upstream sees prefix, leftover, then the stream; the client sees
        the reply, then the upstream's bytes.
        """

        class LineProxy(SpliceProxyProtocol):
            readsHandshake = True
            buffer = b""

            def handshakeReceived(self, data: bytes) -> None:
                self.buffer += data
                if b"\n" in self.buffer:
                    line, rest = self.buffer.split(b"\n", 1)
                    assert line == b"GO"
                    self.connectUpstream(self.factory.target, toUpstream=rest)

            def upstreamConnected(self, upstream: Any) -> None:
                self.startRelay(toUpstream=b"HDR|", toClient=b"OK\n")

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = RecordingFactory(reactor=reactor)
            factory.protocol = LineProxy
            factory.target = TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            client.keep = True
            yield client.made
            client.transport.write(b"GO\nleft")
            yield deferLater(reactor, 0.05, lambda: None)
            yield client.send(b"over")
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return b"".join(client.chunks), b"".join(echo.received), result

        toClient, atUpstream, result = self.runScenario(scenario)
        self.assertEqual(atUpstream, b"HDR|leftover")
        self.assertEqual(toClient, b"OK\nHDR|leftover")
        self.assertEqual(result.reason, DONE)

    def test_idleTimeout(self) -> None:
        """
        A relayed connection without a byte either way for C{idleTimeout}
        is closed, reported as an idle timeout.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port, idleTimeout=0.3)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"x")
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return result, client.received

        result, received = self.runScenario(scenario)
        self.assertEqual(received, 1)
        self.assertEqual(result.reason, IDLE_TIMEOUT)
        self.assertGreaterEqual(result.duration, 0.3)

    def test_maxConnectionsPausesPort(self) -> None:
        """
        With C{maxConnections} reached the port stops accepting: a second
        client's bytes reach the upstream only after the first one ends.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            factory.maxConnections = 1
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            factory.addListeningPort(port)
            first = connectClient(reactor, port, "first")
            yield first.made
            first.transport.write(b"1")
            second = connectClient(reactor, port, "second")
            yield second.made
            second.transport.write(b"2")
            yield deferLater(reactor, 0.3, lambda: None)
            before = (list(echo.received), len(factory.liveProtocols))
            first.transport.loseConnection()
            yield first.lost
            # The port accepts again: wait (10 s at most) for the second
            # client's byte instead of a fixed 0.3 s.
            deadline = reactor.seconds() + 10
            while len(echo.received) < 2 and reactor.seconds() < deadline:
                yield deferLater(reactor, 0.01, lambda: None)
            after = list(echo.received)
            second.transport.loseConnection()
            yield second.lost
            while len(factory.results) < 2:
                yield deferLater(reactor, 0.02, lambda: None)
            yield stopAll([up, port])
            return before, after

        before, after = self.runScenario(scenario)
        self.assertEqual(before, ([b"1"], 1))
        self.assertEqual(after, [b"1", b"2"])

    def test_drain(self) -> None:
        """
        C{drain} stops listening at once, waits for live connections, aborts
        those still open at the timeout and reports how many it aborted.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            factory.addListeningPort(port)
            client = connectClient(reactor, port)
            yield client.made
            client.transport.write(b"x")
            while not echo.received:
                yield deferLater(reactor, 0.01, lambda: None)
            portNumber = port.getHost().port
            aborted, _ = yield gatherResults([factory.drain(0.2), client.lost])
            late = TCP4ClientEndpoint(reactor, LOOPBACK, portNumber).connect(
                _clientFactory(Peer(reactor, "late"))
            )
            [lateReason] = yield late.addCallbacks(lambda p: [None], lambda f: [f])
            yield up.stopListening()
            return aborted, lateReason, factory.results

        aborted, lateReason, results = self.runScenario(scenario)
        self.assertEqual(aborted, 1)
        self.assertTrue(lateReason.check(ConnectionRefusedError))
        [result] = results
        self.assertIn("drain timeout", result.detail)

    def test_genericEndpointPath(self) -> None:
        """
        An endpoint that is not plain TCP is connected through its
        C{connect} method (the Deferred path) and relays like the direct
        C{connectTCP} path; C{connectUpstream}'s Deferred fires with the
        upstream protocol.
        """
        data = payload(50_000, seed=5)

        class Wrapped:
            def __init__(self, inner: Any) -> None:
                self.inner = inner
                self.calls = 0

            def connect(self, factory: Any) -> Any:
                self.calls += 1
                return self.inner.connect(factory)

        class Explicit(SpliceProxyProtocol):
            readsHandshake = True
            fired: list[Any] = []

            def handshakeReceived(self, data: bytes) -> None:
                d = self.connectUpstream(self.factory.upstream, toUpstream=data)
                d.addCallback(self.fired.append)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            endpoint = Wrapped(TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port))
            factory = RecordingFactory(endpoint, reactor=reactor)
            factory.protocol = Explicit
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(data)
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return client.digest(), result, endpoint.calls

        received, result, calls = self.runScenario(scenario)
        self.assertEqual((received, result.reason, calls), (digest(data), DONE, 1))
        [upstream] = Explicit.fired
        self.assertIsNotNone(upstream)
        Explicit.fired.clear()

    def test_noCyclicGarbage(self) -> None:
        """
        A finished proxied connection, on either engine, is freed by
        reference counting alone (docs/design-decisions.md rule 13): its
        protocols, transports, connector and relay leave no reference cycle
        for the cycle collector, which would otherwise run once per few
        hundred connections under churn.
        """
        data = payload(20_000, seed=9)

        class Weak(RecordingFactory):
            refs: list[Any] = []

            def relayFinished(
                self, proto: SpliceProxyProtocol, result: RelayResult
            ) -> None:
                up = proto.upstream
                objs = [proto, proto.transport, proto.relay]
                if up is not None:
                    objs += [up, up.transport, getattr(up.transport, "connector", None)]
                self.refs.extend(weakref.ref(o) for o in objs if o is not None)
                super().relayFinished(proto, result)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            for engine in ("splice", "copy"):
                factory = Weak(
                    TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port),
                    reactor=reactor,
                    engine=engine,
                )
                port = reactor.listenTCP(0, factory, interface=LOOPBACK)
                for _ in range(3):
                    done = factory.nextResult()
                    client = connectClient(reactor, port)
                    yield client.made
                    yield client.send(data)
                    result = yield done
                    yield client.lost
                    self.assertEqual(result.reason, DONE)
                yield stopAll([port])
            yield stopAll([up])
            # Let the reactor finish the turn that closed the last sockets.
            yield deferLater(reactor, 0.01, lambda: None)

        gc.collect()
        gc.disable()
        try:
            Weak.refs = []
            self.runScenario(scenario)
            refs, Weak.refs = Weak.refs, []
            self.assertEqual(len(refs), 2 * 3 * 6)
            alive = [r() for r in refs if r() is not None]
            self.assertEqual(alive, [])
        finally:
            gc.enable()


globals().update(makeReactorTests(ProxyMixin))


class FactoryTests(SynchronousTestCase):
    """
    Argument checks and helpers that need no reactor run.
    """

    def test_badEngine(self) -> None:
        """
        An unknown engine is refused at construction.
        """
        self.assertRaises(ValueError, SpliceProxyFactory, None, engine="fast")

    def test_badTimeouts(self) -> None:
        """
        Negative or non-finite timeouts are refused.
        """
        for kwargs in (
            {"connectTimeout": -1},
            {"idleTimeout": float("nan")},
            {"idleTimeout": float("inf")},
        ):
            self.assertRaises(ValueError, SpliceProxyFactory, None, **kwargs)

    def test_protocolAttribute(self) -> None:
        """
        The factory builds L{SpliceProxyProtocol}s by default.
        """
        self.assertIs(SpliceProxyFactory.protocol, SpliceProxyProtocol)
        self.assertFalse(SpliceProxyProtocol.readsHandshake)

    def test_describe(self) -> None:
        """
        Addresses and endpoints are formatted for log lines.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
        from twisted.internet.testing import MemoryReactor

        self.assertEqual(describeAddress(IPv4Address("TCP", "1.2.3.4", 5)), "1.2.3.4:5")
        self.assertEqual(describeAddress(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(describeAddress(UNIXAddress(b"/run/x")), "unix:/run/x")
        reactor = MemoryReactor()
        self.assertEqual(
            describeEndpoint(TCP4ClientEndpoint(reactor, "example.com", 80)),
            "example.com:80",
        )
        self.assertEqual(describeEndpoint(None), "(none)")

    def test_directTarget(self) -> None:
        """
        Plain TCP endpoints (and TCP6 ones with an IPv6 literal) are
        connected with C{connectTCP} directly; anything else goes through
        the endpoint.
        """
        from twisted.internet.endpoints import HostnameEndpoint, TCP6ClientEndpoint
        from twisted.internet.testing import MemoryReactor

        from splicetx._proxy.upstream import directTarget

        reactor = MemoryReactor()
        self.assertEqual(
            directTarget(TCP4ClientEndpoint(reactor, "10.0.0.2", 80, timeout=5)),
            ("10.0.0.2", 80, 5.0, None),
        )
        self.assertEqual(
            directTarget(TCP6ClientEndpoint(reactor, "::1", 80))[:2], ("::1", 80)
        )
        self.assertIsNone(
            directTarget(TCP6ClientEndpoint(reactor, "example.com", 80))[0]
        )
        self.assertIsNone(directTarget(HostnameEndpoint(reactor, "example.com", 80))[0])

    def test_handshakeNotImplemented(self) -> None:
        """
        A C{readsHandshake} subclass must implement C{handshakeReceived}.
        """
        self.assertRaises(
            NotImplementedError, SpliceProxyProtocol().handshakeReceived, b"x"
        )


class ServiceMixin(ReactorTestMixin):
    """
    The C{twist splice-proxy} service in process: listen, relay, drain.
    """

    scenarioTimeout = 20.0

    def test_serviceRelaysAndDrains(self) -> None:
        """
        The service listens on its endpoints, relays, and on stop stops
        listening, aborts what is left at the drain timeout and fires.
        """
        from splicetx._app.tap import SpliceProxyService
        from splicetx._config.model import Forward, ProxyConfig

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            forward = Forward(
                listens=[f"tcp:0:interface={LOOPBACK}"],
                connect=f"tcp:{LOOPBACK}:{up.getHost().port}",
            )
            service = SpliceProxyService(
                ProxyConfig(forwards=[forward], drainTimeout=0.2),
                reactor=reactor,
                handleSignals=False,
            )
            service.startService()
            [port] = service.ports
            client = connectClient(reactor, port)
            client.keep = True
            yield client.made
            client.transport.write(b"ping")
            while not client.chunks:
                yield deferLater(reactor, 0.01, lambda: None)
            yield gatherResults([service.stopService(), client.lost])
            yield up.stopListening()
            return b"".join(client.chunks), service.factory

        echoed, factory = self.runScenario(scenario)
        self.assertEqual(echoed, b"ping")
        self.assertTrue(factory.draining)
        self.assertEqual(factory.liveProtocols, set())


globals().update(makeReactorTests(ServiceMixin))
