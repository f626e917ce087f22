# -*- test-case-name: tests.test_answers -*-
"""
Answering and refusing a client from a hook of
L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}: the actions
C{reply} and C{refuse}, and what happens when a hook raises.

A refusal is the one end a proxy decides itself: the connection's record
says C{rejected} with the detail given, C{splicetx_connections_refused_total}
counts it under the reason given, and the status page shows it with the
other refusals (access rules, PROXY header, SNI).  A hook that raises ends
its connection with reason C{error} and one logged traceback.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._proxy.phase import Phase, requirePhase
from splicetx._proxy.preamble import REJECTED
from splicetx._relay.contract import ERROR
from splicetx._relay.runtime import LOG_PROXY

__all__ = ["ProxyAnswers"]

_log = Logger(namespace=LOG_PROXY)


#: C{SO_LINGER} on, for 0 seconds: C{close()} resets the connection.
_NO_LINGER = struct.pack("ii", 1, 0)

#: The phases C{reply} may be called in: the client is connected and the
#: relay has not started.
_CAN_REPLY = (
    Phase.READING_HEADER,
    Phase.ADMITTING,
    Phase.HANDSHAKE,
    Phase.CHOOSING,
    Phase.CONNECTING,
    Phase.CONNECTED,
    Phase.CLOSING,
)


class ProxyAnswers:
    """
    The C{reply} and C{refuse} actions of a proxied connection, and the
    handling of a hook that raises; mixed into
    L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}, which
    provides C{transport}, C{factory}, C{upstream}, C{_phase}, C{_close},
    C{_cancelConnecting}, C{_pauseClient} and C{abort}.
    """

    transport: Any
    factory: Any
    upstream: Any
    _phase: Phase
    _ending: tuple[str, str] | None

    def reply(self, data: bytes) -> None:
        """
        Write C{data} to the client now, before the relay starts (a
        handshake's answer, an error message before L{refuse}).  Bytes
        written before L{startRelay <splicetx.proxy.SpliceProxyProtocol.startRelay>}
        reach the client before anything the upstream sends.

        @param data: the bytes.
        @raise RuntimeError: once the relay started (the relay owns the
            client connection) or the connection has ended.
        @raise TypeError: when C{data} is not bytes.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"reply() takes bytes, not {type(data).__name__}")
        requirePhase(self._phase, _CAN_REPLY, "reply")
        if data:
            self.transport.write(bytes(data))

    def refuse(
        self,
        reason: str,
        detail: str | None = None,
        *,
        reply: bytes = b"",
        reset: bool = False,
    ) -> None:
        """
        Turn this client away: write C{reply} (if any), close the client
        connection once it is out (a clean close, FIN), and close the
        upstream connection if one was made.

        The connection's record says C{rejected} with C{detail} (or
        C{reason} when no detail is given); the metric
        C{splicetx_connections_refused_total} counts it with the label
        C{reason}, which the status page shows too.  Keep the reasons a
        small set of short words (C{"unknown_route"}, C{"bad_request"}):
        each one is a time series.

        Called once the end was already decided (from
        L{upstreamFailed <splicetx.proxy.SpliceProxyProtocol.upstreamFailed>},
        say), it writes C{reply} and closes the client, and the connection
        keeps the end decided first (C{upstream failed}); it is not counted
        as a refusal.  Once the connection has ended it does nothing.

        @param reason: the refusal's label in the metrics, e.g.
            C{"unknown_route"}; not empty.
        @param detail: what the record says, e.g. C{"unknown route mail"}.
        @param reply: bytes to write to the client first.
        @param reset: close with a reset (RST) instead of a clean close;
            C{reply} must then be empty (a reset discards unsent bytes).
        @raise RuntimeError: once the relay started (end it with
            L{abort <splicetx.proxy.SpliceProxyProtocol.abort>} instead).
        @raise ValueError: for an empty C{reason}, or a C{reply} with
            C{reset}.
        """
        if not reason or not isinstance(reason, str):
            raise ValueError(f"refuse() needs a reason, not {reason!r}")
        if reset and reply:
            raise ValueError("refuse(reset=True) cannot write a reply first")
        phase = self._phase
        if phase is Phase.FINISHED:
            return
        requirePhase(phase, _CAN_REPLY, "refuse")
        if phase is not Phase.CLOSING:
            self._close(REJECTED, detail or reason)
            factory = self.factory
            if factory.metrics is not None:
                factory.metrics.connectionRefused(reason, factory.forwardName)
            self._cancelConnecting()
            upstream = self.upstream
            if upstream is not None and upstream.transport is not None:
                upstream.transport.abortConnection()
        if reply:
            self.transport.write(bytes(reply))
        self._pauseClient()
        if reset:
            handle = getattr(self.transport, "getHandle", lambda: None)()
            if hasattr(handle, "setsockopt"):
                # No lingering: the close sends a reset, never a FIN.
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _hookFailed(self, hook: str, failure: Failure | None = None) -> None:
        """
        A hook raised: log its traceback once and end the connection with
        reason C{error}.

        @param hook: the hook's name, e.g. C{"handshakeReceived"}.
        @param failure: the failure (default: the exception being handled).
        """
        failure = failure if failure is not None else Failure()
        _log.failure("{hook}() of {proxy!r} failed", failure, hook=hook, proxy=self)
        self.abort(
            ERROR,
            f"{hook}() raised {failure.type.__name__}: {failure.getErrorMessage()}",
        )

    if TYPE_CHECKING:

        def _close(self, reason: str, detail: str) -> None: ...

        def _cancelConnecting(self) -> None: ...

        def _pauseClient(self) -> None: ...

        def abort(self, reason: str = ERROR, detail: str = "aborted") -> None: ...
