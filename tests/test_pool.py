"""
Tests for L{splicetx._pool.pool}: upstreams, passive health, and the pool's
failover on connect -- with fake endpoints on a L{Clock}, and over real
loopback sockets on every reactor.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    inlineCallbacks,
    succeed,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx._pool.balance import SourceHash, clientKeyFor
from splicetx._pool.pool import (
    ALL_DOWN,
    ALL_FAILED,
    IUpstreamPool,
    NoUpstreamAvailable,
    Upstream,
    UpstreamPool,
    failureReason,
)
from splicetx.testing import ReactorTestMixin, makeReactorTests

LOOPBACK = "127.0.0.1"


class FakeEndpoint:
    """
    A client endpoint whose connects the test answers: each C{connect}
    returns the next prepared result, or a pending L{Deferred}.

    @ivar results: what the next connects return (a value, an exception, or
        C{None} for a L{Deferred} left pending).
    @ivar pending: the pending L{Deferred}s handed out.
    @ivar calls: how many connects were made.
    """

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.pending: list[Deferred[Any]] = []
        self.calls = 0
        self.cancelled = 0
        self.cancelError: Exception | None = None

    def connect(self, factory: Any) -> Deferred[Any]:
        self.calls += 1
        result = self.results.pop(0) if self.results else None
        if result is None:

            def cancel(d: Deferred[Any]) -> None:
                self.cancelled += 1
                if self.cancelError is not None:
                    d.errback(self.cancelError)

            d: Deferred[Any] = Deferred(cancel)
            self.pending.append(d)
            return d
        if isinstance(result, Exception):
            return fail(result)
        return succeed(result)


def refused() -> ConnectionRefusedError:
    """
    The error of a connect to a closed port.
    """
    return ConnectionRefusedError("closed")


class UpstreamTests(SynchronousTestCase):
    """
    L{Upstream}: arguments, counters and passive health.
    """

    def test_badArguments(self) -> None:
        """
        Weights below 1, negative C{maxFails} and C{failTimeout} <= 0 are
        refused.
        """
        ep = FakeEndpoint()
        for kwargs in [
            {"weight": 0},
            {"weight": 1.5},
            {"maxFails": -1},
            {"failTimeout": 0},
        ]:
            with self.assertRaises(ValueError):
                Upstream(ep, "x", **kwargs)

    def test_description(self) -> None:
        """
        Without a description, the endpoint is described as host:port.
        """
        up = Upstream(TCP4ClientEndpoint(Clock(), "10.0.0.1", 80))
        self.assertEqual(up.description, "10.0.0.1:80")
        self.assertEqual(up.hashKey, b"10.0.0.1:80")

    def test_maxFailsWithinWindow(self) -> None:
        """
        C{maxFails} failures within C{failTimeout} make the upstream
        unavailable for C{failTimeout} seconds.
        """
        clock = Clock()
        up = Upstream(FakeEndpoint(), "a", maxFails=2, failTimeout=10, clock=clock)
        self.assertFalse(up.connectFailed("refused"))
        clock.advance(5)
        self.assertTrue(up.available())
        self.assertTrue(up.connectFailed("refused"))
        self.assertFalse(up.available())
        self.assertEqual(up.failedUntil, 15.0)
        clock.advance(9.9)
        self.assertFalse(up.available())
        clock.advance(0.1)
        self.assertTrue(up.available())
        self.assertEqual(up.failures["refused"], 2)

    def test_failuresOutsideWindow(self) -> None:
        """
        Failures further apart than C{failTimeout} do not add up.
        """
        clock = Clock()
        up = Upstream(FakeEndpoint(), "a", maxFails=2, failTimeout=10, clock=clock)
        up.connectFailed("refused")
        clock.advance(11)
        self.assertFalse(up.connectFailed("timeout"))
        self.assertTrue(up.available())

    def test_probation(self) -> None:
        """
        After its window, one more failure makes the upstream unavailable
        again at once; a success forgets the failures.
        """
        clock = Clock()
        up = Upstream(FakeEndpoint(), "a", maxFails=3, failTimeout=10, clock=clock)
        for _ in range(3):
            up.connectFailed("refused")
        clock.advance(10)
        self.assertTrue(up.available())
        self.assertTrue(up.connectFailed("refused"))
        self.assertFalse(up.available())
        clock.advance(10)
        up.connectSucceeded()
        self.assertFalse(up.connectFailed("refused"))
        self.assertTrue(up.available())
        self.assertEqual(up.connections, 1)

    def test_maxFailsZero(self) -> None:
        """
        C{maxFails=0} turns passive health off.
        """
        up = Upstream(FakeEndpoint(), "a", maxFails=0, clock=Clock())
        for _ in range(10):
            self.assertFalse(up.connectFailed("refused"))
        self.assertTrue(up.available())

    def test_cancelledNotCounted(self) -> None:
        """
        A connect cancelled by the client is counted but is not a failure of
        the upstream.
        """
        up = Upstream(FakeEndpoint(), "a", clock=Clock())
        self.assertFalse(up.connectFailed("cancelled"))
        self.assertTrue(up.available())
        self.assertEqual(up.failures["cancelled"], 1)

    def test_unhealthy(self) -> None:
        """
        An upstream the health checker marked down is unavailable, passive
        health or not.
        """
        up = Upstream(FakeEndpoint(), "a", clock=Clock())
        up.healthy = False
        self.assertFalse(up.available())
        self.assertFalse(up.available(passive=False))

    def test_acquireRelease(self) -> None:
        """
        L{Upstream.acquire} and L{Upstream.release} count open connections,
        never below zero.
        """
        up = Upstream(FakeEndpoint(), "a", clock=Clock())
        up.acquire()
        up.acquire()
        up.release()
        self.assertEqual(up.active, 1)
        up.release()
        up.release()
        self.assertEqual(up.active, 0)


class FailureReasonTests(SynchronousTestCase):
    """
    L{failureReason} labels connect failures.
    """

    def test_labels(self) -> None:
        """
        Refused, cancelled and other errors get their labels.
        """
        self.assertEqual(failureReason(refused()), "refused")
        self.assertEqual(failureReason(CancelledError()), "cancelled")
        self.assertEqual(failureReason(ConnectingCancelledError(None)), "cancelled")
        self.assertEqual(failureReason(OSError()), "OSError")


class PoolTests(SynchronousTestCase):
    """
    L{UpstreamPool} with fake endpoints on a L{Clock}.
    """

    def pool(self, *endpoints: FakeEndpoint, **kwargs: Any) -> UpstreamPool:
        """
        A pool of one upstream per endpoint, named C{u0}, C{u1}, ...
        """
        self.clock = Clock()
        members = [
            Upstream(ep, f"u{i}", clock=self.clock) for i, ep in enumerate(endpoints)
        ]
        return UpstreamPool(members, reactor=self.clock, name="web", **kwargs)

    def test_interface(self) -> None:
        """
        L{UpstreamPool} provides L{IUpstreamPool}.
        """
        self.assertTrue(verifyObject(IUpstreamPool, self.pool(FakeEndpoint())))

    def test_empty(self) -> None:
        """
        A pool needs a member.
        """
        with self.assertRaises(ValueError):
            UpstreamPool([])

    def test_pickSkipsUnavailable(self) -> None:
        """
        L{UpstreamPool.pick} never returns an unavailable or excluded member,
        and C{None} when none is left.
        """
        pool = self.pool(FakeEndpoint(), FakeEndpoint(), FakeEndpoint())
        a, b, c = pool.members
        b.healthy = False
        picks = {pool.pick() for _ in range(6)}
        self.assertEqual(picks, {a, c})
        self.assertIs(pool.pick(exclude=[a]), c)
        self.assertIsNone(pool.pick(exclude=[a, c]))

    def test_singleMemberIgnoresPassive(self) -> None:
        """
        The only member of a pool is tried despite passive failures, but not
        when it is actively marked down.
        """
        pool = self.pool(FakeEndpoint())
        (only,) = pool.members
        only.connectFailed("refused")
        self.assertIs(pool.pick(), only)
        only.healthy = False
        self.assertIsNone(pool.pick())

    def test_failover(self) -> None:
        """
        A refused connect is retried on the next member; the caller gets the
        member that answered and its protocol, counted as active.
        """
        proto = object()
        pool = self.pool(FakeEndpoint(refused()), FakeEndpoint(proto))
        result = self.successResultOf(pool.connect(object()))
        self.assertEqual(result, (pool.members[1], proto))
        self.assertEqual(pool.members[0].failures["refused"], 1)
        self.assertEqual(pool.members[1].active, 1)
        self.assertEqual(pool.members[1].connections, 1)
        self.assertEqual(pool.members[0].active, 0)

    def test_factoryPassed(self) -> None:
        """
        A custom C{connectOne} is called with the member and the factory.
        """
        pool = self.pool(FakeEndpoint())
        seen = []

        def connectOne(upstream: Upstream, factory: Any) -> Deferred[Any]:
            seen.append((upstream, factory))
            return succeed("proto")

        factory = object()
        self.successResultOf(pool.connect(factory, connectOne=connectOne))
        self.assertEqual(seen, [(pool.members[0], factory)])

    def test_allFailed(self) -> None:
        """
        When every member fails the caller gets L{NoUpstreamAvailable} with
        L{ALL_FAILED} and every attempt named in the detail.
        """
        pool = self.pool(FakeEndpoint(refused()), FakeEndpoint(refused()))
        failure = self.failureResultOf(pool.connect(None), NoUpstreamAvailable)
        self.assertEqual(failure.value.reason, ALL_FAILED)
        self.assertEqual(len(failure.value.attempts), 2)
        self.assertIn("u0 refused", failure.value.detail)
        self.assertIn("u1 refused", failure.value.detail)

    def test_allDown(self) -> None:
        """
        When no member is available the caller is refused at once with
        L{ALL_DOWN}, and nothing is connected.
        """
        a, b = FakeEndpoint(), FakeEndpoint()
        pool = self.pool(a, b)
        for member in pool.members:
            member.healthy = False
        failure = self.failureResultOf(pool.connect(None), NoUpstreamAvailable)
        self.assertEqual(failure.value.reason, ALL_DOWN)
        self.assertIn("down: u0, u1", failure.value.detail)
        self.assertEqual(a.calls + b.calls, 0)

    def test_maxTries(self) -> None:
        """
        No more than C{maxTries} connects are made for one client.
        """
        eps = [FakeEndpoint(refused()) for _ in range(4)]
        pool = self.pool(*eps, maxTries=2)
        failure = self.failureResultOf(pool.connect(None), NoUpstreamAvailable)
        self.assertEqual(failure.value.reason, ALL_FAILED)
        self.assertEqual(sum(ep.calls for ep in eps), 2)

    def test_tryTimeout(self) -> None:
        """
        A connect that takes longer than C{tryTimeout} is cancelled, counted
        as a timeout, and the next member is tried.
        """
        slow, fast = FakeEndpoint(None), FakeEndpoint(None)
        pool = self.pool(slow, fast, tryTimeout=2.0)
        d = pool.connect(None)
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.assertEqual(slow.cancelled, 1)
        self.assertEqual(pool.members[0].failures["timeout"], 1)
        fast.pending[0].callback("proto")
        self.assertEqual(self.successResultOf(d), (pool.members[1], "proto"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tryTimeoutEndpointError(self) -> None:
        """
        A timed-out connect counts as C{timeout} whatever error the endpoint
        fails the cancelled attempt with (TCP endpoints use
        C{ConnectingCancelledError}).
        """
        slow = FakeEndpoint(None)
        slow.cancelError = ConnectingCancelledError(None)
        pool = self.pool(slow, FakeEndpoint("proto"), tryTimeout=1.0)
        d = pool.connect(None)
        self.clock.advance(1.0)
        self.successResultOf(d)
        self.assertEqual(dict(pool.members[0].failures), {"timeout": 1})

    def test_totalTimeout(self) -> None:
        """
        All tries together take no longer than C{totalTimeout}: the last try
        gets only what is left, and none starts after it.
        """
        eps = [FakeEndpoint(None) for _ in range(3)]
        pool = self.pool(*eps, tryTimeout=4.0, totalTimeout=6.0)
        d = pool.connect(None)
        self.clock.advance(4.0)
        self.assertEqual(eps[1].calls, 1)
        self.clock.advance(2.0)
        failure = self.failureResultOf(d, NoUpstreamAvailable)
        self.assertEqual(failure.value.reason, ALL_FAILED)
        self.assertEqual(eps[2].calls, 0)

    def test_cancel(self) -> None:
        """
        Cancelling the result cancels the connect under way and tries no
        other member.
        """
        a, b = FakeEndpoint(None), FakeEndpoint()
        pool = self.pool(a, b, tryTimeout=5.0)
        d = pool.connect(None)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(a.cancelled, 1)
        self.assertEqual(b.calls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_passiveSkipsAcrossClients(self) -> None:
        """
        After C{maxFails} failed connects a member is skipped for later
        clients, and tried again after C{failTimeout}.
        """
        bad = FakeEndpoint(*[refused()] * 10)
        good = FakeEndpoint(*["proto"] * 10)
        pool = self.pool(bad, good)
        for member in pool.members:
            member.maxFails = 2
        for _ in range(6):
            self.successResultOf(pool.connect(None))
        self.assertEqual(bad.calls, 2)
        self.clock.advance(10)
        self.successResultOf(pool.connect(None))
        self.successResultOf(pool.connect(None))
        self.assertEqual(bad.calls, 3)

    def test_sourceFailover(self) -> None:
        """
        With C{source} balancing, a client whose upstream is down lands on
        another member, and returns to its own once it is back.
        """
        eps = [FakeEndpoint(*["p"] * 20) for _ in range(3)]
        pool = self.pool(*eps)
        pool.balancer = SourceHash()
        key = clientKeyFor("192.0.2.1")
        home, _ = self.successResultOf(pool.connect(None, key))
        home.healthy = False
        other, _ = self.successResultOf(pool.connect(None, key))
        self.assertIsNot(other, home)
        home.healthy = True
        again, _ = self.successResultOf(pool.connect(None, key))
        self.assertIs(again, home)


class Holder(protocol.Protocol):
    """
    Holds a connection open; C{lost} fires when it is closed.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class Holders(protocol.Factory):
    """
    Builds L{Holder}s and keeps them.
    """

    def __init__(self) -> None:
        self.built: list[Holder] = []

    def buildProtocol(self, addr: Any) -> Holder:
        proto = Holder()
        proto.factory = self
        self.built.append(proto)
        return proto

    def closeAll(self) -> Deferred[Any]:
        """
        Close every connection; fire when all are gone.
        """
        for proto in self.built:
            if proto.transport is not None:
                proto.transport.loseConnection()
        return gatherResults([p.lost for p in self.built])


def closedPort() -> int:
    """
    A loopback TCP port nothing listens on (bound, then closed).
    """
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class PoolSocketsMixin(ReactorTestMixin):
    """
    L{UpstreamPool.connect} over real loopback sockets.
    """

    def test_refusedSkipped(self) -> None:
        """
        A pool with a closed port and a listening one: every client is
        connected (no failed connect reaches a caller), the closed port is
        tried once and then skipped.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            server = Holders()
            port = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                server
            )
            dead = Upstream(
                TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()), clock=reactor
            )
            live = Upstream(
                TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port),
                clock=reactor,
            )
            pool = UpstreamPool([dead, live], reactor=reactor, tryTimeout=5.0)
            client = Holders()
            protos = []
            failed = 0
            for _ in range(8):
                try:
                    upstream, proto = yield pool.connect(client)
                except NoUpstreamAvailable:
                    failed += 1
                else:
                    self.assertIs(upstream, live)
                    protos.append(proto)
            active = live.active
            for _proto in protos:
                live.release()
            yield client.closeAll()
            yield server.closeAll()
            yield port.stopListening()
            return failed, len(protos), dead.failures["refused"], active

        failed, connected, refusedCount, active = self.runScenario(scenario)
        self.assertEqual(failed, 0)
        self.assertEqual(connected, 8)
        self.assertEqual(refusedCount, 1)
        self.assertEqual(active, 8)

    def test_maxFailsReal(self) -> None:
        """
        With C{maxFails=3} the closed port is tried three times, then skipped;
        with both closed the client gets L{NoUpstreamAvailable}.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            server = Holders()
            port = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                server
            )
            dead = Upstream(
                TCP4ClientEndpoint(reactor, LOOPBACK, closedPort()),
                maxFails=3,
                clock=reactor,
            )
            live = Upstream(
                TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port),
                maxFails=3,
                clock=reactor,
            )
            pool = UpstreamPool([dead, live], reactor=reactor)
            client = Holders()
            for _ in range(10):
                yield pool.connect(client)
            tries = dead.failures["refused"]
            yield client.closeAll()
            yield server.closeAll()
            yield port.stopListening()
            live.healthy = False
            try:
                yield pool.connect(client)
            except NoUpstreamAvailable as e:
                reason = e.reason
            return tries, reason

        tries, reason = self.runScenario(scenario)
        self.assertEqual(tries, 3)
        self.assertEqual(reason, ALL_DOWN)


globals().update(makeReactorTests(PoolSocketsMixin))
