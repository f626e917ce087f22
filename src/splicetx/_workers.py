# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: a supervisor process that runs N worker processes serving the
same listening sockets, restarts a worker that dies, and passes C{SIGTERM}
on for a drain.

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
        stops sending it new connections at once; the supervisor holds no
        listening socket (only a bound, non-listening one that keeps the
        port reserved), so no connection waits in a queue nobody serves.
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
<splicetx._supervisor.SpliceProxySupervisorService>} under C{twist}) sends
C{SIGTERM} to every worker, waits up to C{drainTimeout} seconds for them to
finish their connections, sends C{SIGKILL} to the rest, and fires when all
are gone.

Workers learn their sockets from the environment: see L{splicetx._worker}.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._reactor import defaultReactor
from splicetx._worker import ENV_FDS, ENV_INDEX, ENV_SUPERVISOR, familyName

__all__ = [
    "REUSEPORT",
    "SHARED",
    "ReusePortListener",
    "SharedListener",
    "WorkerSupervisor",
    "prepareListener",
    "defaultWorkerCount",
]

#: One C{SO_REUSEPORT} listening socket per worker.
REUSEPORT = "reuseport"
#: One listening socket adopted by every worker.
SHARED = "shared"

_log = Logger()


def defaultWorkerCount() -> int:
    """
    The number of CPUs this process may run on (a sensible C{--workers}).
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


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

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._workerEnded(self.slot, reason)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.pid: int | None = None
        self.startedAt = 0.0
        self.failures = 0
        self.restartCall: Any = None
        self.starts = 0


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
            worker exit (e.g. L{splicetx._metrics.markWorkerDead}).
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
        self._slots = [_Slot(i) for i in range(count)]
        self._stopping: Deferred[None] | None = None
        self._waiters: dict[int, Deferred[None]] = {}

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
            for listener in self.listeners:
                sockets.append(listener.socketForWorker())
        except OSError:
            for listener, sock in zip(self.listeners, sockets, strict=False):
                if listener.mode == REUSEPORT:
                    sock.close()
            _log.failure(
                "could not create sockets for worker {index}", index=slot.index
            )
            self._scheduleRestart(slot, crashed=True)
            return
        childFDs: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        entries = []
        for i, sock in enumerate(sockets):
            childFD = 3 + i
            childFDs[childFD] = sock.fileno()
            entries.append(f"{childFD}:{familyName(sock.family)}")
        env = dict(self.env)
        env[ENV_FDS] = ",".join(entries)
        env[ENV_INDEX] = str(slot.index)
        env[ENV_SUPERVISOR] = str(os.getpid())
        try:
            process = self._reactor.spawnProcess(
                _WorkerProtocol(self, slot),
                self.workerArgv[0],
                self.workerArgv,
                env=env,
                childFDs=childFDs,
            )
        except Exception:
            _log.failure("could not start worker {index}", index=slot.index)
            self._scheduleRestart(slot, crashed=True)
            return
        finally:
            for listener, sock in zip(self.listeners, sockets, strict=True):
                if listener.mode == REUSEPORT:
                    sock.close()
        slot.process = process
        slot.pid = process.pid
        slot.startedAt = self._reactor.seconds()
        slot.starts += 1
        _log.info(
            "worker {index} started, pid {pid}", index=slot.index, pid=process.pid
        )

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
        waiter = self._waiters.pop(slot.index, None)
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
        self.running = False
        for listener in self.listeners:
            listener.stopAccepting()
        waits = []
        for slot in self._slots:
            if slot.restartCall is not None and slot.restartCall.active():
                slot.restartCall.cancel()
            slot.restartCall = None
            if slot.process is None:
                continue
            waiter: Deferred[None] = Deferred()
            self._waiters[slot.index] = waiter
            waits.append(waiter)
            self._signal(slot, "TERM")
        killer = self._reactor.callLater(self.drainTimeout, self._killAll)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()
            for listener in self.listeners:
                listener.close()

        self._stopping = DeferredList(waits).addCallback(finished)
        return self._stopping

    def _killAll(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                _log.warn(
                    "worker {index} (pid {pid}) still running after the drain "
                    "timeout: killing it",
                    index=slot.index,
                    pid=slot.pid,
                )
                self._signal(slot, "KILL")

    def _signal(self, slot: _Slot, name: str) -> None:
        try:
            slot.process.signalProcess(name)
        except ProcessExitedAlready:
            pass
        except OSError as e:  # pragma: no cover
            if e.errno != errno.ESRCH:
                raise
