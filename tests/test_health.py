"""
Tests for L{splicetx._pool.health}: active health checks with rise and fall
counts, on a L{Clock} and over real loopback sockets.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx._pool.health import HealthChecker, IHealthChecker
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx.testing import ReactorTestMixin, makeReactorTests

LOOPBACK = "127.0.0.1"


def captureEvents(case: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    Collect the log events with a C{splicetxEvent} key while the test runs.
    """
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "splicetxEvent" in event:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class Scripted:
    """
    A C{connectOne} for L{HealthChecker} whose outcomes the test scripts:
    C{"ok"} connects (to a L{StringTransport}), C{"refused"} fails,
    C{"pending"} never answers.
    """

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.calls = 0
        self.cancelled = 0

    def __call__(self, upstream: Upstream, factory: Any) -> Deferred[Any]:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome == "refused":
            return fail(ConnectionRefusedError())
        if outcome == "pending":

            def cancel(d: Deferred[Any]) -> None:
                self.cancelled += 1

            return Deferred(cancel)
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        return succeed(proto)


class CheckerTests(SynchronousTestCase):
    """
    L{HealthChecker}'s counting, timing and events, with scripted probes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = Upstream(object(), "u0", clock=self.clock)
        self.script = Scripted()
        self.events = captureEvents(self)

    def checker(self, **kwargs: Any) -> HealthChecker:
        """
        A checker of C{self.upstream}, every 5 s, on the clock.
        """
        kwargs.setdefault("rise", 2)
        kwargs.setdefault("fall", 3)
        return HealthChecker(
            [self.upstream],
            interval=5,
            timeout=2,
            reactor=self.clock,
            poolName="web",
            connectOne=self.script,
            **kwargs,
        )

    def probe(self, checker: HealthChecker, *outcomes: str) -> list[str | None]:
        """
        Probe once per outcome; return the reasons.
        """
        self.script.outcomes.extend(outcomes)
        return [self.successResultOf(checker.check(self.upstream)) for _ in outcomes]

    def states(self) -> list[tuple[str, str]]:
        """
        The transition events so far: C{(event, upstream)}.
        """
        return [
            (e["splicetxEvent"], e["upstream"])
            for e in self.events
            if e["splicetxEvent"] in ("upstream-up", "upstream-down")
        ]

    def test_interface(self) -> None:
        """
        L{HealthChecker} provides L{IHealthChecker}.
        """
        self.assertTrue(verifyObject(IHealthChecker, self.checker()))

    def test_badArguments(self) -> None:
        """
        Intervals, timeouts, rise and fall out of range are refused.
        """
        for kwargs in [
            {"interval": 0},
            {"interval": 1, "timeout": 0},
            {"interval": 1, "rise": 0},
            {"interval": 1, "fall": 0},
        ]:
            with self.assertRaises(ValueError):
                HealthChecker([self.upstream], **kwargs)

    def test_fall(self) -> None:
        """
        C{fall} failed probes in a row mark the upstream down, with one
        C{upstream-down} event however many more fail.
        """
        checker = self.checker()
        self.assertEqual(self.probe(checker, "refused", "refused"), ["refused"] * 2)
        self.assertTrue(self.upstream.healthy)
        self.probe(checker, "refused", "refused", "refused")
        self.assertFalse(self.upstream.healthy)
        self.assertEqual(self.states(), [("upstream-down", "u0")])
        down = [e for e in self.events if e["splicetxEvent"] == "upstream-down"][0]
        self.assertEqual(down["pool"], "web")
        self.assertIn("refused", down["reason"])

    def test_rise(self) -> None:
        """
        Once down, C{rise} good probes in a row mark it up, with one
        C{upstream-up} event.
        """
        checker = self.checker()
        self.probe(checker, "refused", "refused", "refused")
        self.assertEqual(self.probe(checker, "ok"), [None])
        self.assertFalse(self.upstream.healthy)
        self.probe(checker, "ok", "ok", "ok")
        self.assertTrue(self.upstream.healthy)
        self.assertEqual(
            self.states(), [("upstream-down", "u0"), ("upstream-up", "u0")]
        )

    def test_consecutive(self) -> None:
        """
        A good probe between failed ones starts the count again.
        """
        checker = self.checker()
        self.probe(checker, "refused", "refused", "ok", "refused", "refused")
        self.assertTrue(self.upstream.healthy)
        self.assertEqual(self.states(), [])

    def test_timeout(self) -> None:
        """
        A probe that takes longer than the timeout is cancelled and counts as
        a failure with reason C{timeout}.
        """
        checker = self.checker(fall=1)
        self.script.outcomes.append("pending")
        d = checker.check(self.upstream)
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d), "timeout")
        self.assertEqual(self.script.cancelled, 1)
        self.assertFalse(self.upstream.healthy)

    def test_interval(self) -> None:
        """
        L{HealthChecker.start} probes at once and then every C{interval};
        L{HealthChecker.stop} ends it, abandoning a probe under way without
        counting it.
        """
        checker = self.checker(fall=1)
        checker.start()
        self.assertEqual(self.script.calls, 1)
        self.clock.advance(5)
        self.assertEqual(self.script.calls, 2)
        self.script.outcomes.append("pending")
        self.clock.advance(5)
        self.assertEqual(self.script.calls, 3)
        checker.stop()
        self.assertFalse(checker.running)
        self.assertEqual(self.script.cancelled, 1)
        self.assertTrue(self.upstream.healthy)
        self.clock.advance(20)
        self.assertEqual(self.script.calls, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noOverlap(self) -> None:
        """
        A round does not start a second probe of an upstream whose probe is
        still under way.
        """
        checker = HealthChecker(
            [self.upstream],
            interval=1,
            timeout=3,
            reactor=self.clock,
            connectOne=self.script,
        )
        self.script.outcomes.append("pending")
        checker.start()
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.script.calls, 1)
        checker.stop()

    def test_stateChanged(self) -> None:
        """
        The C{stateChanged} callback hears every transition.
        """
        seen: list[tuple[Upstream, bool]] = []
        checker = self.checker(
            fall=1, rise=1, stateChanged=lambda u, h, r: seen.append((u, h))
        )
        self.probe(checker, "refused", "refused", "ok", "ok")
        self.assertEqual(seen, [(self.upstream, False), (self.upstream, True)])


class Replier(protocol.Protocol):
    """
    Answers the first bytes received with the factory's C{reply} (and
    closes, when the reply is empty).
    """

    def dataReceived(self, data: bytes) -> None:
        reply = self.factory.reply
        if reply:
            self.transport.write(reply)
        else:
            self.transport.loseConnection()


def closedPort() -> int:
    """
    A loopback TCP port nothing listens on (bound, then closed).
    """
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class CheckerSocketsMixin(ReactorTestMixin):
    """
    L{HealthChecker} over real loopback sockets.
    """

    def test_sendExpect(self) -> None:
        """
        With C{send} and C{expect}, a matching reply is good, another reply
        is C{unexpected reply}, a close is C{closed before reply}.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            reasons = []
            for reply in [b"+PONG\r\n", b"-ERR\r\n", b""]:
                server = protocol.Factory.forProtocol(Replier)
                server.reply = reply  # type: ignore[attr-defined]
                port = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                    server
                )
                ep = TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port)
                upstream = Upstream(ep, clock=reactor)
                checker = HealthChecker(
                    [upstream],
                    interval=10,
                    timeout=10,
                    send=b"PING\r\n",
                    expect=b"+PONG",
                    reactor=reactor,
                )
                reasons.append((yield checker.check(upstream)))
                yield port.stopListening()
                # Let the server side see the abort.
                yield deferLater(reactor, 0.05, lambda: None)
            return reasons

        reasons = self.runScenario(scenario)
        self.assertEqual(reasons, [None, "unexpected reply", "closed before reply"])

    def test_downAndUp(self) -> None:
        """
        The checker takes an upstream that does not listen out of the pool,
        and brings it back once it listens again.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            live = yield TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                protocol.Factory.forProtocol(protocol.Protocol)
            )
            deadPort = closedPort()
            dead = Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, deadPort), "dead")
            good = Upstream(
                TCP4ClientEndpoint(reactor, LOOPBACK, live.getHost().port), "good"
            )
            pool = UpstreamPool([dead, good], reactor=reactor)
            changes: list[tuple[str, bool]] = []
            changed: list[Deferred[None]] = [Deferred()]

            def stateChanged(u: Upstream, healthy: bool, reason: Any) -> None:
                changes.append((u.description, healthy))
                changed[0].callback(None)

            checker = HealthChecker(
                pool.members,
                interval=0.02,
                timeout=1,
                rise=2,
                fall=2,
                reactor=reactor,
                stateChanged=stateChanged,
            )
            checker.start()
            yield changed[0]
            picksDown = {pool.pick() for _ in range(4)}
            changed[0] = Deferred()
            revived = yield TCP4ServerEndpoint(
                reactor, deadPort, interface=LOOPBACK
            ).listen(protocol.Factory.forProtocol(protocol.Protocol))
            yield changed[0]
            picksUp = {pool.pick() for _ in range(4)}
            checker.stop()
            yield revived.stopListening()
            yield live.stopListening()
            yield deferLater(reactor, 0.05, lambda: None)
            return changes, picksDown == {good}, picksUp == {dead, good}

        changes, downOk, upOk = self.runScenario(scenario)
        self.assertEqual(changes, [("dead", False), ("dead", True)])
        self.assertTrue(downOk)
        self.assertTrue(upOk)


globals().update(makeReactorTests(CheckerSocketsMixin))
