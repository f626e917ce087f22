# -*- test-case-name: tests.test_cli -*-
"""
The C{splice-proxy} service: listen on every forward's endpoints with one
L{SpliceProxyFactory} per forward, serve metrics, drain on SIGTERM/SIGINT,
reload on SIGHUP and reopen the log files on SIGUSR1.

L{DrainOnSignal} is the signal handling this service and the C{--workers}
supervisor (L{splicetx._app.supervisor}) share: the first SIGTERM/SIGINT stops
the reactor (which stops the service: a drain) and the process exits with
status 0; a second one cuts the drain short.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._app import worker as _worker
from splicetx._app.filelimit import FDS_PER_SPLICED_CONNECTION, capacity
from splicetx._app.listening import serveMetrics
from splicetx._app.logfiles import installReopenSignal, reopenFiles
from splicetx._app.poolservice import ForwardPools, hasPools
from splicetx._app.protocolclass import classFactoryMaker, withClassOptions
from splicetx._app.reload import ServiceReloader, installReloadSignal
from splicetx._app.udpservice import (
    UDPForwarder,
    UDPUpstreams,
    buildUDPForwarder,
    udpUpstreams,
)
from splicetx._config.endpoints import (
    clientEndpoint,
    explainEndpointError,
    serverEndpoint,
)
from splicetx._config.limits import clientLimitsFor, forwardBandwidths
from splicetx._config.model import Forward, ProxyConfig
from splicetx._ops.accesslog import AccessLog
from splicetx._pool.addresses import describeAddress
from splicetx._pool.resolver import cacheFor
from splicetx._pool.target import TCPTarget
from splicetx._proxy import tls as _tls
from splicetx._proxy.factory import SpliceProxyFactory
from splicetx._proxy.poolproxy import PoolProxyFactory
from splicetx._relay import core
from splicetx._relay.pipes import PipePool
from splicetx._relay.runtime import LOG_PROXY, defaultReactor

__all__ = ["EXIT_START", "SpliceProxyService"]

_log = Logger(namespace=LOG_PROXY)

#: Exit status when the service cannot start (a port in use, ...).
EXIT_START = 1

#: splicetx is not on PyPI yet: the hint names the install from the checkout.
METRICS_MISSING = (
    "--metrics needs the prometheus-client package: pip install '.[metrics]' "
    "in the splicetx checkout (after a release: pip install 'splicetx[metrics]')"
)


class DrainOnSignal:
    """
    Take over SIGTERM/SIGINT once the reactor runs (when it installed its
    own handlers): the first stops the reactor, which stops the services
    (a drain), so the process exits with status 0; the second calls
    L{_signalledAgain}.
    """

    reactor: Any
    handleSignals: bool
    stopping: bool

    def _installSignalHandlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.SIG_IGN, None):
                continue
            if current is signal.default_int_handler:
                # The reactor runs without its own handlers: leave it be.
                continue
            signal.signal(sig, self._onSignal)

    def _onSignal(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._signalled, signum)

    def _signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stopping:
            self._signalledFirst(name)
            self._stopReactor()
        else:
            self._signalledAgain(name)

    def _signalledFirst(self, name: str) -> None:
        raise NotImplementedError

    def _signalledAgain(self, name: str) -> None:
        raise NotImplementedError

    def _stopReactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


def _exitAfterShutdown(
    reactor: Any, status: int, flush: Callable[[], None] | None = None
) -> None:
    """
    Make the process exit with C{status} once the reactor has shut down.

    @param flush: called first (C{os._exit} flushes nothing), or C{None}.
    """

    def exitNow() -> None:
        if flush is not None:
            flush()
        os._exit(status)

    reactor.addSystemEventTrigger("after", "shutdown", exitNow)


class SpliceProxyService(DrainOnSignal, Service):
    """
    Listens on the configured endpoints with one L{SpliceProxyFactory} per
    forward, and drains on stop.

    Listening happens in L{privilegedStartService} (C{twistd} calls it before
    dropping privileges; L{startService} calls it when nobody did), so a
    port in use ends start-up with one line on standard error.  In a worker
    process of C{--workers} (see L{splicetx._app.worker}) the listening sockets
    are inherited from the supervisor instead.

    @ivar config: the L{ProxyConfig} it serves.
    @ivar reactor: the reactor.
    @ivar handleSignals: see L{__init__}.
    @ivar factory: the first forward's L{SpliceProxyFactory}, once started.
    @ivar factories: every forward's factory, once started.
    @ivar ports: the listening ports, once started.
    @ivar metrics: the L{ProxyMetrics <splicetx._ops.metrics.ProxyMetrics>}
        with L{ProxyConfig.metricsEndpoint}, once started.
    @ivar metricsPort: the port the metrics are served on, once started.
    @ivar forwardPools: the L{ForwardPools} of the forwards with pools or
        SNI routes, once started.
    @ivar pipePool: the L{PipePool} every factory shares, once started.
    @ivar portsByFactory: the listening ports of each factory.
    @ivar retiredFactories: factories of forwards a reload removed (their
        live connections are part of the drain).
    @ivar reloader: the L{ServiceReloader <splicetx._app.reload.ServiceReloader>}
        that SIGHUP calls.
    @ivar logFile: C{twist}'s log file, or C{None}; see L{__init__}.
    @ivar logFormat: C{twist}'s log format, C{"text"} or C{"json"}.
    @ivar accessLog: the L{AccessLog <splicetx._ops.accesslog.AccessLog>} the
        factories write connection records to, once started; C{None} when
        they log C{twisted.logger} events instead.
    """

    name = "splice-proxy"

    def __init__(
        self,
        config: ProxyConfig,
        *,
        reactor: Any = None,
        handleSignals: bool = True,
        logFile: IO[str] | None = None,
        logFormat: str | None = None,
    ) -> None:
        """
        @param config: what to serve, and how.
        @param reactor: the reactor (default: the global one).
        @param handleSignals: take over SIGTERM/SIGINT once the reactor runs
            (when the reactor installed its own handlers), so that they drain
            instead of stopping at once and the process exits with status 0.
        @param logFile: C{twist}'s log file: without C{config.accessLog},
            the connection records are written there by an L{AccessLog} in
            C{logFormat} (JSON records start with C{twist}'s record
            separator).  C{None} (not run by C{twist}): the factories log
            C{twisted.logger} events, unless C{config.accessLog} is set.
        @param logFormat: C{twist}'s log format, C{"text"} or C{"json"}.
        """
        self.config = config
        self.reactor = defaultReactor(reactor)
        self.handleSignals = handleSignals
        self.factory: SpliceProxyFactory | None = None
        self.factories: list[SpliceProxyFactory] = []
        self.ports: list[Any] = []
        self.metrics: Any = None
        self.metricsPort: Any = None
        self.forwardPools: list[ForwardPools] = []
        self.logFile = logFile
        self.logFormat = logFormat
        self.accessLog: AccessLog | None = None
        self._ownAccessLogFile = False
        self._maxConnections: int | None = None
        self._logFields: dict[str, Any] | None = None
        self._worker = _worker.isWorker()
        self._supervisorWatch: Any = None
        self.pipePool: PipePool | None = None
        self.portsByFactory: dict[SpliceProxyFactory, list[Any]] = {}
        self.retiredFactories: list[SpliceProxyFactory] = []
        self.reloader = ServiceReloader(self)
        self._started = False
        self.stopping = False

    # -- start ----------------------------------------------------------------

    def _capacity(self) -> tuple[int | None, int | None]:
        config = self.config
        room = capacity(
            self.reactor, len(config.forwards), config.maxPipes, config.maxConnections
        )
        _log.info(
            "file descriptor limit {fds} (was {before}): room for about "
            "{spliced} spliced connections ({per} fds each); accepting up to "
            "{maxConnections} at once",
            splicetxEvent="capacity",
            fds=room.fds,
            before=room.before,
            usable=room.usable,
            spliced=room.spliced,
            per=FDS_PER_SPLICED_CONNECTION,
            maxConnections=room.maxConnections or "unlimited",
        )
        _log.info(
            "relay core: {description}; reactor: {reactor}",
            splicetxEvent="core",
            core=core.current(),
            description=core.describe(),
            reactor=type(self.reactor).__name__,
        )
        return room.maxPipes, room.maxConnections

    def _startMetrics(self, pool: PipePool) -> None:
        try:
            from splicetx._ops import metrics as _metrics
        except ImportError:
            raise SystemExit(f"splice-proxy: error: {METRICS_MISSING}")
        from splicetx._ops import status as _status

        metrics = _metrics.ProxyMetrics()
        metrics.watchPipePool(pool, self.reactor)
        self.metrics = metrics
        status = _status.ServiceStatus(self, self.reactor, worker=_worker.workerIndex())
        if self._worker:
            # The supervisor serves the figures of every worker.
            _status.startWorkerStatusEndpoint(status, self.reactor)
            return
        description = self.config.metricsEndpoint
        assert description is not None
        self.metricsPort = serveMetrics(
            description, metrics.registry, status, self.reactor, self.config
        )

    def privilegedStartService(self) -> None:
        """
        Raise the file descriptor limit, build a factory per forward and
        open every listening endpoint (or adopt the sockets inherited from
        the supervisor).

        @raise SystemExit: with a one-line message when an endpoint cannot
            be opened.
        """
        if self._started:
            return
        self._started = True
        config = self.config
        reactor = self.reactor
        for warning in config.warnings:
            _log.warn("{warning}", warning=warning, splicetxEvent="config")
        maxPipes, self._maxConnections = self._capacity()
        pool = PipePool(pipeSize=config.pipeSize, maxPipes=maxPipes)
        self.pipePool = pool
        if config.metricsEndpoint is not None:
            self._startMetrics(pool)
        if self._worker:
            self._logFields = {"pid": os.getpid(), "worker": _worker.workerIndex()}
        self._openAccessLog()
        listens: list[tuple[str, str, SpliceProxyFactory]] = []
        for forward in config.forwards:
            upstream = self.upstreamEndpoint(forward)
            factory = self.buildFactory(upstream, pool, forward)
            self.factories.append(factory)
            for description, given in zip(
                config.listenEndpoints(forward), forward.listens, strict=True
            ):
                listens.append((description, given, factory))
        self.factory = self.factories[0] if self.factories else None
        if self.metrics is not None and not self._worker:
            from splicetx._ops.udpstats import UDPCollector

            self.metrics.registry.register(
                UDPCollector(lambda: [*self.factories, *self.retiredFactories])
            )
        if self.forwardPools and self.metrics is not None and not self._worker:
            from splicetx._ops.poolmetrics import PoolCollector

            self.metrics.registry.register(
                PoolCollector(lambda: [p for f in self.forwardPools for p in f.pools])
            )
        if self._worker:
            try:
                ports = _worker.adoptListeners([f for _, _, f in listens], reactor)
            except Exception as e:
                raise SystemExit(
                    f"splice-proxy: error: cannot adopt the listening sockets "
                    f"of the supervisor: {explainEndpointError(e)}"
                )
            for port, (description, _, factory) in zip(ports, listens, strict=True):
                self.listening(port, description, factory)
        else:
            self._listenAll(listens)
        for forward, factory in zip(config.forwards, self.factories, strict=True):
            if isinstance(factory, UDPForwarder):
                _log.info(
                    "splice-proxy relaying UDP {listen} to {upstream} (session "
                    "idle timeout {idleTimeout:g} s, at most {maxSessions} "
                    "sessions, drain timeout {drainTimeout:g} s)",
                    splicetxEvent="started",
                    listen=", ".join(forward.listens),
                    upstream=repr(factory.upstreams),
                    protocol="udp",
                    idleTimeout=factory.idleTimeout,
                    maxSessions=factory.maxSessions,
                    drainTimeout=config.drainTimeout,
                    acl=repr(factory.acl) if factory.acl is not None else None,
                )
                continue
            _log.info(
                "splice-proxy relaying {listen} to {upstream} (engine {engine}, "
                "pipe size {pipeSize}, connect timeout {connectTimeout:g} s, "
                "idle timeout {idleTimeout:g} s, half-close timeout "
                "{halfCloseTimeout:g} s, TCP keepalive {tcpKeepalive}, "
                "drain timeout {drainTimeout:g} s)",
                splicetxEvent="started",
                listen=", ".join(forward.listens),
                upstream=factory.describeUpstream(),
                engine=config.engine,
                pipeSize=config.pipeSize,
                connectTimeout=config.connectTimeout,
                idleTimeout=config.idleTimeout,
                halfCloseTimeout=config.halfCloseTimeout,
                tcpKeepalive=str(config.tcpKeepalive or "off"),
                drainTimeout=config.drainTimeout,
                acl=factory.acl.description if factory.acl is not None else None,
            )

    def _openAccessLog(self) -> None:
        """
        Make L{accessLog} from C{config.accessLog}, C{config.accessLogFormat}
        and C{twist}'s log file.

        @raise SystemExit: with one line when the file cannot be opened.
        """
        config = self.config
        path, form = config.accessLog, config.accessLogFormat
        separator = ""
        if path is None:
            if self.logFile is None:
                return
            outFile: IO[str] = self.logFile
            twistFormat = self.logFormat if self.logFormat is not None else "text"
            form = form or twistFormat
            if form == "json" and twistFormat == "json":
                separator = "\x1e"
        else:
            if path == "-":
                outFile = sys.stdout
            else:
                try:
                    # One buffer larger than the access log's own, so that
                    # a flush is one write(2) even with other processes
                    # (workers) appending to the same file.
                    outFile = open(path, "a", encoding="utf-8", buffering=1 << 18)
                except OSError as e:
                    raise SystemExit(
                        f"splice-proxy: error: cannot open the access log "
                        f"{path!r}: {e.strerror or e}"
                    )
                self._ownAccessLogFile = True
            if form is None:
                isatty = getattr(outFile, "isatty", None)
                form = "text" if isatty is not None and isatty() else "json"
            if form == "json" and outFile is self.logFile and self.logFormat == "json":
                separator = "\x1e"
        self.accessLog = AccessLog(
            outFile, form, reactor=self.reactor, recordSeparator=separator
        )

    def _closeAccessLog(self) -> None:
        accessLog = self.accessLog
        if accessLog is None:
            return
        accessLog.close()
        if self._ownAccessLogFile:
            self._ownAccessLogFile = False
            try:
                accessLog.outFile.close()
            except OSError:
                pass

    def _flushAccessLog(self) -> None:
        if self.accessLog is not None:
            self.accessLog.flush()

    def _forwardPools(self, forward: Forward) -> ForwardPools:
        """
        Build the pools of a forward with a pool or SNI routes.
        """
        reactor = self.reactor
        config = self.config
        pools = ForwardPools(
            forward,
            forward.name or forward.listen,
            lambda s: self._upstreamEndpoint(forward, s),
            config.connectTimeout,
            reactor,
        )
        self.forwardPools.append(pools)
        return pools

    def replaceUpstream(self, factory: SpliceProxyFactory, upstream: Any) -> bool:
        """
        Give a running forward's factory a reloaded upstream (an endpoint,
        or L{ForwardPools} from L{upstreamEndpoint}); the connections it
        accepts from then on use it.

        @return: C{False} when the factory cannot take it in place (a
            forward that changes between one upstream and a pool): the
            factory is left as it was.
        """
        if isinstance(factory, UDPForwarder) and isinstance(upstream, UDPUpstreams):
            factory.replaceUpstreams(upstream)
            return True
        if isinstance(factory, UDPForwarder) or isinstance(upstream, UDPUpstreams):
            return False
        if isinstance(factory, PoolProxyFactory) and isinstance(upstream, ForwardPools):
            old = [
                p
                for p in self.forwardPools
                if p is not upstream
                and p.pool is factory.pool
                and p.router is factory.router
            ]
            factory.replacePools(upstream)
            for pools in old:
                pools.stop()
                self.forwardPools.remove(pools)
            return True
        if isinstance(upstream, ForwardPools):
            # One upstream before, a pool now: not in place.
            upstream.stop()
            self.forwardPools.remove(upstream)
            return False
        if isinstance(factory, PoolProxyFactory):
            return False
        factory.upstream = upstream
        return True

    def _listenAll(self, listens: list[tuple[str, str, SpliceProxyFactory]]) -> None:
        for description, given, factory in listens:
            try:
                endpoint = self.serverEndpoint(description)
                d = endpoint.listen(factory)
            except Exception:
                d = Deferred()
                d.errback()
            outcome: list[Any] = []
            d.addBoth(outcome.append)
            if not outcome:
                d.addCallback(self.listening, description, factory)
                d.addErrback(self._lateListenFailure, given)
                continue
            if isinstance(outcome[0], Failure):
                for port in self.ports:
                    port.stopListening()
                self.ports = []
                if self.metricsPort is not None:
                    self.metricsPort.stopListening()
                raise SystemExit(
                    f"splice-proxy: error: cannot listen on {given}: "
                    f"{explainEndpointError(outcome[0].value)}"
                )
            self.listening(outcome[0], description, factory)

    def upstreamEndpoint(self, forward: Forward) -> Any:
        """
        The upstream client endpoint of a forward (at start and on a
        reload, L{splicetx._app.reload}), or its L{ForwardPools} when it has a
        pool or SNI routes; for a UDP forward its L{UDPUpstreams}.
        """
        if forward.isUDP:
            return udpUpstreams(forward, self.reactor)
        if hasPools(forward):
            pools = self._forwardPools(forward)
            if self.running:
                pools.start()
            return pools
        if forward.connect is None:
            return None  # the --protocol class chooses
        return self._upstreamEndpoint(forward, forward.connect)

    def _upstreamEndpoint(self, forward: Forward, description: str) -> Any:
        """
        The client endpoint of one of C{forward}'s upstream strings: a host
        name's L{TCPTarget <splicetx._pool.target.TCPTarget>} resolves with
        the forward's own C{resolve-ttl}, if it has one.
        """
        endpoint = clientEndpoint(self.reactor, description)
        if forward.resolveTTL is not None and isinstance(endpoint, TCPTarget):
            endpoint.validity = forward.resolveTTL
        return _tls.withClientALPN(endpoint, self.config.connectALPN)

    def serverEndpoint(self, description: str) -> Any:
        """
        The server endpoint to listen on for one listening string (at start
        and on a reload).
        """
        return _tls.withServerALPN(
            serverEndpoint(self.reactor, description), self.config.alpn
        )

    def buildFactory(
        self, upstream: Any, pipePool: PipePool, forward: Forward
    ) -> SpliceProxyFactory:
        """
        Make the factory of one forward, configured entirely through its
        constructor, of C{config.factoryClass} and with
        C{config.protocolClass} when given (C{--factory}, C{--protocol}).
        Override to use a L{SpliceProxyFactory} subclass (pass it the same
        keywords) or another protocol.

        @param upstream: the forward's C{--connect} endpoint, or for a
            forward with a pool or SNI routes its L{ForwardPools} (which
            makes a L{PoolProxyFactory}).
        @param pipePool: the pipe pool built from C{--pipe-size} and
            C{--max-pipes}, shared by every forward.
        @param forward: the forward: its name and access rules.
        @return: the factory; for a UDP forward (C{upstream} is its
            L{UDPUpstreams}) a L{UDPForwarder} instead, which the service
            treats as a factory.
        """
        config = self.config
        if isinstance(upstream, UDPUpstreams):
            return buildUDPForwarder(  # type: ignore[return-value]
                config,
                forward,
                upstream,
                self.reactor,
                accessLog=self.accessLog,
                logFields=self._logFields,
                logNormalConnections=(
                    config.logNormalConnections or config.accessLog is not None
                ),
            )
        acl = forward.acl
        pooled = isinstance(upstream, ForwardPools)
        make = classFactoryMaker(config, pooled) or (
            PoolProxyFactory.forPools if pooled else SpliceProxyFactory
        )
        bandwidths = forwardBandwidths(config, forward)
        factory = make(
            upstream,
            reactor=self.reactor,
            engine=config.engine,
            pipePool=pipePool,
            connectTimeout=config.connectTimeout,
            idleTimeout=config.idleTimeout,
            halfCloseTimeout=config.halfCloseTimeout,
            tcpKeepalive=config.tcpKeepalive,
            proxyProtocolFrom=config.proxyProtocolFrom or None,
            acl=acl if acl is not None and not acl.empty else None,
            acceptProxyProtocol=config.acceptProxyProtocol,
            proxyProtocolTimeout=config.proxyProtocolTimeout,
            sendProxyProtocol=config.sendProxyProtocol,
            metrics=self.metrics,
            forwardName=forward.name or forward.listen,
            logFields=self._logFields,
            maxConnections=self._maxConnections,
            logNormalConnections=(
                config.logNormalConnections or config.accessLog is not None
            ),
            accessLog=self.accessLog,
            fastPath=config.fastPath,
            clientLimits=clientLimitsFor(config, forward),
            connectionBandwidth=bandwidths[0],
            listenerBandwidth=bandwidths[2],
        )
        return withClassOptions(factory, config)

    def listening(
        self, port: Any, description: str, factory: SpliceProxyFactory | None = None
    ) -> Any:
        factory = factory or self.factory
        assert factory is not None
        self.ports.append(port)
        self.portsByFactory.setdefault(factory, []).append(port)
        factory.addListeningPort(port)
        address = port.getHost()
        _log.info(
            "listening on {address} ({description})",
            splicetxEvent="listening",
            address=describeAddress(address),
            port=getattr(address, "port", None),
            description=description,
            forward=factory.forwardName,
        )
        return port

    def _lateListenFailure(self, failure: Failure, description: str) -> None:
        message = (
            f"splice-proxy: error: cannot listen on {description}: "
            f"{explainEndpointError(failure.value)}"
        )
        _log.critical("{message}", message=message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        _exitAfterShutdown(self.reactor, EXIT_START, self._flushAccessLog)
        self._stopReactor()

    def startService(self) -> None:
        """
        Listen (unless L{privilegedStartService} already did) and, once the
        reactor runs, take over SIGTERM/SIGINT for a graceful drain.
        """
        self.privilegedStartService()
        Service.startService(self)
        # Every upstream name of the process resolves through this cache.
        cacheFor(self.reactor).validity = self.config.resolveTTL
        for pools in self.forwardPools:
            pools.start()
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        if self.handleSignals:
            self._installSignalHandlers()
            if signal.getsignal(signal.SIGTERM) == self._onSignal:
                # Only when we run the process's signals (not under trial).
                installReloadSignal(self.reactor, self.reload)
                installReopenSignal(self.reactor, self.reopenLogs)
        if self._worker:
            self._supervisorWatch = _worker.watchSupervisor(self.reactor)
            _worker.reportReady()
        _log.info(
            "splice-proxy ready (pid {pid})",
            splicetxEvent="ready",
            pid=os.getpid(),
            worker=_worker.workerIndex(),
        )

    def reload(self) -> Deferred[Any]:
        """
        Re-read the C{--config} file and apply it to new connections (see
        L{splicetx._app.reload}); a worker leaves reloads to its supervisor.

        @return: a C{Deferred} firing with the applied
            L{ConfigChanges <splicetx._app.reload.ConfigChanges>}, or C{None}.
        """
        if self._worker:
            _log.info(
                "reload ignored: the supervisor reloads its workers",
                splicetxEvent="reload",
                ignored=True,
            )
            return succeed(None)
        return self.reloader.reload()

    def reopenLogs(self) -> list[str]:
        """
        SIGUSR1: reopen C{twist}'s log file and the C{--access-log} file
        (see L{splicetx._app.logfiles}); buffered records go to the old
        file first.

        @return: the names reopened.
        """
        files: list[IO[str] | None] = [self.logFile]
        accessLog = self.accessLog
        if accessLog is not None:
            accessLog.flush()
            if self._ownAccessLogFile:
                files.append(accessLog.outFile)
        return reopenFiles(files)

    # -- stop -----------------------------------------------------------------

    def _allFactories(self) -> list[SpliceProxyFactory]:
        return [*self.factories, *self.retiredFactories]

    def _live(self) -> int:
        return sum(len(f.liveProtocols) for f in self._allFactories())

    def _signalledFirst(self, name: str) -> None:
        _log.info(
            "received {signal}: no longer accepting; letting {count} "
            "connection(s) finish for up to {timeout:g} s",
            signal=name,
            count=self._live(),
            timeout=self.config.drainTimeout,
        )

    def _signalledAgain(self, name: str) -> None:
        _log.info(
            "received {signal} again: aborting {count} connection(s)",
            signal=name,
            count=self._live(),
        )
        for factory in self._allFactories():
            for proto in list(factory.liveProtocols):
                proto.abort(detail=f"{name} during drain")

    def stopService(self) -> Deferred[Any] | None:
        """
        Stop listening at once and let live connections finish for up to
        the drain timeout, then abort the rest.

        @return: a C{Deferred} that fires once every connection has ended.
        """
        Service.stopService(self)
        self.stopping = True
        watch, self._supervisorWatch = self._supervisorWatch, None
        if watch is not None and watch.running:
            watch.stop()
        if self.metrics is not None:
            self.metrics.stopWatching()
        for pools in self.forwardPools:
            pools.stop()
        if not self.factories:
            self._closeAccessLog()
            return None
        self.ports = []
        drains = [f.drain(self.config.drainTimeout) for f in self._allFactories()]

        def drained(counts: list[int]) -> None:
            # Every connection's record before the line that says all ended.
            self._closeAccessLog()
            _log.info(
                "drained: {aborted} connection(s) aborted at the drain timeout",
                splicetxEvent="drained",
                aborted=sum(counts),
            )
            port, self.metricsPort = self.metricsPort, None
            if port is not None:
                port.stopListening()

        return gatherResults(drains).addCallback(drained)
