# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: a supervisor process that runs N worker processes serving the
same listening sockets, restarts a worker that dies, and passes C{SIGTERM}
on for a drain and C{SIGUSR1} for reopening log files.

B{How the workers share a port.}  Two models exist (see the "Workers"
section of docs/operations.md); both are implemented, and the default is
L{REUSEPORT}:

  - L{REUSEPORT} (default for C{tcp:}/C{tcp6:} listeners): the supervisor
    creates I{one listening socket per worker}, each with C{SO_REUSEPORT},
    and hands it to that worker.  The kernel spreads incoming connections
    over the sockets by flow hash.  Why this is the default:

      - Balance.  With one shared socket every idle worker is woken for a
        new connection and the first to run takes it; and Twisted's
        C{tcp.Port} accepts in a loop (up to C{numberAccepts}, which starts
        at 100), so the worker that wins one wake-up drains a whole burst.
        On a 2-core box that means a burst of connections lands on one core
        (the imbalance Cloudflare measured for nginx).  C{SO_REUSEPORT}
        splits by hash, independent of scheduling.
      - Backlog.  Each socket has its own accept queue of C{backlog}
        entries, so the total is N x backlog; a stalled worker only stalls
        its own share.
      - Drain.  On C{SIGTERM} a worker closes its own socket and the kernel
        stops sending it new connections at once: the supervisor keeps a
        copy of a worker's socket only while that worker runs (for a
        reload, below), closes it when the worker dies, and closes them all
        first when it stops, so no connection waits in a queue nobody
        serves.
      - Costs, accepted: connections still queued on the socket of a worker
        that I{crashes} are reset (set C{net.ipv4.tcp_migrate_req=1} on
        Linux >= 5.14 to migrate them); any process of the same user may
        join the group; it needs a TCP endpoint the supervisor can parse.

  - L{SHARED}: the supervisor listens once (through any Twisted server
    endpoint: C{tcp:}, C{unix:}, C{systemd:}) and every worker adopts the
    same socket with C{adoptStreamPort}.  It is the model for systemd socket
    activation (one C{ListenStream=} socket handed to the supervisor) and
    for UNIX sockets, and the automatic choice for endpoints other than
    C{tcp}/C{tcp6}.  Nothing queued is lost when a worker crashes; balance
    is the kernel's wake-up order.

B{Supervision.}  A worker that exits while the supervisor is running is
restarted in its slot.  One that dies within C{minUptime} seconds of its
start counts as a crash loop: the delay before its restart doubles from
C{initialDelay} up to C{maxDelay}, so a worker that cannot start does not
spin the CPU; a worker that ran longer is restarted at once.
L{WorkerSupervisor.stop} (C{SIGTERM}/C{SIGINT} to the supervisor, through
L{SpliceProxySupervisorService
<splicetx._app.supervisor.SpliceProxySupervisorService>} under C{twist}) sends
C{SIGTERM} to every worker, waits up to C{drainTimeout} seconds for them to
finish their connections, sends C{SIGKILL} to the rest, and fires when all
are gone.

B{Reload.}  L{WorkerSupervisor.reload} replaces every worker with a new
generation on the same sockets (the new worker of a slot gets that slot's
C{SO_REUSEPORT} sockets, and the shared ones), waits until each reported
ready, then sends the previous generation C{SIGTERM}: nothing queued is
reset and no connect is refused.

Workers learn their sockets from the environment: see L{splicetx._app.worker}.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._app.worker import (
    ENV_FDS,
    ENV_INDEX,
    ENV_READY,
    ENV_SUPERVISOR,
    familyName,
)
from splicetx._relay.runtime import LOG_WORKERS, defaultReactor

__all__ = [
    "REUSEPORT",
    "SHARED",
    "ReusePortListener",
    "SharedListener",
    "WorkerSupervisor",
    "prepareListener",
]

#: One C{SO_REUSEPORT} listening socket per worker.
REUSEPORT = "reuseport"
#: One listening socket adopted by every worker.
SHARED = "shared"

_log = Logger(namespace=LOG_WORKERS)


def _tcpSocket(family: int, host: str, port: int, reusePort: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.set_inheritable(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reusePort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        address: tuple[Any, ...] = (host, port)
        if family == socket.AF_INET6:
            address = socket.getaddrinfo(
                host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )[0][4]
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ReusePortListener:
    """
    A TCP listener served with one C{SO_REUSEPORT} socket per worker.

    @ivar description: the endpoint string it came from.
    @ivar host: the interface address.
    @ivar port: the port number (the one actually bound, when C{0} was asked
        for).
    @ivar family: C{AF_INET} or C{AF_INET6}.
    @ivar backlog: the C{listen()} backlog of each worker's socket.
    """

    mode = REUSEPORT

    def __init__(
        self, description: str, host: str, port: int, backlog: int = 50
    ) -> None:
        """
        Bind (without listening) a socket that reserves the port for the
        supervisor's lifetime.

        @raise OSError: when the address cannot be bound.
        """
        self.description = description
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.backlog = backlog
        self._reservation: socket.socket | None = _tcpSocket(
            self.family, host, port, True
        )
        self.port = self._reservation.getsockname()[1]

    def socketForWorker(self) -> socket.socket:
        """
        A new listening socket in the port's C{SO_REUSEPORT} group, for one
        worker.  The caller closes it once the worker has it.
        """
        sock = _tcpSocket(self.family, self.host, self.port, True)
        try:
            sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def stopAccepting(self) -> None:
        """
        Nothing to do: the supervisor never holds a listening socket.
        """

    def close(self) -> None:
        """
        Release the port reservation.
        """
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None


class SharedListener:
    """
    A listener whose single socket every worker adopts.

    @ivar description: the endpoint string it came from.
    @ivar family: the socket's address family.
    @ivar port: the TCP port number, or C{None} for other sockets.
    """

    mode = SHARED

    def __init__(self, description: str, sock: socket.socket, closer: Any = None):
        """
        @param sock: the listening socket (non-blocking, close-on-exec).
        @param closer: called by L{close} instead of closing C{sock} (for a
            socket owned by a Twisted port).
        """
        self.description = description
        self._socket: socket.socket | None = sock
        self._closer = closer
        self.family = sock.family
        self.port = sock.getsockname()[1] if sock.family != socket.AF_UNIX else None

    def socketForWorker(self) -> socket.socket:
        """
        The shared socket (not to be closed by the caller).
        """
        if self._socket is None:
            raise RuntimeError(f"listener {self.description} is closed")
        return self._socket

    def stopAccepting(self) -> None:
        """
        Close the supervisor's copy, so that once the workers have closed
        theirs new clients are refused instead of queued for nobody.
        """
        self.close()

    def close(self) -> None:
        """
        Close the supervisor's copy of the socket.
        """
        if self._socket is None:
            return
        sock, self._socket = self._socket, None
        if self._closer is not None:
            self._closer()
        else:
            sock.close()


class _NoConnections(Factory):
    """
    The factory of the supervisor's own (never read) listening port.
    """

    def buildProtocol(self, addr: Any) -> None:
        return None


def prepareListener(description: str, mode: str | None = None, reactor: Any = None):
    """
    Create the supervisor side of one listener.

    @param description: a Twisted server endpoint string.
    @param mode: L{REUSEPORT}, L{SHARED} or C{None} for the default
        (L{REUSEPORT} for C{tcp:}/C{tcp6:} endpoints, L{SHARED} otherwise).
    @param reactor: the reactor, for endpoints the supervisor must listen on
        through Twisted (L{SHARED} mode on non-TCP endpoints).
    @return: a C{Deferred} firing with a L{ReusePortListener} or
        L{SharedListener}.
    @raise ValueError: (through the C{Deferred}) for L{REUSEPORT} on an
        endpoint other than TCP, or an unknown mode.
    """
    from twisted.internet import endpoints
    from twisted.internet.defer import fail

    reactor = defaultReactor(reactor)
    if mode not in (None, REUSEPORT, SHARED):
        return fail(ValueError(f"unknown worker socket mode {mode!r}"))
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except Exception as e:
        return fail(ValueError(f"bad listen endpoint {description!r}: {e}"))
    tcp = isinstance(
        endpoint, endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint
    )
    if mode is None:
        mode = REUSEPORT if tcp else SHARED
    if tcp:
        # Public classes, private fields: the endpoint keeps what it parsed.
        host = endpoint._interface or (
            "::" if isinstance(endpoint, endpoints.TCP6ServerEndpoint) else "0.0.0.0"
        )
        port, backlog = endpoint._port, endpoint._backlog
        try:
            if mode == REUSEPORT:
                return succeed(ReusePortListener(description, host, port, backlog))
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = _tcpSocket(family, host, port, False)
            sock.listen(backlog)
        except OSError as e:
            return fail(e)
        return succeed(SharedListener(description, sock))
    if mode == REUSEPORT:
        return fail(
            ValueError(
                f"SO_REUSEPORT workers need a tcp: endpoint, not {description!r}"
            )
        )

    def listening(port: Any) -> SharedListener:
        port.stopReading()
        return SharedListener(description, port.socket, port.stopListening)

    return endpoint.listen(_NoConnections()).addCallback(listening)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, slot: _Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        slot = self.slot
        if childFD == slot.readyFD and b"ready" in data:
            slot.reported = True
            if slot.reopenWanted:
                # Asked to reopen its logs before it could take SIGUSR1.
                slot.reopenWanted = False
                self.supervisor._signal(slot, signal.SIGUSR1)
            ready = slot.ready
            if ready is not None and not ready.called:
                ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._workerEnded(self.slot, reason)


class _Slot:
    """
    One worker process of one generation, and the supervisor's copies of
    its C{SO_REUSEPORT} sockets (kept while it runs, so that on a reload
    the next generation's worker in this slot adopts the same sockets and
    nothing queued on them is lost when this one closes its copies).
    """

    def __init__(
        self, index: int, listeners: Sequence[Any], env: Mapping[str, str]
    ) -> None:
        self.index = index
        self.listeners = list(listeners)
        self.env = env
        self.sockets: dict[Any, socket.socket] = {}
        self.process: Any = None
        self.pid: int | None = None
        self.startedAt = 0.0
        self.failures = 0
        self.restartCall: Any = None
        self.starts = 0
        self.readyFD: int | None = None
        self.ready: Deferred[None] | None = None
        self.killCall: Any = None
        # It wrote "ready" (handles SIGUSR1); a SIGUSR1 is owed it.
        self.reported = False
        self.reopenWanted = False

    def closeSockets(self, keep: Sequence[socket.socket] = ()) -> None:
        """
        Close the supervisor's copies of this slot's sockets, but those in
        C{keep} (handed on to the next generation).
        """
        sockets, self.sockets = self.sockets, {}
        for sock in sockets.values():
            if not any(sock is k for k in keep):
                sock.close()


class WorkerSupervisor:
    """
    Runs and supervises N worker processes (see the module docstring).

    @ivar count: the number of workers.
    @ivar listeners: the prepared listeners (L{prepareListener}), passed to
        every worker in this order.
    @ivar running: C{True} between L{start} and L{stop}.
    """

    def __init__(
        self,
        workerArgv: Sequence[str],
        count: int,
        listeners: Sequence[ReusePortListener | SharedListener],
        reactor: Any = None,
        env: Mapping[str, str] | None = None,
        minUptime: float = 5.0,
        initialDelay: float = 0.5,
        maxDelay: float = 30.0,
        drainTimeout: float = 30.0,
        onWorkerExit: Any = None,
    ) -> None:
        """
        @param workerArgv: the worker's command line; C{workerArgv[0]} is the
            executable (e.g. C{[sys.executable, "-m", "twisted",
            "splice-proxy", ...]}).
        @param count: how many workers, at least 1.
        @param listeners: see L{listeners}.
        @param reactor: an C{IReactorProcess} and C{IReactorTime}; default
            the global reactor.
        @param env: the workers' base environment (default: this process's).
        @param minUptime: a worker that dies sooner is in a crash loop.
        @param initialDelay: first restart delay of a crash loop, seconds.
        @param maxDelay: the longest restart delay.
        @param drainTimeout: seconds between C{SIGTERM} and C{SIGKILL} in
            L{stop}.
        @param onWorkerExit: called with C{(index, pid, reason)} after each
            worker exit (e.g. L{splicetx._ops.metrics.markWorkerDead}).
        @raise ValueError: for C{count < 1}.
        """
        if count < 1:
            raise ValueError(f"need at least one worker, not {count!r}")
        self._reactor = defaultReactor(reactor)
        self.workerArgv = list(workerArgv)
        self.count = count
        self.listeners = list(listeners)
        self.env = dict(os.environ if env is None else env)
        self.minUptime = minUptime
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.drainTimeout = drainTimeout
        self.onWorkerExit = onWorkerExit
        self.running = False
        self._slots = [_Slot(i, self.listeners, self.env) for i in range(count)]
        self._pending: list[_Slot] | None = None
        self._retiring: list[_Slot] = []
        self._stopping: Deferred[None] | None = None
        self._waiters: dict[_Slot, Deferred[None]] = {}

    @property
    def pids(self) -> dict[int, int]:
        """
        The live workers' process ids by slot.
        """
        return {s.index: s.pid for s in self._slots if s.pid is not None}

    def start(self) -> None:
        """
        Spawn every worker.
        """
        self.running = True
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restartCall = None
        if not self.running:
            return
        sockets: list[socket.socket] = []
        try:
            for listener in slot.listeners:
                if listener.mode != REUSEPORT:
                    sockets.append(listener.socketForWorker())
                    continue
                sock = slot.sockets.get(listener)
                if sock is None:
                    sock = slot.sockets[listener] = listener.socketForWorker()
                sockets.append(sock)
        except (OSError, RuntimeError) as e:
            slot.closeSockets()
            _log.failure(
                "could not create sockets for worker {index}", index=slot.index
            )
            self._spawnFailed(slot, e)
            return
        childFDs: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        entries = []
        for i, sock in enumerate(sockets):
            childFD = 3 + i
            childFDs[childFD] = sock.fileno()
            entries.append(f"{childFD}:{familyName(sock.family)}")
        slot.readyFD = 3 + len(sockets)
        childFDs[slot.readyFD] = "r"
        slot.reported = slot.reopenWanted = False
        env = dict(slot.env)
        env[ENV_FDS] = ",".join(entries)
        env[ENV_INDEX] = str(slot.index)
        env[ENV_SUPERVISOR] = str(os.getpid())
        env[ENV_READY] = str(slot.readyFD)
        try:
            process = self._reactor.spawnProcess(
                _WorkerProtocol(self, slot),
                self.workerArgv[0],
                self.workerArgv,
                env=env,
                childFDs=childFDs,
            )
        except Exception as e:
            _log.failure("could not start worker {index}", index=slot.index)
            slot.closeSockets()
            self._spawnFailed(slot, e)
            return
        slot.process = process
        slot.pid = process.pid
        slot.startedAt = self._reactor.seconds()
        slot.starts += 1
        _log.info(
            "worker {index} started, pid {pid}", index=slot.index, pid=process.pid
        )

    def _spawnFailed(self, slot: _Slot, error: Exception) -> None:
        if slot.ready is not None:
            # A worker of a new generation: the reload fails.
            if not slot.ready.called:
                slot.ready.errback(error)
            return
        self._scheduleRestart(slot, crashed=True)

    def _scheduleRestart(self, slot: _Slot, crashed: bool) -> None:
        if crashed:
            slot.failures += 1
            delay = min(self.maxDelay, self.initialDelay * 2 ** (slot.failures - 1))
        else:
            slot.failures = 0
            delay = 0.0
        if delay:
            _log.warn(
                "worker {index} crash loop ({n} quick exits): restart in {delay} s",
                index=slot.index,
                n=slot.failures,
                delay=delay,
            )
        slot.restartCall = self._reactor.callLater(delay, self._spawn, slot)

    def _workerEnded(self, slot: _Slot, reason: Failure) -> None:
        pid = slot.pid
        slot.process = None
        slot.pid = None
        status = getattr(reason.value, "status", None)
        signal = getattr(reason.value, "signal", None)
        exitCode = getattr(reason.value, "exitCode", None)
        if self.onWorkerExit is not None:
            try:
                self.onWorkerExit(slot.index, pid, reason)
            except Exception:
                _log.failure("onWorkerExit failed")
        if slot.killCall is not None and slot.killCall.active():
            slot.killCall.cancel()
        slot.killCall = None
        waiter = self._waiters.pop(slot, None)
        if slot in self._retiring:
            self._retiring.remove(slot)
            slot.closeSockets()
            _log.info(
                "worker {index} (pid {pid}) of the previous generation stopped: "
                "exit code {code}, signal {sig}",
                index=slot.index,
                pid=pid,
                code=exitCode,
                sig=signal,
            )
            if waiter is not None:
                waiter.callback(None)
            return
        if self._pending is not None and slot in self._pending:
            # A worker of a new generation died before they all were ready:
            # the reload fails (see reload).
            error = RuntimeError(
                f"worker {slot.index} of the new generation exited before "
                f"it was ready (exit code {exitCode}, signal {signal})"
            )
            for each in [slot, *self._pending]:
                if each.ready is not None and not each.ready.called:
                    each.ready.errback(error)
                    break
            return
        if waiter is not None:
            _log.info(
                "worker {index} (pid {pid}) stopped: exit code {code}, signal {sig}",
                index=slot.index,
                pid=pid,
                code=exitCode,
                sig=signal,
            )
            waiter.callback(None)
            return
        if not self.running:
            return
        # Its sockets go with it (what was queued on them is reset): a new
        # worker gets new ones, so nothing waits on a socket nobody serves
        # during a restart delay.
        slot.closeSockets()
        uptime = self._reactor.seconds() - slot.startedAt
        _log.warn(
            "worker {index} (pid {pid}) exited after {uptime:.1f} s "
            "(exit code {code}, signal {sig}, status {status}); restarting",
            index=slot.index,
            pid=pid,
            uptime=uptime,
            code=exitCode,
            sig=signal,
            status=status,
        )
        self._scheduleRestart(slot, crashed=uptime < self.minUptime)

    def stop(self) -> Deferred[None]:
        """
        Stop every worker: C{SIGTERM} (drain), C{SIGKILL} after
        C{drainTimeout}, then close the listeners.

        @return: a C{Deferred} firing when every worker is gone.  Calling
            again returns a C{Deferred} for the same end.
        """
        if self._stopping is not None:
            d: Deferred[None] = Deferred()

            def relay(result: object) -> object:
                d.callback(None)
                return result

            self._stopping.addBoth(relay)
            return d
        for slot in self._pending or ():
            # A reload under way fails: its workers join the retiring ones.
            if slot.ready is not None and not slot.ready.called:
                slot.ready.errback(RuntimeError("the supervisor is stopping"))
        self.running = False
        for listener in self.listeners:
            listener.stopAccepting()
        waits = []
        for slot in self._allSlots():
            # Once the workers close theirs, new clients are refused.
            slot.closeSockets()
            if slot.restartCall is not None and slot.restartCall.active():
                slot.restartCall.cancel()
            slot.restartCall = None
            if slot.process is None:
                continue
            waiter: Deferred[None] = Deferred()
            self._waiters[slot] = waiter
            waits.append(waiter)
            if slot not in self._retiring:
                # (A second SIGTERM would cut a retiring worker's drain short.)
                self._signal(slot, "TERM")
        killer = self._reactor.callLater(self.drainTimeout, self._killAll)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()
            for listener in self.listeners:
                listener.close()

        self._stopping = DeferredList(waits).addCallback(finished)
        return self._stopping

    def _allSlots(self) -> list[_Slot]:
        return [*self._slots, *(self._pending or ()), *self._retiring]

    def _killAll(self) -> None:
        for slot in self._allSlots():
            if slot.process is not None:
                _log.warn(
                    "worker {index} (pid {pid}) still running after the drain "
                    "timeout: killing it",
                    index=slot.index,
                    pid=slot.pid,
                )
                self._signal(slot, "KILL")

    def reopenLogs(self) -> int:
        """
        Send every worker SIGUSR1 (reopen its log files); one that has not
        reported ready yet, and might not handle it, gets it once it does.

        @return: how many workers were signalled now.
        """
        sent = 0
        for slot in self._allSlots():
            if slot.process is not None and slot.reported:
                self._signal(slot, signal.SIGUSR1)
                sent += 1
            elif slot.process is not None:
                slot.reopenWanted = True
        return sent

    def _signal(self, slot: _Slot, name: str | int) -> None:
        try:
            slot.process.signalProcess(name)
        except ProcessExitedAlready:
            pass
        except OSError as e:  # pragma: no cover
            if e.errno != errno.ESRCH:
                raise

    # -- reload ---------------------------------------------------------------

    def reload(
        self,
        listeners: Sequence[ReusePortListener | SharedListener],
        readyTimeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> Deferred[None]:
        """
        Replace every worker with a new generation serving C{listeners}
        (the same command line, which reads the configuration again), with
        no connection refused or reset: start the new workers on the same
        sockets (each new worker gets the C{SO_REUSEPORT} sockets of the
        worker it replaces, for the listeners kept), wait until every one
        reported ready (see L{splicetx._app.worker.reportReady}), then send
        C{SIGTERM} to the previous generation, which drains (C{SIGKILL}
        after C{drainTimeout}).

        When a new worker exits before it is ready, or not all are ready
        within C{readyTimeout} seconds, the new generation is stopped and
        the previous one carries on.

        @param listeners: the listeners of the new generation, in the order
            its workers expect them; those also in L{listeners} keep their
            sockets.  The caller closes the listeners dropped, after
            success.
        @param readyTimeout: seconds the new workers have to be ready.
        @param env: the new generation's base environment (default: the
            current one); it becomes L{env} on success.
        @return: a C{Deferred} firing once the new generation serves (the
            previous one may still be draining), or failing with the reason
            it could not start.
        """
        if not self.running or self._pending is not None:
            return fail(RuntimeError("a reload or a stop is in progress"))
        pending = []
        for old in self._slots:
            new = _Slot(old.index, listeners, self.env if env is None else dict(env))
            new.sockets = {k: v for k, v in old.sockets.items() if k in listeners}
            new.ready = Deferred()
            pending.append(new)
        self._pending = pending
        readies = [slot.ready for slot in pending if slot.ready is not None]
        for slot in pending:
            self._spawn(slot)
        timer = self._reactor.callLater(readyTimeout, self._notReady, pending)
        d = gatherResults(readies, consumeErrors=True)

        def ready(_: object) -> None:
            if timer.active():
                timer.cancel()
            self._promote(pending, listeners)

        def failed(f: Failure) -> Failure:
            if timer.active():
                timer.cancel()
            self._abandon(pending)
            reason = f.value
            first = getattr(reason, "subFailure", None)
            return first if first is not None else f

        return d.addCallbacks(ready, failed)

    def _notReady(self, pending: list[_Slot]) -> None:
        for slot in pending:
            if slot.ready is not None and not slot.ready.called:
                slot.ready.errback(
                    RuntimeError(
                        f"worker {slot.index} of the new generation is not ready"
                    )
                )

    def _retire(self, slot: _Slot, keep: Sequence[socket.socket]) -> None:
        if slot.restartCall is not None and slot.restartCall.active():
            slot.restartCall.cancel()
        slot.restartCall = None
        slot.closeSockets(keep)
        if slot.process is None:
            return
        self._retiring.append(slot)
        self._signal(slot, "TERM")
        slot.killCall = self._reactor.callLater(
            self.drainTimeout, self._killRetired, slot
        )

    def _killRetired(self, slot: _Slot) -> None:
        slot.killCall = None
        if slot.process is not None:
            _log.warn(
                "worker {index} (pid {pid}) of the previous generation still "
                "running after the drain timeout: killing it",
                index=slot.index,
                pid=slot.pid,
            )
            self._signal(slot, "KILL")

    def _promote(self, pending: list[_Slot], listeners: Sequence[Any]) -> None:
        old, self._slots = self._slots, pending
        self._pending = None
        self.listeners = list(listeners)
        self.env = dict(pending[0].env)
        for before, after in zip(old, pending, strict=True):
            after.ready = None
            self._retire(before, list(after.sockets.values()))
        _log.info(
            "new generation of workers ready: {pids}",
            pids=sorted(s.pid for s in pending if s.pid is not None),
        )

    def _abandon(self, pending: list[_Slot]) -> None:
        self._pending = None
        for before, after in zip(self._slots, pending, strict=True):
            after.ready = None
            self._retire(after, list(before.sockets.values()))
