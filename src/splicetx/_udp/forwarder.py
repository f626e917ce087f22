# -*- test-case-name: tests.test_udp -*-
"""
A UDP forward: its listening ports, the table of client sessions, the cap
on sessions, access rules, the per-session record and the drain.

A datagram from a client address with no live session opens one
(L{UDPSession <splicetx._udp.session.UDPSession>}) unless:

  - the forward is draining (drop reason C{draining});
  - the client is refused by the access rules (C{acl});
  - the forward already has L{UDPForwarder.maxSessions} live sessions
    (C{session_limit}): a flood of datagrams with spoofed sources can
    open at most that many sockets, and the live sessions carry on;
  - no upstream address is known yet (C{no_upstream});
  - the session's socket cannot be opened (C{socket_error}, e.g. out of
    file descriptors).

Each such datagram is dropped and counted by reason
(L{UDPForwarder.drops}); a datagram that cannot be sent is C{send_error}.
Nothing is logged per dropped datagram (a flood would flood the log too);
reaching the cap is logged once each time it is reached.

The forwarder counts datagrams and bytes of ended sessions itself and adds
the live ones' when asked (L{UDPForwarder.totals}), so the per-datagram
path increments a session's own counters only.

It quacks like L{SpliceProxyFactory <splicetx.proxy.SpliceProxyFactory>}
where the service needs it to (C{forwardName}, C{acl}, C{liveProtocols},
C{addListeningPort}, C{removeListeningPort}, C{drain}), so the service's
reload, drain and signals treat a UDP forward as another forward.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from splicetx._pool.addresses import describeAddress
from splicetx._proxy.access import AccessControl
from splicetx._relay.runtime import LOG_PROXY, defaultReactor
from splicetx._udp.session import CANCELLED, CLOSED, NORMAL_ENDINGS, UDPSession
from splicetx._udp.upstreams import UDPUpstreams

__all__ = [
    "UDPForwarder",
    "DEFAULT_UDP_IDLE_TIMEOUT",
    "DEFAULT_UDP_MAX_SESSIONS",
    "DROP_REASONS",
]

_log = Logger(namespace=LOG_PROXY)

#: Seconds without a datagram either way before a session ends (see
#: C{docs/udp.md}: longer than WireGuard's 25 s keepalive and QUIC's usual
#: 30 s idle timeout, short enough that a spoofed flood's sessions go soon).
DEFAULT_UDP_IDLE_TIMEOUT = 60.0

#: Live sessions per forward; each holds one file descriptor.
DEFAULT_UDP_MAX_SESSIONS = 10000

#: Why datagrams are dropped (the C{reason} label of the drop counter).
DROP_REASONS = (
    "acl",
    "session_limit",
    "draining",
    "no_upstream",
    "socket_error",
    "send_error",
)


def _hostText(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _clientText(client: tuple[str, int]) -> str:
    host = _hostText(client[0])
    return f"[{host}]:{client[1]}" if ":" in host else f"{host}:{client[1]}"


class _Listener(DatagramProtocol):
    """
    The protocol of one listening port: find the client's session (or open
    one) and relay the datagram.
    """

    noisy = False

    def __init__(self, forwarder: UDPForwarder) -> None:
        self.forwarder = forwarder
        self.sessions: dict[Any, UDPSession] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        session = self.sessions.get(addr)
        if session is None:
            session = self.forwarder.openSession(self, addr)
            if session is None:
                return
        session.sendUpstream(data)


class UDPForwarder:
    """
    One UDP forward (see the module docstring).

    @ivar upstreams: the forward's L{UDPUpstreams}.
    @ivar maxSessions: live sessions at most.
    @ivar acl: the access rules, or C{None}.
    @ivar forwardName: the forward's name in logs, metrics and status.
    @ivar accessLog: where session records go (an C{IAccessLog}), or
        C{None} for C{twisted.logger} events.
    @ivar logNormalConnections: record sessions that ended normally too.
    @ivar logFields: fields added to every record, or C{None}.
    @ivar liveProtocols: the live L{UDPSession}s.
    @ivar sessionsTotal: sessions opened.
    @ivar drops: dropped datagrams by reason.
    @ivar draining: C{True} once L{drain} was called.
    @ivar ports: the listening ports.
    """

    #: Read by the service and the status page: a UDP forward.
    protocolName = "udp"

    def __init__(
        self,
        upstreams: UDPUpstreams,
        *,
        reactor: Any = None,
        idleTimeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        maxSessions: int = DEFAULT_UDP_MAX_SESSIONS,
        acl: AccessControl | None = None,
        forwardName: str = "default",
        accessLog: Any = None,
        logNormalConnections: bool = True,
        logFields: dict[str, Any] | None = None,
    ) -> None:
        self.upstreams = upstreams
        self._reactor = reactor
        self._idleTimeout = idleTimeout
        self.maxSessions = maxSessions
        self.acl = acl
        self.forwardName = forwardName
        self.accessLog = accessLog
        self.logNormalConnections = logNormalConnections
        self.logFields = logFields
        self.liveProtocols: set[UDPSession] = set()
        self.sessionsTotal = 0
        self.drops: dict[str, int] = {}
        self.draining = False
        self.ports: list[Any] = []
        self._ended = [0, 0, 0, 0]
        self._resolving = False
        self._atLimit = False
        self._whenEmpty: list[Deferred[None]] = []

    @property
    def reactor(self) -> Any:
        """
        The reactor the forward runs on.
        """
        self._reactor = defaultReactor(self._reactor)
        return self._reactor

    @property
    def idleTimeout(self) -> float:
        """
        Seconds without a datagram before a session ends; setting it (a
        reload) applies to the live sessions too.
        """
        return self._idleTimeout

    @idleTimeout.setter
    def idleTimeout(self, value: float) -> None:
        if value == self._idleTimeout:
            return
        self._idleTimeout = value
        for session in list(self.liveProtocols):
            session.rescheduleIdle()

    @property
    def upstream(self) -> UDPUpstreams:
        """
        The upstreams (the name the service's log line reads).
        """
        return self.upstreams

    @property
    def maxConnections(self) -> int:
        """
        L{maxSessions}, by the name the status page reads.
        """
        return self.maxSessions

    def buildProtocol(self, addr: Any) -> _Listener:
        """
        The datagram protocol of a new listening port.
        """
        return _Listener(self)

    # -- ports ----------------------------------------------------------------

    def addListeningPort(self, port: Any) -> None:
        """
        A port of this forward is listening; resolve the upstreams the
        first time.
        """
        self.ports.append(port)
        if not self._resolving:
            self._resolving = True
            self.upstreams.start()

    def removeListeningPort(self, port: Any) -> None:
        """
        A port is about to be closed (a reload removed the forward): its
        sessions end now, since their replies would have no way out.
        """
        if port in self.ports:
            self.ports.remove(port)
        listener = getattr(port, "protocol", None)
        for session in list(getattr(listener, "sessions", {}).values()):
            session.end(CLOSED, "listening port closed by a reload")

    def replaceUpstreams(self, upstreams: UDPUpstreams) -> None:
        """
        Give new sessions these upstreams (a reload); live sessions keep
        theirs.
        """
        self.upstreams = upstreams
        if self._resolving:
            upstreams.start()

    # -- sessions -------------------------------------------------------------

    def dropped(self, reason: str, error: BaseException | None = None) -> None:
        """
        Count a dropped datagram.

        @param reason: one of L{DROP_REASONS}.
        @param error: the exception behind it, if any (unused but for
            debugging).
        """
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def openSession(self, listener: _Listener, client: Any) -> UDPSession | None:
        """
        Open the session of a client's first datagram, or drop it (see the
        module docstring).

        @return: the session, or C{None} when the datagram is dropped.
        """
        if self.draining:
            self.dropped("draining")
            return None
        acl = self.acl
        if acl is not None and not acl.isAllowed(_hostText(client[0]))[0]:
            self.dropped("acl")
            return None
        if len(self.liveProtocols) >= self.maxSessions:
            self.dropped("session_limit")
            if not self._atLimit:
                self._atLimit = True
                _log.warn(
                    "{forward}: {maxSessions} UDP sessions live, the most "
                    "allowed; new clients' datagrams are dropped",
                    splicetxEvent="udp-session-limit",
                    forward=self.forwardName,
                    maxSessions=self.maxSessions,
                )
            return None
        upstream = self.upstreams.choose(_hostText(client[0]))
        if upstream is None:
            self.dropped("no_upstream")
            return None
        session = UDPSession(self, listener, client, upstream)
        try:
            session.start()
        except Exception as e:
            self.dropped("socket_error", e)
            _log.warn(
                "{forward}: cannot open a UDP session socket: {error}",
                splicetxEvent="udp-socket-error",
                forward=self.forwardName,
                error=str(e),
            )
            return None
        listener.sessions[client] = session
        self.liveProtocols.add(session)
        self.sessionsTotal += 1
        upstream.active += 1
        upstream.total += 1
        return session

    def sessionEnded(self, session: UDPSession) -> None:
        """
        A session ended: forget it, add its figures to the totals and
        write its record.
        """
        sessions = session.listener.sessions
        if sessions.get(session.client) is session:
            del sessions[session.client]
        self.liveProtocols.discard(session)
        session.upstream.active -= 1
        ended = self._ended
        ended[0] += session.datagramsUp
        ended[1] += session.datagramsDown
        ended[2] += session.bytesUp
        ended[3] += session.bytesDown
        if len(self.liveProtocols) < self.maxSessions:
            self._atLimit = False
        self._record(session)
        if self.draining and not self.liveProtocols:
            waiters, self._whenEmpty = self._whenEmpty, []
            for d in waiters:
                d.callback(None)

    def totals(self) -> dict[str, int]:
        """
        Datagrams and bytes each way so far, live sessions included:
        C{datagramsUp}, C{datagramsDown}, C{bytesUp}, C{bytesDown}.
        """
        dUp, dDown, bUp, bDown = self._ended
        for s in list(self.liveProtocols):
            dUp += s.datagramsUp
            dDown += s.datagramsDown
            bUp += s.bytesUp
            bDown += s.bytesDown
        return {
            "datagramsUp": dUp,
            "datagramsDown": dDown,
            "bytesUp": bUp,
            "bytesDown": bDown,
        }

    def _record(self, session: UDPSession) -> None:
        normal = session.reason in NORMAL_ENDINGS
        if normal and not self.logNormalConnections:
            return
        client = _clientText(session.client)
        upstream = session.upstream.name
        extra = dict(self.logFields or ())
        extra["protocol"] = "udp"
        extra["datagramsClientToUpstream"] = session.datagramsUp
        extra["datagramsUpstreamToClient"] = session.datagramsDown
        reason = session.reason or CLOSED
        if self.accessLog is not None:
            self.accessLog.connection(
                not normal,
                client,
                upstream,
                "udp",
                session.bytesUp,
                session.bytesDown,
                session.duration,
                reason,
                session.detail,
                None,
                extra,
            )
            return
        level = _log.info if normal else _log.warn
        level(
            "{client} -> {upstream}: {reason} ({detail}); udp, "
            "{datagramsClientToUpstream} datagrams ({bytesClientToUpstream} "
            "bytes) up, {datagramsUpstreamToClient} datagrams "
            "({bytesUpstreamToClient} bytes) down, {duration:.3f} s",
            splicetxEvent="connection",
            client=client,
            upstream=upstream,
            engine="udp",
            bytesClientToUpstream=session.bytesUp,
            bytesUpstreamToClient=session.bytesDown,
            duration=session.duration,
            reason=reason,
            detail=session.detail,
            forward=self.forwardName,
            **extra,
        )

    # -- drain ----------------------------------------------------------------

    def drain(self, timeout: float) -> Deferred[int]:
        """
        Open no more sessions, let the live ones end when idle for up to
        C{timeout} seconds, abort the rest, then close the ports (which
        stay open until then: the replies go out through them).

        @param timeout: seconds to wait before aborting (0: at once).
        @return: a C{Deferred} firing with the number of sessions aborted.
        """
        self.draining = True
        reactor = self.reactor
        aborted = [0]
        empty: Deferred[None] = Deferred()
        if self.liveProtocols:
            self._whenEmpty.append(empty)
        else:
            empty.callback(None)

        def expire() -> None:
            live = list(self.liveProtocols)
            aborted[0] = len(live)
            for session in live:
                session.abort(CANCELLED, f"drain timeout ({timeout:g} s)")

        timer = None if empty.called else reactor.callLater(timeout, expire)

        def finished(_: Any) -> Deferred[int]:
            if timer is not None and timer.active():
                timer.cancel()
            ports, self.ports = self.ports, []
            stopped = [maybeDeferred(p.stopListening) for p in ports]
            return gatherResults(stopped, consumeErrors=True).addBoth(
                lambda _: aborted[0]
            )

        return empty.addCallback(finished)

    def describeListeners(self) -> list[str]:
        """
        The addresses the forward listens on, as text.
        """
        return [describeAddress(p.getHost()) for p in self.ports]

    def __repr__(self) -> str:
        return f"<UDPForwarder {self.forwardName} -> {self.upstreams!r}>"
