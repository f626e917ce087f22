# -*- test-case-name: tests.test_ops_cli -*-
"""
C{twist splice-proxy --workers N}: the supervisor's service.  It prepares
the listening sockets, runs N workers (this same command again, without
C{--workers}) under a L{WorkerSupervisor <splicetx._app.processes.WorkerSupervisor>},
serves the combined metrics of every worker, and drains them on
SIGTERM/SIGINT.

The worker-process machinery (listeners, spawning, restarts) is
L{splicetx._app.processes}; the worker side is L{splicetx._app.worker}.
"""

from __future__ import annotations

import os
import signal
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from splicetx._app.filelimit import raiseFileLimit
from splicetx._app.listening import listenNow, serveMetrics
from splicetx._app.logfiles import installReopenSignal, reopenFiles
from splicetx._app.processes import WorkerSupervisor, prepareListener
from splicetx._app.reload import (
    compareConfigs,
    installReloadSignal,
    logReloaded,
    logReloadFailed,
    refuseReload,
    reloadedConfig,
)
from splicetx._app.service import (
    METRICS_MISSING,
    DrainOnSignal,
)
from splicetx._app.worker import ENV_CONFIG
from splicetx._config.files import readConfigText
from splicetx._config.model import ProxyConfig
from splicetx._config.values import ConfigError
from splicetx._relay.runtime import LOG_PROXY, defaultReactor

__all__ = ["SpliceProxySupervisorService", "twistArguments", "workerArguments"]

_log = Logger(namespace=LOG_PROXY)


def workerArguments(rawArgs: list[str]) -> list[str]:
    """
    The C{splice-proxy} arguments of a worker: the supervisor's, less
    C{--workers}.

    @param rawArgs: the supervisor's C{splice-proxy} arguments.
    """
    out: list[str] = []
    skip = False
    for arg in rawArgs:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def twistArguments(argv: list[str]) -> list[str]:
    """
    The C{twist} options (reactor, logging) the supervisor was started with,
    to start the workers alike; empty unless it runs under C{twist} or
    C{python -m twisted}.

    @param argv: the supervisor's C{sys.argv}.
    """
    if not argv:
        return []
    program = os.path.basename(argv[0])
    isTwist = program == "twist" or argv[0].replace("\\", "/").endswith(
        "twisted/__main__.py"
    )
    if not isTwist or "splice-proxy" not in argv:
        return []
    return argv[1 : argv.index("splice-proxy")]


class SpliceProxySupervisorService(DrainOnSignal, Service):
    """
    C{--workers N}: prepare the listening sockets, run N workers under a
    L{WorkerSupervisor <splicetx._app.processes.WorkerSupervisor>}, and with
    C{--metrics} serve the combined figures of every worker.

    SIGTERM/SIGINT drain the workers (they get SIGTERM); a second one passes
    SIGTERM on again, which makes the workers abort their connections.
    SIGUSR1 reopens the log files, here and in every worker.

    @ivar config: the L{ProxyConfig} the workers serve: this service uses
        its listening endpoints, C{workers}, C{drainTimeout} and
        C{metricsEndpoint}.
    @ivar count: how many workers (C{config.workers}).
    @ivar workerArgv: the workers' command line.
    @ivar workers: the L{WorkerSupervisor <splicetx._app.processes.WorkerSupervisor>},
        once started.
    @ivar metricsPort: the port the combined metrics are served on, once
        started.
    @ivar metricsDirectory: the directory the workers write their metrics
        to, once started.
    """

    name = "splice-proxy-supervisor"

    def __init__(
        self,
        config: ProxyConfig,
        workerArgv: list[str],
        *,
        reactor: Any = None,
        handleSignals: bool = True,
        logFile: IO[str] | None = None,
    ) -> None:
        """
        @param config: the configuration; C{config.workers} says how many
            workers (at least 1).  The workers are killed 5 s after its
            C{drainTimeout}.
        @param logFile: C{twist}'s log file, reopened on SIGUSR1 (the
            workers reopen theirs), or C{None}.
        @param workerArgv: the workers' command line.
        @param reactor: the reactor (default: the global one).
        @param handleSignals: see L{SpliceProxyService
            <splicetx._app.service.SpliceProxyService>}.
        @raise ValueError: when C{config.workers} is not set.
        """
        if not config.workers:
            raise ValueError(f"need at least one worker, not {config.workers!r}")
        self.config = config
        self.count: int = config.workers
        self.reactor = defaultReactor(reactor)
        self.workerArgv = workerArgv
        self.handleSignals = handleSignals
        self.logFile = logFile
        self.metricsDirectory: str | None = None
        self.metricsPort: Any = None
        self.workers: Any = None
        self.stopping = False
        self._reloading = False
        self._configDirectory: str | None = None
        self._configCopy: str | None = None

    def startService(self) -> None:
        """
        Start the metrics endpoint, the listeners and the workers.
        """
        Service.startService(self)
        reactor = self.reactor
        text = None
        if self.config.configFile is not None:
            # The workers run this text (see _snapshotConfig), so listen for
            # what it says, even if the file changed since it was checked.
            try:
                text = readConfigText(self.config.configFile)
                self.config = reloadedConfig(self.config, text)
            except ConfigError as e:
                raise SystemExit(f"splice-proxy: error: {e}")
        raiseFileLimit()
        options: dict[str, Any] = {"drainTimeout": self.config.drainTimeout + 5.0}
        if self.config.metricsEndpoint is not None:
            import shutil
            import tempfile

            try:
                from splicetx._ops import metrics as _metrics
            except ImportError:
                raise SystemExit(f"splice-proxy: error: {METRICS_MISSING}")
            path = tempfile.mkdtemp(prefix="splicetx-metrics-")
            self.metricsDirectory = path
            reactor.addSystemEventTrigger(
                "after", "shutdown", shutil.rmtree, path, True
            )
            from splicetx._ops import status as _status

            description = self.config.metricsEndpoint
            registry = _metrics.multiprocessRegistry(path)
            status = _status.SupervisorStatus(self, registry, path, reactor)
            self.metricsPort = serveMetrics(
                description, registry, status, reactor, self.config
            )
            options["env"] = _status.setStatusEnvironment(
                _metrics.setMultiprocessEnvironment(dict(os.environ), path), path
            )
            options["onWorkerExit"] = lambda i, pid, r: _metrics.markWorkerDead(
                pid, path
            )
        listeners = []
        for description in self.config.listen:
            listener = listenNow(
                lambda d=description: prepareListener(d, None, reactor),
                description,
            )
            if listener is None:
                raise SystemExit(
                    f"splice-proxy: error: cannot listen on {description} for "
                    "workers: use a tcp:, tcp6:, unix: or systemd: endpoint"
                )
            listeners.append(listener)
        if self.config.configFile is not None:
            env = dict(options.get("env", os.environ))
            options["env"] = self._snapshotConfig(env, text)
        supervisor = WorkerSupervisor(
            self.workerArgv, self.count, listeners, reactor, **options
        )
        self.workers = supervisor
        supervisor.start()
        self._started(supervisor)
        reactor.callWhenRunning(self._running)

    def _started(self, supervisor: Any) -> None:
        for listener in supervisor.listeners:
            self._logListening(listener)

    def _logListening(self, listener: Any) -> None:
        _log.info(
            "listening on port {port} ({description}) with {count} workers ({mode})",
            splicetxEvent="listening",
            port=listener.port,
            description=listener.description,
            count=self.count,
            mode=listener.mode,
        )

    def _running(self) -> None:
        if self.handleSignals:
            self._installSignalHandlers()
            if signal.getsignal(signal.SIGTERM) == self._onSignal:
                # Only when we run the process's signals (not under trial).
                installReloadSignal(self.reactor, self.reload)
                installReopenSignal(self.reactor, self.reopenLogs)
        supervisor = self.workers
        _log.info(
            "splice-proxy supervisor ready (pid {pid}, workers {workers})",
            splicetxEvent="supervisor-ready",
            pid=os.getpid(),
            workers=sorted(supervisor.pids.values()) if supervisor else [],
        )

    def reload(self) -> Deferred[Any]:
        """
        SIGHUP: check the C{--config} file, prepare the sockets of the
        listeners it adds, replace the workers with a new generation on the
        same sockets (L{WorkerSupervisor.reload
        <splicetx._app.processes.WorkerSupervisor.reload>}), then close the
        sockets of the listeners it removed.  All or nothing: a bad file, a
        listener that cannot be opened or a new worker that does not start
        leaves the running workers and sockets as they were.

        @return: a C{Deferred} firing with the applied
            L{ConfigChanges <splicetx._app.reload.ConfigChanges>}, or C{None}.
        """
        path = self.config.configFile
        supervisor = self.workers
        stopping = self.stopping or supervisor is None or not supervisor.running
        if refuseReload(stopping, path, self._reloading) or path is None:
            return succeed(None)
        try:
            text = readConfigText(path)
            new = reloadedConfig(self.config, text)
        except ConfigError as e:
            logReloadFailed(path, str(e))
            return succeed(None)
        changes = compareConfigs(self.config, new)
        current = {listener.description: listener for listener in supervisor.listeners}
        listeners: list[Any] = []
        added: list[Any] = []
        for description in new.listen:
            listener = current.get(description)
            if listener is None:
                try:
                    listener = listenNow(
                        lambda d=description: prepareListener(d, None, self.reactor),
                        description,
                    )
                except SystemExit as e:
                    listener = None
                    error = str(e).removeprefix("splice-proxy: error: ")
                else:
                    error = f"cannot listen on {description} for workers"
                if listener is None:
                    for a in added:
                        a.close()
                    logReloadFailed(path, error)
                    return succeed(None)
                added.append(listener)
            listeners.append(listener)
        removed = [x for x in supervisor.listeners if x not in listeners]
        self._reloading = True
        before = self._configCopy
        env = self._snapshotConfig(dict(supervisor.env), text)

        def reloaded(_: Any) -> Any:
            self._reloading = False
            self._removeCopy(before)
            for listener in removed:
                listener.close()
            self.config = new
            for listener in added:
                self._logListening(listener)
            logReloaded(path, changes)
            return changes

        def failed(f: Any) -> None:
            self._reloading = False
            self._removeCopy(self._configCopy)
            self._configCopy = before
            for listener in added:
                listener.close()
            logReloadFailed(path, str(f.value))

        d = supervisor.reload(listeners, env=env)
        return d.addCallbacks(reloaded, failed)

    def reopenLogs(self) -> list[str]:
        """
        SIGUSR1: reopen C{twist}'s log file, and pass the signal on to every
        worker, which reopens its own files (see L{splicetx._app.logfiles}).

        @return: the names this process reopened.
        """
        workers = self.workers
        count = workers.reopenLogs() if workers is not None else 0
        return reopenFiles([self.logFile], workers=count)

    def _snapshotConfig(self, env: dict[str, str], text: str | None) -> dict[str, str]:
        """
        Write a copy of the C{--config} file's text for the workers to read
        (see L{splicetx._app.worker.configText}), and return C{env} with its
        name added.
        """
        import shutil
        import tempfile

        if self._configDirectory is None:
            self._configDirectory = tempfile.mkdtemp(prefix="splicetx-config-")
            self.reactor.addSystemEventTrigger(
                "after", "shutdown", shutil.rmtree, self._configDirectory, True
            )
        fd, copy = tempfile.mkstemp(dir=self._configDirectory, suffix=".conf")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text or "")
        self._configCopy = copy
        env[ENV_CONFIG] = copy
        return env

    def _removeCopy(self, copy: str | None) -> None:
        if copy is None:
            return
        try:
            os.remove(copy)
        except OSError:
            pass

    def _signalledFirst(self, name: str) -> None:
        _log.info(
            "received {signal}: draining the workers for up to {timeout:g} s",
            signal=name,
            timeout=self.config.drainTimeout,
        )

    def _signalledAgain(self, name: str) -> None:
        supervisor = self.workers
        if supervisor is None:
            return
        for pid in supervisor.pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def stopService(self) -> Deferred[Any] | None:
        """
        Drain and stop the workers, then stop serving metrics.
        """
        Service.stopService(self)
        self.stopping = True
        workers = self.workers
        d = workers.stop() if workers is not None else None
        if d is None:
            d = Deferred()
            d.callback(None)

        def stopped(_: Any) -> Any:
            port, self.metricsPort = self.metricsPort, None
            _log.info("workers stopped", splicetxEvent="drained", aborted=None)
            if port is not None:
                return port.stopListening()
            return None

        return d.addCallback(stopped)
