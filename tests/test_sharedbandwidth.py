# -*- test-case-name: tests.test_sharedbandwidth -*-
"""
Bandwidth limits shared by connections (C{--client-bandwidth},
C{--listener-bandwidth}: L{SharedBandwidth} buckets and the L{Limits} of
each direction) and the rate a limited transfer keeps over five seconds,
over real loopback sockets on every reactor and both listener paths, the
bytes still spliced.

Time is only asserted as a rate of a low limit (256 KiB/s, which a
loaded machine reaches) or as an order of events.
"""

from __future__ import annotations

import hashlib
import sys
import time
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from splicetx import DONE
from splicetx._proxy.clientlimits import ClientLimits
from splicetx._relay import bandwidth
from splicetx._relay.bandwidth import (
    MIN_BURST,
    BandwidthPlan,
    Limits,
    SharedBandwidth,
    directionLimits,
)
from splicetx.testing import digest, makeReactorTests, payload

from .test_bandwidth import _FakeReactor
from .test_fastforward import PathHelpers, _v1
from .test_proxy import LOOPBACK, stopAll

#: The shared limits of the scenarios: 512 KiB/s, a burst of as much.
SHARED = 512 * 1024


class _Stream(protocol.Protocol):
    """
    One end of a transfer both ways: writes C{send} at once, counts what
    arrives (its digest, the times of the first and last bytes) and ends
    when C{expect} bytes came (the upstream end closes then; the client
    end waits for the close).
    """

    def __init__(self, send: bytes, expect: int, closes: bool) -> None:
        self.send = send
        self.expect = expect
        self.closes = closes
        self.got = 0
        self.hash = hashlib.sha256()
        self.first = self.last = 0.0
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.got:
            self.first = now
        self.last = now
        self.got += len(data)
        self.hash.update(data)
        if self.closes and self.got >= self.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def rate(self, burst: int) -> float:
        """
        Bytes per second after the first burst.
        """
        return (self.got - burst) / (self.last - self.first)


class _Upstreams(protocol.Factory):
    """
    Upstream ends: each sends C{down} and closes once C{expect} came.
    """

    noisy = False

    def __init__(self, down: bytes, expect: int) -> None:
        self.down = down
        self.expect = expect
        self.ends: list[_Stream] = []

    def buildProtocol(self, addr: Any) -> _Stream:
        end = _Stream(self.down, self.expect, True)
        self.ends.append(end)
        return end


class _Client(protocol.ClientFactory):
    noisy = False

    def __init__(self, end: _Stream) -> None:
        self.end = end

    def buildProtocol(self, addr: Any) -> _Stream:
        return self.end


def stream(
    reactor: Any, port: Any, source: str, up: bytes, down: int, header: bytes = b""
) -> _Stream:
    """
    A client end from C{source}: sends C{header + up}, expects C{down}.
    """
    end = _Stream(header + up, down, False)
    reactor.connectTCP(
        LOOPBACK, port.getHost().port, _Client(end), bindAddress=(source, 0)
    )
    return end


class SharedTests(SynchronousTestCase):
    """
    The shared bucket's turns, with a clock and directions of the test's.
    """

    def test_roundRobin(self) -> None:
        """
        Directions that ran a shared bucket dry are woken in the order they
        queued, one quantum each; a newcomer does not jump the line; a
        relay that ends leaves the line.
        """
        clock = [1000.0]
        self.patch(bandwidth, "monotonicNow", lambda: clock[0])
        reactor = _FakeReactor()
        shared = SharedBandwidth(SHARED, reactor)
        woken: list[str] = []

        class Src:
            def stopReading(self) -> None:
                pass

        class Turns:
            held: set[Any] = set()

        class D:
            def __init__(self, name: str) -> None:
                self.name = name
                self.src = Src()
                self.turns = Turns()
                self.limit = Limits([shared], reactor)

            def resume(self) -> None:
                woken.append(self.name)
                # It reads a quantum.
                assert self.limit.grant() >= shared.quantum
                self.limit.tokens -= shared.quantum

        a, b, c, gone = D("a"), D("b"), D("c"), D("gone")
        self.assertEqual(a.limit.grant(), shared.burst)
        a.limit.tokens = 0.0
        for d in (a, b, gone, c):
            self.assertEqual(d.limit.grant(), 0)
            d.limit.hold(d)
        gone.limit.cancel(gone)
        # A newcomer with tokens back still waits behind them.
        shared.tokens = float(shared.quantum)
        newcomer = D("new")
        self.assertEqual(newcomer.limit.grant(), 0)
        [(delay, refill)] = reactor.calls
        self.assertGreater(delay, 0)
        for _ in range(3):
            shared.tokens = float(shared.quantum)
            refill()
        self.assertEqual(woken, ["a", "b", "c"])
        self.assertIsNone(shared.queue)

    def test_plan(self) -> None:
        """
        A plan gives each direction its own bucket and its share of each
        pair (up for A to B); none at all gives no limit.
        """
        reactor = _FakeReactor()
        pair = (SharedBandwidth(SHARED, reactor), SharedBandwidth(SHARED, reactor))
        ab, ba = directionLimits(BandwidthPlan(1000, (pair,)), reactor)
        self.assertEqual(
            [type(b).__name__ for b in ab.buckets], ["Bandwidth", "SharedBandwidth"]
        )
        self.assertIs(ab.buckets[1], pair[0])
        self.assertIs(ba.buckets[1], pair[1])
        self.assertEqual(directionLimits(BandwidthPlan(None, ()), reactor), (None,) * 2)
        # A spend is taken from every bucket.
        ab.grant()
        ab.tokens -= 100
        self.assertLessEqual(pair[0].tokens, pair[0].burst - 100 + 1)

    def test_clientTableBounded(self) -> None:
        """
        With only a bandwidth per client, a churn of 1000 sources with live
        connections keeps the table at its cap; each client's connections
        share one pair of buckets, and a reload's new rate gives new
        connections a new pair.
        """
        reactor = _FakeReactor()
        limits = ClientLimits(bandwidth=SHARED, capacity=32)
        live = [limits.admit(f"127.{i // 250}.{i % 250}.1", 0.0) for i in range(1000)]
        self.assertEqual(len(limits), 32)
        one = limits.admit("127.9.9.9", 0.0)
        two = limits.admit("127.9.9.9", 0.0)
        old = one.shared(reactor)
        assert old is not None
        self.assertIs(two.shared(reactor), old)
        limits.configure(None, None, bandwidth=SHARED * 2)
        three = limits.admit("127.9.9.9", 0.0)
        pair = three.shared(reactor)
        assert pair is not None
        self.assertEqual((pair[0].rate, old[0].rate), (SHARED * 2, SHARED))
        for a in [*live, one, two, three]:
            a.ended()
        self.assertLessEqual(len(limits), 32)


class _SharedHelpers(PathHelpers):
    """
    What the shared scenarios use.
    """

    scenarioTimeout = 90.0
    #: The engine the relays take (C{auto}: splice, on Linux).
    engine = "auto"

    def limited(self, reactor: Any, down: bytes, expect: int, **kw: Any) -> Any:
        """
        Upstreams that send C{down} and expect C{expect} bytes, and a proxy
        to them with C{kw}.

        @return: C{(upstreams, their port, factory, proxy port)}.
        """
        upstreams = _Upstreams(down, expect)
        u = reactor.listenTCP(0, upstreams, interface=LOOPBACK)
        factory, port = self.proxy(reactor, u.getHost().port, engine=self.engine, **kw)
        return upstreams, u, factory, port

    def assertSpliced(self, events: list[dict[str, Any]], count: int) -> None:
        self.assertEqual(len(events), count)
        for event in events:
            self.assertEqual(event["reason"], DONE)
            if self.engine != "auto":
                self.assertEqual(event["engine"], self.engine)
            elif sys.platform.startswith("linux"):
                self.assertEqual(event["engine"], "splice")

    def setUp(self) -> None:
        super().setUp()
        self.events_ = self.events()


class SharedScenarios(_SharedHelpers):
    """
    Shared limits on one path (C{fast}).
    """

    def test_clientShared(self) -> None:
        """
        Two connections whose trusted PROXY header names 192.0.2.7 (from two
        peers) share its 512 KiB/s each way: 1.5 MiB each way take them at
        least 1.8 s (2 s less some slack), and they take turns (when one
        is done, the other is behind by no more than the first burst and a
        piece); a third connection, of 192.0.2.8 from the first peer, has a
        bucket of its own and is done before them.  All intact and spliced.
        """
        size = 768 * 1024
        up, down = payload(size, seed=21), payload(size, seed=22)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            upstreams, u, factory, port = self.limited(
                reactor,
                down,
                size,
                clientLimits=ClientLimits(bandwidth=SHARED),
                acceptProxyProtocol=True,
            )
            started = time.monotonic()
            pair = [
                stream(reactor, port, "127.0.0.9", up, size, _v1("192.0.2.7")),
                stream(reactor, port, "127.0.0.10", up, size, _v1("192.0.2.7")),
            ]
            other = stream(reactor, port, "127.0.0.9", up, size, _v1("192.0.2.8"))
            order: list[str] = []
            for name, end in (("a", pair[0]), ("b", pair[1]), ("other", other)):
                end.lost.addCallback(lambda _, n=name: order.append(n))
            progress: list[int] = []

            def firstDone(_: Any) -> None:
                if not progress:
                    progress.extend(e.got for e in pair)

            for end in pair:
                end.lost.addCallback(firstDone)
            yield gatherResults([e.lost for e in (*pair, other)])
            elapsed = time.monotonic() - started
            yield self.waitEnded(reactor, factory, 3)
            yield stopAll([u, port])
            return pair, other, upstreams.ends, order, progress, elapsed, factory

        pair, other, ends, order, progress, elapsed, factory = self.runScenario(
            scenario
        )
        self.assertPath(factory)
        for end in (*pair, other):
            self.assertEqual(end.hash.hexdigest(), digest(down))
        for end in ends:
            self.assertEqual(end.hash.hexdigest(), digest(up))
        self.assertGreaterEqual(elapsed, 1.8)
        self.assertEqual(order[0], "other")
        # Taking turns: the first to be done was ahead by no more than the
        # burst one of them may have had alone at the start, and a piece.
        self.assertGreaterEqual(min(progress), size - SHARED - 2 * (SHARED // 20))
        self.assertSpliced(self.events_, 3)

    def test_listenerShared(self) -> None:
        """
        Two clients of a listener limited to 512 KiB/s each way share it:
        1.5 MiB each way take at least 1.8 s; intact and spliced.
        """
        size = 768 * 1024
        up, down = payload(size, seed=23), payload(size, seed=24)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            upstreams, u, factory, port = self.limited(
                reactor, down, size, listenerBandwidth=SHARED
            )
            started = time.monotonic()
            ends = [
                stream(reactor, port, source, up, size)
                for source in ("127.0.0.11", "127.0.0.12")
            ]
            yield gatherResults([e.lost for e in ends])
            elapsed = time.monotonic() - started
            yield self.waitEnded(reactor, factory, 2)
            yield stopAll([u, port])
            return ends, upstreams.ends, elapsed, factory

        ends, upEnds, elapsed, factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual([e.hash.hexdigest() for e in ends], [digest(down)] * 2)
        self.assertEqual([e.hash.hexdigest() for e in upEnds], [digest(up)] * 2)
        self.assertGreaterEqual(elapsed, 1.8)
        self.assertSpliced(self.events_, 2)

    def test_rateOverFiveSeconds(self) -> None:
        """
        A connection limited to 256 KiB/s moves 1.5 MiB each way at the
        same time: after the first burst (256 KiB), each direction's rate
        over the five seconds the rest takes is within 10 % of the limit;
        the bytes are intact, and spliced.
        """
        rate = 256 * 1024
        size = MIN_BURST + 5 * rate
        up, down = payload(size, seed=25), payload(size, seed=26)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            upstreams, u, factory, port = self.limited(
                reactor, down, size, connectionBandwidth=rate
            )
            end = stream(reactor, port, "127.0.0.13", up, size)
            yield end.lost
            yield self.waitEnded(reactor, factory, 1)
            yield stopAll([u, port])
            return end, upstreams.ends, factory

        end, (upEnd,), factory = self.runScenario(scenario)
        self.assertPath(factory)
        self.assertEqual(end.hash.hexdigest(), digest(down))
        self.assertEqual(upEnd.hash.hexdigest(), digest(up))
        rates = [end.rate(MIN_BURST) / rate, upEnd.rate(MIN_BURST) / rate]
        for measured in rates:
            self.assertTrue(0.9 <= measured <= 1.1, f"rates/limit: {rates}")
        self.assertSpliced(self.events_, 1)


class FastShared(SharedScenarios):
    fast = True


class GeneralShared(SharedScenarios):
    fast = False


class CopyShared(_SharedHelpers):
    """
    The copy engine (TLS, fallbacks) keeps a shared limit too, by pausing
    its sources.
    """

    fast = False
    engine = "copy"
    test_listenerShared = SharedScenarios.test_listenerShared


globals().update(makeReactorTests(FastShared))
globals().update(makeReactorTests(CopyShared))
globals().update(makeReactorTests(GeneralShared))
