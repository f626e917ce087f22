# -*- test-case-name: tests.test_resolver -*-
"""
Tests for L{splicetx._pool.resolver} (the one cache of upstream names: its
logic with an injected resolver and clock) and L{splicetx.endpoints.TCPTarget}
(connects to real loopback sockets on every reactor: an address without any
resolver, a name through the cache, a name that moves, failover between a
name's addresses, a name that does not resolve).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from splicetx._config.endpoints import clientEndpoint
from splicetx._pool.resolver import NameCache, cacheFor
from splicetx._proxy.leanrelay import leanTarget
from splicetx._proxy.upstream import directAddress, directTarget
from splicetx.endpoints import TCPTarget
from splicetx.testing import ReactorTestMixin, makeReactorTests


@implementer(IHostnameResolver)
class FakeResolver:
    """
    An C{IHostnameResolver} answering from a dict, now or when told.

    @ivar names: host name to a list of address literals.
    @ivar calls: C{(name, addressTypes)} of every call.
    @ivar hold: keep answers back until L{release}.
    """

    def __init__(self, names: dict[str, list[str]], hold: bool = False) -> None:
        self.names = names
        self.calls: list[tuple[str, Any]] = []
        self.hold = hold
        self.held: list[Any] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        self.calls.append((hostName, addressTypes))
        if self.hold:
            self.held.append((resolutionReceiver, hostName, addressTypes))
        else:
            self._answer(resolutionReceiver, hostName, addressTypes)
        return None

    def _answer(self, receiver: Any, name: str, types: Any) -> None:
        receiver.resolutionBegan(None)
        for address in self.names.get(name, []):
            kind = IPv6Address if ":" in address else IPv4Address
            if types is None or kind in types:
                receiver.addressResolved(kind("TCP", address, 0))
        receiver.resolutionComplete()

    def release(self) -> None:
        held, self.held = self.held, []
        for each in held:
            self._answer(*each)


def _results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


class NameCacheTests(SynchronousTestCase):
    """
    The cache's logic, with a fake resolver and a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver({"up.test": ["127.0.0.1", "::1"]})
        self.cache = NameCache(self.clock, self.resolver, validity=30)

    def test_fakeIsAResolver(self) -> None:
        """The fake verifies as an C{IHostnameResolver}."""
        self.assertTrue(verifyObject(IHostnameResolver, self.resolver))

    def test_resolvesAndKeeps(self) -> None:
        """A name resolves once and is then answered from the cache."""
        first = _results(self.cache.resolve("up.test"))
        second = _results(self.cache.resolve("UP.test"))
        expected = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
        self.assertEqual(first, [expected])
        self.assertEqual(second, [expected])
        self.assertEqual(len(self.resolver.calls), 1)
        self.assertEqual(self.cache.cached("up.test"), expected)

    def test_validityRunsOut(self) -> None:
        """Once the validity has passed, the next resolve asks again."""
        self.cache.resolve("up.test")
        self.clock.advance(29.9)
        self.assertIsNotNone(self.cache.cached("up.test"))
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.cached("up.test"))
        self.resolver.names["up.test"] = ["127.0.0.2"]
        self.assertEqual(
            _results(self.cache.resolve("up.test")),
            [((socket.AF_INET, "127.0.0.2"),)],
        )
        self.assertEqual(len(self.resolver.calls), 2)

    def test_concurrentLookupsShareOne(self) -> None:
        """Lookups of one name while one is under way share it."""
        self.resolver.hold = True
        waiting = [_results(self.cache.resolve("up.test")) for _ in range(5)]
        self.assertEqual(waiting, [[]] * 5)
        self.resolver.release()
        self.assertEqual(len(self.resolver.calls), 1)
        self.assertEqual({len(w[0]) for w in waiting}, {2})
        self.assertEqual(self.cache.lookups, 1)

    def test_boundedInSize(self) -> None:
        """Past maxNames the least recently used name is dropped."""
        cache = NameCache(self.clock, self.resolver, validity=30, maxNames=2)
        for name in ("a.test", "b.test", "c.test"):
            self.resolver.names[name] = ["127.0.0.1"]
        cache.resolve("a.test")
        cache.resolve("b.test")
        cache.cached("a.test")  # a is now the most recently used
        cache.resolve("c.test")
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.cached("b.test"))
        self.assertIsNotNone(cache.cached("a.test"))
        self.assertIsNotNone(cache.cached("c.test"))

    def test_failureIsLoggedAndNotKept(self) -> None:
        """A name with no address fails every waiter, logged once, not cached."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.resolver.hold = True
        waiting = [_results(self.cache.resolve("gone.test")) for _ in range(3)]
        self.resolver.release()
        for each in waiting:
            self.assertEqual(len(each), 1)
            each[0].trap(DNSLookupError)
            self.assertIn("cannot resolve gone.test", each[0].getErrorMessage())
        logged = [e for e in events if e.get("name") == "gone.test"]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["count"], 3)
        self.assertIsNone(self.cache.cached("gone.test"))
        _results(self.cache.resolve("gone.test")).clear()
        self.assertEqual(len(self.resolver.calls), 2)

    def test_resolverRaises(self) -> None:
        """A resolver that raises fails the lookup with the reason."""

        class Broken:
            def resolveHostName(self, *args: Any) -> None:
                raise RuntimeError("no resolver here")

        cache = NameCache(self.clock, Broken())
        [failure] = _results(cache.resolve("up.test"))
        failure.trap(DNSLookupError)
        self.assertIn("no resolver here", failure.getErrorMessage())

    def test_zeroValidity(self) -> None:
        """Validity 0: every resolve asks the resolver."""
        self.cache.validity = 0
        self.cache.resolve("up.test")
        self.cache.resolve("up.test")
        self.assertEqual(len(self.resolver.calls), 2)

    def test_callersValidity(self) -> None:
        """A caller's own validity decides for its lookups (a forward's)."""
        self.cache.resolve("up.test")
        self.clock.advance(10)
        self.assertIsNone(self.cache.cached("up.test", validity=5))
        self.assertIsNotNone(self.cache.cached("up.test", validity=60))
        self.assertIsNotNone(self.cache.cached("up.test"))
        self.cache.resolve("up.test", validity=5)
        self.assertEqual(len(self.resolver.calls), 2)
        target = TCPTarget(self.clock, "up.test", 80, cache=self.cache, validity=5)
        self.clock.advance(6)
        self.assertIsNone(target.cached())
        self.assertIsNotNone(
            TCPTarget(self.clock, "up.test", 80, cache=self.cache).cached()
        )

    def test_tomlKey(self) -> None:
        """resolve-ttl in a TOML forward or [defaults]; a bad one is one line."""
        from splicetx._config.toml import parseToml
        from splicetx._config.values import ConfigError

        text = (
            '[defaults]\nresolve-ttl = "10s"\n'
            '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:a.test:1"\n'
            '[[forward]]\nlisten = "tcp:2"\nconnect = "tcp:b.test:1"\n'
            "resolve-ttl = 0\n"
        )
        first, second = parseToml(text, "f.toml").forwards
        self.assertEqual((first.resolveTTL, second.resolveTTL), (10.0, 0.0))
        bad = '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:a:1"\nresolve-ttl = "2h"\n'
        with self.assertRaises(ConfigError) as caught:
            parseToml(bad, "f.toml")
        message = str(caught.exception)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn("f.toml: forward[0].resolve-ttl: at most 3600 seconds", message)

    def test_ipv6Only(self) -> None:
        """A lookup of one family asks for that family and is kept apart."""
        [v6] = _results(self.cache.resolve("up.test", socket.AF_INET6))
        self.assertEqual(v6, ((socket.AF_INET6, "::1"),))
        self.assertEqual(self.resolver.calls[0][1], [IPv6Address])
        self.assertIsNone(self.cache.cached("up.test"))
        [v4] = _results(self.cache.resolve("up.test", socket.AF_INET))
        self.assertEqual(v4, ((socket.AF_INET, "127.0.0.1"),))
        self.assertEqual(self.resolver.calls[1][1], [IPv4Address])

    def test_onePerReactor(self) -> None:
        """cacheFor gives one cache per reactor."""
        self.assertIs(cacheFor(self.clock), cacheFor(self.clock))
        self.assertIsNot(cacheFor(self.clock), cacheFor(Clock()))


class TargetParsingTests(SynchronousTestCase):
    """
    What C{--connect} strings and subclasses get.
    """

    def test_literalIsDirect(self) -> None:
        """An address literal target takes the general path's direct connect."""
        clock = Clock()
        target = TCPTarget(clock, "127.0.0.1", 8080, timeout=5)
        self.assertEqual(target.literal, (socket.AF_INET, ("127.0.0.1", 8080)))
        self.assertEqual(directTarget(target)[:3], ("127.0.0.1", 8080, 5.0))
        v6 = TCPTarget(clock, "::1", 80)
        self.assertEqual(v6.literal, (socket.AF_INET6, ("::1", 80)))
        self.assertEqual(v6.description, "[::1]:80")
        name = TCPTarget(clock, "up.test", 80)
        self.assertIsNone(name.literal)
        self.assertIsNone(directTarget(name)[0])

    def test_leanTargetOfLiteral(self) -> None:
        """
        The lean path connects an address literal target where the general
        path's direct connect would (read from the target's C{literal}).
        """
        clock = Clock()
        for host, port in (("127.0.0.1", 8080), ("::1", 80), ("fe80::1%lo", 9)):
            target = TCPTarget(clock, host, port, timeout=5)
            self.assertEqual(leanTarget(target), directAddress(target))
            self.assertIsNotNone(leanTarget(target))
        bound = TCPTarget(clock, "127.0.0.1", 80, bindAddress=("127.0.0.1", 0))
        self.assertIsNone(leanTarget(bound))
        self.assertIsNone(directAddress(bound))

    def test_namesBecomeTargets(self) -> None:
        """tcp: and tcp6: host names become TCPTargets; literals stay Twisted's."""
        clock = Clock()
        target = clientEndpoint(clock, "tcp:up.test:8080:timeout=7")
        self.assertIsInstance(target, TCPTarget)
        self.assertEqual(
            (target.host, target.port, target.timeout), ("up.test", 8080, 7)
        )
        six = clientEndpoint(clock, "tcp6:up.test:8080")
        self.assertEqual(six.family, socket.AF_INET6)
        self.assertEqual(target.family, socket.AF_INET)
        self.assertNotIsInstance(clientEndpoint(clock, "tcp:127.0.0.1:80"), TCPTarget)
        self.assertNotIsInstance(clientEndpoint(clock, "tcp6:[::1]:80"), TCPTarget)

    def test_portRange(self) -> None:
        """A port past 65535 is refused when the target is made."""
        self.assertRaises(ValueError, TCPTarget, Clock(), "up.test", 65536)


class _Accepted(Protocol):
    def connectionMade(self) -> None:
        self.factory.accepted.append(self.transport.getHost().host)
        self.transport.loseConnection()


class _Hello(Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self.transport.getPeer().host)


def _server(reactor: Any, host: str, port: int = 0) -> Any:
    factory = Factory.forProtocol(_Accepted)
    factory.accepted = []  # type: ignore[attr-defined]
    return reactor.listenTCP(port, factory, interface=host)


def _client() -> Any:
    factory = Factory.forProtocol(_Hello)
    factory.made = Deferred()  # type: ignore[attr-defined]
    return factory


class Explodes:
    """
    A resolver a literal must never reach.
    """

    def resolveHostName(self, *args: Any) -> None:
        raise AssertionError("an address literal was sent to the resolver")


class TargetConnectMixin(ReactorTestMixin):
    """
    L{TCPTarget} connects to real loopback sockets.
    """

    @inlineCallbacks
    def _connect(self, reactor: Any, target: Any) -> Any:
        factory = _client()
        proto = yield target.connect(factory)
        peer = yield factory.made
        proto.transport.loseConnection()
        return peer

    @inlineCallbacks
    def _literal(self, reactor: Any) -> Any:
        port = _server(reactor, "127.0.0.1")
        try:
            cache = NameCache(reactor, Explodes())
            target = TCPTarget(reactor, "127.0.0.1", port.getHost().port, cache=cache)
            peer = yield self._connect(reactor, target)
        finally:
            yield port.stopListening()
        self.assertEqual(peer, "127.0.0.1")
        self.assertEqual(cache.lookups, 0)

    def test_literal(self) -> None:
        """An address connects without any resolver."""
        self.runScenario(self._literal)

    @inlineCallbacks
    def _movingName(self, reactor: Any) -> Any:
        one = _server(reactor, "127.0.0.1")
        number = one.getHost().port
        try:
            two = _server(reactor, "127.0.0.2", number)
        except Exception:
            yield one.stopListening()
            raise
        resolver = FakeResolver({"up.test": ["127.0.0.1"]})
        cache = NameCache(reactor, resolver, validity=3600)
        target = TCPTarget(reactor, "up.test", number, cache=cache)
        try:
            first = yield self._connect(reactor, target)
            again = yield self._connect(reactor, target)
            resolver.names["up.test"] = ["127.0.0.2"]
            cached = yield self._connect(reactor, target)
            cache.validity = 0  # the validity ran out: the move is seen
            moved = yield self._connect(reactor, target)
        finally:
            yield one.stopListening()
            yield two.stopListening()
        self.assertEqual(
            (first, again, cached, moved), ("127.0.0.1",) * 3 + ("127.0.0.2",)
        )
        self.assertEqual(len(resolver.calls), 2)

    def test_movingName(self) -> None:
        """A name is connected through the cache and followed when it moves."""
        self.runScenario(self._movingName)

    @inlineCallbacks
    def _failover(self, reactor: Any) -> Any:
        # Nothing listens on 127.0.0.3 at the port 127.0.0.1 listens on.
        port = _server(reactor, "127.0.0.1")
        number = port.getHost().port
        resolver = FakeResolver({"up.test": ["127.0.0.3", "127.0.0.1"]})
        target = TCPTarget(
            reactor, "up.test", number, cache=NameCache(reactor, resolver)
        )
        try:
            peer = yield self._connect(reactor, target)
        finally:
            yield port.stopListening()
        self.assertEqual(peer, "127.0.0.1")

    def test_failover(self) -> None:
        """A refused address is followed by the name's next one."""
        self.runScenario(self._failover)

    @inlineCallbacks
    def _unresolvable(self, reactor: Any) -> Any:
        target = TCPTarget(
            reactor, "gone.test", 80, cache=NameCache(reactor, FakeResolver({}))
        )
        try:
            yield target.connect(_client())
        except DNSLookupError as e:
            return str(e)
        self.fail("connected to a name with no address")

    def test_unresolvable(self) -> None:
        """A name with no address fails the connect with DNSLookupError."""
        message = self.runScenario(self._unresolvable)
        self.assertIn("gone.test", message)

    @inlineCallbacks
    def _localhost(self, reactor: Any) -> Any:
        # The reactor's own resolver (getaddrinfo: /etc/hosts) names localhost.
        port = _server(reactor, "127.0.0.1")
        cache = NameCache(reactor)
        target = TCPTarget(reactor, "localhost", port.getHost().port, cache=cache)
        try:
            peer = yield self._connect(reactor, target)
        finally:
            yield port.stopListening()
        self.assertIn(peer, ("127.0.0.1", "::1"))
        self.assertEqual(cache.lookups, 1)

    def test_localhost(self) -> None:
        """The reactor's own resolver resolves a name of /etc/hosts."""
        self.runScenario(self._localhost)


globals().update(makeReactorTests(TargetConnectMixin))


class CommandLineNameTests(SynchronousTestCase):
    """
    C{twist splice-proxy --connect tcp:localhost:PORT}, a real subprocess: the
    name (from C{/etc/hosts}) resolves through the cache, connections relay.
    """

    def test_connectByName(self) -> None:
        """Three clients through a tcp:localhost upstream are all relayed."""
        from ._cli_support import (
            LOOPBACK,
            ProxyProcess,
            connectProxy,
            readAll,
            runAsync,
            sendAll,
            startServer,
        )

        async def echo(r: Any, w: Any) -> None:
            w.write(await readAll(r))
            await w.drain()
            w.close()

        async def scenario() -> tuple[Any, list[bytes], int]:
            server, uport = await startServer(echo)
            proxy = ProxyProcess(
                [
                    "--listen",
                    f"tcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"tcp:localhost:{uport}",
                    "--resolve-ttl",
                    "1m",
                ]
            )
            self.addCleanup(proxy.kill)
            port = await asyncio.to_thread(proxy.listeningPort)
            got = []
            for i in range(3):
                r, w = await connectProxy(port)
                message = b"hello %d" % i
                got.append((await asyncio.gather(readAll(r), sendAll(w, message)))[0])
                w.close()
            server.close()
            return proxy, got, uport

        proxy, got, uport = runAsync(scenario(), 30)
        self.assertEqual(got, [b"hello 0", b"hello 1", b"hello 2"])
        events = proxy.waitForConnections(3)
        self.assertEqual([e["reason"] for e in events], ["done"] * 3)
        self.assertEqual({e["upstream"] for e in events}, {f"127.0.0.1:{uport}"})


class ProxyConnectsMixin(ReactorTestMixin):
    """
    The proxy's own connect (the general path) through a L{TCPTarget} or a
    C{HostnameEndpoint}: no resolver for an address, the direct connector
    once a name's one address is cached.
    """

    scenarioTimeout = 20.0

    def _through(self, upstream: Any) -> tuple[list[type], list[Any]]:
        from splicetx._proxy.upstream import _DirectClient
        from splicetx.proxy import SpliceProxyProtocol

        from .test_proxy import (
            LOOPBACK,
            EchoFactory,
            RecordingFactory,
            connectClient,
            stopAll,
        )

        seen: list[type] = []

        class Watch(SpliceProxyProtocol):
            def upstreamConnected(self, proto: Any) -> None:
                seen.append(type(proto.transport) is _DirectClient)
                super().upstreamConnected(proto)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            factory = RecordingFactory(
                upstream(reactor, up.getHost().port), reactor=reactor
            )
            factory.protocol = Watch
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            results = []
            for _ in range(2):
                done = factory.nextResult()
                client = connectClient(reactor, port)
                yield client.made
                yield client.send(b"z" * 3000)
                result = yield done
                yield client.lost
                results.append((result.reason, result.bytesAToB, result.bytesBToA))
            yield stopAll([up, port])
            return results

        return seen, self.runScenario(scenario)

    def test_nameThenCached(self) -> None:
        """A name's first connect resolves; the next goes direct from the cache."""
        resolvers: list[FakeResolver] = []

        def upstream(reactor: Any, port: int) -> Any:
            resolvers.append(FakeResolver({"up.test": ["127.0.0.1"]}))
            cache = NameCache(reactor, resolvers[-1])
            return TCPTarget(reactor, "up.test", port, cache=cache)

        direct, results = self._through(upstream)
        self.assertEqual(direct, [False, True])
        self.assertEqual(results, [("done", 3000, 3000)] * 2)
        self.assertEqual(len(resolvers[0].calls), 1)

    def test_hostnameEndpointLiteral(self) -> None:
        """A HostnameEndpoint with an address connects direct, no resolver."""
        from twisted.internet.endpoints import HostnameEndpoint

        def upstream(reactor: Any, port: int) -> Any:
            reactor.installNameResolver(Explodes())
            return HostnameEndpoint(reactor, "127.0.0.1", port)

        direct, results = self._through(upstream)
        self.assertEqual(direct, [True, True])
        self.assertEqual(results, [("done", 3000, 3000)] * 2)


globals().update(makeReactorTests(ProxyConnectsMixin))
