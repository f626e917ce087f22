# -*- test-case-name: tests.test_pool -*-
"""
Upstream pools: several upstreams behind one forward, a balancer choosing
among them, passive health and failover on connect.

An L{Upstream} is one member: an endpoint, a weight, its counters, and two
health states -- the I{passive} one, kept by the pool from the outcome of
real connects with nginx's C{max_fails}/C{fail_timeout} semantics, and the
I{active} one, kept by a L{HealthChecker <splicetx._pool.health.HealthChecker>}.
An upstream is I{available} when both say so.

An L{UpstreamPool} holds the members and an L{IBalancer
<splicetx._pool.balance.IBalancer>}.  L{UpstreamPool.pick} chooses one available
member for a client; L{UpstreamPool.connect} connects to one, trying the next
member (in the balancer's order) when a connect fails, bounded in tries and
in time, and fails only when no member could be reached::

    pool = UpstreamPool([Upstream(ep1), Upstream(ep2, weight=3)],
                        makeBalancer("leastconn"), reactor=reactor)
    d = pool.connect(factory, clientKeyFor(client.getPeer()))
    # -> (upstream, protocol); later, when the connection ends:
    upstream.release()

Failover happens only while connecting, before a single byte is relayed:
once L{UpstreamPool.connect} has fired, the connection is the caller's and is
never retried elsewhere.

Passive health, as nginx's C{server ... max_fails=N fail_timeout=T}: when
C{maxFails} connects to a member fail within C{failTimeout} seconds, the
member is skipped for the next C{failTimeout} seconds.  After that window the
member is tried again; if that connect fails too it is skipped for another
window at once, if it succeeds its failures are forgotten.  C{maxFails=0}
turns passive health off for the member, and the only member of a pool is
never skipped for passive failures (nginx does the same): a client would get
nothing better than the refusal it will get anyway.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import error as _error
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from splicetx._pool.addresses import describeEndpoint
from splicetx._pool.balance import IBalancer, RoundRobin
from splicetx._pool.failover import (
    ALL_DOWN,
    ALL_FAILED,
    Failover,
    NoUpstreamAvailable,
    failureReason,
)
from splicetx._relay.runtime import LOG_POOL, defaultReactor

__all__ = [
    "IUpstreamPool",
    "Upstream",
    "UpstreamPool",
    "NoUpstreamAvailable",
    "failureReason",
    "ALL_DOWN",
    "ALL_FAILED",
    "DEFAULT_MAX_FAILS",
    "DEFAULT_FAIL_TIMEOUT",
]

_log = Logger(namespace=LOG_POOL)

#: nginx's defaults for C{max_fails} and C{fail_timeout}.
DEFAULT_MAX_FAILS = 1
DEFAULT_FAIL_TIMEOUT = 10.0


class Upstream:
    """
    One member of an L{UpstreamPool}.

    @ivar endpoint: the C{IStreamClientEndpoint} to connect to.
    @ivar description: how logs and metrics name it (e.g. C{10.0.0.1:80}).
    @ivar hashKey: C{description} as bytes, what C{source} balancing hashes:
        a member keeps its clients across restarts and pool changes as long
        as its description is the same.
    @ivar weight: its share of the clients (an C{int} >= 1).
    @ivar maxFails: failed connects within C{failTimeout} that make it
        unavailable; C{0} turns passive health off.
    @ivar failTimeout: the window for counting failures and how long it is
        then skipped, in seconds.
    @ivar active: connections open now (counted by L{acquire}/L{release}).
    @ivar connections: connections made to it, ever.
    @ivar failures: failed connects by reason (see L{failureReason}).
    @ivar bytesToUpstream: bytes relayed to it by finished connections
        (see L{relayed}).
    @ivar bytesFromUpstream: bytes relayed from it by finished connections.
    @ivar healthy: the active health state (C{True} unless a health checker
        marked it down).
    """

    def __init__(
        self,
        endpoint: Any,
        description: str | None = None,
        weight: int = 1,
        maxFails: int = DEFAULT_MAX_FAILS,
        failTimeout: float = DEFAULT_FAIL_TIMEOUT,
        clock: Any = None,
    ) -> None:
        """
        @param endpoint: an C{IStreamClientEndpoint}.
        @param description: default: described from the endpoint.
        @param weight: an C{int} >= 1.
        @param maxFails: an C{int} >= 0.
        @param failTimeout: seconds, > 0.
        @param clock: an C{IReactorTime} for the passive-health windows;
            default the global reactor, looked up when first needed.
        @raise ValueError: for a weight, C{maxFails} or C{failTimeout} out of
            range.
        """
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"weight must be an integer >= 1, not {weight!r}")
        if isinstance(maxFails, bool) or not isinstance(maxFails, int) or maxFails < 0:
            raise ValueError(f"max-fails must be an integer >= 0, not {maxFails!r}")
        if not failTimeout > 0:
            raise ValueError(f"fail-timeout must be > 0, not {failTimeout!r}")
        if description is None:
            description = describeEndpoint(endpoint)
        self.endpoint = endpoint
        self.description = description
        self.hashKey = description.encode("utf-8", "surrogateescape")
        self.weight = weight
        self.maxFails = maxFails
        self.failTimeout = float(failTimeout)
        self.active = 0
        self.connections = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.bytesToUpstream = 0
        self.bytesFromUpstream = 0
        self.healthy = True
        self._clock = clock
        self._recentFailures: list[float] = []
        self._downUntil = 0.0

    def __repr__(self) -> str:
        return f"<Upstream {self.description} weight={self.weight}>"

    def _now(self) -> float:
        if self._clock is None:
            self._clock = defaultReactor(None)
        now: float = self._clock.seconds()
        return now

    @property
    def failedUntil(self) -> float | None:
        """
        When passive health skips this member: the clock time its window
        ends, or C{None} when it is not being skipped.
        """
        if self._downUntil and self._now() < self._downUntil:
            return self._downUntil
        return None

    def available(self, passive: bool = True) -> bool:
        """
        Whether a new connection may go to this member.

        @param passive: whether passive health counts (C{False} for the only
            member of a pool).
        @return: C{True} when it is healthy and (if C{passive}) not in a
            passive-failure window.
        """
        if not self.healthy:
            return False
        return not (passive and self.failedUntil is not None)

    def connectFailed(self, reason: str) -> bool:
        """
        Record a failed connect (for the counters and passive health).

        @param reason: a L{failureReason} label.
        @return: C{True} when this failure starts a passive-failure window.
        """
        self.failures[reason] += 1
        if self.maxFails <= 0 or reason == "cancelled":
            return False
        now = self._now()
        if self._downUntil:
            if now < self._downUntil:
                # An attempt started before the window: no new window.
                return False
            # The first try after a window failed: skip it again at once.
            self._markFailed(now, 1)
            return True
        window = self.failTimeout
        recent = [t for t in self._recentFailures if now - t < window]
        recent.append(now)
        if len(recent) >= self.maxFails:
            self._markFailed(now, len(recent))
            return True
        self._recentFailures = recent
        return False

    def _markFailed(self, now: float, count: int) -> None:
        self._recentFailures = []
        self._downUntil = now + self.failTimeout
        _log.warn(
            "upstream {upstream} failed {count} time(s) within {window} s: "
            "skipped for {window} s",
            splicetxEvent="upstream-failed",
            upstream=self.description,
            count=count,
            window=self.failTimeout,
        )

    def connectSucceeded(self) -> None:
        """
        Record a successful connect: passive failures are forgotten.
        """
        self.connections += 1
        if self._recentFailures:
            self._recentFailures = []
        self._downUntil = 0.0

    def acquire(self) -> None:
        """
        Count a connection to this member as open (L{UpstreamPool.connect}
        does it for the connections it makes).
        """
        self.active += 1

    def release(self) -> None:
        """
        Count a connection counted by L{acquire} as closed.
        """
        if self.active > 0:
            self.active -= 1

    def relayed(self, toUpstream: int, fromUpstream: int) -> None:
        """
        Count the bytes a finished connection to this member relayed (for
        its metrics and the status page's rates).

        @param toUpstream: bytes from the client to this member.
        @param fromUpstream: bytes from this member to the client.
        """
        self.bytesToUpstream += toUpstream
        self.bytesFromUpstream += fromUpstream


class IUpstreamPool(Interface):
    """
    A set of upstreams and the rule that picks one for a client.
    """

    name = Attribute("The pool's name in logs and metrics (the forward's).")
    members = Attribute("The L{Upstream}s, in configuration order.")
    balancer = Attribute("The L{IBalancer <splicetx._pool.balance.IBalancer>}.")

    def available() -> list[Upstream]:
        """
        The members a new connection may go to now.
        """

    def pick(
        clientKey: bytes | None = None, exclude: Iterable[Upstream] = ()
    ) -> Upstream | None:
        """
        Choose an available member for a client, by the balancer (asked
        only when there is a choice: a single candidate is taken as it is).

        @param clientKey: see L{clientKeyFor <splicetx._pool.balance.clientKeyFor>}.
        @param exclude: members not to choose (already tried).
        @return: the member, or C{None} when none is available.
        """

    def connect(
        factory: Any,
        clientKey: bytes | None = None,
        connectOne: Callable[[Upstream, Any], Deferred[Any]] | None = None,
        onTryFailed: Callable[[Upstream, Failure], None] | None = None,
    ) -> Deferred[tuple[Upstream, Any]]:
        """
        Connect to a member, failing over to the next on a failed connect.

        @param factory: the protocol factory given to each connect.
        @param clientKey: see L{pick}.
        @param connectOne: how to connect one member: called with the member
            and C{factory}, returns a L{Deferred} firing with the connected
            protocol; default C{member.endpoint.connect(factory)}.
        @param onTryFailed: called with the member and the L{Failure} of
            each connect that failed (a timed-out try as a C{TimeoutError}),
            whether or not a later try succeeds: how the proxy counts every
            failed try in its metrics.
        @return: a L{Deferred} firing with C{(member, protocol)} (the member
            already L{acquired<Upstream.acquire>}), or failing with
            L{NoUpstreamAvailable}; cancelling it cancels the attempt under
            way.
        """


@implementer(IUpstreamPool)
class UpstreamPool:
    """
    Upstreams behind one forward (see the module docstring).

    @ivar name: the pool's name in logs and metrics.
    @ivar members: the L{Upstream}s, in configuration order.
    @ivar balancer: the L{IBalancer}.
    @ivar maxTries: connects tried for one client at most; C{None}: every
        available member once.
    @ivar tryTimeout: seconds one connect may take before the next member
        is tried; C{None}: the endpoint's own timeout.
    @ivar totalTimeout: seconds all tries for one client may take together;
        C{None}: no bound beyond the tries.
    """

    def __init__(
        self,
        members: Iterable[Upstream],
        balancer: IBalancer | None = None,
        name: str = "default",
        maxTries: int | None = None,
        tryTimeout: float | None = None,
        totalTimeout: float | None = None,
        reactor: Any = None,
    ) -> None:
        """
        @param members: the upstreams (at least one).
        @param balancer: default L{RoundRobin}.
        @param name: the forward's name.
        @param maxTries: see the instance variable; an C{int} >= 1.
        @param tryTimeout: see the instance variable.
        @param totalTimeout: see the instance variable.
        @param reactor: for timeouts (C{IReactorTime}); default the global
            reactor, looked up when first needed.
        @raise ValueError: for an empty pool or C{maxTries} < 1.
        """
        self.members = list(members)
        if not self.members:
            raise ValueError("an upstream pool needs at least one upstream")
        if maxTries is not None and maxTries < 1:
            raise ValueError(f"max tries must be >= 1, not {maxTries!r}")
        self.balancer = balancer if balancer is not None else RoundRobin()
        self.name = name
        self.maxTries = maxTries
        self.tryTimeout = tryTimeout
        self.totalTimeout = totalTimeout
        self._reactor = reactor

    def __repr__(self) -> str:
        return (
            f"<UpstreamPool {self.name} {self.balancer.name} "
            f"{[m.description for m in self.members]}>"
        )

    @property
    def description(self) -> str:
        """
        How log lines name the pool: its members as C{--connect} would name
        them, and its balancing, e.g. C{"10.0.0.1:80, 10.0.0.2:80 weight=3
        (leastconn)"}.
        """
        members = ", ".join(
            m.description if m.weight == 1 else f"{m.description} weight={m.weight}"
            for m in self.members
        )
        return f"{members} ({self.balancer.name})"

    @property
    def reactor(self) -> Any:
        """
        The reactor given, or the global one.
        """
        if self._reactor is None:
            self._reactor = defaultReactor(None)
        return self._reactor

    def available(self) -> list[Upstream]:
        """
        See L{IUpstreamPool.available}.
        """
        passive = len(self.members) > 1
        return [m for m in self.members if m.available(passive)]

    def pick(
        self, clientKey: bytes | None = None, exclude: Iterable[Upstream] = ()
    ) -> Upstream | None:
        """
        See L{IUpstreamPool.pick}.
        """
        candidates = self.available()
        if exclude:
            skip = set(exclude)
            candidates = [m for m in candidates if m not in skip]
        if not candidates:
            return None
        if len(candidates) == 1:
            # No choice to make (every balancer here would take it).
            return candidates[0]
        chosen: Upstream = self.balancer.choose(candidates, clientKey)
        return chosen

    def connect(
        self,
        factory: Any,
        clientKey: bytes | None = None,
        connectOne: Callable[[Upstream, Any], Deferred[Any]] | None = None,
        onTryFailed: Callable[[Upstream, Failure], None] | None = None,
    ) -> Deferred[tuple[Upstream, Any]]:
        """
        See L{IUpstreamPool.connect}.
        """
        attempt = _Attempt(
            self, factory, clientKey, connectOne or _endpointConnect, onTryFailed
        )
        return attempt.start()


def _endpointConnect(upstream: Upstream, factory: Any) -> Deferred[Any]:
    d: Deferred[Any] = upstream.endpoint.connect(factory)
    return d


class _Attempt:
    """
    One client's way through a pool with the Deferreds of endpoints: a
    connect at a time, until one succeeds or the tries or the time run out
    (what to try and when to stop is the L{Failover}'s to decide).
    """

    def __init__(
        self,
        pool: UpstreamPool,
        factory: Any,
        clientKey: bytes | None,
        connectOne: Callable[[Upstream, Any], Deferred[Any]],
        onTryFailed: Callable[[Upstream, Failure], None] | None = None,
    ) -> None:
        self.pool = pool
        self.factory = factory
        self.clientKey = clientKey
        self.connectOne = connectOne
        self.onTryFailed = onTryFailed
        self.failover: Failover | None = None
        self.current: Deferred[Any] | None = None
        self.timer: Any = None
        self.timedOut = False
        self.cancelled = False
        self.result: Deferred[tuple[Upstream, Any]] = Deferred(self._cancel)

    def start(self) -> Deferred[tuple[Upstream, Any]]:
        self.failover = Failover(self.pool, self.clientKey, self.pool.reactor.seconds())
        self._next()
        return self.result

    def _cancel(self, _: Deferred[Any]) -> None:
        self.cancelled = True
        current, self.current = self.current, None
        if current is not None:
            current.cancel()

    def _next(self) -> None:
        failover = self.failover
        assert failover is not None
        reactor = self.pool.reactor
        chosen = failover.next(reactor.seconds())
        if chosen is None:
            self.result.errback(failover.exhausted())
            return
        upstream, timeout = chosen
        try:
            d = self.connectOne(upstream, self.factory)
        except Exception:
            self._failed(Failure(), upstream)
            return
        self.timedOut = False
        if timeout is not None and not d.called:
            self.timer = reactor.callLater(timeout, self._timeUp, d)
        self.current = d
        d.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(upstream,),
            errbackArgs=(upstream,),
        )

    def _timeUp(self, d: Deferred[Any]) -> None:
        self.timer = None
        self.timedOut = True
        d.cancel()

    def _stopTimer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _succeeded(self, protocol: Any, upstream: Upstream) -> None:
        self._stopTimer()
        self.current = None
        Failover.succeeded(upstream)
        if self.cancelled:
            # Cancelled after the connection was made: not ours to keep.
            upstream.release()
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return
        self.result.callback((upstream, protocol))

    def _failed(self, failure: Failure, upstream: Upstream) -> None:
        self._stopTimer()
        self.current = None
        if self.cancelled:
            return
        if self.timedOut:
            # The endpoint reports our cancel in its own words
            # (CancelledError, ConnectingCancelledError, UserError).
            failure = Failure(_error.TimeoutError(string=upstream.description))
        assert self.failover is not None
        self.failover.failed(upstream, failure)
        if self.onTryFailed is not None:
            try:
                self.onTryFailed(upstream, failure)
            except Exception:
                _log.failure("onTryFailed for {upstream} failed", upstream=upstream)
        self._next()
