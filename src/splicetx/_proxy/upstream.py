# -*- test-case-name: tests.test_proxy -*-
"""
The proxy's side of an upstream connection, until the relay takes it over:
starting the connection attempt (plain TCP straight through
C{reactor.connectTCP}, any other endpoint through its C{connect}), its
connect timeout, stopping it, and the protocol that holds the upstream
connection meanwhile.

The attempt reports to the proxy (L{SpliceProxyProtocol
<splicetx.proxy.SpliceProxyProtocol>}) through three methods: C{_connected}
(with the L{UpstreamProtocol}), C{_connectFailed} (with a C{Failure}) and
C{_upstreamLost}; the pending attempt is kept in its C{_connecting}.
"""

from __future__ import annotations

import socket
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import error as _error
from twisted.internet import tcp as _tcp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from splicetx._pool.target import TCPTarget
from splicetx._relay.transports import addStreamSocketClass


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


__all__ = [
    "startConnecting",
    "stopConnecting",
    "directTarget",
    "addressFor",
    "directAddress",
    "Address",
]


class UpstreamProtocol(Protocol):
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
    Builds the one L{UpstreamProtocol} of one proxied connection (for
    endpoints other than plain TCP, through C{endpoint.connect}).
    """

    noisy = False

    def __init__(self, proxy: UpstreamOwner) -> None:
        """
        @param proxy: the proxied connection.
        """
        self.proxy = proxy

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol:
        """
        @return: the upstream protocol of the proxied connection.
        """
        p = UpstreamProtocol(self.proxy)
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

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol | None:
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
        return UpstreamProtocol(proxy, notify=True)

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


class _DirectClient(_tcp.Client):
    """
    Twisted's TCP client transport with the steps a relayed upstream does
    not need taken out: for an address literal the connection attempt
    starts at once (no C{callLater(0)}, no C{Deferred} for an address that
    needs no resolving), the connected socket is not registered for
    reading only to be paused by L{UpstreamProtocol} a moment later (the
    relay registers it), and no peer address object or log prefix is built
    for the connector.  Everything after the connection is Twisted's.
    """

    logstr = "splicetx upstream,client"

    def _finishInit(self, whenDone: Any, skt: Any, error: Any, reactor: Any) -> None:
        if whenDone and not self._requiresResolution:
            self._commonConnection.__init__(self, skt, None, reactor)  # type: ignore[arg-type]
            self._setRealAddress(self.addr)
            return
        _tcp.Client._finishInit(self, whenDone, skt, error, reactor)

    def _connectDone(self) -> None:
        connector = self.connector
        protocol = connector.buildProtocol(None)
        self.connected = 1
        if protocol is None:
            self.protocol = Protocol()
            self.loseConnection()
            return
        self.protocol = protocol
        # Not startReading(): the upstream protocol would pause at once and
        # the relay registers the socket itself (two epoll_ctl calls saved).
        protocol.makeConnection(self)


addStreamSocketClass(_DirectClient)


class _DirectConnector:
    """
    The connector of one L{_DirectClient}: a plain TCP upstream connected
    without Twisted's C{Connector} and C{ClientFactory}; it owns the connect
    timeout and tells the proxy how the attempt ended.

    @ivar proxy: the proxy to tell, until the attempt ends or is stopped.
    @ivar transport: the L{_DirectClient}, until its connection ends.
    """

    __slots__ = ("proxy", "transport", "_timer", "_host", "_port", "__weakref__")

    def __init__(self, proxy: UpstreamOwner, host: str, port: int) -> None:
        self.proxy: UpstreamOwner | None = proxy
        self.transport: _DirectClient | None = None
        self._timer: Any = None
        self._host = host
        self._port = port

    def connect(self, reactor: Any, timeout: float, bindAddress: Any) -> None:
        """
        Start the attempt (its outcome may reach the proxy before this
        returns).
        """
        self._timer = reactor.callLater(timeout, self._timedOut)
        client = _DirectClient(self._host, self._port, bindAddress, self, reactor)
        if self.proxy is not None or client.connected:
            self.transport = client

    def _timedOut(self) -> None:
        self._timer = None
        client = self.transport
        if client is not None:
            client.failIfNotConnected(_error.TimeoutError())

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol | None:
        """
        @return: the upstream protocol, or C{None} once the attempt was
            stopped.
        """
        self._cancelTimer()
        proxy, self.proxy = self.proxy, None
        if proxy is None:
            return None
        return UpstreamProtocol(proxy, notify=True)

    def connectionFailed(self, reason: Failure) -> None:
        """
        Tell the proxy, unless the attempt was stopped.
        """
        self._cancelTimer()
        self.transport = None
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._connectFailed(reason)

    def connectionLost(self, reason: Failure) -> None:
        """
        The connection ended: let go of the transport (no cycle is left).
        """
        self.transport = None

    def stopConnecting(self) -> None:
        """
        Stop the attempt quietly: the proxy is not told.
        """
        self.proxy = None
        self._cancelTimer()
        client = self.transport
        if client is not None and not client.connected:
            client.failIfNotConnected(_error.UserError())

    def getDestination(self) -> IAddress:
        """
        @return: the address connected to.
        """
        from twisted.internet.address import IPv4Address, IPv6Address

        if isIPv6Address(self._host):
            return IPv6Address("TCP", self._host, self._port)
        return IPv4Address("TCP", self._host, self._port)


_twistedTCP: dict[type, bool] = {}


def _usesTwistedTCP(reactor: Any) -> bool:
    """
    Whether C{reactor.connectTCP} is Twisted's own (C{tcp.Connector} and
    C{tcp.Client}), so that L{_DirectClient} behaves as its connections do
    (a reactor that overrides it, or a fake one in tests, gets the call).
    """
    kind = type(reactor)
    known = _twistedTCP.get(kind)
    if known is None:
        from twisted.internet.posixbase import PosixReactorBase

        known = _twistedTCP[kind] = (
            issubclass(kind, PosixReactorBase)
            and getattr(kind, "connectTCP", None) is PosixReactorBase.connectTCP
        )
    return known


_NOT_DIRECT = (None, 0, 0.0, None)


def _isLiteral(host: str) -> bool:
    return isIPAddress(host) or isIPv6Address(host)


def directTarget(
    endpoint: IStreamClientEndpoint,
) -> tuple[str | None, int, float, Any]:
    """
    Tell whether C{endpoint} can be connected with C{reactor.connectTCP}
    directly (a C{TCP4ClientEndpoint}, a C{TCP6ClientEndpoint} with an
    IPv6 literal, a L{TCPTarget <splicetx._pool.target.TCPTarget>} or a
    C{HostnameEndpoint} with an address literal), reading what the endpoint
    parsed.

    @return: C{(host, port, timeout, bindAddress)}, or C{(None, ...)} when
        the endpoint must be used through its C{connect} method.
    """
    kind = type(endpoint)
    if kind is TCPTarget:
        if endpoint.literal is None:  # type: ignore[attr-defined]
            return _NOT_DIRECT
        kind = TCP4ClientEndpoint  # an address literal of either family
    elif kind is HostnameEndpoint:
        # Twisted sends even an address through getaddrinfo in a thread;
        # an address literal needs no resolver at all.
        host = getattr(endpoint, "_hostText", None)
        port = getattr(endpoint, "_port", None)
        if not isinstance(host, str) or not _isLiteral(host) or port is None:
            return _NOT_DIRECT
        timeout = getattr(endpoint, "_timeout", 30)
        return host, port, float(timeout or 0), getattr(endpoint, "_bindAddress", None)
    elif kind is not TCP4ClientEndpoint and kind is not TCP6ClientEndpoint:
        return _NOT_DIRECT
    host = getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return _NOT_DIRECT
    if kind is TCP6ClientEndpoint and not isIPv6Address(host):
        return _NOT_DIRECT
    timeout = getattr(endpoint, "_timeout", 30)
    return host, port, float(timeout or 0), getattr(endpoint, "_bindAddress", None)


#: C{(family, sockaddr, text, timeout)}: where a fast connection connects,
#: how logs name it, and the endpoint's own connect timeout (0: none).
Address = tuple[int, tuple[Any, ...], str, float]


def addressFor(host: str, port: int, timeout: float) -> Address:
    """
    The L{Address} of an IP address literal C{host} and C{port}.
    """
    if isIPv6Address(host):
        return socket.AF_INET6, (host, port), f"[{host}]:{port}", timeout
    return socket.AF_INET, (host, port), f"{host}:{port}", timeout


def directAddress(endpoint: Any) -> Address | None:
    """
    The L{Address} of a plain TCP endpoint with an IP address and no bind
    address (what the lean path connects to itself), else C{None}.
    """
    host, port, timeout, bind = directTarget(endpoint)
    if host is None or bind is not None:
        return None
    if not (isIPAddress(host) or isIPv6Address(host)):
        return None
    return addressFor(host, port, timeout)


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
    host, port, endpointTimeout, bindAddress = directTarget(endpoint)
    if host is None and type(endpoint) is TCPTarget:
        # A name the cache holds one address for now: connect it directly
        # (with more, TCPTarget.connect tries each in turn).
        cached = endpoint.cached()
        if cached is not None and len(cached) == 1:
            host, port = cached[0][1], endpoint.port
            endpointTimeout, bindAddress = endpoint.timeout, endpoint.bindAddress
    if host is not None:
        if endpointTimeout and (not timeout or endpointTimeout < timeout):
            timeout = endpointTimeout
        if _usesTwistedTCP(reactor):
            connector = _DirectConnector(proxy, host, port)
            proxy._connecting = connector
            connector.connect(reactor, timeout or 30.0, bindAddress)
            return
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
    if isinstance(connecting, _DirectConnector):
        connecting.stopConnecting()
        return False
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
