# -*- test-case-name: tests.test_proxy -*-
"""
The idle timeout of a proxied connection: a timer that closes the
connection after the factory's C{idleTimeout} seconds without a byte either
way.

It is a mixin of L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}
(plain attributes, no per-connection closure).  Rather than rescheduling on
every byte, it checks every quarter of the timeout whether the relay's byte
counts moved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from splicetx._phase import Phase

__all__ = ["IdleTimer"]


def _idleInterval(timeout: float) -> float:
    """
    How often an idle timeout is checked: a quarter of it (so a connection
    is closed between 1x and 1.25x the timeout after its last byte), at
    least every 50 ms and at most every 60 s.
    """
    return min(60.0, max(0.05, timeout / 4))


class IdleTimer:
    """
    The idle check of one proxied connection.  The host class provides
    C{factory} (with C{idleTimeout} and C{reactor}), C{relay}, C{_phase} and
    C{_idleExpired(timeout)}, which ends the connection.

    @ivar _lastActivity: when a byte last moved (or the connection started,
        or the upstream connected), by the reactor's clock.
    """

    factory: Any
    relay: Any
    _phase: Phase

    _idleCall: Any = None
    _idleMark: tuple[int, int] = (-1, -1)
    _lastActivity: float = 0.0

    if TYPE_CHECKING:

        def _idleExpired(self, timeout: float) -> None: ...

    def _scheduleIdleCheck(self, delay: float | None = None) -> None:
        """
        Check for idleness in C{delay} seconds (default: L{_idleInterval}),
        unless the factory has no idle timeout.
        """
        timeout = self.factory.idleTimeout
        if not timeout:
            return
        if delay is None:
            delay = _idleInterval(timeout)
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
        End the connection when nothing moved for the idle timeout, else
        check again.  Waiting for the upstream does not count as idle (the
        connect timeout rules then).
        """
        self._idleCall = None
        phase = self._phase
        if phase is Phase.FINISHED:
            return
        factory = self.factory
        timeout = factory.idleTimeout
        now = factory.reactor.seconds()
        relay = self.relay
        if relay is not None:
            mark = (relay.bytesAToB, relay.bytesBToA)
            if mark != self._idleMark:
                self._idleMark = mark
                self._lastActivity = now
        elif phase is Phase.CONNECTING:
            self._lastActivity = now
        idle = now - self._lastActivity
        if idle >= timeout:
            self._idleExpired(timeout)
            return
        self._scheduleIdleCheck(min(_idleInterval(timeout), timeout - idle))
