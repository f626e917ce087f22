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
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx import DONE, RESET, AccessControl
from splicetx._ops.status import connectionStatus
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._proxy.fastconn import FastConnection
from splicetx._proxy.fastpath import fastPathRefusal
from splicetx._proxy.poolproxy import PoolProxyFactory
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
from .test_proxy import (
    LOOPBACK,
    EchoFactory,
    capturedEvents,
    closedByProxy,
    connectClient,
    stopAll,
)


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
    A factory forwarding to C{upstream} (a port number on the loopback, or
    a pool), listening on the loopback, its port given to
    C{addListeningPort} (where the fast path attaches).

    @return: C{(factory, port)}.
    """
    if isinstance(upstream, UpstreamPool):
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


class PathScenarios(ReactorTestMixin):
    """
    Scenarios that must end the same way on both paths; C{fast} says which
    path the factory is set to take.
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


globals().update(makeReactorTests(FastPathScenarios))
globals().update(makeReactorTests(GeneralPathScenarios))


class FastPathOnlyMixin(ReactorTestMixin):
    """
    What only the fast path has: who may take it, and its socket loop.
    """

    scenarioTimeout = 20.0

    def test_whoTakesIt(self) -> None:
        """
        A plain factory on a TCP port takes the fast path; a protocol
        subclass, a factory that overrides a hook, the PROXY protocol, the
        copy engine or C{fastPath = False} take the general one.
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
                "proxy": SpliceProxyFactory(
                    endpoint, reactor=reactor, acceptProxyProtocol=True
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
        self.assertIsNone(out["plain"])
        self.assertTrue(out["plain attached"])
        for name in ("subclass", "hook", "proxy", "copy", "off"):
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


globals().update(makeReactorTests(FastPathOnlyMixin))
