# -*- test-case-name: tests.test_proxy -*-
"""
The protocol of one proxied connection: L{SpliceProxyProtocol}, with the
hooks a subclass overrides and the actions it calls, and the reasons a
connection can end with before a relay runs.  L{splicetx.proxy} is its
public home (with the factory); the parts it is built from live in
L{splicetx._proxy.phase}, L{splicetx._proxy.upstream}, L{splicetx._proxy.timeouts},
L{splicetx._proxy.headerreader} and L{splicetx._pool.addresses}.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import error as _error
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._pool.addresses import describeAddress, describeEndpoint
from splicetx._pool.endpoints import asEndpoint
from splicetx._proxy.answers import ProxyAnswers
from splicetx._proxy.headerreader import ProxyHeaderReader
from splicetx._proxy.leanrelay import connectLean, relayFor
from splicetx._proxy.lifecycle import NO_ENGINE as _NO_ENGINE
from splicetx._proxy.lifecycle import admit, countEnd, endResult
from splicetx._proxy.phase import Phase, requirePhase
from splicetx._proxy.preamble import REJECTED, closedBeforeRelay, untrustedPeer
from splicetx._proxy.proxyheader import buildHeader
from splicetx._proxy.timeouts import (
    HALF_CLOSE_TIMEOUT,
    IDLE_TIMEOUT,
    IdleTimer,
)
from splicetx._proxy.upstream import (
    UpstreamProtocol,
    startConnecting,
    stopConnecting,
)
from splicetx._relay.relay import (
    CANCELLED,
    CLOSED,
    ERROR,
    Relay,
    RelayResult,
)
from splicetx._relay.runtime import LOG_PROXY
from splicetx._relay.tcpoptions import setKeepalive

if TYPE_CHECKING:
    pass
__all__ = [
    "SpliceProxyProtocol",
    "IDLE_TIMEOUT",
    "HALF_CLOSE_TIMEOUT",
    "REJECTED",
    "UPSTREAM_FAILED",
]

_log = Logger(namespace=LOG_PROXY)

#: L{RelayResult.reason} of a connection whose upstream could not be reached
#: (refused, unreachable, timed out, or no upstream chosen).
UPSTREAM_FAILED = "upstream failed"


# The phases in which each action may be called (see splicetx._proxy.phase).
# Tuples, not sets: Enum hashes in Python, a tuple compares by identity.
_CAN_CONNECT = (Phase.ADMITTING, Phase.HANDSHAKE, Phase.CHOOSING)
_CAN_RELAY = (Phase.CONNECTED,)
# Phases in which the end is already decided: late news is ignored.
_ENDING = (Phase.CLOSING, Phase.FINISHED)


class SpliceProxyProtocol(ProxyAnswers, ProxyHeaderReader, IdleTimer, Protocol):
    """
    One proxied client connection.  See the module docstring for the order
    in which the hooks run.

    Subclasses override the hooks below; a subclass that overrides
    C{connectionMade}, C{dataReceived} or C{connectionLost} must call this
    class's version.

    The connection is always in one phase (see L{splicetx._proxy.phase.Phase}):
    reading the PROXY header, admitting the client, the handshake, choosing
    the upstream, connecting, connected, relaying, closing or finished.
    A hook that raises ends the connection with reason C{error}, its
    traceback logged once.  C{reply()} and C{refuse()} answer the client from a
    hook; a refusal is recorded as C{rejected} and counted by its reason.

    An action called in a phase it does not belong to (L{connectUpstream}
    twice or once the relay started, L{startRelay} before the upstream is
    connected or twice, either after the connection ended) raises
    C{RuntimeError}.

    @cvar readsHandshake: C{False} (the default): the client is not read
        from until the relay starts, and the upstream comes from
        L{chooseUpstream}.  C{True}: what the client sends goes to
        L{handshakeReceived} until the subclass calls L{connectUpstream}.
    @cvar commandLineOptions: a C{twisted.python.usage.Options} subclass
        whose options C{twist splice-proxy --protocol} adds to its own
        (shown by C{--help}); the parsed instance is the factory's
        C{options}.  C{None}: no options of its own.

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
    commandLineOptions: type | None = None

    # The SpliceProxyFactory (splicetx.proxy) that built it; typed loosely
    # because that module sits above this one.
    factory: Any
    transport: ITCPTransport
    upstream: Any = None
    upstreamEndpoint: IStreamClientEndpoint | None = None
    relay: Relay | None = None
    result: RelayResult | None = None
    startedAt: float = 0.0

    #: The pool endpoint this connection went through (see L{_fromPool}), to
    #: release when it ends; C{None} for a plain endpoint.
    _poolEndpoint: Any = None
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
    #: What the factory's client limits decided, released in _finish.
    _admission: Any = None

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
            C{Deferred} that fails ends the connection through
            L{upstreamFailed}; an exception raised here ends it as an
            error (reason C{error}, traceback logged).
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
            the client connected, and C{detail} and C{fallbackReason} name
            the client and the upstream where the relay said A and B
            (L{splicetx._proxy.wording}).
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

        @param endpoint: an C{IStreamClientEndpoint}, or a pool or pool
            member (such as the factory's C{upstream} when C{twist
            splice-proxy} was given a pool), which the client's address
            keys.
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
        if not IStreamClientEndpoint.providedBy(endpoint):
            endpoint = self._fromPool(endpoint)
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
        if isinstance(upstream, UpstreamProtocol):
            toA += upstream.takeReceived()
            upstream.proxy = None
        relay = relayFor(
            factory,
            self.transport,
            upstream.transport,
            toA,
            toB,
            factory.bandwidthPlan(self._admission),
        )
        self.relay = relay
        self._phase = Phase.RELAYING
        self._idleMark = (-1, -1)
        self._halfClosedAt = None
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
        keepalive = factory.tcpKeepalive
        if keepalive is not None and (
            getattr(self.transport, "server", None) not in factory._keepalivePorts
        ):
            # Unless the socket inherited them from its listening port.
            setKeepalive(self.transport, keepalive)
        if factory.idleTimeout or factory.halfCloseTimeout or factory.draining:
            self._scheduleIdleCheck()
        if factory.acceptProxyProtocol:
            refusal = untrustedPeer(factory.proxyProtocolFrom, self.transport.getPeer())
            if refusal is not None:
                self._refuse(refusal.metric, refusal.detail, reset=refusal.abort)
                return
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
            try:
                self.handshakeReceived(data)
            except Exception:
                self._hookFailed("handshakeReceived")
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
        self._close(CLOSED, closedBeforeRelay(reason))
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
        refusal, self._admission = admit(factory, self.clientAddress(), self.startedAt)
        if refusal is not None:
            self._refuse(refusal.metric, refusal.detail, reset=refusal.abort)
            return
        try:
            accepted = self.clientAccepted()
        except Exception:
            self._hookFailed("clientAccepted")
            return
        if self._phase is not Phase.ADMITTING:
            # clientAccepted() acted already (refuse, connectUpstream, abort).
            return
        if not accepted:
            self._close(REJECTED, "refused by clientAccepted()")
            self.transport.loseConnection()
            return
        if self.readsHandshake:
            self._phase = Phase.HANDSHAKE
            return
        self._phase = Phase.CHOOSING
        try:
            endpoint = self.chooseUpstream()
        except Exception:
            self._hookFailed("chooseUpstream")
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

    def _refuse(self, metricReason: str, detail: str, reset: bool = False) -> None:
        """
        Close a client before any upstream connection, count it and let the
        connection's one log event say why.

        @param reset: end the connection with a reset, as for a client an
            access rule denies (C{acl}, C{proxyProtocolFrom}; HAProxy's
            C{tcp-request connection reject}; the fast path does the same),
            rather than an end of stream the client could take for an empty
            answer.
        """
        self._close(REJECTED, detail)
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectionRefused(metricReason, factory.forwardName)
        self._pauseClient()
        if reset:
            _abort(self.transport)
        else:
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
        if not IStreamClientEndpoint.providedBy(endpoint):
            endpoint = self._fromPool(endpoint)
        self._connect(endpoint)
        return None

    def _fromPool(self, target: Any) -> Any:
        """
        L{chooseUpstream} gave a pool or a pool member: the endpoint for it
        (see L{splicetx._pool.endpoints.asEndpoint}), keyed by the client's
        address, remembered to be released when the connection ends.
        """
        from splicetx._pool.balance import clientKeyFor

        endpoint = asEndpoint(target, clientKeyFor(self.clientAddress()))
        if endpoint is not target:
            self._poolEndpoint = endpoint
        return endpoint

    def _connect(self, endpoint: IStreamClientEndpoint) -> None:
        """
        Enter C{CONNECTING}: stop reading the client, start the upstream
        connection (see L{splicetx._proxy.upstream.startConnecting}).
        """
        self._pauseClient()
        self.upstreamEndpoint = endpoint
        self._phase = Phase.CONNECTING
        timeout = self.factory.connectTimeout
        pooled = self._poolEndpoint
        if pooled is not None and pooled is endpoint:
            # A pool bounds each try itself; this bounds the whole failover.
            own: float | None = self._poolEndpoint.connectTimeout
            timeout = timeout if own is None else own
            metrics = self.factory.metrics
            if metrics is not None and hasattr(pooled, "onTryFailed"):
                # Every failed try counts, also one a later member made
                # good (as HAProxy's backend connection errors do).
                forward = self.factory.forwardName
                pooled.onTryFailed = lambda _member, failure: metrics.connectFailed(
                    failure, forward
                )
        if not connectLean(self, endpoint, timeout):
            startConnecting(self, self.factory.reactor, endpoint, timeout)

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
        keepalive = self.factory.tcpKeepalive
        if keepalive is not None:
            if self._idleCall is not None or self._checker is not None:
                # At the first idle check, as the plain forward's at its
                # first check: a connection that ends before never needs it.
                self._dueAtCheck = partial(setKeepalive, upstream.transport, keepalive)
            else:
                setKeepalive(upstream.transport, keepalive)
        try:
            self.upstreamConnected(upstream)
        except Exception:
            self._hookFailed("upstreamConnected")
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

    def _upstreamLost(self, upstream: UpstreamProtocol, reason: Failure) -> None:
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

    def _timeoutEnd(self, reason: str, detail: str, abort: bool) -> None:
        """
        A timer decided the end (see L{splicetx._proxy.timeouts.dueEnd}):
        close or abort the relay, or, before one runs, end the connection.
        """
        relay = self.relay
        if self._phase is Phase.RELAYING and relay is not None:
            (relay.abort if abort else relay.close)(reason, detail)
            return
        self._ending = (reason, detail)
        self.abort(reason, detail)

    def drainStarted(self) -> None:
        """
        The factory started draining (L{SpliceProxyFactory.drain}): from now
        on a connection whose upstream has finished sending and whose client
        has received everything is closed at once instead of waiting for the
        client to close; transfers in flight go on.  Override to add to it
        (call this one too).
        """
        self._recheckNow()

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
        self._dueAtCheck = None
        pooled = self._poolEndpoint
        if pooled is not None:
            member = getattr(pooled, "upstream", None)
            if member is not None and (result.bytesAToB or result.bytesBToA):
                member.relayed(result.bytesAToB, result.bytesBToA)
            pooled.release()
        factory = self.factory
        # The relay's transports A and B are this client and upstream.
        result = self.result = endResult(factory.reactor, self.startedAt, result)
        try:
            # Whether a quiet refusal is recorded is the factory's to say.
            countEnd(factory, result, self._admission)
            self.relayFinished(result)
        except Exception:
            _log.failure("relayFinished() of {proxy!r} failed", proxy=self)
        finally:
            checker, self._checker = self._checker, None
            if checker is not None:
                checker.ended()
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
