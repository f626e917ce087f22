# -*- test-case-name: tests.test_health -*-
"""
Active health checks: probe every upstream of a pool at an interval and mark
it down or up, as HAProxy's C{check inter rise fall} does.

A probe is a TCP connect to the upstream's endpoint, bounded by a timeout;
optionally it then sends a string and expects the reply to start with a given
prefix (HAProxy's C{tcp-check send}/C{expect string}, reduced to the common
case).  C{fall} failed probes in a row mark an upstream down
(L{Upstream.healthy <splicetx._pool.pool.Upstream.healthy>} becomes C{False}, so
the pool stops choosing it), C{rise} good probes in a row mark it up again.
Each transition is logged once, with C{splicetxEvent="upstream-down"} or
C{"upstream-up"}, the upstream, the pool and the reason of the last probe,
and is reported to an optional C{stateChanged} callback (for a gauge).

Upstreams start up: a freshly started proxy serves at once, and an upstream
that is dead from the start is marked down after C{fall} probes (sooner, for
the connects that fail meanwhile, by passive health)::

    checker = HealthChecker(pool.members, interval=5, timeout=2, rise=2,
                            fall=3, send=b"PING\\r\\n", expect=b"+PONG",
                            reactor=reactor, poolName=pool.name)
    checker.start()
    ...
    checker.stop()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from splicetx._pool.pool import Upstream, failureReason
from splicetx._relay.runtime import LOG_HEALTH, defaultReactor

__all__ = [
    "IHealthChecker",
    "HealthChecker",
    "HealthCheckFailed",
    "DEFAULT_RISE",
    "DEFAULT_FALL",
]

_log = Logger(namespace=LOG_HEALTH)

#: HAProxy's defaults: 2 good probes to come up, 3 bad ones to go down.
DEFAULT_RISE = 2
DEFAULT_FALL = 3


class HealthCheckFailed(Exception):
    """
    A probe connected but the exchange failed.

    @ivar reason: a short label: C{"unexpected reply"}, C{"closed before
        reply"} or C{"timeout"}.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class IHealthChecker(Interface):
    """
    Keeps the active health state of a set of upstreams.
    """

    upstreams = Attribute("The L{Upstream}s probed.")

    def start() -> None:
        """
        Probe every upstream now and then every C{interval} seconds.
        """

    def stop() -> None:
        """
        Stop probing; probes under way are abandoned (their connections
        aborted).
        """

    def check(upstream: Upstream) -> Deferred[str | None]:
        """
        Probe one upstream once and count the outcome.

        @return: a L{Deferred} firing with C{None} for a good probe or the
            failure's reason label; it never fails.
        """


class _Probe(protocol.Protocol):
    """
    Sends the check string and compares the reply with the expected prefix.
    """

    transport: Any

    def __init__(self, send: bytes, expect: bytes, done: Deferred[None]) -> None:
        self.send = send
        self.expect = expect
        self.done = done
        self.received = b""

    def connectionMade(self) -> None:
        if self.send:
            self.transport.write(self.send)
        if not self.expect:
            self._finish(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        n = len(self.expect)
        if self.received[:n] != self.expect[: len(self.received)]:
            self._finish(HealthCheckFailed("unexpected reply"))
        elif len(self.received) >= n:
            self._finish(None)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._finish(HealthCheckFailed("closed before reply"))

    def _finish(self, error: Exception | None) -> None:
        done, self.done = self.done, None  # type: ignore[assignment]
        if done is None:
            return
        transport = self.transport
        if transport is not None:
            transport.abortConnection()
        if error is None:
            done.callback(None)
        else:
            done.errback(error)


class _ProbeFactory(protocol.Factory):
    """
    Builds the one L{_Probe} of one check.  Not noisy: a factory per probe
    would otherwise log Twisted's "Starting factory"/"Stopping factory" for
    every upstream at every interval, and the checker logs state changes
    only.
    """

    noisy = False

    def __init__(self, send: bytes, expect: bytes) -> None:
        self.send = send
        self.expect = expect
        self.done: Deferred[None] = Deferred()
        self.probe: _Probe | None = None

    def buildProtocol(self, addr: Any) -> _Probe:
        self.probe = _Probe(self.send, self.expect, self.done)
        self.probe.factory = self
        return self.probe


class _State:
    """
    The checker's counts for one upstream.
    """

    def __init__(self) -> None:
        self.good = 0
        self.bad = 0
        self.probing: Deferred[Any] | None = None
        self.lastReason: str | None = None


@implementer(IHealthChecker)
class HealthChecker:
    """
    Probes upstreams at an interval (see the module docstring).

    @ivar upstreams: the L{Upstream}s probed.
    @ivar interval: seconds between the starts of two rounds of probes.
    @ivar timeout: seconds one probe may take (connect and reply).
    @ivar rise: good probes in a row that mark a down upstream up.
    @ivar fall: failed probes in a row that mark an up upstream down.
    @ivar send: bytes written once connected (may be empty).
    @ivar expect: the prefix the reply must start with (empty: connecting
        is enough).
    @ivar poolName: the pool's name, for the log events.
    """

    def __init__(
        self,
        upstreams: Iterable[Upstream],
        interval: float,
        timeout: float | None = None,
        rise: int = DEFAULT_RISE,
        fall: int = DEFAULT_FALL,
        send: bytes = b"",
        expect: bytes = b"",
        reactor: Any = None,
        poolName: str = "default",
        stateChanged: Callable[[Upstream, bool, str | None], None] | None = None,
        connectOne: Callable[[Upstream, Any], Deferred[Any]] | None = None,
    ) -> None:
        """
        @param upstreams: the upstreams to probe.
        @param interval: seconds, > 0.
        @param timeout: seconds, > 0; default C{min(interval, 10)}.
        @param rise: an C{int} >= 1.
        @param fall: an C{int} >= 1.
        @param send: see the instance variable.
        @param expect: see the instance variable.
        @param reactor: C{IReactorTime} (and whatever the endpoints need);
            default the global reactor, looked up at L{start}.
        @param poolName: see the instance variable.
        @param stateChanged: called as C{stateChanged(upstream, healthy,
            reason)} after each transition.
        @param connectOne: how to connect a probe: called with the upstream
            and a protocol factory, returns a L{Deferred} of the protocol;
            default C{upstream.endpoint.connect(factory)}.
        @raise ValueError: for an argument out of range.
        """
        if not interval > 0:
            raise ValueError(f"health check interval must be > 0, not {interval!r}")
        if timeout is None:
            timeout = min(interval, 10.0)
        if not timeout > 0:
            raise ValueError(f"health check timeout must be > 0, not {timeout!r}")
        for name, value in (("rise", rise), ("fall", fall)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"health check {name} must be >= 1, not {value!r}")
        self.upstreams = list(upstreams)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.rise = rise
        self.fall = fall
        self.send = bytes(send)
        self.expect = bytes(expect)
        self.poolName = poolName
        self._reactor = reactor
        self._stateChanged = stateChanged
        self._connectOne = connectOne
        self._states = {id(u): _State() for u in self.upstreams}
        self._loop: LoopingCall | None = None

    @property
    def running(self) -> bool:
        """
        Whether L{start} was called and L{stop} was not.
        """
        return self._loop is not None

    def start(self) -> None:
        """
        See L{IHealthChecker.start}.

        @raise RuntimeError: when already started.
        """
        if self._loop is not None:
            raise RuntimeError("the health checker is already running")
        self._reactor = defaultReactor(self._reactor)
        loop = self._loop = LoopingCall(self._round)
        loop.clock = self._reactor
        loop.start(self.interval, now=True)

    def stop(self) -> None:
        """
        See L{IHealthChecker.stop}.
        """
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        for state in self._states.values():
            probing, state.probing = state.probing, None
            if probing is not None:
                probing.cancel()

    def _round(self) -> None:
        for upstream in self.upstreams:
            if self._states[id(upstream)].probing is None:
                self.check(upstream)

    def check(self, upstream: Upstream) -> Deferred[str | None]:
        """
        See L{IHealthChecker.check}.
        """
        reactor = self._reactor = defaultReactor(self._reactor)
        state = self._states[id(upstream)]
        factory = _ProbeFactory(self.send, self.expect)
        timedOut: list[bool] = []

        def cancelled(_: Deferred[Any]) -> None:
            probe = factory.probe
            if probe is not None and probe.done is not None:
                probe._finish(HealthCheckFailed("cancelled"))
            else:
                connecting.cancel()

        outcome: Deferred[Any] = Deferred(cancelled)

        def connected(proto: Any) -> Deferred[None]:
            return factory.done

        try:
            if self._connectOne is not None:
                connecting = self._connectOne(upstream, factory)
            else:
                connecting = upstream.endpoint.connect(factory)
        except Exception:
            connecting = Deferred()
            connecting.errback(Failure())
        connecting.addCallback(connected)
        connecting.chainDeferred(outcome)

        def expire() -> None:
            timedOut.append(True)
            outcome.cancel()

        timer = reactor.callLater(self.timeout, expire)

        def judged(result: Any) -> str | None:
            if timer.active():
                timer.cancel()
            if state.probing is outcome:
                state.probing = None
            if not isinstance(result, Failure):
                reason = None
            elif timedOut:
                reason = "timeout"
            elif isinstance(result.value, HealthCheckFailed):
                reason = result.value.reason
            else:
                reason = failureReason(result)
            if reason == "cancelled" and not timedOut:
                return reason  # stopped: not counted
            self._count(upstream, state, reason)
            return reason

        state.probing = outcome
        outcome.addBoth(judged)
        return outcome

    def _count(self, upstream: Upstream, state: _State, reason: str | None) -> None:
        state.lastReason = reason
        if reason is None:
            state.good += 1
            state.bad = 0
            if not upstream.healthy and state.good >= self.rise:
                self._mark(upstream, True, f"{state.good} good probe(s)")
        else:
            state.bad += 1
            state.good = 0
            if upstream.healthy and state.bad >= self.fall:
                self._mark(upstream, False, f"{state.bad} failed probe(s): {reason}")

    def _mark(self, upstream: Upstream, healthy: bool, reason: str) -> None:
        upstream.healthy = healthy
        if healthy:
            _log.info(
                "upstream {upstream} of pool {pool} is up ({reason})",
                splicetxEvent="upstream-up",
                upstream=upstream.description,
                pool=self.poolName,
                reason=reason,
            )
        else:
            _log.warn(
                "upstream {upstream} of pool {pool} is down ({reason})",
                splicetxEvent="upstream-down",
                upstream=upstream.description,
                pool=self.poolName,
                reason=reason,
            )
        if self._stateChanged is not None:
            self._stateChanged(upstream, healthy, reason)
