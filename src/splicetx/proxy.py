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

This module holds the hooks and the public face; the parts live in their
own modules: the phases of a connection in L{splicetx._phase}, the upstream
connection attempt in L{splicetx._upstream}, the idle timeout in
L{splicetx._idle}, the PROXY header reader in L{splicetx._headerreader},
the live connections, connection limit and drain in L{splicetx._portgate},
and the log-line describers in L{splicetx._describe}.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from twisted.internet import error as _error
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._acl import AccessControl
from splicetx._describe import describeAddress, describeEndpoint
from splicetx._headerreader import ProxyHeaderReader
from splicetx._idle import IdleTimer
from splicetx._phase import Phase, requirePhase
from splicetx._pipes import PipePool
from splicetx._portgate import PortGate
from splicetx._proxyprotocol import buildHeader
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
from splicetx._upstream import (
    _UpstreamProtocol,
    startConnecting,
    stopConnecting,
)

if TYPE_CHECKING:
    from splicetx._metrics import ProxyMetrics

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

# The phases in which each action may be called (see splicetx._phase).
# Tuples, not sets: Enum hashes in Python, a tuple compares by identity.
_CAN_CONNECT = (Phase.ADMITTING, Phase.HANDSHAKE, Phase.CHOOSING)
_CAN_RELAY = (Phase.CONNECTED,)
# Phases in which the end is already decided: late news is ignored.
_ENDING = (Phase.CLOSING, Phase.FINISHED)


class SpliceProxyProtocol(ProxyHeaderReader, IdleTimer, Protocol):
    """
    One proxied client connection.  See the module docstring for the order
    in which the hooks run.

    Subclasses override the hooks below; a subclass that overrides
    C{connectionMade}, C{dataReceived} or C{connectionLost} must call this
    class's version.

    The connection is always in one phase (see L{splicetx._phase.Phase}):
    reading the PROXY header, admitting the client, the handshake, choosing
    the upstream, connecting, connected, relaying, closing or finished.
    An action called in a phase it does not belong to (L{connectUpstream}
    twice or once the relay started, L{startRelay} before the upstream is
    connected or twice, either after the connection ended) raises
    C{RuntimeError}.

    @cvar readsHandshake: C{False} (the default): the client is not read
        from until the relay starts, and the upstream comes from
        L{chooseUpstream}.  C{True}: what the client sends goes to
        L{handshakeReceived} until the subclass calls L{connectUpstream}.

    @ivar factory: the L{SpliceProxyFactory} that built this protocol.
    @ivar transport: the client connection.
    @ivar upstream: the upstream protocol once connected, else C{None}; its
        C{transport} is the upstream connection.
    @ivar upstreamEndpoint: the endpoint given to L{connectUpstream}.
    @ivar relay: the L{Relay} once L{startRelay} was called, else C{None}.
    @ivar result: the L{RelayResult} once the connection has ended.
    @ivar startedAt: when the client connected, by the reactor's clock.
    @ivar proxyHeader: the L{ProxyHeader <splicetx.ProxyHeader>} the client
        sent, when the factory accepts the PROXY protocol, else C{None}.
    """

    readsHandshake: bool = False

    factory: SpliceProxyFactory
    transport: ITCPTransport
    upstream: Any = None
    upstreamEndpoint: IStreamClientEndpoint | None = None
    relay: Relay | None = None
    result: RelayResult | None = None
    startedAt: float = 0.0

    #: Where the connection is; every transition assigns it.
    _phase: Phase = Phase.ADMITTING
    #: The end decided before any relay: C{(reason, detail)} for the result.
    _ending: tuple[str, str] | None = None
    #: The pending upstream attempt (a connector or a Deferred).
    _connecting: Any = None
    #: The Deferreds returned by connectUpstream.
    _waiters: list[Deferred[Any]] | None = None
    #: Client bytes for the upstream, sent first once the relay starts.
    _pendingToUpstream: bytes = b""
    #: The connect timeout cancelled the pending attempt.
    _timedOut: bool = False
    #: The client transport is read from (not paused).
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

    def chooseUpstream(
        self,
    ) -> IStreamClientEndpoint | Deferred[IStreamClientEndpoint] | None:
        """
        Choose where to connect this client (only when L{readsHandshake} is
        C{False}).  The client's address is C{self.transport.getPeer()}.

        @return: an C{IStreamClientEndpoint}, or a C{Deferred} firing with
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

        @param upstream: the upstream protocol (also C{self.upstream}); its
            C{transport} is the upstream connection.
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

    def connectUpstream(
        self, endpoint: IStreamClientEndpoint, toUpstream: bytes = b""
    ) -> Deferred[Any]:
        """
        Connect to the upstream, within the factory's C{connectTimeout}.
        From this call on the client is not read from until the relay starts.
        On success L{upstreamConnected} runs, on failure L{upstreamFailed}.

        @param endpoint: an C{IStreamClientEndpoint}.
        @param toUpstream: bytes already read from the client past a
            handshake; they are relayed to the upstream before anything else
            from the client.
        @return: a C{Deferred} firing with the upstream protocol once
            L{upstreamConnected} has run, or with C{None} when the connection
            failed (after L{upstreamFailed}) or the client left meanwhile.
        @raise RuntimeError: when called twice, or once the connection is
            closing or has ended.
        """
        requirePhase(self._phase, _CAN_CONNECT, "connectUpstream")
        if toUpstream:
            self._pendingToUpstream = bytes(toUpstream) + self._pendingToUpstream
        d: Deferred[Any] = Deferred()
        self._waiters = [d]
        self._connect(endpoint)
        return d

    def startRelay(
        self, toUpstream: bytes = b"", toClient: bytes = b""
    ) -> Deferred[RelayResult]:
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

        @return: a C{Deferred} firing with the L{RelayResult} after
            L{relayFinished} ran.
        @raise RuntimeError: when there is no connected upstream yet, the
            relay already started, or the connection is closing or has
            ended.
        """
        requirePhase(self._phase, _CAN_RELAY, "startRelay")
        upstream = self.upstream
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
        self._phase = Phase.RELAYING
        self._idleMark = (-1, -1)
        d = relay.start()
        d.addCallbacks(self._finish, self._relayFailed)
        return d

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End this connection now: abort the relay, or, before it started,
        both connections (a pending upstream connection attempt is
        cancelled).  Does nothing once the connection has ended.

        @param reason: the L{RelayResult.reason} to report.
        @param detail: the L{RelayResult.detail} to report.
        """
        phase = self._phase
        if phase is Phase.FINISHED:
            return
        if phase is Phase.RELAYING:
            assert self.relay is not None
            self.relay.abort(reason, detail)
            return
        self._close(reason, detail)
        self._cancelConnecting()
        if self.upstream is not None:
            _abort(self.upstream.transport)
        _abort(self.transport)

    def clientAddress(self) -> IAddress:
        """
        The client's address: the source address of an accepted PROXY
        protocol header, else the connection's peer.
        """
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return header.source
        return self.transport.getPeer()

    # -- Protocol -------------------------------------------------------------

    def connectionMade(self) -> None:
        """
        Register with the factory; with the factory's C{acceptProxyProtocol}
        read the PROXY header first; then check the factory's C{acl} and
        L{clientAccepted}, then (unless L{readsHandshake}) pause the client
        and connect to L{chooseUpstream}.
        """
        factory = self.factory
        self.startedAt = self._lastActivity = factory.reactor.seconds()
        factory._gate.connectionStarted(self)
        metrics = factory.metrics
        if metrics is not None:
            metrics.connectionOpened(factory.forwardName)
        if factory.idleTimeout:
            self._scheduleIdleCheck()
        if factory.acceptProxyProtocol:
            self._startHeader()
            return
        self._admit()

    def dataReceived(self, data: bytes) -> None:
        """
        Hand client bytes to the PROXY header reader, then to
        L{handshakeReceived}; bytes that arrive after L{connectUpstream} was
        called are kept for the upstream.
        """
        phase = self._phase
        if phase is Phase.READING_HEADER:
            self._feedHeader(data)
        elif phase is Phase.HANDSHAKE:
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
        phase = self._phase
        if phase is Phase.RELAYING or phase is Phase.FINISHED:
            return
        if phase is Phase.READING_HEADER:
            self._headerDone()
        self._close(
            CLOSED,
            "connection closed before the relay started: " + reason.getErrorMessage(),
        )
        self._cancelConnecting()
        if self.upstream is not None:
            _abort(self.upstream.transport)
        assert self._ending is not None
        self._finish(self._resultWithoutRelay(*self._ending))

    def __repr__(self) -> str:
        peer = getattr(self.transport, "getPeer", None)
        who = describeAddress(peer()) if peer is not None else "?"
        return f"<{type(self).__name__} client={who} relay={self.relay!r}>"

    # -- phases ---------------------------------------------------------------

    def _admit(self) -> None:
        """
        The client's address is known: apply the access rules, then go on to
        the handshake or the upstream.
        """
        self._phase = Phase.ADMITTING
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
            self._close(REJECTED, "refused by clientAccepted()")
            self.transport.loseConnection()
            return
        if self._phase is not Phase.ADMITTING:
            # clientAccepted() acted already (connectUpstream, abort).
            return
        if self.readsHandshake:
            self._phase = Phase.HANDSHAKE
            return
        self._phase = Phase.CHOOSING
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

    def _close(self, reason: str, detail: str) -> None:
        """
        Decide the end of a connection that has no relay: enter C{CLOSING}
        with the reason and detail for its result, unless an end was decided
        already (the first one is reported).
        """
        if self._ending is None:
            self._ending = (reason, detail)
        self._phase = Phase.CLOSING

    def _refuse(self, metricReason: str, detail: str) -> None:
        """
        Close a client before any upstream connection, count it and let the
        connection's one log event say why.
        """
        self._close(REJECTED, detail)
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectionRefused(metricReason, factory.forwardName)
        self._pauseClient()
        self.transport.loseConnection()

    def _chosen(self, endpoint: IStreamClientEndpoint | None) -> None:
        """
        L{chooseUpstream} gave C{endpoint}: connect to it, unless the
        connection is ending meanwhile.
        """
        if endpoint is None:
            raise ValueError("no upstream endpoint (chooseUpstream returned None)")
        if self._phase in _ENDING:
            return None
        requirePhase(self._phase, _CAN_CONNECT, "connectUpstream")
        self._connect(endpoint)
        return None

    def _connect(self, endpoint: IStreamClientEndpoint) -> None:
        """
        Enter C{CONNECTING}: stop reading the client, start the upstream
        connection (see L{splicetx._upstream.startConnecting}).
        """
        self._pauseClient()
        self.upstreamEndpoint = endpoint
        self._phase = Phase.CONNECTING
        startConnecting(
            self, self.factory.reactor, endpoint, self.factory.connectTimeout
        )

    def _connected(self, upstream: Any) -> Any:
        """
        The upstream connected: enter C{CONNECTED} and call
        L{upstreamConnected}; unless the connection is ending meanwhile
        (then close the upstream).
        """
        self._connecting = None
        if self._phase is not Phase.CONNECTING:
            _abort(upstream.transport)
            self._fireWaiters(None)
            return None
        self.upstream = upstream
        self._phase = Phase.CONNECTED
        try:
            self.upstreamConnected(upstream)
        except Exception:
            _log.failure("upstreamConnected() of {proxy!r} failed", proxy=self)
            self.abort(ERROR, "upstreamConnected() raised an exception")
        if self._waiters is not None:
            self._fireWaiters(upstream)
        return upstream

    def _connectFailed(self, reason: Failure) -> None:
        """
        No upstream: L{chooseUpstream} failed, or the connection attempt.
        """
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
        if self._phase in _ENDING:
            # The end was decided first (our own cancellation, say).
            return
        if self._timedOut or reason.check(TimeoutError, _error.TimeoutError):
            why = f"timed out after {self.factory.connectTimeout:g} s"
        else:
            why = reason.getErrorMessage()
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectFailed(reason, factory.forwardName)
        self._close(
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
        if self._phase in _ENDING or self._phase is Phase.RELAYING:
            return
        self._close(
            UPSTREAM_FAILED,
            "upstream closed before the relay started: " + reason.getErrorMessage(),
        )
        _abort(self.transport)

    def _idleExpired(self, timeout: float) -> None:
        """
        Nothing moved for C{timeout} seconds: end the connection.
        """
        detail = f"no bytes either way for {timeout:g} s"
        self._ending = (IDLE_TIMEOUT, detail)
        self.abort(IDLE_TIMEOUT, detail)

    def _relayFailed(self, reason: Failure) -> RelayResult:
        _log.failure("relay of {proxy!r} could not start", reason, proxy=self)
        if self.upstream is not None:
            _abort(self.upstream.transport)
        _abort(self.transport)
        return self._finish(
            self._resultWithoutRelay(ERROR, f"relay failed: {reason.getErrorMessage()}")
        )

    def _finish(self, result: RelayResult) -> RelayResult:
        """
        Enter C{FINISHED}: stop the timers, count the connection and call
        L{relayFinished}, once.
        """
        if self._phase is Phase.FINISHED:
            return result
        self._phase = Phase.FINISHED
        self._stopIdleCheck()
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
            factory._gate.connectionEnded(self)
        return result

    # -- helpers --------------------------------------------------------------

    def _pauseClient(self) -> None:
        if self._reading:
            self._reading = False
            if self._phase is not Phase.FINISHED:
                # Every stream transport is an IPushProducer too.
                self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _cancelConnecting(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is None:
            return
        if not stopConnecting(connecting) and self._waiters is not None:
            self._fireWaiters(None)

    def _fireWaiters(self, value: Any) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters:
            for d in waiters:
                d.callback(value)

    def _outgoingProxyHeader(self, version: int) -> bytes:
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return buildHeader(version, header.source, header.destination)
        return buildHeader(version, self.transport.getPeer(), self.transport.getHost())

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
    @ivar acl: an L{AccessControl <splicetx.AccessControl>} whose
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
    @ivar metrics: a L{ProxyMetrics <splicetx._metrics.ProxyMetrics>}
        (public as C{splicetx.ProxyMetrics}) to record into, or C{None}.
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
        upstream: IStreamClientEndpoint | None = None,
        *,
        reactor: Any = None,
        engine: str = "auto",
        pipePool: PipePool | None = None,
        connectTimeout: float = 30.0,
        idleTimeout: float = 0.0,
        acl: AccessControl | None = None,
        acceptProxyProtocol: bool = False,
        proxyProtocolTimeout: float = 5.0,
        sendProxyProtocol: int | None = None,
        metrics: ProxyMetrics | None = None,
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
        self._gate = PortGate(maxConnections)
        self.logNormalConnections = logNormalConnections

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
        C{duration}, C{reason}, C{detail} and C{fallbackReason} (all plain
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
            **(extra or {}),
        )

    # -- live connections, max-connections and drain ---------------------------

    @property
    def maxConnections(self) -> int | None:
        """
        How many connections may be live at once (C{None}: no limit);
        enforced on the ports given to L{addListeningPort}.
        """
        return self._gate.maxConnections

    @maxConnections.setter
    def maxConnections(self, value: int | None) -> None:
        self._gate.maxConnections = value

    @property
    def liveProtocols(self) -> set[SpliceProxyProtocol]:
        """
        The connected L{SpliceProxyProtocol}s that have not ended yet.
        """
        return self._gate.live

    @property
    def draining(self) -> bool:
        """
        C{True} once L{drain} was called.
        """
        return self._gate.draining

    def addListeningPort(self, port: IListeningPort) -> None:
        """
        Let this factory pause and resume a listening port for
        L{maxConnections} and stop it in L{drain}.

        The port must have C{startReading}/C{stopReading} (every Twisted
        TCP, UNIX, SSL and adopted port does) for the limit to hold; its
        accept loop is capped so that one burst cannot overshoot the limit.

        @param port: an C{IListeningPort} of this factory.
        """
        self._gate.addListeningPort(port)

    def drain(self, timeout: float) -> Deferred[int]:
        """
        Stop listening on the ports given to L{addListeningPort} at once,
        let the live connections finish for up to C{timeout} seconds, then
        abort the rest.

        @param timeout: seconds to wait before aborting (0: abort at once).
        @return: a C{Deferred} firing with the number of connections that
            had to be aborted, once every connection has ended.
        """
        return self._gate.drain(timeout, self.reactor)
