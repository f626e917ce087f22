# -*- test-case-name: tests.test_bandwidth -*-
"""
C{--connection-bandwidth}: a token bucket per direction of each connection
(L{splicetx._relay.bandwidth}) on both paths, over real loopback sockets on
every reactor, the bytes still spliced.

Only lower bounds on time are asserted: the machine is shared.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from splicetx import DONE
from splicetx._relay.bandwidth import MAX_QUANTUM, MIN_BURST, Bandwidth
from splicetx._relay.turns import monotonicNow
from splicetx.proxy import SpliceProxyFactory
from splicetx.testing import digest, makeReactorTests, payload

from ._cores import makeCoreTests
from .test_fastforward import PathHelpers
from .test_proxy import LOOPBACK, EchoFactory, connectClient, stopAll

#: 500 KiB/s, as C{--connection-bandwidth 500KiB/s} reads it.
RATE = 500 * 1024

#: 1 MiB each way: twice the one-second burst, so at least
#: (1 MiB - 500 KiB) / 500 KiB/s = 1.05 s, about 20 refills of the bucket.
SIZE = 1024 * 1024

#: The least time L{SIZE} may take through the limit: 1.05 s less some slack.
FLOOR = 0.9


class _FakeReactor:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Any]] = []

    def callLater(self, delay: float, f: Any, *a: Any) -> Any:
        self.calls.append((delay, f))
        return self


class BucketTests(SynchronousTestCase):
    """
    The bucket's sizes.
    """

    def test_burst(self) -> None:
        """
        The bucket holds one second of its rate, or L{MIN_BURST} bytes when
        that is more; it starts full.
        """
        fast = Bandwidth(10 * 1024 * 1024, _FakeReactor())
        slow = Bandwidth(1000, _FakeReactor())
        self.assertEqual((fast.burst, slow.burst), (10 * 1024 * 1024, MIN_BURST))
        self.assertEqual(fast.grant(), fast.burst)
        self.assertEqual(fast.quantum, MAX_QUANTUM)
        self.assertEqual(slow.quantum, 50)

    def test_spentWaits(self) -> None:
        """
        A spent bucket grants nothing, and a direction held waits the time
        its rate takes to give one quantum back.
        """
        reactor = _FakeReactor()
        bucket = Bandwidth(RATE, reactor)
        bucket.grant()
        bucket.tokens = 0.0
        bucket.last = monotonicNow() + 60
        self.assertEqual(bucket.grant(), 0)

        class Src:
            reading = True

            def stopReading(self) -> None:
                self.reading = False

        class Turns:
            held: set[Any] = set()

        class D:
            src = Src()
            turns = Turns()

        d = D()
        bucket.hold(d)
        [(delay, _)] = reactor.calls
        self.assertFalse(d.src.reading)
        self.assertIn(d, Turns.held)
        self.assertGreaterEqual(delay, bucket.quantum / RATE * 0.99)

    def test_positive(self) -> None:
        """
        A rate must be positive, for the bucket and the factory.
        """
        self.assertRaises(ValueError, Bandwidth, 0, _FakeReactor())
        self.assertRaises(ValueError, SpliceProxyFactory, None, connectionBandwidth=0)


class BandwidthScenarios(PathHelpers):
    """
    The limit on one path (C{fast}).
    """

    scenarioTimeout = 60.0

    def test_limitedAndUnlimited(self) -> None:
        """
        1 MiB echoed through a proxy limited to 500 KiB/s take at least
        0.9 s (1.05 s less some slack) and come back intact, spliced; a
        connection of an unlimited proxy in the same process at the same
        time completes intact.
        """
        data = payload(SIZE, seed=11)
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            upPort = up.getHost().port
            limited, lport = self.proxy(reactor, upPort, connectionBandwidth=RATE)
            free, fport = self.proxy(reactor, upPort)
            slow = connectClient(reactor, lport)
            quick = connectClient(reactor, fport)
            yield gatherResults([slow.made, quick.made])
            started = time.monotonic()
            slow.send(data)
            quick.send(data)
            yield quick.lost
            yield slow.lost
            elapsed = time.monotonic() - started
            yield self.waitEnded(reactor, limited)
            yield self.waitEnded(reactor, free)
            yield stopAll([up, lport, fport])
            return slow.digest(), quick.digest(), elapsed, limited, free

        slowDigest, quickDigest, elapsed, limited, free = self.runScenario(scenario)
        self.assertEqual(slowDigest, digest(data))
        self.assertEqual(quickDigest, digest(data))
        self.assertGreaterEqual(elapsed, FLOOR)
        self.assertPath(limited)
        self.assertPath(free)
        self.assertEqual(len(events), 2)
        for event in events:
            self.assertEqual(event["reason"], DONE)
            self.assertEqual(
                (event["bytesClientToUpstream"], event["bytesUpstreamToClient"]),
                (SIZE, SIZE),
            )
            if sys.platform.startswith("linux"):
                self.assertEqual(event["engine"], "splice")


class CopyBandwidth(PathHelpers):
    """
    The copy engine (TLS, fallbacks) keeps the limit by pausing a source.
    """

    fast = False
    scenarioTimeout = 60.0

    def test_copyLimited(self) -> None:
        """
        1 MiB echoed through a proxy that copies, limited to 500 KiB/s,
        take at least 0.9 s and come back intact; the record says copy.
        """
        data = payload(SIZE, seed=12)
        events = self.events()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            factory, port = self.proxy(
                reactor, up.getHost().port, engine="copy", connectionBandwidth=RATE
            )
            client = connectClient(reactor, port)
            yield client.made
            started = time.monotonic()
            client.send(data)
            yield client.lost
            elapsed = time.monotonic() - started
            yield self.waitEnded(reactor, factory)
            yield stopAll([up, port])
            return client.digest(), elapsed

        received, elapsed = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertGreaterEqual(elapsed, FLOOR)
        [event] = events
        self.assertEqual(
            (event["reason"], event["engine"], event["bytesUpstreamToClient"]),
            (DONE, "copy", SIZE),
        )


class FastBandwidth(BandwidthScenarios):
    fast = True


class GeneralBandwidth(BandwidthScenarios):
    fast = False


globals().update(makeCoreTests(FastBandwidth))
globals().update(makeCoreTests(GeneralBandwidth))
globals().update(makeReactorTests(CopyBandwidth))
