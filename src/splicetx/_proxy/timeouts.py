# -*- test-case-name: tests.test_proxy,tests.test_lifecycle -*-
"""
The timers of a proxied connection's life: the idle timeout (no byte either
way for the factory's C{idleTimeout} seconds), the half-close timeout (one
direction has ended and the other moved no byte for C{halfCloseTimeout}
seconds) and, while the factory drains, the prompt close of a connection
whose upstream has finished and whose client has received everything.

It is a mixin of L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}
(plain attributes, no per-connection closure).  Rather than rescheduling on
every byte, one timer checks every quarter of the shortest timeout whether
the relay's byte counts moved and which directions have ended
(L{Relay.endedDirections <splicetx.Relay.endedDirections>}, derived from
the engine's state); nothing is added to the relay's hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from splicetx._proxy.phase import Phase
from splicetx._relay.contract import CLOSED
from splicetx._relay.tcpoptions import delivered

__all__ = [
    "IdleTimer",
    "DRAIN_CHECK_INTERVAL",
    "IDLE_TIMEOUT",
    "HALF_CLOSE_TIMEOUT",
    "DRAIN_CLOSE",
    "idleDetail",
    "halfCloseDetail",
    "dueEnd",
]

#: L{RelayResult.reason} of a connection closed by the idle timeout.
IDLE_TIMEOUT = "idle timeout"
#: L{RelayResult.reason} of a half-closed connection closed by the
#: half-close timeout.
HALF_CLOSE_TIMEOUT = "half-close timeout"
#: The detail of a connection closed while draining (its reason: closed).
DRAIN_CLOSE = "draining: the upstream finished and the client has received everything"


def idleDetail(timeout: float) -> str:
    """
    The detail of a connection closed by the idle timeout.
    """
    return f"no bytes either way for {timeout:g} s"


def halfCloseDetail(timeout: float, clientHasAll: bool) -> str:
    """
    The detail of a connection closed by the half-close timeout: the
    upstream finished (C{clientHasAll}) and the client did not close, or
    the client finished and the upstream went quiet.
    """
    if clientHasAll:
        return (
            f"the upstream finished; the client sent nothing and did not "
            f"close for {timeout:g} s"
        )
    return f"the client finished; the upstream sent nothing for {timeout:g} s"


#: What a timeout decided: C{(reason, detail, abort)} -- close cleanly
#: (C{abort} false) or with a reset.
Ending = tuple[str, str, bool]


def dueEnd(
    factory: Any,
    now: float,
    lastActivity: float,
    halfClosedAt: float | None,
    ended: tuple[bool, bool],
    client: Any,
) -> tuple[Ending | None, float | None, float | None]:
    """
    The one decision of a connection's timers, for both ways its bytes move
    (L{IdleTimer} of the protocol, the fast path's L{FastConnection.check
    <splicetx._proxy.fastconn.FastConnection.check>}): end it when nothing
    moved for the factory's C{idleTimeout}; when one direction has ended
    and the other moved nothing for its C{halfCloseTimeout} (cleanly when
    the client has the upstream's whole stream, else with a reset, so the
    client does not take the silence for a complete reply); or, draining,
    when the upstream finished and the client has received everything.

    @param factory: the factory (its timeouts and C{draining}).
    @param now: the reactor's clock.
    @param lastActivity: when a byte last moved.
    @param halfClosedAt: when one direction was first seen ended, or C{None}.
    @param ended: whether client to upstream, and upstream to client, have
        ended (both C{False} before a relay).
    @param client: the client's transport or socket (for L{delivered}).
    @return: C{(ending, halfClosedAt, delay)}: the end due now or C{None},
        the half-close time to keep, and the seconds until the next end
        could be due (C{None}: no timeout set).
    """
    aToB, bToA = ended
    delay: float | None = None
    if aToB != bToA:
        if halfClosedAt is None:
            halfClosedAt = now
        if bToA and factory.draining and delivered(client):
            return (CLOSED, DRAIN_CLOSE, False), halfClosedAt, None
        half = factory.halfCloseTimeout
        if half:
            quiet = now - max(lastActivity, halfClosedAt)
            if quiet >= half:
                detail = halfCloseDetail(half, bToA)
                return (HALF_CLOSE_TIMEOUT, detail, not bToA), halfClosedAt, None
            delay = half - quiet
    idle = factory.idleTimeout
    if idle:
        quiet = now - lastActivity
        if quiet >= idle:
            return (IDLE_TIMEOUT, idleDetail(idle), True), halfClosedAt, None
        if delay is None or idle - quiet < delay:
            delay = idle - quiet
    return None, halfClosedAt, delay


#: How often, while the factory drains, a connection checks whether it can
#: be closed (its upstream finished and its client has everything).
DRAIN_CHECK_INTERVAL = 0.25


def _idleInterval(timeout: float) -> float:
    """
    How often an idle timeout is checked: a quarter of it (so a connection
    is closed between 1x and 1.25x the timeout after its last byte), at
    least every 50 ms and at most every 60 s.
    """
    return min(60.0, max(0.05, timeout / 4))


class IdleTimer:
    """
    The idle, half-close and drain checks of one proxied connection (the
    decision is L{dueEnd}'s).  The host class provides C{factory} (with
    C{idleTimeout}, C{halfCloseTimeout}, C{draining} and C{reactor}),
    C{relay}, C{transport}, C{_phase} and C{_timedOut(reason, detail,
    abort)}, which ends the connection.

    @ivar _lastActivity: when a byte last moved (or the connection started,
        or the upstream connected), by the reactor's clock.
    @ivar _halfClosedAt: when a check first saw one direction ended, or
        C{None}.
    """

    factory: Any
    relay: Any
    transport: Any
    _phase: Phase

    _idleCall: Any = None
    #: The forwarder whose one timer checks this connection (a client the
    #: lean accept took: L{splicetx._proxy.fastpath.FastForwarder.check}),
    #: or C{None}: a C{callLater} of its own.
    _checker: Any = None
    #: Run once at the next check (the upstream socket's TCP keepalive:
    #: see L{SpliceProxyProtocol._connected
    #: <splicetx._proxy.protocol.SpliceProxyProtocol._connected>}).
    _dueAtCheck: Any = None
    _idleMark: tuple[int, int] = (-1, -1)
    _lastActivity: float = 0.0
    _halfClosedAt: float | None = None

    if TYPE_CHECKING:

        def _timeoutEnd(self, reason: str, detail: str, abort: bool) -> None: ...

    def _checkInterval(self) -> float | None:
        """
        How often to check: a quarter of the shortest timeout set, at most
        L{DRAIN_CHECK_INTERVAL} while draining; C{None} for never.
        """
        factory = self.factory
        idle = factory.idleTimeout
        half = factory.halfCloseTimeout
        shortest = min(idle, half) if idle and half else idle or half
        interval = _idleInterval(shortest) if shortest else None
        if factory.draining:
            if interval is None or interval > DRAIN_CHECK_INTERVAL:
                interval = DRAIN_CHECK_INTERVAL
        return interval

    def _scheduleIdleCheck(self, delay: float | None = None) -> None:
        """
        Check in C{delay} seconds (default: L{_checkInterval}), unless there
        is nothing to check (no timeout, not draining).
        """
        if self._checker is not None:
            # Its forwarder's timer checks it, at least as often.
            return
        interval = self._checkInterval()
        if interval is None:
            return
        if delay is None or delay > interval:
            delay = interval
        self._idleCall = self.factory.reactor.callLater(delay, self._checkIdle)

    def _stopIdleCheck(self) -> None:
        """
        Cancel the pending check, if any.
        """
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()

    def _checkIdle(self) -> None:
        """
        End the connection when nothing moved for the idle timeout, when a
        half-closed connection moved nothing for the half-close timeout, or,
        draining, when the upstream has finished and the client has
        received everything; else check again.  Waiting for the upstream
        does not count as idle (the connect timeout rules then).
        """
        self._idleCall = None
        phase = self._phase
        if phase is Phase.FINISHED:
            return
        due = self._dueAtCheck
        if due is not None:
            self._dueAtCheck = None
            due()
        factory = self.factory
        now = factory.reactor.seconds()
        relay = self.relay
        ended = (False, False)
        if relay is not None:
            mark = (relay.bytesAToB, relay.bytesBToA)
            if mark != self._idleMark:
                self._idleMark = mark
                self._lastActivity = now
            if phase is Phase.RELAYING:
                ended = relay.endedDirections
        elif phase is Phase.CONNECTING:
            self._lastActivity = now
        ending, self._halfClosedAt, delay = dueEnd(
            factory, now, self._lastActivity, self._halfClosedAt, ended, self.transport
        )
        if ending is not None:
            self._timeoutEnd(*ending)
            return
        self._scheduleIdleCheck(delay)

    def _recheckNow(self) -> None:
        """
        Run the check at once (the factory started draining), then on the
        drain's schedule.
        """
        if self._phase is Phase.FINISHED:
            return
        self._stopIdleCheck()
        self._checkIdle()
        checker = self._checker
        if checker is not None:
            # The drain's schedule is the forwarder timer's now.
            checker.hurry()
