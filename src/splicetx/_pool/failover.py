# -*- test-case-name: tests.test_failover,tests.test_pool,tests.test_fastforward -*-
"""
One client's way through a pool, decided in one place: which member to
try next and for how long, when to give up and with which error, and what
a failed or a successful try tells the member (its passive health and
counts) and the log.

Both ways of connecting drive a L{Failover} and decide nothing themselves:
L{UpstreamPool.connect <splicetx._pool.pool.UpstreamPool.connect>}, with
the Deferreds of endpoints (subclass hooks, C{--no-fast-path}), and the
lean path's raw non-blocking connects (L{splicetx._proxy.fastconn}).  Each
owns only its timer and its sockets or Deferreds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import error as _error
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._relay.runtime import LOG_POOL

__all__ = [
    "Failover",
    "NoUpstreamAvailable",
    "failureReason",
    "tryFailed",
    "noUpstream",
    "ALL_DOWN",
    "ALL_FAILED",
]

_log = Logger(namespace=LOG_POOL)

#: L{NoUpstreamAvailable.reason}: no member was available to try.
ALL_DOWN = "no upstream available"
#: L{NoUpstreamAvailable.reason}: every member tried failed, or the tries or
#: the time ran out.
ALL_FAILED = "every upstream failed"


def failureReason(failure: Any) -> str:
    """
    A short, bounded label for why a connect failed (the same labels as
    C{splicetx._ops.metrics.connectFailureReason}, which needs
    C{prometheus_client}; this does not).

    @param failure: a L{Failure} or an exception.
    @return: C{"refused"}, C{"timeout"}, C{"dns"}, C{"no_route"},
        C{"cancelled"}, C{"unreachable"} or the exception's class name.
    """
    exc = getattr(failure, "value", failure)
    table: list[tuple[Any, str]] = [
        (_error.ConnectionRefusedError, "refused"),
        ((_error.TimeoutError, _error.TCPTimedOutError), "timeout"),
        (_error.DNSLookupError, "dns"),
        (_error.NoRouteError, "no_route"),
        (
            (CancelledError, _error.UserError, _error.ConnectingCancelledError),
            "cancelled",
        ),
    ]
    for kinds, reason in table:
        if isinstance(exc, kinds):
            return reason
    if isinstance(exc, _error.ConnectError) and "unreachable" in str(exc).lower():
        return "unreachable"
    return type(exc).__name__


class NoUpstreamAvailable(Exception):
    """
    L{UpstreamPool.connect} could not reach any member.

    @ivar reason: L{ALL_DOWN} or L{ALL_FAILED}.
    @ivar detail: one line for the log, e.g. C{"every upstream failed:
        10.0.0.1:80 refused, 10.0.0.2:80 timeout"}.
    @ivar attempts: C{(upstream, failure)} for every connect tried.
    """

    def __init__(
        self, reason: str, detail: str, attempts: Sequence[tuple[Any, Failure]]
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.attempts = list(attempts)
        super().__init__(detail)


def tryFailed(pool: Any, upstream: Any, failure: Failure, attempts: list[Any]) -> None:
    """
    One connect to C{upstream}, a member of C{pool}, failed: note it in
    C{attempts}, tell the member (its passive health) and log it.

    @param attempts: the connection's C{(member, failure)} list so far.
    """
    reason = failureReason(failure)
    attempts.append((upstream, failure))
    upstream.connectFailed(reason)
    _log.info(
        "connect to {upstream} of pool {pool} failed: {reason}",
        splicetxEvent="upstream-connect-failed",
        upstream=upstream.description,
        reason=reason,
        pool=pool.name,
    )


def noUpstream(
    pool: Any, reason: str, tried: Sequence[Any], attempts: list[Any]
) -> NoUpstreamAvailable:
    """
    The error of a connect through C{pool} that reached no member: its
    detail names each failed try, or the members that are down.

    @param reason: L{ALL_DOWN} or L{ALL_FAILED}.
    @param tried: the members tried.
    @param attempts: their C{(member, failure)} pairs.
    """
    if attempts:
        text = ", ".join(f"{u.description} {failureReason(f)}" for u, f in attempts)
    else:
        text = "none tried"
    detail = f"{reason} in pool {pool.name}: {text}"
    down = [m.description for m in pool.members if m not in tried]
    if reason == ALL_DOWN and down:
        detail += f" (down: {', '.join(down)})"
    return NoUpstreamAvailable(reason, detail, attempts)


class Failover:
    """
    The tries of one client through one pool.

    @ivar pool: the L{UpstreamPool <splicetx._pool.pool.UpstreamPool>}.
    @ivar clientKey: what C{source} balancing hashes, or C{None}.
    @ivar tried: the members tried so far, in order.
    @ivar attempts: C{(member, failure)} for every failed try.
    @ivar deadline: when every try must be over (the pool's
        C{totalTimeout} from the start), by the reactor's clock; C{None}:
        no bound.  A C{tryTimeout} or C{totalTimeout} of 0 is no bound, as
        C{None} is (what the configuration makes of a 0).
    """

    __slots__ = ("pool", "clientKey", "tried", "attempts", "deadline", "reason")

    def __init__(self, pool: Any, clientKey: bytes | None, now: float) -> None:
        """
        @param pool: the pool.
        @param clientKey: see the instance variable.
        @param now: the start, by the reactor's clock.
        """
        self.pool = pool
        self.clientKey = clientKey
        self.tried: list[Any] = []
        self.attempts: list[tuple[Any, Failure]] = []
        total = pool.totalTimeout
        # No bound, as the configuration writes it (0 or None).
        self.deadline: float | None = now + total if total else None
        #: L{ALL_FAILED} or L{ALL_DOWN} once L{next} gave up.
        self.reason = ALL_FAILED

    def next(self, now: float) -> tuple[Any, float | None] | None:
        """
        The member to try now and the seconds its connect may take
        (C{None}: no bound here); C{None} when the tries or the time are
        used up or no member is left (then L{exhausted} is the error).

        @param now: the reactor's clock.
        """
        pool = self.pool
        maxTries = pool.maxTries
        if maxTries is not None and len(self.tried) >= maxTries:
            return None
        timeout = pool.tryTimeout or None
        deadline = self.deadline
        if deadline is not None:
            left = deadline - now
            if left <= 0:
                return None
            timeout = left if timeout is None else min(timeout, left)
        member = pool.pick(self.clientKey, self.tried)
        if member is None:
            if not self.tried:
                self.reason = ALL_DOWN
            return None
        self.tried.append(member)
        return member, timeout

    def failed(self, member: Any, failure: Failure) -> None:
        """
        A try of C{member} failed: note it, tell the member, log it.
        """
        tryFailed(self.pool, member, failure, self.attempts)

    @staticmethod
    def succeeded(member: Any) -> None:
        """
        A try of C{member} connected: it counts one more open connection
        (L{Upstream.release <splicetx._pool.pool.Upstream.release>} when
        it ends).
        """
        member.connectSucceeded()
        member.acquire()

    def exhausted(self) -> NoUpstreamAvailable:
        """
        The error once L{next} returned C{None}: every try failed (or the
        tries or the time ran out), or, nothing tried, every member is
        down.
        """
        return noUpstream(self.pool, self.reason, self.tried, self.attempts)
