# -*- test-case-name: tests.test_proxy -*-
"""
L{SpliceProxyFactory}: accepts clients and relays each to an upstream with
L{SpliceProxyProtocol <splicetx._proxy.protocol.SpliceProxyProtocol>} (or a
subclass), keeping the set of live connections, which is what
C{max-connections} (pausing the listening ports) and a graceful drain
(L{SpliceProxyFactory.drain}) are built on.  Public as
L{splicetx.proxy.SpliceProxyFactory}.

A factory nobody customised serves the clients of the ports given to
L{SpliceProxyFactory.addListeningPort} on a fast path
(L{splicetx._proxy.fastpath}: raw sockets, no protocol or transport per
connection) with the same results, metrics and log records; a protocol
that overrides hooks runs them over lean transports
(L{splicetx._proxy.leantransport}) from the same accept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from splicetx._pool.addresses import describeAddress, describeEndpoint
from splicetx._proxy import tls as _tls
from splicetx._proxy.access import AccessControl
from splicetx._proxy.clientlimits import ClientLimits
from splicetx._proxy.fastpath import FastForwarder, fastPathRefusal
from splicetx._proxy.gate import PortGate
from splicetx._proxy.interfaces import IAccessLog, IProxyMetrics
from splicetx._proxy.lifecycle import recordExtra
from splicetx._proxy.protocol import (
    SpliceProxyProtocol,
)
from splicetx._relay.bandwidth import BandwidthPlan, SharedBandwidth, sharedPair
from splicetx._relay.pipes import PipePool
from splicetx._relay.relay import (
    CLOSED,
    DONE,
    ENGINES,
    RelayResult,
)
from splicetx._relay.runtime import LOG_PROXY, defaultReactor
from splicetx._relay.tcpoptions import TCPKeepalive, setKeepalive

__all__ = ["SpliceProxyFactory"]

_log = Logger(namespace=LOG_PROXY)

#: The text of a connection's log event ...
_RECORD = (
    "{client} -> {upstream}: {reason} ({detail}); engine {engine}, "
    "{bytesClientToUpstream} bytes up, {bytesUpstreamToClient} bytes "
    "down, {duration:.3f} s"
)
#: ... and of a copied one, which says why it was not spliced.
_COPIED_RECORD = _RECORD.replace("{engine},", "{engine} ({fallbackReason}),")


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
    @ivar halfCloseTimeout: once one direction has ended, close the
        connection after this many seconds without a byte in the other
        direction (0: never); a half-closed stream that keeps moving is
        never cut.
    @ivar tcpKeepalive: the L{TCPKeepalive <splicetx.TCPKeepalive>}
        settings applied to the client's and the upstream's TCP sockets, or
        C{None} to leave keepalive off.
    @ivar acl: an L{AccessControl <splicetx.AccessControl>} whose
        C{isAllowed} decides which clients are served, or C{None}.  A refused
        client is closed before any upstream connection, with reason
        L{REJECTED}.
    @ivar acceptProxyProtocol: read a PROXY protocol header (v1 or v2) from
        every client first; its source address is then the client's address
        for the log and C{acl}, and the bytes after it are relayed first.
    @ivar proxyProtocolTimeout: seconds a client has to send that header.
    @ivar proxyProtocolFrom: with L{acceptProxyProtocol}, an
        L{AccessControl <splicetx.AccessControl>} whose allow rules name the
        peers (load balancers) whose header is believed; a connection from
        any other peer is refused (reason L{REJECTED}) before its header is
        read.  C{None}: a header is believed from every peer.
    @ivar sendProxyProtocol: C{1} or C{2} to send a PROXY protocol header
        with the client's address to the upstream before the relay, or
        C{None}.
    @ivar metrics: an L{IProxyMetrics
        <splicetx._proxy.interfaces.IProxyMetrics>} to record into (such as
        C{splicetx.ProxyMetrics}), or C{None}.
    @ivar forwardName: the C{forward} label of those metrics.
    @ivar logFields: extra fields for every connection's log event (e.g.
        the worker's pid), or C{None}.
    @ivar logNormalConnections: when C{False}, a connection that ended
        normally (C{done} or C{closed}) logs nothing; failures are still
        logged at C{warn}.  C{twist splice-proxy} sets it when
        C{--log-level} is C{warn} or above, where the C{info} event would
        be built only to be dropped (about a tenth of a short connection's
        CPU).
    @ivar accessLog: an L{IAccessLog <splicetx._proxy.interfaces.IAccessLog>} that
        writes the connection records itself (C{twist splice-proxy} uses
        one), or C{None} to emit them as C{twisted.logger} events.
    @ivar fastPath: whether the listening ports given to
        L{addListeningPort} may serve clients on the fast path
        (L{splicetx._proxy.fastpath}: raw sockets, no transport or protocol per
        connection) when nothing needs the general one: this class's own
        C{protocol}, C{buildProtocol} and C{relayFinished}, no PROXY
        header sent upstream (one accepted from clients is read on the fast
        path too), an upstream that is a TCP address, a plain TCP port on a
        Linux reactor with C{IReactorFDSet}, not the copy engine.  The
        connections, their results, metrics and log records are the same
        either way; a subclass that overrides a hook (of the protocol or
        the factory) gets its protocol object over a lean transport
        (L{splicetx._proxy.leantransport}), made a Twisted one only when a
        hook needs it.  Set it to C{False} (before L{addListeningPort}) to
        give every connection a Twisted transport from the accept.
    @ivar clientLimits: the L{ClientLimits
        <splicetx._proxy.clientlimits.ClientLimits>} (connections and new
        connections per client) applied once a client's address is known,
        after L{acl}, or C{None}.
    @ivar connectionBandwidth: bytes per second each direction of each
        connection may move at most (a token bucket per direction,
        L{splicetx._relay.bandwidth}), or C{None} (no limit).  The bytes are
        still spliced; a relay that copies (TLS) pauses its sources.
    @ivar listenerBandwidth: bytes per second each direction of all its
        connections together may move at most (one L{SharedBandwidth
        <splicetx._relay.bandwidth.SharedBandwidth>} per direction, the
        connections taking turns), or C{None}.  Setting it (a reload)
        gives the connections made from then on new buckets.
    @ivar options: the parsed C{commandLineOptions} of this class or of its
        protocol class when C{twist splice-proxy} built it (a
        C{twisted.python.usage.Options}, a C{dict}), else C{None}.

    @cvar commandLineOptions: a C{twisted.python.usage.Options} subclass
        whose options C{twist splice-proxy --factory} adds to its own;
        C{None}: those of its C{protocol}, if any.
    """

    protocol = SpliceProxyProtocol
    noisy = False
    logNormalConnections = True
    fastPath = True
    commandLineOptions: type | None = None
    options: Any = None
    #: The protocol class whose clients the fast path may serve.
    _fastProtocol: type = SpliceProxyProtocol

    def __init__(
        self,
        upstream: IStreamClientEndpoint | None = None,
        *,
        reactor: Any = None,
        engine: str = "auto",
        pipePool: PipePool | None = None,
        connectTimeout: float = 30.0,
        idleTimeout: float = 0.0,
        halfCloseTimeout: float = 0.0,
        tcpKeepalive: TCPKeepalive | None = None,
        proxyProtocolFrom: AccessControl | Iterable[str] | None = None,
        acl: AccessControl | None = None,
        acceptProxyProtocol: bool = False,
        proxyProtocolTimeout: float = 5.0,
        sendProxyProtocol: int | None = None,
        metrics: IProxyMetrics | None = None,
        forwardName: str = "default",
        logFields: dict[str, Any] | None = None,
        maxConnections: int | None = None,
        logNormalConnections: bool = True,
        accessLog: IAccessLog | None = None,
        fastPath: bool = True,
        clientLimits: ClientLimits | None = None,
        connectionBandwidth: int | None = None,
        listenerBandwidth: int | None = None,
    ) -> None:
        """
        @param upstream: see L{upstream}.
        @param reactor: the reactor (default: the global one, imported when
            first needed).
        @param engine: see L{engine}.
        @param pipePool: see L{pipePool}.
        @param connectTimeout: see L{connectTimeout}.
        @param idleTimeout: see L{idleTimeout}.
        @param halfCloseTimeout: see L{halfCloseTimeout}.
        @param tcpKeepalive: see L{tcpKeepalive}.
        @param proxyProtocolFrom: see L{proxyProtocolFrom}; CIDR networks
            or addresses (strings) are accepted too.
        @param acl: see L{acl}.
        @param acceptProxyProtocol: see L{acceptProxyProtocol}.
        @param proxyProtocolTimeout: see L{proxyProtocolTimeout}.
        @param sendProxyProtocol: see L{sendProxyProtocol}.
        @param metrics: see L{metrics}.
        @param forwardName: see L{forwardName}.
        @param logFields: see L{logFields}.
        @param maxConnections: see L{maxConnections}.
        @param logNormalConnections: see L{logNormalConnections}.
        @param accessLog: see L{accessLog}.
        @param fastPath: see L{fastPath}.
        @param clientLimits: see L{clientLimits}.
        @param connectionBandwidth: see L{connectionBandwidth}.
        @param listenerBandwidth: see L{listenerBandwidth}.
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
            ("halfCloseTimeout", halfCloseTimeout),
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
        self.halfCloseTimeout = float(halfCloseTimeout)
        self.tcpKeepalive = tcpKeepalive
        if proxyProtocolFrom is not None and not isinstance(
            proxyProtocolFrom, AccessControl
        ):
            proxyProtocolFrom = AccessControl(list(proxyProtocolFrom))
        if proxyProtocolFrom is not None and proxyProtocolFrom.empty:
            proxyProtocolFrom = None
        self.proxyProtocolFrom = proxyProtocolFrom
        #: Listening ports whose socket carries the keepalive settings:
        #: Linux copies them to every accepted socket, so the client side
        #: of their connections needs no setsockopt of its own.
        self._keepalivePorts: set[Any] = set()
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
        self._gate: PortGate[Any] = PortGate(maxConnections)
        self.logNormalConnections = logNormalConnections
        self.accessLog = accessLog
        self.fastPath = fastPath
        self.clientLimits = clientLimits
        for name, rate in (
            ("connectionBandwidth", connectionBandwidth),
            ("listenerBandwidth", listenerBandwidth),
        ):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be positive or None, not {rate!r}")
        self.connectionBandwidth = connectionBandwidth
        self._listenerShared: tuple[SharedBandwidth, SharedBandwidth] | None = None
        self._listenerRate = listenerBandwidth
        self._fast: FastForwarder | None = None

    @property
    def listenerBandwidth(self) -> int | None:
        return self._listenerRate

    @listenerBandwidth.setter
    def listenerBandwidth(self, rate: int | None) -> None:
        if rate != self._listenerRate:
            # Live connections keep the buckets they have; new ones get
            # new ones (made when first needed, on the factory's reactor).
            self._listenerRate = rate
            self._listenerShared = None

    def bandwidthPlan(self, admission: Any) -> int | BandwidthPlan | None:
        """
        The bandwidth limits of a new connection (for its relay).

        @param admission: its client's L{Admission
            <splicetx._proxy.clientlimits.Admission>}, or C{None}.
        @return: C{None} (no limit), the bytes per second of each of its
            directions, or a L{BandwidthPlan
            <splicetx._relay.bandwidth.BandwidthPlan>} with the shared
            buckets of its client and of this listener.
        """
        listener = self._listenerShared
        if listener is None and self._listenerRate is not None:
            listener = self._listenerShared = sharedPair(
                self._listenerRate, self.reactor
            )
        client = None if admission is None else admission.shared(self.reactor)
        if client is None and listener is None:
            return self.connectionBandwidth
        shared = tuple(p for p in (client, listener) if p is not None)
        return BandwidthPlan(self.connectionBandwidth, shared)

    @property
    def reactor(self) -> Any:
        """
        The reactor the proxy runs on (the global one, taken when first
        asked for, unless one was given).
        """
        reactor = self._reactor
        if reactor is None:
            reactor = self._reactor = defaultReactor(None)
        return reactor

    def logPrefix(self) -> str:
        """
        What Twisted's own lines call this factory's ports: C{"listener
        starting on 8080"}, not the class name.
        """
        return "listener"

    def describeUpstream(self) -> str:
        """
        Where clients go, for the start-up line: e.g. C{"10.0.0.2:80"}.
        """
        return describeEndpoint(self.upstream)

    # -- per-connection log ---------------------------------------------------

    def relayFinished(self, proto: SpliceProxyProtocol, result: RelayResult) -> None:
        """
        Log one event for a finished connection, in namespace
        C{splicetx.proxy}, with the fields C{client}, C{upstream},
        C{engine}, C{bytesClientToUpstream}, C{bytesUpstreamToClient},
        C{duration}, C{reason}, C{detail}, C{fallbackReason}, C{alpn} and
        C{upstreamAlpn} (the ALPN protocols negotiated, or C{None}; all plain
        strings and numbers, so C{twist --log-format json} keeps them);
        through a pool, C{pool} (its name) and C{serverName} (the TLS
        server name an SNI route was chosen by, or C{None}); with an
        accepted PROXY header, C{client} is the header's source and
        C{peer} the balancer that sent it; plus L{logFields}.

        Normal ends (C{done}, C{closed}) are logged at C{info}, others at
        C{warn}; with L{logNormalConnections} false, normal ends are not
        logged.

        With an L{accessLog}, the same fields go to it as one record
        instead of a C{twisted.logger} event.

        @param proto: the protocol of the connection.
        @param result: its L{RelayResult}.
        """
        normal = result.reason in (DONE, CLOSED)
        if normal and not self.logNormalConnections:
            return
        admission = proto._admission
        if admission is not None and admission.quiet:
            # A client refused again within its log interval.
            return
        header = proto.proxyHeader
        peer = describeAddress(proto.transport.getPeer())
        client = peer
        if header is not None and header.source is not None:
            client = describeAddress(header.source)
        else:
            peer = None
        pooled = proto._poolEndpoint
        extra = recordExtra(
            self.logFields,
            peer,
            pooled is not None,
            pooled.poolName if pooled is not None else None,
            getattr(proto, "serverName", None),
        )
        upstream = proto.upstream
        if upstream is not None and upstream.transport is not None:
            upstreamText = describeAddress(upstream.transport.getPeer())
        else:
            upstreamText = describeEndpoint(proto.upstreamEndpoint or self.upstream)
        if result.engine == "splice":
            # Both sides were plain sockets: no TLS, no ALPN to look for.
            alpn = upstreamAlpn = None
        else:
            alpn = _tls.negotiatedProtocol(proto.transport)
            upstreamAlpn = _tls.negotiatedProtocol(getattr(upstream, "transport", None))
        self._recordConnection(result, client, upstreamText, alpn, upstreamAlpn, extra)

    def _recordConnection(
        self,
        result: RelayResult,
        client: str,
        upstreamText: str,
        alpn: str | None,
        upstreamAlpn: str | None,
        extra: dict[str, Any] | None,
    ) -> None:
        """
        Write one connection's record (see L{relayFinished}), from what the
        general path or the fast path (L{splicetx._proxy.fastpath}) knows of
        it.
        """
        normal = result.reason in (DONE, CLOSED)
        if normal and not self.logNormalConnections:
            return
        accessLog = self.accessLog
        if accessLog is not None:
            if result.engine != "splice":
                # A copied connection may be TLS: say what ALPN gave (or not).
                extra = dict(extra or ())
                extra["alpn"] = alpn
                extra["upstreamAlpn"] = upstreamAlpn
            accessLog.connection(
                not normal,
                client,
                upstreamText,
                result.engine,
                result.bytesAToB,
                result.bytesBToA,
                result.duration,
                result.reason,
                result.detail,
                result.fallbackReason,
                extra,
            )
            return
        level = _log.info if normal else _log.warn
        level(
            _RECORD if result.fallbackReason is None else _COPIED_RECORD,
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
            alpn=alpn,
            upstreamAlpn=upstreamAlpn,
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

        With L{tcpKeepalive} set, the keepalive settings go on the port's
        socket once, and the connections it accepts inherit them.

        @param port: an C{IListeningPort} of this factory.
        """
        if fastPathRefusal(self, port) is None:
            if self._fast is None:
                self._fast = FastForwarder(self)
            self._fast.attach(port)
        self._gate.addListeningPort(port)
        keepalive = self.tcpKeepalive
        if keepalive is not None and setKeepalive(port, keepalive):
            self._keepalivePorts.add(port)

    def _fastPathRefusal(self) -> str | None:
        """
        Why this factory's clients cannot take the fast path, as far as the
        factory itself decides (see L{fastPath}), or C{None}.
        """
        if not self.fastPath:
            return "fastPath is off"
        if self.engine == "copy":
            return "engine copy"
        kind = type(self)
        if (
            kind.buildProtocol is not SpliceProxyFactory.buildProtocol
            or kind.relayFinished is not SpliceProxyFactory.relayFinished
        ):
            return "the factory overrides buildProtocol or relayFinished"
        if self.sendProxyProtocol is not None:
            return "a PROXY header sent upstream"
        if self.protocol is not self._fastProtocol:
            return "a protocol subclass"
        return None

    def _leanRefusal(self) -> str | None:
        """
        Why this factory's protocol cannot run its hooks over lean
        transports (L{splicetx._proxy.leantransport}), or C{None}: only
        C{fastPath} off and the copy engine stand in the way.
        """
        if not self.fastPath:
            return "fastPath is off"
        if self.engine == "copy":
            return "engine copy"
        return None

    def _fastPool(self) -> Any:
        """
        The upstream pool the fast path connects to, or C{None} for
        L{upstream}.
        """
        return None

    def removeListeningPort(self, port: IListeningPort) -> None:
        """
        Forget a port given to L{addListeningPort}, before closing it (a
        reload removed it); its live connections stay in
        L{liveProtocols}.

        @param port: the port.
        """
        self._gate.removeListeningPort(port)

    def drain(self, timeout: float) -> Deferred[int]:
        """
        Stop listening on the ports given to L{addListeningPort} at once,
        let the live connections finish for up to C{timeout} seconds, then
        abort the rest.  Each live connection is told
        (L{SpliceProxyProtocol.drainStarted}): one whose upstream has
        finished and whose client has received everything is closed at
        once, so the drain ends as soon as the transfers in flight have.

        @param timeout: seconds to wait before aborting (0: abort at once).
        @return: a C{Deferred} firing with the number of connections that
            had to be aborted, once every connection has ended.
        """
        return self._gate.drain(timeout, self.reactor)
