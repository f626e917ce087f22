# -*- test-case-name: tests.test_proxy -*-
"""
A TCP proxy built on L{splicetx.Relay}: a factory that accepts clients and a
protocol that connects each one to an upstream endpoint and relays between
them, with hooks for subclasses that read a handshake first (HTTP CONNECT,
SOCKS, the PROXY protocol) or choose the upstream per connection.

The life of one connection, and the hook called at each step::

    client connects         -> clientAccepted()       False: close at once
    readsHandshake = False  -> pause the client, chooseUpstream()
    readsHandshake = True   -> handshakeReceived(data) ... until the subclass
                               calls connectUpstream(endpoint, leftover)
    connectUpstream()       -> upstreamConnected(upstream)  default: startRelay()
                            -> upstreamFailed(failure)      default: close client
    startRelay()            -> Relay(client, upstream).start()
    the end                 -> relayFinished(result)        default: the
                               factory logs one event for the connection

A plain forwarder needs no subclass::

    factory = SpliceProxyFactory(clientFromString(reactor, "tcp:10.0.0.2:80"))
    serverFromString(reactor, "tcp:8080").listen(factory)

The factory also keeps the set of live connections, which is what
C{max-connections} (pausing the listening ports) and a graceful drain
(L{SpliceProxyFactory.drain}) are built on.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet import error as _error
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx import _tls
from splicetx._pipes import PipePool
from splicetx._proxyprotocol import (
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    buildHeader,
)
from splicetx._reactor import defaultReactor
from splicetx._relay import (
    CANCELLED,
    CLOSED,
    DONE,
    ENGINES,
    ERROR,
    Relay,
    RelayResult,
)

__all__ = [
    "SpliceProxyFactory",
    "SpliceProxyProtocol",
    "IDLE_TIMEOUT",
    "REJECTED",
    "UPSTREAM_FAILED",
    "describeAddress",
    "describeEndpoint",
]

_log = Logger(namespace="splicetx.proxy")

#: L{RelayResult.reason} of a connection closed by the idle timeout.
IDLE_TIMEOUT = "idle timeout"
#: L{RelayResult.reason} of a client turned away by
#: L{SpliceProxyProtocol.clientAccepted}.
REJECTED = "rejected"
#: L{RelayResult.reason} of a connection whose upstream could not be reached
#: (refused, unreachable, timed out, or no upstream chosen).
UPSTREAM_FAILED = "upstream failed"

#: L{RelayResult.engine} of a connection that ended before a relay started.
_NO_ENGINE = "none"


def describeAddress(address: Any) -> str:
    """
    Format a Twisted address for a log line.

    @param address: an L{IPv4Address}, L{IPv6Address}, L{UNIXAddress}, or
        anything else (formatted with C{str}).
    @return: C{"host:port"}, C{"[host]:port"}, C{"unix:path"} or C{str()}.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        raw = address.name
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return f"unix:{name or '(unnamed)'}"
    return str(address)


def describeEndpoint(endpoint: Any) -> str:
    """
    Describe a client endpoint for a log line, as far as its (private)
    attributes allow.

    @param endpoint: an C{IStreamClientEndpoint}, or C{None}.
    @return: e.g. C{"127.0.0.1:8080"}, C{"unix:/run/app.sock"} or the
        endpoint's C{repr}.
    """
    if endpoint is None:
        return "(none)"
    wrapped = getattr(endpoint, "_wrappedEndpoint", None)
    if wrapped is not None:
        return describeEndpoint(wrapped)
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    path = getattr(endpoint, "_path", None)
    if path is not None:
        return f"unix:{path}"
    return repr(endpoint)


class _UpstreamProtocol(Protocol):
    """
    The protocol on the upstream connection until the relay takes the
    transport over: it stops reading at once (nothing is lost; the relay
    resumes reading) and keeps anything that still arrives for the client.
    """

    transport: Any

    def __init__(self, proxy: SpliceProxyProtocol, notify: bool = False) -> None:
        self.proxy: SpliceProxyProtocol | None = proxy
        self.received: list[bytes] = []
        self._notify = notify

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        if self._notify and self.proxy is not None:
            self.proxy._connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def takeReceived(self) -> bytes:
        data = b"".join(self.received)
        self.received = []
        return data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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

    def __init__(self, proxy: SpliceProxyProtocol) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _UpstreamProtocol:
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

    def __init__(self, proxy: SpliceProxyProtocol) -> None:
        self.proxy: SpliceProxyProtocol | None = proxy

    def buildProtocol(self, addr: Any) -> _UpstreamProtocol | None:
        proxy = self.proxy
        if proxy is None:
            return None
        # The factory has done its job: drop the proxy, so that the cycle
        # proxy -> upstream -> factory -> proxy never forms and a finished
        # connection is freed by reference counting.
        self.proxy = None
        return _UpstreamProtocol(proxy, notify=True)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._connectFailed(reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        # Twisted's connector and client transport refer to each other and
        # nothing breaks that after a connection ends (connectionFailed does
        # it for failures); do it here so the pair is freed at once rather
        # than by the cyclic garbage collector, once per proxied connection.
        connector.transport = None


_NOT_DIRECT = (None, 0, 0.0, None)


def _directTarget(endpoint: Any) -> tuple[Any, int, float, Any]:
    """
    Tell whether C{endpoint} can be connected with C{reactor.connectTCP}
    directly (a L{TCP4ClientEndpoint}, or a L{TCP6ClientEndpoint} with an
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


class SpliceProxyProtocol(Protocol):
    """
    One proxied client connection.  See the module docstring for the order
    in which the hooks run.

    Subclasses override the hooks below; a subclass that overrides
    C{connectionMade}, C{dataReceived} or C{connectionLost} must call this
    class's version.

    @cvar readsHandshake: C{False} (the default): the client is not read
        from until the relay starts, and the upstream comes from
        L{chooseUpstream}.  C{True}: what the client sends goes to
        L{handshakeReceived} until the subclass calls L{connectUpstream}.

    @ivar factory: the L{SpliceProxyFactory} that built this protocol.
    @ivar upstream: the upstream protocol once connected, else C{None}; its
        C{transport} is the upstream connection.
    @ivar upstreamEndpoint: the endpoint given to L{connectUpstream}.
    @ivar relay: the L{Relay} once L{startRelay} was called, else C{None}.
    @ivar result: the L{RelayResult} once the connection has ended.
    @ivar startedAt: when the client connected, by the reactor's clock.
    @ivar proxyHeader: the L{ProxyHeader} the client sent, when the factory
        accepts the PROXY protocol, else C{None}.
    """

    readsHandshake: bool = False

    factory: SpliceProxyFactory
    transport: Any
    upstream: Any = None
    upstreamEndpoint: Any = None
    relay: Relay | None = None
    result: RelayResult | None = None
    startedAt: float = 0.0

    proxyHeader: ProxyHeader | None = None

    _connecting: Any = None
    _waiters: list[Deferred[Any]] | None = None
    _headerParser: ProxyHeaderParser | None = None
    _headerTimer: Any = None
    _clientLost: bool = False
    _finished: bool = False
    _ending: tuple[str, str] | None = None
    _idleCall: Any = None
    _idleMark: tuple[int, int] = (-1, -1)
    _lastActivity: float = 0.0
    _pendingToUpstream: bytes = b""
    _timedOut: bool = False
    _reading: bool = True

    # -- hooks ----------------------------------------------------------------

    def clientAccepted(self) -> bool:
        """
        Decide whether to serve this client (an access check).  Called from
        C{connectionMade}, before anything is read from the client.

        @return: C{True} to serve it; C{False} to close the connection at
            once (the connection is logged with reason L{REJECTED}).
        """
        return True

    def chooseUpstream(self) -> Any:
        """
        Choose where to connect this client (only when L{readsHandshake} is
        C{False}).  The client's address is C{self.transport.getPeer()}.

        @return: an C{IStreamClientEndpoint}, or a L{Deferred} firing with
            one; the default is the factory's C{upstream}.  C{None} or a
            failure ends the connection through L{upstreamFailed}.
        """
        return self.factory.upstream

    def handshakeReceived(self, data: bytes) -> None:
        """
        Bytes from the client before the upstream is chosen (only when
        L{readsHandshake} is C{True}).  Buffer and parse them; once the
        upstream is known call C{self.connectUpstream(endpoint,
        toUpstream=leftover)} with the bytes read past the handshake.
        Replies to the client go to C{self.transport.write}.

        @param data: the bytes just received.
        @raise NotImplementedError: unless overridden.
        """
        raise NotImplementedError(
            f"{type(self).__name__} sets readsHandshake = True and must "
            "implement handshakeReceived()"
        )

    def upstreamConnected(self, upstream: Any) -> None:
        """
        The upstream connection is up; C{self.upstream} is set.  The default
        starts the relay at once.  Override to write a reply to the client
        first (then call L{startRelay}, possibly later).

        @param upstream: the upstream protocol (also C{self.upstream}).
        """
        self.startRelay()

    def upstreamFailed(self, reason: Failure) -> None:
        """
        The upstream could not be reached (refused, unreachable, timed out
        after the factory's C{connectTimeout}, or L{chooseUpstream} failed).
        The default closes the client at once; the connection's log event
        says why (reason L{UPSTREAM_FAILED}).  Override to send an error
        reply first, then close C{self.transport}.

        @param reason: the failure.
        """
        self.transport.loseConnection()

    def relayFinished(self, result: RelayResult) -> None:
        """
        The connection has ended (both transports are closed).  Called once
        per connection, also for connections that never reached the relay
        (then C{result.engine} is C{"none"}).  The default hands the result
        to L{SpliceProxyFactory.relayFinished}, which logs it.

        @param result: how it went; C{duration} is measured from the moment
            the client connected.
        """
        self.factory.relayFinished(self, result)

    # -- actions --------------------------------------------------------------

    def connectUpstream(self, endpoint: Any, toUpstream: bytes = b"") -> Deferred[Any]:
        """
        Connect to the upstream, within the factory's C{connectTimeout}.
        From this call on the client is not read from until the relay starts.
        On success L{upstreamConnected} runs, on failure L{upstreamFailed}.

        @param endpoint: an C{IStreamClientEndpoint}.
        @param toUpstream: bytes already read from the client past a
            handshake; they are relayed to the upstream before anything else
            from the client.
        @return: a L{Deferred} firing with the upstream protocol once
            L{upstreamConnected} has run, or with C{None} when the connection
            failed (after L{upstreamFailed}) or the client left meanwhile.
        @raise RuntimeError: when called twice.
        """
        if self._connecting is not None or self.upstream is not None:
            raise RuntimeError("connectUpstream() was already called")
        if toUpstream:
            self._pendingToUpstream = bytes(toUpstream) + self._pendingToUpstream
        d: Deferred[Any] = Deferred()
        self._waiters = [d]
        self._connect(endpoint)
        return d

    def _connect(self, endpoint: Any) -> None:
        """
        Start the upstream connection.  Plain TCP endpoints are connected
        with C{reactor.connectTCP} directly (see L{_DirectUpstreamFactory});
        any other endpoint through its C{connect} method.
        """
        self._pauseClient()
        self.upstreamEndpoint = endpoint
        if self._clientLost or self._finished:
            self._fireWaiters(None)
            return
        factory = self.factory
        timeout = factory.connectTimeout
        host, port, endpointTimeout, bindAddress = _directTarget(endpoint)
        if host is not None:
            if endpointTimeout and (not timeout or endpointTimeout < timeout):
                timeout = endpointTimeout
            self._connecting = factory.reactor.connectTCP(
                host,
                port,
                _DirectUpstreamFactory(self),
                timeout=timeout or 30.0,
                bindAddress=bindAddress,
            )
            return
        try:
            d: Deferred[Any] = endpoint.connect(_UpstreamFactory(self))
        except Exception:
            self._connectFailed(Failure())
            return
        if timeout and not d.called:
            # Not Deferred.addTimeout: endpoints fail a cancelled attempt
            # with their own errors (ConnectingCancelledError), which it
            # does not recognise as its timeout.
            timer = factory.reactor.callLater(timeout, self._connectTimedOut, d)
            d.addBoth(_cancelTimer, timer)
        if not d.called:
            self._connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _cancelConnecting(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is None:
            return
        if isinstance(connecting, Deferred):
            connecting.cancel()
            return
        # A direct connector: stop it quietly (its failure is ignored, the
        # connection's end is already decided).
        factory = getattr(connecting, "factory", None)
        if isinstance(factory, _DirectUpstreamFactory):
            factory.proxy = None
        try:
            connecting.stopConnecting()
        except _error.NotConnectingError:
            pass
        if self._waiters is not None:
            self._fireWaiters(None)

    def _fireWaiters(self, value: Any) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters:
            for d in waiters:
                d.callback(value)

    def _connectTimedOut(self, d: Deferred[Any]) -> None:
        self._timedOut = True
        d.cancel()

    def startRelay(
        self, toUpstream: bytes = b"", toClient: bytes = b""
    ) -> Deferred[Any]:
        """
        Relay between the client (transport A) and the upstream (transport
        B) with a L{Relay} stored in C{self.relay}; its result goes to
        L{relayFinished}.

        Order of the bytes the upstream receives: what was already written
        to its transport, then the PROXY protocol header when the factory's
        C{sendProxyProtocol} is set, then C{toUpstream}, then the
        C{toUpstream} given to L{connectUpstream} (and the bytes that
        followed an accepted PROXY header), then the client's stream.  The
        client receives what was written to its transport, then
        C{toClient} (e.g. a handshake reply), then the upstream's stream.

        @return: a L{Deferred} firing with the L{RelayResult} after
            L{relayFinished} ran.
        @raise RuntimeError: when there is no upstream yet or the relay
            already started.
        """
        if self.relay is not None:
            raise RuntimeError("startRelay() was already called")
        upstream = self.upstream
        if upstream is None:
            raise RuntimeError("startRelay() needs a connected upstream")
        factory = self.factory
        toB = bytes(toUpstream) + self._pendingToUpstream
        self._pendingToUpstream = b""
        version = factory.sendProxyProtocol
        if version is not None:
            toB = self._outgoingProxyHeader(version) + toB
        toA = bytes(toClient)
        if isinstance(upstream, _UpstreamProtocol):
            toA += upstream.takeReceived()
            upstream.proxy = None
        relay = Relay(
            self.transport,
            upstream.transport,
            reactor=factory.reactor,
            engine=factory.engine,
            toA=toA,
            toB=toB,
            pipePool=factory.pipePool,
        )
        self.relay = relay
        self._idleMark = (-1, -1)
        d = relay.start()
        d.addCallbacks(self._finish, self._relayFailed)
        return d

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End this connection now: abort the relay, or, before it started,
        both connections (a pending upstream connection attempt is
        cancelled).

        @param reason: the L{RelayResult.reason} to report.
        @param detail: the L{RelayResult.detail} to report.
        """
        if self._finished:
            return
        if self.relay is not None:
            self.relay.abort(reason, detail)
            return
        if self._ending is None:
            self._ending = (reason, detail)
        self._cancelConnecting()
        if self.upstream is not None:
            _abort(self.upstream.transport)
        _abort(self.transport)

    # -- Protocol -------------------------------------------------------------

    def connectionMade(self) -> None:
        """
        Register with the factory; with the factory's C{acceptProxyProtocol}
        read the PROXY header first; then check the factory's C{acl} and
        L{clientAccepted}, then (unless L{readsHandshake}) pause the client
        and connect to L{chooseUpstream}.
        """
        factory = self.factory
        reactor = factory.reactor
        self.startedAt = self._lastActivity = reactor.seconds()
        factory._protocolStarted(self)
        metrics = factory.metrics
        if metrics is not None:
            metrics.connectionOpened(factory.forwardName)
        if factory.idleTimeout:
            self._scheduleIdleCheck()
        if factory.acceptProxyProtocol:
            self._headerParser = ProxyHeaderParser()
            self._headerTimer = reactor.callLater(
                factory.proxyProtocolTimeout, self._headerTimedOut
            )
            return
        self._admit()

    def _admit(self) -> None:
        """
        The client's address is known: apply the access rules, then go on to
        the handshake or the upstream.
        """
        factory = self.factory
        if not self.readsHandshake:
            self._pauseClient()
        acl = factory.acl
        if acl is not None:
            allowed, why = acl.isAllowed(self.clientAddress())
            if not allowed:
                self._refuse("acl", why)
                return
        if not self.clientAccepted():
            self._ending = (REJECTED, "refused by clientAccepted()")
            self.transport.loseConnection()
            return
        if self.readsHandshake:
            return
        try:
            endpoint = self.chooseUpstream()
        except Exception:
            self._connectFailed(Failure())
            return
        if isinstance(endpoint, Deferred):
            endpoint.addCallback(self._chosen)
            endpoint.addErrback(self._connectFailed)
            return
        try:
            self._chosen(endpoint)
        except Exception:
            self._connectFailed(Failure())

    def _refuse(self, metricReason: str, detail: str) -> None:
        """
        Close a client before any upstream connection, count it and let the
        connection's one log event say why.
        """
        self._ending = (REJECTED, detail)
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectionRefused(metricReason, factory.forwardName)
        self._pauseClient()
        self.transport.loseConnection()

    def clientAddress(self) -> Any:
        """
        The client's address: the source address of an accepted PROXY
        protocol header, else the connection's peer.
        """
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return header.source
        return self.transport.getPeer()

    def _outgoingProxyHeader(self, version: int) -> bytes:
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return buildHeader(version, header.source, header.destination)
        return buildHeader(version, self.transport.getPeer(), self.transport.getHost())

    # -- accepting the PROXY protocol -------------------------------------------

    def _feedHeader(self, data: bytes) -> None:
        parser = self._headerParser
        assert parser is not None
        try:
            header = parser.feed(data)
        except ProxyProtocolError as e:
            self._headerDone()
            self._refuse("proxy_protocol", str(e))
            return
        if header is None:
            return
        self._headerDone()
        self.proxyHeader = header
        rest = header.rest
        if self.readsHandshake:
            self._admit()
            if rest and self._reading and not self._finished and not self._clientLost:
                self.dataReceived(rest)
        else:
            self._pendingToUpstream += rest
            self._admit()

    def _headerDone(self) -> None:
        self._headerParser = None
        timer, self._headerTimer = self._headerTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _headerTimedOut(self) -> None:
        self._headerTimer = None
        parser = self._headerParser
        if parser is None or self._finished or self._clientLost:
            return
        self._headerParser = None
        self._refuse(
            "proxy_protocol_timeout",
            f"no complete PROXY protocol header within "
            f"{self.factory.proxyProtocolTimeout:g} s (got {parser.buffered} bytes)",
        )

    def dataReceived(self, data: bytes) -> None:
        """
        Hand client bytes to L{handshakeReceived}; bytes that arrive after
        L{connectUpstream} was called are kept for the upstream.
        """
        if self._headerParser is not None:
            self._feedHeader(data)
        elif self._reading and self.readsHandshake:
            self._lastActivity = self.factory.reactor.seconds()
            self.handshakeReceived(data)
        else:
            self._pendingToUpstream += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The client connection is closed.  Once a relay runs, the relay
        reports the end; before that, this ends the connection (cancelling
        a pending upstream connection attempt).
        """
        self._clientLost = True
        if self.relay is not None or self._finished:
            return
        if self._headerParser is not None:
            self._headerDone()
        self._cancelConnecting()
        if self.upstream is not None:
            _abort(self.upstream.transport)
        reason_, detail = self._ending or (
            CLOSED,
            "connection closed before the relay started: " + reason.getErrorMessage(),
        )
        self._finish(self._resultWithoutRelay(reason_, detail))

    def __repr__(self) -> str:
        peer = getattr(self.transport, "getPeer", None)
        who = describeAddress(peer()) if peer is not None else "?"
        return f"<{type(self).__name__} client={who} relay={self.relay!r}>"

    # -- internals ------------------------------------------------------------

    def _pauseClient(self) -> None:
        if self._reading:
            self._reading = False
            if not self._clientLost:
                self.transport.pauseProducing()

    def _chosen(self, endpoint: Any) -> None:
        if endpoint is None:
            raise ValueError("no upstream endpoint (chooseUpstream returned None)")
        if self._clientLost or self._finished:
            return None
        if self._connecting is not None or self.upstream is not None:
            raise RuntimeError("connectUpstream() was already called")
        self._connect(endpoint)
        return None

    def _connected(self, upstream: Any) -> Any:
        self._connecting = None
        if self._clientLost or self._finished:
            _abort(upstream.transport)
            self._fireWaiters(None)
            return None
        self.upstream = upstream
        try:
            self.upstreamConnected(upstream)
        except Exception:
            _log.failure("upstreamConnected() of {proxy!r} failed", proxy=self)
            self.abort(ERROR, "upstreamConnected() raised an exception")
        if self._waiters is not None:
            self._fireWaiters(upstream)
        return upstream

    def _connectFailed(self, reason: Failure) -> None:
        self._connecting = None
        if self._waiters is not None:
            # Fire after the failure is handled, whatever happens below.
            try:
                self._upstreamFailedNow(reason)
            finally:
                self._fireWaiters(None)
            return None
        self._upstreamFailedNow(reason)
        return None

    def _upstreamFailedNow(self, reason: Failure) -> None:
        if self._clientLost or self._finished:
            return
        if reason.check(CancelledError) and self._ending is not None:
            return
        if self._timedOut or reason.check(TimeoutError, _error.TimeoutError):
            why = f"timed out after {self.factory.connectTimeout:g} s"
        else:
            why = reason.getErrorMessage()
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectFailed(reason, factory.forwardName)
        self._ending = (
            UPSTREAM_FAILED,
            f"cannot connect to {describeEndpoint(self.upstreamEndpoint)}: {why}",
        )
        try:
            self.upstreamFailed(reason)
        except Exception:
            _log.failure("upstreamFailed() of {proxy!r} failed", proxy=self)
            _abort(self.transport)

    def _upstreamLost(self, upstream: _UpstreamProtocol, reason: Failure) -> None:
        """
        The upstream connection closed before the relay took it over.
        """
        if self.relay is not None or self._finished or self._clientLost:
            return
        if self._ending is None:
            self._ending = (
                UPSTREAM_FAILED,
                "upstream closed before the relay started: " + reason.getErrorMessage(),
            )
        _abort(self.transport)

    def _relayFailed(self, reason: Failure) -> RelayResult:
        _log.failure("relay of {proxy!r} could not start", reason, proxy=self)
        if self.upstream is not None:
            _abort(self.upstream.transport)
        _abort(self.transport)
        return self._finish(
            self._resultWithoutRelay(ERROR, f"relay failed: {reason.getErrorMessage()}")
        )

    def _resultWithoutRelay(self, reason: str, detail: str) -> RelayResult:
        return RelayResult(
            engine=_NO_ENGINE,
            bytesAToB=0,
            bytesBToA=0,
            duration=0.0,
            reason=reason,
            detail=detail,
            fallbackReason=None,
        )

    def _finish(self, result: RelayResult) -> RelayResult:
        if self._finished:
            return result
        self._finished = True
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()
        factory = self.factory
        duration = max(0.0, factory.reactor.seconds() - self.startedAt)
        result = RelayResult(
            result.engine,
            result.bytesAToB,
            result.bytesBToA,
            duration,
            result.reason,
            result.detail,
            result.fallbackReason,
        )
        self.result = result
        metrics = factory.metrics
        try:
            if metrics is not None:
                forward = factory.forwardName
                metrics.connectionClosed(forward)
                if result.engine != _NO_ENGINE:
                    metrics.relayFinished(result, forward)
            self.relayFinished(result)
        except Exception:
            _log.failure("relayFinished() of {proxy!r} failed", proxy=self)
        finally:
            factory._protocolEnded(self)
        return result

    # -- idle timeout ---------------------------------------------------------

    def _scheduleIdleCheck(self, delay: float | None = None) -> None:
        timeout = self.factory.idleTimeout
        if not timeout:
            return
        if delay is None:
            delay = _idleInterval(timeout)
        self._idleCall = self.factory.reactor.callLater(delay, self._checkIdle)

    def _checkIdle(self) -> None:
        self._idleCall = None
        if self._finished:
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
        elif self._connecting is not None:
            # Waiting for the upstream: connectTimeout rules.
            self._lastActivity = now
        idle = now - self._lastActivity
        if idle >= timeout:
            detail = f"no bytes either way for {timeout:g} s"
            self._ending = (IDLE_TIMEOUT, detail)
            self.abort(IDLE_TIMEOUT, detail)
            return
        self._scheduleIdleCheck(min(_idleInterval(timeout), timeout - idle))


def _cancelTimer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


def _idleInterval(timeout: float) -> float:
    """
    How often an idle timeout is checked: a quarter of it (so a connection
    is closed between 1x and 1.25x the timeout after its last byte), at
    least every 50 ms and at most every 60 s.
    """
    return min(60.0, max(0.05, timeout / 4))


def _abort(transport: Any) -> None:
    if transport is None:
        return
    try:
        if hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()
    except Exception:
        _log.failure("closing {transport!r} failed", transport=transport)


class SpliceProxyFactory(Factory):
    """
    Accepts clients and relays each to an upstream endpoint with
    L{SpliceProxyProtocol} (or a subclass set as C{protocol}).

    It keeps the live connections in L{liveProtocols}.  With
    L{maxConnections} set and the listening ports given to
    L{addListeningPort}, it stops accepting (the ports stop reading; clients
    wait in the kernel's listen queue) while that many connections are live,
    and resumes when one ends.  L{drain} stops listening and lets the live
    connections finish.

    @ivar upstream: the default upstream C{IStreamClientEndpoint}, or
        C{None} when the protocol chooses per connection.
    @ivar engine: C{"auto"}, C{"splice"} or C{"copy"}; see L{Relay}.
    @ivar pipePool: the L{PipePool} of the relays, or C{None} for the
        process-wide pool.
    @ivar connectTimeout: seconds to wait for an upstream connection (0: no
        limit).
    @ivar idleTimeout: close a connection after this many seconds without a
        byte either way (0: never).
    @ivar maxConnections: how many connections may be live at once (C{None}:
        no limit); enforced on the ports given to L{addListeningPort}.
    @ivar liveProtocols: the connected L{SpliceProxyProtocol}s that have not
        ended yet.
    @ivar draining: C{True} once L{drain} was called.
    @ivar acl: an L{AccessControl <splicetx._acl.AccessControl>} whose
        C{isAllowed} decides which clients are served, or C{None}.  A refused
        client is closed before any upstream connection, with reason
        L{REJECTED}.
    @ivar acceptProxyProtocol: read a PROXY protocol header (v1 or v2) from
        every client first; its source address is then the client's address
        for the log and C{acl}, and the bytes after it are relayed first.
    @ivar proxyProtocolTimeout: seconds a client has to send that header.
    @ivar sendProxyProtocol: C{1} or C{2} to send a PROXY protocol header
        with the client's address to the upstream before the relay, or
        C{None}.
    @ivar metrics: a L{ProxyMetrics <splicetx._metrics.ProxyMetrics>} to
        record into, or C{None}.
    @ivar forwardName: the C{forward} label of those metrics.
    @ivar logFields: extra fields for every connection's log event (e.g.
        the worker's pid), or C{None}.
    @ivar logNormalConnections: when C{False}, a connection that ended
        normally (C{done} or C{closed}) logs nothing; failures are still
        logged at C{warn}.  C{twist splice-proxy} sets it when
        C{--log-level} is C{warn} or above, where the C{info} event would
        be built only to be dropped (about a tenth of a short connection's
        CPU).
    """

    protocol = SpliceProxyProtocol  # type: ignore[assignment]
    noisy = False
    logNormalConnections = True

    def __init__(
        self,
        upstream: Any = None,
        *,
        reactor: Any = None,
        engine: str = "auto",
        pipePool: PipePool | None = None,
        connectTimeout: float = 30.0,
        idleTimeout: float = 0.0,
        acl: Any = None,
        acceptProxyProtocol: bool = False,
        proxyProtocolTimeout: float = 5.0,
        sendProxyProtocol: int | None = None,
        metrics: Any = None,
        forwardName: str = "default",
        logFields: dict[str, Any] | None = None,
        maxConnections: int | None = None,
        logNormalConnections: bool = True,
    ) -> None:
        """
        @param upstream: see L{upstream}.
        @param reactor: the reactor (default: the global one, imported when
            first needed).
        @param engine: see L{engine}.
        @param pipePool: see L{pipePool}.
        @param connectTimeout: see L{connectTimeout}.
        @param idleTimeout: see L{idleTimeout}.
        @param acl: see L{acl}.
        @param acceptProxyProtocol: see L{acceptProxyProtocol}.
        @param proxyProtocolTimeout: see L{proxyProtocolTimeout}.
        @param sendProxyProtocol: see L{sendProxyProtocol}.
        @param metrics: see L{metrics}.
        @param forwardName: see L{forwardName}.
        @param logFields: see L{logFields}.
        @param maxConnections: see L{maxConnections}.
        @param logNormalConnections: see L{logNormalConnections}.
        @raise ValueError: for an unknown engine, PROXY protocol version, or
            a negative or non-finite timeout.
        """
        if engine not in ENGINES:
            raise ValueError(
                f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}"
            )
        for name, value in (
            ("connectTimeout", connectTimeout),
            ("idleTimeout", idleTimeout),
            ("proxyProtocolTimeout", proxyProtocolTimeout),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
        self.upstream = upstream
        self._reactor = reactor
        self.engine = engine
        self.pipePool = pipePool
        self.connectTimeout = float(connectTimeout)
        self.idleTimeout = float(idleTimeout)
        if sendProxyProtocol not in (None, 1, 2):
            raise ValueError(
                f"sendProxyProtocol must be None, 1 or 2, not {sendProxyProtocol!r}"
            )
        if acl is not None and getattr(acl, "empty", False):
            acl = None
        self.acl = acl
        self.acceptProxyProtocol = bool(acceptProxyProtocol)
        self.proxyProtocolTimeout = float(proxyProtocolTimeout)
        self.sendProxyProtocol = sendProxyProtocol
        self.metrics = metrics
        self.forwardName = forwardName
        self.logFields = logFields or None
        self.maxConnections: int | None = maxConnections
        self.logNormalConnections = logNormalConnections
        self.liveProtocols: set[SpliceProxyProtocol] = set()
        self.draining = False
        self._ports: list[Any] = []
        self._paused = False
        self._whenEmpty: list[Deferred[None]] = []

    @property
    def reactor(self) -> Any:
        """
        The reactor the proxy runs on.
        """
        self._reactor = defaultReactor(self._reactor)
        return self._reactor

    # -- per-connection log ---------------------------------------------------

    def relayFinished(self, proto: SpliceProxyProtocol, result: RelayResult) -> None:
        """
        Log one event for a finished connection, in namespace
        C{splicetx.proxy}, with the fields C{client}, C{upstream},
        C{engine}, C{bytesClientToUpstream}, C{bytesUpstreamToClient},
        C{duration}, C{reason}, C{detail}, C{fallbackReason}, C{alpn} and
        C{upstreamAlpn} (the ALPN protocols negotiated, or C{None}; all plain
        strings and numbers, so C{twist --log-format json} keeps them);
        with an accepted PROXY header, C{client} is the header's source and
        C{peer} the balancer that sent it; plus L{logFields}.

        Normal ends (C{done}, C{closed}) are logged at C{info}, others at
        C{warn}; with L{logNormalConnections} false, normal ends are not
        logged.

        @param proto: the protocol of the connection.
        @param result: its L{RelayResult}.
        """
        normal = result.reason in (DONE, CLOSED)
        if normal and not self.logNormalConnections:
            return
        extra = self.logFields
        header = proto.proxyHeader
        if header is not None and header.source is not None:
            extra = dict(extra or ())
            extra["peer"] = describeAddress(proto.transport.getPeer())
            client = describeAddress(header.source)
        else:
            client = describeAddress(proto.transport.getPeer())
        upstream = proto.upstream
        if upstream is not None and upstream.transport is not None:
            upstreamText = describeAddress(upstream.transport.getPeer())
        else:
            upstreamText = describeEndpoint(proto.upstreamEndpoint or self.upstream)
        level = _log.info if normal else _log.warn
        level(
            "{client} -> {upstream}: {reason} ({detail}); engine {engine}, "
            "{bytesClientToUpstream} bytes up, {bytesUpstreamToClient} bytes "
            "down, {duration:.3f} s",
            splicetxEvent="connection",
            client=client,
            upstream=upstreamText,
            engine=result.engine,
            bytesClientToUpstream=result.bytesAToB,
            bytesUpstreamToClient=result.bytesBToA,
            duration=result.duration,
            reason=result.reason,
            detail=result.detail,
            fallbackReason=result.fallbackReason,
            alpn=_tls.negotiatedProtocol(proto.transport),
            upstreamAlpn=_tls.negotiatedProtocol(getattr(upstream, "transport", None)),
            **(extra or {}),
        )

    # -- live connections, max-connections and drain ---------------------------

    def addListeningPort(self, port: Any) -> None:
        """
        Let this factory pause and resume a listening port for
        L{maxConnections} and stop it in L{drain}.

        The port must have C{startReading}/C{stopReading} (every Twisted
        TCP, UNIX, SSL and adopted port does) for the limit to hold; its
        accept loop is capped so that one burst cannot overshoot the limit.

        @param port: an C{IListeningPort} of this factory.
        """
        self._ports.append(port)
        original = getattr(port, "doRead", None)
        if original is None or not hasattr(port, "numberAccepts"):
            return

        def doRead() -> Any:
            room = self._room()
            if room is not None:
                if room <= 0:
                    self._pausePorts()
                    return None
                if port.numberAccepts > room:
                    port.numberAccepts = room
            return original()

        port.doRead = doRead
        if self._paused and hasattr(port, "stopReading"):
            port.stopReading()

    def _room(self) -> int | None:
        if self.maxConnections is None:
            return None
        return self.maxConnections - len(self.liveProtocols)

    def _pausePorts(self) -> None:
        if self._paused:
            return
        self._paused = True
        for port in self._ports:
            if hasattr(port, "stopReading"):
                port.stopReading()

    def _resumePorts(self) -> None:
        if not self._paused:
            return
        self._paused = False
        for port in self._ports:
            if hasattr(port, "startReading") and getattr(port, "connected", True):
                port.startReading()

    def _protocolStarted(self, proto: SpliceProxyProtocol) -> None:
        self.liveProtocols.add(proto)
        room = self._room()
        if room is not None and room <= 0:
            self._pausePorts()

    def _protocolEnded(self, proto: SpliceProxyProtocol) -> None:
        self.liveProtocols.discard(proto)
        if self.draining:
            if not self.liveProtocols:
                waiters, self._whenEmpty = self._whenEmpty, []
                for d in waiters:
                    d.callback(None)
            return
        room = self._room()
        if room is None or room > 0:
            self._resumePorts()

    def drain(self, timeout: float) -> Deferred[int]:
        """
        Stop listening on the ports given to L{addListeningPort} at once,
        let the live connections finish for up to C{timeout} seconds, then
        abort the rest.

        @param timeout: seconds to wait before aborting (0: abort at once).
        @return: a L{Deferred} firing with the number of connections that
            had to be aborted, once every connection has ended.
        """
        self.draining = True
        ports, self._ports = self._ports, []
        stopped = [maybeDeferred(p.stopListening) for p in ports]
        reactor = self.reactor
        aborted = [0]
        empty: Deferred[None] = Deferred()
        if self.liveProtocols:
            self._whenEmpty.append(empty)
        else:
            empty.callback(None)
        timers: list[Any] = []

        def expire() -> None:
            live = list(self.liveProtocols)
            aborted[0] = len(live)
            _log.info(
                "drain timeout ({timeout:g} s): aborting {count} connection(s)",
                timeout=timeout,
                count=len(live),
            )
            for proto in live:
                proto.abort(CANCELLED, f"drain timeout ({timeout:g} s)")
            # Never hang a shutdown on a connection that does not close.
            if not empty.called:
                timers.append(reactor.callLater(5.0, giveUp))

        def giveUp() -> None:
            if not empty.called:
                empty.callback(None)

        if not empty.called:
            timers.append(reactor.callLater(timeout, expire))

        def finished(_: Any) -> Deferred[int]:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            return gatherResults(stopped, consumeErrors=True).addBoth(
                lambda _: aborted[0]
            )

        return empty.addCallback(finished)
