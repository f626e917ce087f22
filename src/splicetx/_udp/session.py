# -*- test-case-name: tests.test_udp -*-
"""
One client's UDP session: the datagrams of one client address go out
through one upstream socket of their own, connected to the upstream, so
the upstream's replies (and only its replies: the kernel filters a
connected socket by source) come back on it and are sent to that client
through the listening port they arrived on.

A session ends:

  - C{idle}: no datagram either way for the forward's idle timeout (one
    timer per session, rescheduled only when it fires, never per
    datagram);
  - C{refused}: the upstream answered with ICMP port unreachable (nothing
    listens there).  The session ends at once and frees its socket; the
    client's next datagram opens a new session, which a pool may give
    another member;
  - C{closed}: its listening port was closed (a reload removed the
    forward);
  - C{cancelled}: aborted, at the drain timeout or on a second signal.

Datagram boundaries are kept: each datagram read is written as one
datagram, up to L{MAX_DATAGRAM <splicetx._udp.endpoints.MAX_DATAGRAM>}
bytes.  The session's socket is a L{SessionPort
<splicetx._udp.endpoints.SessionPort>}, which logs nothing per socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol

from splicetx._udp.endpoints import openSessionPort

__all__ = ["UDPSession", "IDLE", "REFUSED", "CLOSED", "CANCELLED"]

#: Session endings (the C{reason} of its record).
IDLE = "idle"
REFUSED = "refused"
CLOSED = "closed"
CANCELLED = "cancelled"

#: Endings that are not worth a warning.
NORMAL_ENDINGS = frozenset({IDLE, CLOSED})

_SEND_ERRORS = (OSError, MessageLengthError)


class UDPSession(DatagramProtocol):
    """
    A client's session (see the module docstring).

    @ivar forwarder: the L{UDPForwarder <splicetx._udp.forwarder.UDPForwarder>}.
    @ivar listener: the listening protocol the client's datagrams arrive
        on; replies go out through its transport.
    @ivar client: the client's C{(host, port)}.
    @ivar upstream: the L{UDPUpstream <splicetx._udp.upstreams.UDPUpstream>}.
    @ivar started: when it started (the reactor's clock).
    @ivar lastActive: when its last datagram went either way.
    @ivar datagramsUp: datagrams relayed from the client.
    @ivar datagramsDown: datagrams relayed to the client.
    @ivar bytesUp: bytes relayed from the client.
    @ivar bytesDown: bytes relayed to the client.
    @ivar dropped: datagrams that could not be sent (either way).
    @ivar reason: how it ended, or C{None} while live.
    @ivar detail: the ending in words.
    """

    noisy = False

    def __init__(
        self,
        forwarder: Any,
        listener: Any,
        client: tuple[str, int],
        upstream: Any,
    ) -> None:
        self.forwarder = forwarder
        self.listener = listener
        self.client = client
        self.upstream = upstream
        self._clock = forwarder.reactor.seconds
        self.started = self.lastActive = self._clock()
        self.datagramsUp = self.datagramsDown = 0
        self.bytesUp = self.bytesDown = 0
        self.dropped = 0
        self.reason: str | None = None
        self.detail = ""
        self._port: Any = None
        self._timer: Any = None

    def start(self) -> None:
        """
        Open the upstream socket and connect it to the upstream.

        @raise OSError: when the socket cannot be opened (out of file
            descriptors, ...).
        """
        reactor = self.forwarder.reactor
        ip, port = self.upstream.address
        bind = self.upstream.endpoint.bindAddress
        if bind is None:
            bind = "::" if ":" in ip else ""
        self._port = openSessionPort(reactor, self, bind)
        try:
            self._port.connect(ip, port)
        except Exception:
            self._port.stopListening()
            raise
        self._timer = reactor.callLater(self.forwarder.idleTimeout, self._checkIdle)

    def sendUpstream(self, data: bytes) -> None:
        """
        Relay one datagram of the client to the upstream.
        """
        try:
            self._port.write(data)
        except _SEND_ERRORS as e:
            self.dropped += 1
            self.forwarder.dropped("send_error", e)
            return
        self.datagramsUp += 1
        self.bytesUp += len(data)
        self.lastActive = self._clock()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Relay one datagram of the upstream to the client.
        """
        try:
            self.listener.transport.write(data, self.client)
        except _SEND_ERRORS as e:
            self.dropped += 1
            self.forwarder.dropped("send_error", e)
            return
        self.datagramsDown += 1
        self.bytesDown += len(data)
        self.lastActive = self._clock()

    def connectionRefused(self) -> None:
        """
        The upstream port is closed (ICMP port unreachable): end now.
        """
        self.end(REFUSED, "upstream port unreachable (ICMP)")

    def stopProtocol(self) -> None:
        """
        The socket closed.  When the session did not close it, the reactor
        did, on a socket error: on a connected UDP socket that is an ICMP
        error from the upstream (epoll and poll report it as an error on
        the descriptor rather than as a failed read).
        """
        if self.reason is None:
            self._port = None
            self.end(REFUSED, "upstream unreachable (ICMP error)")

    def rescheduleIdle(self) -> None:
        """
        The forward's idle timeout changed: check against it now.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.reason is None:
            self._checkIdle()

    def _checkIdle(self) -> None:
        self._timer = None
        if self.reason is not None:
            return
        idle = self.forwarder.idleTimeout
        left = self.lastActive + idle - self._clock()
        if left > 0:
            self._timer = self.forwarder.reactor.callLater(left, self._checkIdle)
            return
        self.end(IDLE, f"idle for {idle:g} s")

    def end(self, reason: str, detail: str) -> None:
        """
        End the session: close its socket and tell the forwarder (once).

        @param reason: see the module docstring.
        @param detail: the ending in words.
        """
        if self.reason is not None:
            return
        self.reason = reason
        self.detail = detail
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
        self.forwarder.sessionEnded(self)

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End the session now (a drain's timeout, a second signal).
        """
        self.end(reason, detail)

    def drainStarted(self) -> None:
        """
        A drain started: nothing to do, the session ends when it is idle.
        """

    @property
    def duration(self) -> float:
        """
        Seconds since it started.
        """
        return max(0.0, self._clock() - self.started)
