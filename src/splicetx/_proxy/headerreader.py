# -*- test-case-name: tests.test_proxyprotocol,tests.test_proxy -*-
"""
Reading the PROXY protocol header a load balancer sends before the client's
bytes, within the factory's C{proxyProtocolTimeout}: the part of
L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>} that runs in its
C{READING_HEADER} phase.  The parsing itself is
L{ProxyHeaderParser <splicetx._proxy.proxyheader.ProxyHeaderParser>}'s, the
refusals L{splicetx._proxy.preamble}'s (the lean path's reader,
L{splicetx._proxy.leanpreamble}, makes the same).

It is a mixin of the protocol (plain attributes, no per-connection closure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from splicetx._proxy.phase import Phase
from splicetx._proxy.preamble import badHeader, headerTimedOut
from splicetx._proxy.proxyheader import (
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
)

__all__ = ["ProxyHeaderReader"]


class ProxyHeaderReader:
    """
    The PROXY header reader of one proxied connection.  The host class
    provides C{factory}, C{readsHandshake}, C{_phase},
    C{_pendingToUpstream}, C{dataReceived}, C{_admit()} (go on once the
    client's address is known) and C{_refuse(metricReason, detail)}.

    @ivar proxyHeader: the L{ProxyHeader} the client sent, once read, else
        C{None}.
    """

    factory: Any
    readsHandshake: bool
    _phase: Phase
    _pendingToUpstream: bytes

    proxyHeader: ProxyHeader | None = None

    _headerParser: ProxyHeaderParser | None = None
    _headerTimer: Any = None

    if TYPE_CHECKING:

        def _admit(self) -> None: ...

        def _refuse(self, metricReason: str, detail: str) -> None: ...

        def dataReceived(self, data: bytes) -> None: ...

    def _startHeader(self) -> None:
        """
        Enter the C{READING_HEADER} phase: parse what the client sends
        until the header is complete, for up to the factory's
        C{proxyProtocolTimeout}.
        """
        factory = self.factory
        self._phase = Phase.READING_HEADER
        self._headerParser = ProxyHeaderParser()
        self._headerTimer = factory.reactor.callLater(
            factory.proxyProtocolTimeout, self._headerTimedOut
        )

    def _feedHeader(self, data: bytes) -> None:
        """
        Parse bytes from the client; once the header is complete keep it in
        L{proxyHeader} and admit the client, whose bytes past the header go
        to the handshake or the upstream; refuse the client for a bad
        header.
        """
        parser = self._headerParser
        assert parser is not None
        try:
            header = parser.feed(data)
        except ProxyProtocolError as e:
            self._headerDone()
            refusal = badHeader(e)
            self._refuse(refusal.metric, refusal.detail)
            return
        if header is None:
            return
        self._headerDone()
        self.proxyHeader = header
        rest = header.rest
        if self.readsHandshake:
            self._admit()
            if rest and self._phase is Phase.HANDSHAKE:
                self.dataReceived(rest)
        else:
            self._pendingToUpstream += rest
            self._admit()

    def _headerDone(self) -> None:
        """
        Forget the parser and stop the timer.
        """
        self._headerParser = None
        timer, self._headerTimer = self._headerTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _headerTimedOut(self) -> None:
        """
        Refuse a client whose header did not arrive in time.
        """
        self._headerTimer = None
        parser = self._headerParser
        if parser is None or self._phase is not Phase.READING_HEADER:
            return
        self._headerParser = None
        refusal = headerTimedOut(self.factory.proxyProtocolTimeout, parser.buffered)
        self._refuse(refusal.metric, refusal.detail)
