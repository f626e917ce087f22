"""
End-to-end tests of L{splicetx._proxy.poolproxy}: clients through a real
L{SpliceProxyFactory} to pools of real loopback servers, on every reactor --
failover, refusal when every upstream is down, and routing by TLS server
name.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx._pool.balance import SourceHash, clientKeyFor
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._pool.sni import SNIRouter
from splicetx._proxy.poolproxy import (
    PoolEndpoint,
    PoolProxyFactory,
    PoolProxyProtocol,
    UpstreamEndpoint,
    asEndpoint,
)
from splicetx.testing import ReactorTestMixin, makeReactorTests

from .test_health import captureEvents, closedPort
from .test_pool import FakeEndpoint, refused
from .test_sni import pythonHello

LOOPBACK = "127.0.0.1"


class Echo(protocol.Protocol):
    """
    Echoes everything, and remembers it in the factory's C{received}.
    """

    def connectionMade(self) -> None:
        self.factory.received.append(b"")

    def dataReceived(self, data: bytes) -> None:
        self.factory.received[-1] += data
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    """
    Builds L{Echo}s; C{received} holds what each connection got.
    """

    protocol = Echo

    def __init__(self) -> None:
        self.received: list[bytes] = []


class Exchange(protocol.Protocol):
    """
    Sends C{data}, collects the echo until it is complete or the connection
    closes; C{done} fires with what was received.
    """

    def __init__(self, data: bytes, expect: int | None = None) -> None:
        self.data = data
        self.expect = len(data) if expect is None else expect
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


@inlineCallbacks
def exchange(reactor: Any, port: int, data: bytes, expect: int | None = None) -> Any:
    """
    Connect to C{port}, send C{data}, return the bytes echoed back (once
    C{expect} bytes, default all of C{data}, are back, or the connection
    closed).
    """
    proto = Exchange(data, expect)
    yield TCP4ClientEndpoint(reactor, LOOPBACK, port).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    received = yield proto.done
    return received


class PoolProxyMixin(ReactorTestMixin):
    """
    A real proxy in front of real loopback servers.
    """

    def setUp(self) -> None:
        self.events = captureEvents(self)

    def connectionEvents(self) -> list[dict[str, Any]]:
        """
        The proxy's per-connection log events so far.
        """
        return [e for e in self.events if e["splicetxEvent"] == "connection"]

    @inlineCallbacks
    def listen(self, reactor: Any, factory: Any) -> Any:
        """
        Listen on a loopback port; stop at the end of the scenario.
        """
        port = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(factory)
        self.ports.append(port)
        return port

    @inlineCallbacks
    def stopAll(self, reactor: Any) -> Any:
        """
        Stop every port, and let closes finish.
        """
        for port in self.ports:
            yield port.stopListening()
        yield deferLater(reactor, 0.05, lambda: None)

    def test_failover(self) -> None:
        """
        With one upstream refusing, every client is still served, spread
        over the two live ones; each connection's log names the upstream,
        and no member keeps a connection counted as active.
        """
        self.ports: list[Any] = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            a, b = EchoFactory(), EchoFactory()
            portA = yield self.listen(reactor, a)
            portB = yield self.listen(reactor, b)
            members = [
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()), "dead"),
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, portA.getHost().port)),
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, portB.getHost().port)),
            ]
            live = {f"{LOOPBACK}:{p.getHost().port}" for p in (portA, portB)}
            pool = UpstreamPool(members, name="web", reactor=reactor)
            proxy = yield self.listen(
                reactor, PoolProxyFactory(pool, reactor=reactor, forwardName="web")
            )
            replies = []
            for i in range(6):
                data = b"hello %d" % i
                replies.append(
                    (data, (yield exchange(reactor, proxy.getHost().port, data)))
                )
            yield self.stopAll(reactor)
            return replies, a.received, b.received, members, live

        replies, toA, toB, members, live = self.runScenario(scenario)
        for sent, got in replies:
            self.assertEqual(got, sent)
        self.assertEqual(len(toA) + len(toB), 6)
        self.assertTrue(toA and toB)
        self.assertEqual(members[0].failures["refused"], 1)
        self.assertEqual([m.active for m in members], [0, 0, 0])
        events = self.connectionEvents()
        self.assertEqual(len(events), 6)
        self.assertEqual({e["reason"] for e in events}, {"done"})
        self.assertEqual({e["upstream"] for e in events}, live)

    def test_failedTriesCounted(self) -> None:
        """
        A refused try that a later member made good counts in the forward's
        C{splicetx_upstream_connect_failures_total} (and so in the status
        page's C{connectFailures}) under its reason, on the fast path and
        the general one; a pool that reached nobody adds C{no_upstream}.
        The member that served counts the bytes relayed.
        """
        try:
            from splicetx._ops.metrics import ProxyMetrics
            from splicetx._ops.status import registryTotals
        except ImportError:
            raise SkipTest("needs prometheus_client")
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            port = yield self.listen(reactor, echo)
            counts = []
            for fastPath in (True, False):
                dead = Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()))
                livePort = port.getHost().port
                live = Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, livePort))
                pool = UpstreamPool([dead, live], name="web", reactor=reactor)
                metrics = ProxyMetrics()
                factory = PoolProxyFactory(
                    pool, reactor=reactor, forwardName="web", metrics=metrics
                )
                factory.fastPath = fastPath
                proxy = yield self.listen(reactor, factory)
                # Where the fast path attaches (as the service does).
                factory.addListeningPort(proxy)
                fast = factory._fast is not None
                # Round robin: the first client tries the dead member first
                # (which passive health then skips), the second finds none.
                got = yield exchange(reactor, proxy.getHost().port, b"hi")
                live.healthy = False
                none = yield exchange(reactor, proxy.getHost().port, b"x")
                counts.append(
                    (fast, got, none, registryTotals(metrics.registry)["web"], live)
                )
            yield self.stopAll(reactor)
            return counts

        counts = self.runScenario(scenario)
        fastPaths = [c[0] for c in counts]
        self.assertIn(fastPaths, ([True, False], [False, False]))
        for _, got, none, totals, live in counts:
            self.assertEqual((got, none), (b"hi", b""))
            self.assertEqual((live.bytesToUpstream, live.bytesFromUpstream), (2, 2))
            self.assertEqual(
                totals["connectFailures"], {"refused": 1, "no_upstream": 1}
            )

    def test_allDown(self) -> None:
        """
        When every upstream is down the client is closed at once, and the
        connection's log says no upstream was available.
        """
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            member = Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()), "d")
            member.healthy = False
            pool = UpstreamPool([member], name="web", reactor=reactor)
            proxy = yield self.listen(reactor, PoolProxyFactory(pool, reactor=reactor))
            got = yield exchange(reactor, proxy.getHost().port, b"x")
            yield self.stopAll(reactor)
            return got

        self.assertEqual(self.runScenario(scenario), b"")
        (event,) = self.connectionEvents()
        self.assertEqual(event["reason"], "upstream failed")
        self.assertIn("no upstream available in pool web", event["detail"])

    def test_sniRouting(self) -> None:
        """
        Clients go to the pool their server name routes to (exact before
        wildcard, unmatched to the default), and the upstream receives the
        ClientHello bytes first, then the rest of the stream, unchanged.
        """
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            servers = {name: EchoFactory() for name in ("www", "wild", "default")}
            pools = {}
            for name, server in servers.items():
                port = yield self.listen(reactor, server)
                ep = TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port)
                pools[name] = UpstreamPool([Upstream(ep)], name=name, reactor=reactor)
            router = SNIRouter(
                {"www.example.com": pools["www"], "*.example.com": pools["wild"]}
            )
            factory = PoolProxyFactory(pools["default"], router, reactor=reactor)
            proxy = yield self.listen(reactor, factory)
            sent = {}
            for name, sni in [
                ("www", "www.example.com"),
                ("wild", "a.b.example.com"),
                ("default", "other.org"),
                ("default", None),
            ]:
                data = pythonHello(sni) + b"after the hello"
                got = yield exchange(reactor, proxy.getHost().port, data)
                self.assertEqual(got, data)
                sent.setdefault(name, []).append(data)
            yield self.stopAll(reactor)
            return sent, {n: s.received for n, s in servers.items()}

        sent, received = self.runScenario(scenario)
        self.assertEqual(received, sent)

    def test_sniRefused(self) -> None:
        """
        Non-TLS bytes, and a name without a route when there is no default
        pool, close the connection with a logged reason; nothing reaches an
        upstream.
        """
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            server = EchoFactory()
            port = yield self.listen(reactor, server)
            ep = TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port)
            pool = UpstreamPool([Upstream(ep)], name="www", reactor=reactor)
            factory = PoolProxyFactory(
                None, SNIRouter({"www.example.com": pool}), reactor=reactor
            )
            proxy = yield self.listen(reactor, factory)
            first = yield exchange(
                reactor, proxy.getHost().port, b"GET / HTTP/1.0\r\n\r\n"
            )
            second = yield exchange(reactor, proxy.getHost().port, pythonHello("x.org"))
            yield self.stopAll(reactor)
            return first, second, server.received

        first, second, received = self.runScenario(scenario)
        self.assertEqual((first, second, received), (b"", b"", []))
        details = [e["detail"] for e in self.connectionEvents()]
        self.assertEqual(len(details), 2)
        self.assertIn("not TLS", details[0])
        self.assertIn("no route for server name x.org", details[1])

    def test_sourceByProxyHeader(self) -> None:
        """
        With the PROXY protocol accepted, C{source} balancing hashes the
        header's source address: each client lands where the balancer puts
        that address, every time.
        """
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            servers = [EchoFactory() for _ in range(3)]
            members = []
            for i, server in enumerate(servers):
                port = yield self.listen(reactor, server)
                ep = TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port)
                members.append(Upstream(ep, f"m{i}"))
            pool = UpstreamPool(members, SourceHash(), reactor=reactor)
            factory = PoolProxyFactory(pool, reactor=reactor, acceptProxyProtocol=True)
            proxy = yield self.listen(reactor, factory)
            clients = [f"192.0.2.{n}" for n in range(1, 7)] * 2
            for n, client in enumerate(clients):
                header = f"PROXY TCP4 {client} 127.0.0.1 5000 80\r\n".encode()
                body = b"client %d" % n
                got = yield exchange(
                    reactor, proxy.getHost().port, header + body, len(body)
                )
                self.assertEqual(got, body)
            yield self.stopAll(reactor)
            landed = {}
            for i, server in enumerate(servers):
                for data in server.received:
                    landed[clients[int(data.split()[1])] + "#" + data.decode()] = i
            return clients, landed, members

        clients, landed, members = self.runScenario(scenario)
        self.assertEqual(len(landed), len(clients))
        for key, index in landed.items():
            client = key.split("#")[0]
            want = SourceHash().choose(members, clientKeyFor(client))
            self.assertIs(members[index], want)

    def test_chooseMember(self) -> None:
        """
        A subclass's C{choosePool} may return a pool member: its connect and
        its connection are counted on it.
        """
        self.ports = []

        class PickSecond(PoolProxyProtocol):
            def choosePool(self) -> Any:
                return self.factory.pool.members[1]

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            server = EchoFactory()
            port = yield self.listen(reactor, server)
            members = [
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()), "a"),
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port)),
            ]
            factory = PoolProxyFactory(UpstreamPool(members), reactor=reactor)
            factory.protocol = PickSecond
            proxy = yield self.listen(reactor, factory)
            got = yield exchange(reactor, proxy.getHost().port, b"ping")
            yield self.stopAll(reactor)
            return got, members

        got, members = self.runScenario(scenario)
        self.assertEqual(got, b"ping")
        self.assertEqual(members[1].connections, 1)
        self.assertEqual(members[1].active, 0)
        self.assertEqual(members[0].connections + sum(members[0].failures.values()), 0)

    def test_sniTimeout(self) -> None:
        """
        A client that sends only part of its ClientHello is closed after the
        SNI timeout, with the reason logged.
        """
        self.ports = []

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            ep = TCP4ClientEndpoint(reactor, LOOPBACK, closedPort())
            pool = UpstreamPool([Upstream(ep)], reactor=reactor)
            factory = PoolProxyFactory(
                pool, SNIRouter(), sniTimeout=0.1, reactor=reactor
            )
            proxy = yield self.listen(reactor, factory)
            got = yield exchange(reactor, proxy.getHost().port, pythonHello("a.b")[:20])
            yield self.stopAll(reactor)
            return got

        self.assertEqual(self.runScenario(scenario), b"")
        (event,) = self.connectionEvents()
        self.assertIn("ClientHello timeout", event["detail"])
        self.assertIn("got 20 bytes", event["detail"])


class AsEndpointTests(SynchronousTestCase):
    """
    L{asEndpoint} turns pools and members into endpoints.
    """

    def test_kinds(self) -> None:
        """
        A pool gives a L{PoolEndpoint} with the client key, a member an
        L{UpstreamEndpoint}, an endpoint itself.
        """
        member = Upstream(object(), "m")
        pool = UpstreamPool([member])
        ep = asEndpoint(pool, b"key")
        self.assertIsInstance(ep, PoolEndpoint)
        self.assertEqual((ep.pool, ep.clientKey), (pool, b"key"))
        self.assertIsInstance(asEndpoint(member), UpstreamEndpoint)
        other = object()
        self.assertIs(asEndpoint(other), other)

    def test_upstreamEndpointBooks(self) -> None:
        """
        An L{UpstreamEndpoint} records failures and successes on its member
        and counts the connection until released.
        """
        clock = Clock()
        failing = Upstream(FakeEndpoint(refused()), "f", clock=clock)
        self.failureResultOf(UpstreamEndpoint(failing).connect(None))
        self.assertEqual(failing.failures["refused"], 1)
        member = Upstream(FakeEndpoint("proto"), "m", clock=clock)
        ep = UpstreamEndpoint(member)
        self.assertEqual(self.successResultOf(ep.connect(None)), "proto")
        self.assertEqual((member.connections, member.active), (1, 1))
        ep.release()
        ep.release()
        self.assertEqual(member.active, 0)
        self.assertTrue(verifyObject(IStreamClientEndpoint, ep))


class PoolEndpointTests(SynchronousTestCase):
    """
    L{PoolEndpoint} names the pool, then the member, in logs.
    """

    def test_repr(self) -> None:
        """
        Before connecting it is C{pool NAME}; after, the member too.
        """
        member = Upstream(object(), "10.0.0.1:80")
        ep = PoolEndpoint(UpstreamPool([member], name="web"))
        self.assertEqual(repr(ep), "pool web")
        ep.upstream = member
        self.assertEqual(repr(ep), "10.0.0.1:80 (pool web)")
        member.acquire()
        ep.release()
        self.assertEqual(member.active, 0)
        self.assertIsNone(ep.upstream)


globals().update(makeReactorTests(PoolProxyMixin))
