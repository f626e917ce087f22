# -*- test-case-name: tests.test_proxy -*-
"""
The proxy's side of an upstream connection, until the relay takes it over:
starting the connection attempt (plain TCP straight through
C{reactor.connectTCP}, any other endpoint through its C{connect}), its
connect timeout, stopping it, and the protocol that holds the upstream
connection meanwhile.

The attempt reports to the proxy (L{SpliceProxyProtocol
<splicetx.proxy.SpliceProxyProtocol>}) through three methods: C{_connected}
(with the L{_UpstreamProtocol}), C{_connectFailed} (with a C{Failure}) and
C{_upstreamLost}; the pending attempt is kept in its C{_connecting}.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import error as _error
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class UpstreamOwner(TypingProtocol):
    """
    What an upstream connection attempt reports to: the proxied connection
    (L{splicetx.proxy.SpliceProxyProtocol}).  Described here, below the
    proxy, so that this module needs nothing from it.
    """

    #: The pending attempt (a connector or a Deferred), for L{stopConnecting}.
    _connecting: Any
    #: Set when the connect timeout fired.
    _timedOut: bool

    def _connected(self, upstream: Any) -> Any:
        """
        The upstream connected; C{upstream} is its protocol.
        """

    def _connectFailed(self, reason: Failure) -> None:
        """
        The attempt failed with C{reason}.
        """

    def _upstreamLost(self, upstream: Any, reason: Failure) -> None:
        """
        The upstream closed before the relay took it over.
        """


__all__ = ["startConnecting", "stopConnecting"]


class _UpstreamProtocol(Protocol):
    """
    The protocol on the upstream connection until the relay takes the
    transport over: it stops reading at once (nothing is lost; the relay
    resumes reading) and keeps anything that still arrives for the client.

    @ivar proxy: the proxy to tell about the connection, until the relay
        takes over (then C{None}).
    @ivar received: what the upstream sent meanwhile.
    """

    transport: Any

    def __init__(self, proxy: UpstreamOwner, notify: bool = False) -> None:
        """
        @param proxy: see L{proxy}.
        @param notify: call the proxy's C{_connected} from L{connectionMade}
            (the direct path; endpoints fire a C{Deferred} instead).
        """
        self.proxy: UpstreamOwner | None = proxy
        self.received: list[bytes] = []
        self._notify = notify

    def connectionMade(self) -> None:
        """
        Stop reading; on the direct path tell the proxy.
        """
        self.transport.pauseProducing()
        if self._notify and self.proxy is not None:
            self.proxy._connected(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Keep bytes for the client.
        """
        self.received.append(data)

    def takeReceived(self) -> bytes:
        """
        @return: what the upstream sent so far, which is then forgotten.
        """
        data = b"".join(self.received)
        self.received = []
        return data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the proxy, unless the relay has taken over.
        """
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._upstreamLost(self, reason)

    def __repr__(self) -> str:
        return f"<splicetx upstream of {self.proxy!r}>"


class _UpstreamFactory(Factory):
    """
    Builds the one L{_UpstreamProtocol} of one proxied connection (for
    endpoints other than plain TCP, through C{endpoint.connect}).
    """

    noisy = False

    def __init__(self, proxy: UpstreamOwner) -> None:
        """
        @param proxy: the proxied connection.
        """
        self.proxy = proxy

    def buildProtocol(self, addr: IAddress | None) -> _UpstreamProtocol:
        """
        @return: the upstream protocol of the proxied connection.
        """
        p = _UpstreamProtocol(self.proxy)
        p.factory = self
        return p


class _DirectUpstreamFactory(ClientFactory):
    """
    The quiet, Deferred-free path for plain TCP upstreams: the proxy calls
    C{reactor.connectTCP} with this factory, so the connector's own timer is
    the connect timeout and success or failure reach the proxy directly,
    without the endpoint's wrapping factory, wrapping protocol and Deferred.
    """

    noisy = False

    def __init__(self, proxy: UpstreamOwner) -> None:
        """
        @param proxy: the proxied connection.
        """
        self.proxy: UpstreamOwner | None = proxy

    def buildProtocol(self, addr: IAddress | None) -> _UpstreamProtocol | None:
        """
        @return: the upstream protocol, or C{None} once the attempt was
            stopped.
        """
        proxy = self.proxy
        if proxy is None:
            return None
        # The factory has done its job: drop the proxy, so that the cycle
        # proxy -> upstream -> factory -> proxy never forms and a finished
        # connection is freed by reference counting.
        self.proxy = None
        return _UpstreamProtocol(proxy, notify=True)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """
        Tell the proxy, unless the attempt was stopped.
        """
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._connectFailed(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """
        Break the connector's reference cycle.
        """
        # Twisted's connector and client transport refer to each other and
        # nothing breaks that after a connection ends (connectionFailed does
        # it for failures); do it here so the pair is freed at once rather
        # than by the cyclic garbage collector, once per proxied connection.
        connector.transport = None  # type: ignore[attr-defined]


_NOT_DIRECT = (None, 0, 0.0, None)


def _directTarget(
    endpoint: IStreamClientEndpoint,
) -> tuple[str | None, int, float, Any]:
    """
    Tell whether C{endpoint} can be connected with C{reactor.connectTCP}
    directly (a C{TCP4ClientEndpoint}, or a C{TCP6ClientEndpoint} with an
    IPv6 literal), reading what the endpoint parsed.

    @return: C{(host, port, timeout, bindAddress)}, or C{(None, ...)} when
        the endpoint must be used through its C{connect} method.
    """
    kind = type(endpoint)
    if kind is not TCP4ClientEndpoint and kind is not TCP6ClientEndpoint:
        return _NOT_DIRECT
    host = getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return _NOT_DIRECT
    if kind is TCP6ClientEndpoint and not isIPv6Address(host):
        return _NOT_DIRECT
    timeout = getattr(endpoint, "_timeout", 30)
    return host, port, float(timeout or 0), getattr(endpoint, "_bindAddress", None)


def startConnecting(
    proxy: UpstreamOwner,
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    timeout: float,
) -> None:
    """
    Start connecting C{proxy} to C{endpoint}.  Plain TCP endpoints are
    connected with C{reactor.connectTCP} directly (see
    L{_DirectUpstreamFactory}); any other endpoint through its C{connect}
    method.  The pending attempt is stored in C{proxy._connecting} (for
    L{stopConnecting}); its outcome reaches C{proxy._connected} or
    C{proxy._connectFailed}, possibly before this returns.

    @param proxy: the proxied connection.
    @param reactor: the reactor to connect with.
    @param endpoint: the upstream.
    @param timeout: the proxy's connect timeout in seconds (0: none; a
        shorter timeout of a TCP endpoint wins).
    """
    host, port, endpointTimeout, bindAddress = _directTarget(endpoint)
    if host is not None:
        if endpointTimeout and (not timeout or endpointTimeout < timeout):
            timeout = endpointTimeout
        proxy._connecting = reactor.connectTCP(
            host,
            port,
            _DirectUpstreamFactory(proxy),
            timeout=timeout or 30.0,
            bindAddress=bindAddress,
        )
        return
    try:
        d: Deferred[Any] = endpoint.connect(_UpstreamFactory(proxy))
    except Exception:
        proxy._connectFailed(Failure())
        return
    if timeout and not d.called:
        # Not Deferred.addTimeout: endpoints fail a cancelled attempt
        # with their own errors (ConnectingCancelledError), which it
        # does not recognise as its timeout.
        timer = reactor.callLater(timeout, _connectTimedOut, proxy, d)
        d.addBoth(_cancelTimer, timer)
    if not d.called:
        proxy._connecting = d
    d.addCallbacks(proxy._connected, proxy._connectFailed)


def stopConnecting(connecting: IConnector | Deferred[Any]) -> bool:
    """
    Stop a pending attempt started by L{startConnecting}.

    @param connecting: what L{startConnecting} stored in C{_connecting}.
    @return: C{True} when the proxy still hears of the attempt's end (a
        C{Deferred}, which fails with a cancellation), C{False} when it was
        stopped quietly (a direct connector, whose failure is ignored: the
        connection's end is already decided).
    """
    if isinstance(connecting, Deferred):
        connecting.cancel()
        return True
    factory = getattr(connecting, "factory", None)
    if isinstance(factory, _DirectUpstreamFactory):
        factory.proxy = None
    try:
        connecting.stopConnecting()
    except _error.NotConnectingError:
        pass
    return False


def _connectTimedOut(proxy: UpstreamOwner, d: Deferred[Any]) -> None:
    proxy._timedOut = True
    d.cancel()


def _cancelTimer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result
