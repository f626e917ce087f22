# -*- test-case-name: tests.test_clientlimits -*-
"""
Limits per client (L{splicetx._proxy.clientlimits}): the table's logic
with a clock the test controls, then real clients over loopback sockets on
every reactor and both listener paths, each from its own 127.x address.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error, protocol
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.clientlimits import ClientLimits, ConnectionRate
from splicetx.proxy import REJECTED
from splicetx.testing import makeReactorTests

from .test_fastforward import PathHelpers, RecordingMetrics, _v1
from .test_proxy import LOOPBACK, EchoFactory, stopAll


class TableTests(SynchronousTestCase):
    """
    L{ClientLimits.admit} and L{Admission.ended}, by the time given.
    """

    def test_concurrent(self) -> None:
        """
        A client gets its limit of live connections and no more; another
        client is not affected; an ended connection makes room again.
        """
        limits = ClientLimits(maxConnections=2)
        a1 = limits.admit("10.0.0.1", 0.0)
        a2 = limits.admit("10.0.0.1", 0.0)
        a3 = limits.admit("10.0.0.1", 0.0)
        self.assertEqual([a.refusal for a in (a1, a2)], [None, None])
        assert a3.refusal is not None
        self.assertEqual(a3.refusal.metric, "client_connections")
        self.assertTrue(a3.refusal.abort)
        self.assertIn(
            "client 10.0.0.1 is at its limit of 2 live connections", a3.refusal.detail
        )
        self.assertIsNone(limits.admit("10.0.0.2", 0.0).refusal)
        self.assertTrue(a1.ended())
        self.assertTrue(a1.ended())  # once only
        self.assertIsNone(limits.admit("10.0.0.1", 0.0).refusal)
        self.assertIsNotNone(limits.admit("10.0.0.1", 0.0).refusal)

    def test_forgottenWhenIdle(self) -> None:
        """
        Without a rate, a client with no live connection leaves the table.
        """
        limits = ClientLimits(maxConnections=1)
        a = limits.admit("10.0.0.1", 0.0)
        self.assertEqual(len(limits), 1)
        a.ended()
        self.assertEqual(len(limits), 0)

    def test_rate(self) -> None:
        """
        C{5/s:5}: five at once, the sixth refused, one more after 0.2 s.
        """
        limits = ClientLimits(rate=ConnectionRate(5.0, 5))
        got = [limits.admit("10.0.0.1", 0.0).refusal for _ in range(6)]
        self.assertEqual(got[:5], [None] * 5)
        assert got[5] is not None
        self.assertEqual(got[5].metric, "client_rate")
        self.assertIn("its limit of 5/s:5 new connections", got[5].detail)
        self.assertIsNone(limits.admit("10.0.0.1", 0.2).refusal)
        self.assertIsNotNone(limits.admit("10.0.0.1", 0.2).refusal)
        self.assertIsNone(limits.admit("10.0.0.2", 0.2).refusal)

    def test_burst(self) -> None:
        """
        C{1/s:3}: three at once; the bucket never holds more than three.
        """
        limits = ClientLimits(rate=ConnectionRate(1.0, 3))
        got = [limits.admit("10.0.0.1", 100.0).refusal is None for _ in range(4)]
        self.assertEqual(got, [True, True, True, False])
        got = [limits.admit("10.0.0.1", 1000.0).refusal is None for _ in range(4)]
        self.assertEqual(got, [True, True, True, False])

    def test_prefix(self) -> None:
        """
        With prefix C{(24, 64)}, the addresses of a /24 or a /64 are one
        client; an IPv4-mapped address is its IPv4 address.
        """
        limits = ClientLimits(maxConnections=1, prefix=(24, 64))
        self.assertIsNone(limits.admit("10.0.0.1", 0).refusal)
        refusal = limits.admit("::ffff:10.0.0.200", 0).refusal
        assert refusal is not None
        self.assertIn("client 10.0.0.0/24", refusal.detail)
        self.assertIsNone(limits.admit("10.0.1.1", 0).refusal)
        self.assertIsNone(limits.admit("2001:db8::1", 0).refusal)
        self.assertIsNotNone(limits.admit("2001:db8::ffff:1", 0).refusal)
        self.assertIsNone(limits.admit("2001:db8:0:1::1", 0).refusal)

    def test_notIP(self) -> None:
        """
        A UNIX socket client is not limited.
        """
        limits = ClientLimits(maxConnections=1)
        for _ in range(3):
            self.assertIsNone(limits.admit(UNIXAddress(b"/x"), 0).refusal)
        self.assertEqual(len(limits), 0)

    def test_recordedOncePerInterval(self) -> None:
        """
        The first refusal of a client is recorded, those within the log
        interval are quiet, and the next recorded one counts them.
        """
        limits = ClientLimits(maxConnections=1, logInterval=10.0)
        limits.admit("10.0.0.1", 0.0)
        first = limits.admit("10.0.0.1", 1.0)
        quiet = [limits.admit("10.0.0.1", 2.0) for _ in range(3)]
        other = limits.admit("10.0.0.1", 11.0)
        self.assertFalse(first.quiet)
        self.assertEqual([q.quiet for q in quiet], [True] * 3)
        self.assertEqual([q.ended() for q in quiet], [False] * 3)
        self.assertFalse(other.quiet)
        assert other.refusal is not None
        self.assertIn("3 more refused since", other.refusal.detail)

    def test_bounded(self) -> None:
        """
        A churn of many sources never holds more than the capacity, idle
        clients are forgotten first, and a busy one is kept while idle ones
        can go.
        """
        limits = ClientLimits(
            maxConnections=1, rate=ConnectionRate(100.0, 2), capacity=64
        )
        busy = limits.admit("10.1.0.1", 0.0)
        sizes = set()
        for i in range(5000):
            now = i * 0.01
            a = limits.admit(f"10.2.{i // 250}.{i % 250}", now)
            a.ended()
            sizes.add(len(limits))
        self.assertLessEqual(max(sizes), 64)
        # Every forgotten client was idle (its bucket refilled): 10.1.0.1 is
        # still counted, so its second connection is refused.
        self.assertIsNotNone(limits.admit("10.1.0.1", 100.0).refusal)
        busy.ended()
        self.assertIsNone(limits.admit("10.1.0.1", 100.0).refusal)

    def test_reconfigure(self) -> None:
        """
        New limits apply to new connections; live ones are still counted.
        """
        limits = ClientLimits(maxConnections=3)
        for _ in range(2):
            limits.admit("10.0.0.1", 0)
        limits.configure(1, None)
        self.assertIsNotNone(limits.admit("10.0.0.1", 0).refusal)
        limits.configure(5, None)
        self.assertIsNone(limits.admit("10.0.0.1", 0).refusal)

    def test_badLimits(self) -> None:
        """
        Limits out of range raise C{ValueError}.
        """
        for kw in (
            {"maxConnections": 0},
            {"rate": ConnectionRate(0.0, 1)},
            {"rate": ConnectionRate(1.0, 0)},
            {"prefix": (33, 128)},
            {"prefix": (32, 129)},
        ):
            self.assertRaises(ValueError, ClientLimits, **kw)


class Probe(protocol.Protocol):
    """
    Sends C{ping}; C{answered} fires with C{True} when it comes back, with
    C{False} when the connection ends (or fails) before that.
    """

    def __init__(self) -> None:
        self.got = b""
        self.answered: Deferred[bool] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if self.got == b"ping" and not self.answered.called:
            self.answered.callback(True)

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if not self.answered.called:
            self.answered.callback(False)


class _ProbeFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, probe: Probe, first: bytes = b"") -> None:
        self.probe = probe
        self.first = first

    def buildProtocol(self, addr: Any) -> Probe:
        probe = self.probe
        if self.first:
            first = self.first

            def made() -> None:
                probe.transport.write(first + b"ping")

            probe.connectionMade = made  # type: ignore[method-assign]
        return probe

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.probe.reason = reason
        if not self.probe.answered.called:
            self.probe.answered.callback(False)


def probe(reactor: Any, port: Any, source: str, first: bytes = b"") -> Probe:
    """
    Connect a L{Probe} from C{source} (a 127.x address) to C{port}.
    """
    p = Probe()
    reactor.connectTCP(
        LOOPBACK,
        port.getHost().port,
        _ProbeFactory(p, first),
        bindAddress=(source, 0),
    )
    return p


class LimitScenarios(PathHelpers):
    """
    Clients over their limits are refused while another is served.
    """

    def limited(self, reactor: Any, limits: ClientLimits, **kw: Any) -> Any:
        echo = EchoFactory()
        up = reactor.listenTCP(0, echo, interface=LOOPBACK)
        metrics = RecordingMetrics()
        factory, port = self.proxy(
            reactor, up.getHost().port, clientLimits=limits, metrics=metrics, **kw
        )
        return factory, port, up, metrics

    def test_maxConnections(self) -> None:
        """
        With two connections per client, 127.0.0.2's third is refused (reset,
        recorded once, counted each time) while 127.0.0.3 is served; once one
        of its connections ends, 127.0.0.2 is served again.
        """
        events = self.events()
        limits = ClientLimits(maxConnections=2)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port, up, metrics = self.limited(reactor, limits)
            held = [probe(reactor, port, "127.0.0.2") for _ in range(2)]
            served = yield gatherResults([p.answered for p in held])
            over = []
            for _ in range(2):
                over.append((yield probe(reactor, port, "127.0.0.2").answered))
            third = probe(reactor, port, "127.0.0.3")
            other = yield third.answered
            held[0].transport.loseConnection()
            while len([c for c in factory.liveProtocols]) > 2:
                yield _turn(reactor)
            fourth = probe(reactor, port, "127.0.0.2")
            again = yield fourth.answered
            for p in [*held[1:], third, fourth]:
                p.transport.loseConnection()
            yield self.waitEnded(reactor, factory, 6)
            yield stopAll([up, port])
            return served, over, other, again, metrics, factory

        served, over, other, again, metrics, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(
            (served, over, other, again), ([True, True], [False] * 2, True, True)
        )
        self.assertEqual(metrics.refused, ["client_connections"] * 2)
        rejected = [e for e in events if e["reason"] == REJECTED]
        self.assertEqual(len(rejected), 1)
        self.assertIn(
            "client 127.0.0.2 is at its limit of 2 live connections",
            rejected[0]["detail"],
        )
        self.assertEqual(len(limits), 0)

    def test_rate(self) -> None:
        """
        At 1 per 100 s with a burst of 5, 127.0.0.4's sixth connection is
        refused while 127.0.0.5 is served.
        """
        limits = ClientLimits(rate=ConnectionRate(0.01, 5))

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port, up, metrics = self.limited(reactor, limits)
            got = []
            for _ in range(6):
                p = probe(reactor, port, "127.0.0.4")
                got.append((yield p.answered))
                if p.transport is not None:
                    p.transport.loseConnection()
            other = probe(reactor, port, "127.0.0.5")
            got.append((yield other.answered))
            other.transport.loseConnection()
            yield self.waitEnded(reactor, factory, 7)
            yield stopAll([up, port])
            return got, metrics, factory

        got, metrics, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(got, [True] * 5 + [False, True])
        self.assertEqual(metrics.refused, ["client_rate"])

    def test_proxyHeaderSource(self) -> None:
        """
        Behind a trusted balancer, the client is the PROXY header's source:
        192.0.2.7's second connection is refused, 192.0.2.8 is served, all
        from the same peer.
        """
        limits = ClientLimits(maxConnections=1)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port, up, metrics = self.limited(
                reactor, limits, acceptProxyProtocol=True
            )
            first = probe(reactor, port, "127.0.0.6", _v1("192.0.2.7"))
            got = [(yield first.answered)]
            for source in ("192.0.2.7", "192.0.2.8"):
                p = probe(reactor, port, "127.0.0.6", _v1(source))
                got.append((yield p.answered))
                if p.transport is not None:
                    p.transport.loseConnection()
            first.transport.loseConnection()
            yield self.waitEnded(reactor, factory, 3)
            yield stopAll([up, port])
            return got, metrics, factory

        got, metrics, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(got, [True, False, True])
        self.assertEqual(metrics.refused, ["client_connections"])

    def test_closeAction(self) -> None:
        """
        With C{reset=False} (C{--client-limit-action close}), a client over
        its limit is closed cleanly (a FIN, not a reset) and counted; with
        the default it is reset (not a clean close).
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            reasons = []
            for reset in (False, True):
                limits = ClientLimits(maxConnections=1, reset=reset)
                factory, port, up, metrics = self.limited(reactor, limits)
                held = probe(reactor, port, "127.0.0.7")
                yield held.answered
                over = probe(reactor, port, "127.0.0.7")
                answered = yield over.answered
                clean = isinstance(over.reason.value, error.ConnectionDone)
                reasons.append((answered, clean, metrics.refused))
                held.transport.loseConnection()
                yield self.waitEnded(reactor, factory, 2)
                yield stopAll([up, port])
            return reasons

        reasons = self.runScenario(scenario)
        self.assertEqual(
            reasons,
            [
                (False, True, ["client_connections"]),
                # A reset (seen as lost, or as a failed connect when it
                # comes before the client saw its connect complete).
                (False, False, ["client_connections"]),
            ],
        )

    def test_churn(self) -> None:
        """
        120 sources across 127.0.0.0/8, with a rate limit (so each client is
        remembered), never fill the table beyond its cap of 32.
        """
        limits = ClientLimits(rate=ConnectionRate(0.01, 5), capacity=32)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory, port, up, metrics = self.limited(reactor, limits)
            sizes = []
            for batch in range(6):
                probes = [
                    probe(reactor, port, f"127.{batch + 10}.{i}.1") for i in range(20)
                ]
                served = yield gatherResults([p.answered for p in probes])
                sizes.append((len(limits), all(served)))
                for p in probes:
                    p.transport.loseConnection()
            yield self.waitEnded(reactor, factory, 120)
            yield stopAll([up, port])
            return sizes, factory

        sizes, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual([ok for _, ok in sizes], [True] * 6)
        self.assertLessEqual(max(n for n, _ in sizes), 32)
        self.assertEqual(sizes[0][0], 20)


def _turn(reactor: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


class FastLimitScenarios(LimitScenarios):
    fast = True


class GeneralLimitScenarios(LimitScenarios):
    fast = False


globals().update(makeReactorTests(FastLimitScenarios))
globals().update(makeReactorTests(GeneralLimitScenarios))
