"""
Tests for L{splicetx._app.processes} (the supervisor) and L{splicetx._app.worker} (the
worker side), with a stand-in worker that answers each connection with its
pid, so they do not depend on the CLI.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.processes import (
    REUSEPORT,
    SHARED,
    ReusePortListener,
    WorkerSupervisor,
    prepareListener,
)
from splicetx._app.worker import (
    ENV_FDS,
    ENV_INDEX,
    ENV_READY,
    ENV_SUPERVISOR,
    inheritedListeners,
    isWorker,
    workerIndex,
)

# ---------------------------------------------------------------------------
# Unit tests with a fake process reactor


class FakeProcess:
    """
    A spawned process that records signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)


class FakeReactor(Clock):
    """
    A clock that records C{spawnProcess} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple] = []
        self.nextPid = 1000

    def spawnProcess(self, proto, executable, args, env, childFDs):
        self.nextPid += 1
        process = FakeProcess(self.nextPid)
        self.spawned.append(
            (proto, executable, list(args), dict(env), dict(childFDs), process)
        )
        return process

    def end(self, index: int, code: int | None = 0, sig: int | None = None) -> None:
        """
        Make the C{index}-th spawned process exit.
        """
        proto, *_, process = self.spawned[index]
        process.ended = True
        if code == 0 and sig is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, sig))
        proto.processEnded(reason)


class SupervisorUnitTests(SynchronousTestCase):
    """
    L{WorkerSupervisor} spawning, restarting with backoff, and stopping,
    driven by a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.listener = ReusePortListener("tcp:0:interface=127.0.0.1", "127.0.0.1", 0)
        self.addCleanup(self.listener.close)
        self.exits: list[tuple] = []
        self.sup = WorkerSupervisor(
            ["/usr/bin/python3", "-c", "pass"],
            2,
            [self.listener],
            reactor=self.reactor,
            env={"KEEP": "1"},
            minUptime=5.0,
            initialDelay=0.5,
            maxDelay=4.0,
            drainTimeout=10.0,
            onWorkerExit=lambda *a: self.exits.append(a),
        )

    def test_spawnEnvironment(self) -> None:
        """
        Each worker gets its socket as fd 3, the environment variables
        describing it, and the base environment.
        """
        self.sup.start()
        self.assertEqual(len(self.reactor.spawned), 2)
        for i, (_, exe, args, env, fds, _p) in enumerate(self.reactor.spawned):
            self.assertEqual(exe, "/usr/bin/python3")
            self.assertEqual(args, ["/usr/bin/python3", "-c", "pass"])
            self.assertEqual(env[ENV_FDS], "3:inet")
            self.assertEqual(env[ENV_INDEX], str(i))
            self.assertEqual(env[ENV_SUPERVISOR], str(os.getpid()))
            self.assertEqual(env["KEEP"], "1")
            self.assertEqual(sorted(fds), [0, 1, 2, 3, 4])
            self.assertEqual((fds[4], env[ENV_READY]), ("r", "4"))
        self.assertEqual(self.sup.pids, {0: 1001, 1: 1002})

    def test_restartAfterLongRun(self) -> None:
        """
        A worker that ran longer than C{minUptime} is restarted at once, in
        its slot.
        """
        self.sup.start()
        self.reactor.advance(60)
        self.reactor.end(0, code=1)
        self.assertEqual(self.exits[0][:2], (0, 1001))
        self.assertEqual(self.sup.pids, {1: 1002})
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.spawned[2][3][ENV_INDEX], "0")
        self.assertEqual(self.sup.pids, {0: 1003, 1: 1002})

    def test_crashLoopBackoff(self) -> None:
        """
        Quick successive deaths double the restart delay up to C{maxDelay};
        a long run resets it.
        """
        self.sup.start()
        delays = []
        for _ in range(6):
            index = len(self.reactor.spawned) - 1 if delays else 0
            before = self.reactor.seconds()
            self.reactor.end(index, sig=signal.SIGSEGV)
            n = len(self.reactor.spawned)
            while len(self.reactor.spawned) == n:
                self.reactor.advance(0.25)
            delays.append(self.reactor.seconds() - before)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        self.reactor.advance(100)
        self.reactor.end(len(self.reactor.spawned) - 1, code=1)
        n = len(self.reactor.spawned)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), n + 1)

    def test_stop(self) -> None:
        """
        L{WorkerSupervisor.stop} sends SIGTERM to every worker, restarts
        nothing, and fires once all have exited.
        """
        self.sup.start()
        d = self.sup.stop()
        self.assertNoResult(d)
        self.assertEqual(
            [p.signals for *_, p in self.reactor.spawned], [["TERM"], ["TERM"]]
        )
        self.reactor.end(0)
        self.assertNoResult(d)
        self.reactor.end(1, code=1)
        self.successResultOf(d)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(len(self.exits), 2)
        self.assertIsNone(self.listener._reservation)

    def test_stopKillsAfterDrainTimeout(self) -> None:
        """
        A worker still running C{drainTimeout} after SIGTERM gets SIGKILL.
        """
        self.sup.start()
        d = self.sup.stop()
        self.reactor.end(0)
        self.reactor.advance(9.9)
        self.assertEqual(self.reactor.spawned[1][5].signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.spawned[1][5].signals, ["TERM", "KILL"])
        self.assertEqual(self.reactor.spawned[0][5].signals, ["TERM"])
        self.reactor.end(1, sig=signal.SIGKILL)
        self.successResultOf(d)

    def test_stopCancelsPendingRestart(self) -> None:
        """
        A restart waiting out its backoff is cancelled by a stop.
        """
        self.sup.start()
        self.reactor.end(0, code=1)
        d = self.sup.stop()
        self.reactor.end(1)
        self.successResultOf(d)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_badCount(self) -> None:
        """
        Zero workers is refused.
        """
        self.assertRaises(ValueError, WorkerSupervisor, ["x"], 0, [])


class WorkerEnvironmentTests(SynchronousTestCase):
    """
    The worker side reads what the supervisor passed.
    """

    def test_inherited(self) -> None:
        """
        C{SPLICETX_WORKER_FDS} is parsed into (fd, family) pairs.
        """
        env = {ENV_FDS: "3:inet,4:inet6,5:unix", ENV_INDEX: "1"}
        self.assertTrue(isWorker(env))
        self.assertEqual(workerIndex(env), 1)
        self.assertEqual(
            inheritedListeners(env),
            [(3, socket.AF_INET), (4, socket.AF_INET6), (5, socket.AF_UNIX)],
        )
        self.assertFalse(isWorker({}))
        self.assertEqual(inheritedListeners({}), [])
        self.assertRaises(ValueError, inheritedListeners, {ENV_FDS: "3:ipx"})
        self.assertRaises(ValueError, inheritedListeners, {ENV_FDS: "x:inet"})


class PrepareListenerTests(SynchronousTestCase):
    """
    L{prepareListener} picks and builds the socket model.
    """

    def test_tcpDefaultsToReusePort(self) -> None:
        """
        A tcp endpoint gets SO_REUSEPORT sockets on the same port, each
        listening on its own.
        """
        listener = self.successResultOf(
            prepareListener("tcp:0:interface=127.0.0.1", reactor=Clock())
        )
        self.addCleanup(listener.close)
        self.assertEqual(listener.mode, REUSEPORT)
        a, b = listener.socketForWorker(), listener.socketForWorker()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertNotEqual(a.fileno(), b.fileno())
        self.assertEqual(a.getsockname(), b.getsockname())
        self.assertEqual(a.getsockname()[1], listener.port)
        self.assertEqual(a.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)
        self.assertFalse(a.get_inheritable())

    def test_ipv6(self) -> None:
        """
        An escaped IPv6 interface gives an AF_INET6 listener.
        """
        listener = self.successResultOf(
            prepareListener("tcp:0:interface=\\:\\:1", reactor=Clock())
        )
        self.addCleanup(listener.close)
        self.assertEqual(listener.family, socket.AF_INET6)

    def test_shared(self) -> None:
        """
        SHARED mode gives one listening socket for every worker.
        """
        listener = self.successResultOf(
            prepareListener("tcp:0:interface=127.0.0.1", SHARED, reactor=Clock())
        )
        self.addCleanup(listener.close)
        self.assertIs(listener.socketForWorker(), listener.socketForWorker())
        self.assertEqual(
            listener.socketForWorker().getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            ),
            1,
        )

    def test_errors(self) -> None:
        """
        Unknown modes, REUSEPORT on non-TCP endpoints and busy ports fail.
        """
        self.failureResultOf(prepareListener("tcp:0", "fork", Clock()), ValueError)
        self.failureResultOf(
            prepareListener("unix:/tmp/x", REUSEPORT, Clock()), ValueError
        )
        self.failureResultOf(prepareListener("nonsense:1", None, Clock()), ValueError)
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        self.failureResultOf(
            prepareListener(f"tcp:{port}:interface=127.0.0.1", None, Clock()), OSError
        )


# ---------------------------------------------------------------------------
# Real processes: a supervisor with stand-in workers, over loopback

STANDIN_WORKER = textwrap.dedent(
    """
    import os, sys
    from twisted.internet import reactor, protocol
    from twisted.internet.defer import gatherResults
    from splicetx._app.worker import adoptListeners, watchSupervisor, workerIndex

    class Pid(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"%d %d\\n" % (os.getpid(), workerIndex()))
            self.transport.loseConnection()

    if os.environ.get("STANDIN_CRASH"):
        sys.exit(3)
    ports = adoptListeners([protocol.Factory.forProtocol(Pid)], reactor)
    watchSupervisor(reactor, 0.2)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: gatherResults([p.stopListening() for p in ports])
    )
    reactor.run()
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from splicetx._app.processes import WorkerSupervisor, prepareListener

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    count, mode, listen, worker = sys.argv[1:5]
    count = int(count)
    running = []

    def prepared(listener):
        supervisor = WorkerSupervisor(
            [sys.executable, "-c", worker], count, [listener], reactor,
            minUptime=2.0, initialDelay=0.2, maxDelay=1.0, drainTimeout=10.0,
        )
        supervisor.start()
        running.append(supervisor)
        print("READY", listener.port, flush=True)

    def start():
        mode_ = None if mode == "default" else mode
        prepareListener(listen, mode_, reactor).addCallback(prepared)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: running[0].stop() if running else None
    )
    reactor.run()
    """
)

DEADLINE = 30.0


def children(ppid: int) -> set[int]:
    """
    The live (not zombie) child processes of C{ppid}, from /proc.
    """
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == ppid and fields[0] != "Z":
            found.add(int(name))
    return found


def alive(pid: int) -> bool:
    """
    Whether a process exists (zombies included).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ask(port: int) -> tuple[int, int]:
    """
    Connect, read the worker's "pid index" answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    pid, index = data.split()
    return int(pid), int(index)


class SupervisorProcessTests(SynchronousTestCase):
    """
    A real supervisor process with stand-in workers: spread, restart,
    SIGTERM.
    """

    def startSupervisor(self, count: int = 2, mode: str = "default", env=None):
        """
        Start the supervisor, wait for its READY line and return (process,
        port).  Cleanup kills it and its workers.
        """
        self.errors = tempfile.TemporaryFile()
        self.addCleanup(self.errors.close)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SUPERVISOR,
                str(count),
                mode,
                "tcp:0:interface=127.0.0.1",
                STANDIN_WORKER,
            ],
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env={**os.environ, **(env or {})},
        )
        seen: set[int] = set()

        def cleanup():
            seen.update(children(proc.pid))
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for pid in seen:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            proc.stdout.close()

        self.addCleanup(cleanup)
        self._seen = seen
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        sel.register(proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            if not sel.select(max(0.0, end - time.monotonic())):
                self.fail(f"no READY line; stderr: {self.stderr()!r}")
            chunk = os.read(proc.stdout.fileno(), 100)
            if not chunk:
                self.fail(f"supervisor exited: {proc.wait(5)} {self.stderr()!r}")
            line += chunk
        word, port = line.split()
        self.assertEqual(word, b"READY")
        return proc, int(port)

    def stderr(self) -> bytes:
        """
        What the supervisor and its workers logged so far.
        """
        self.errors.seek(0)
        return self.errors.read()

    def waitFor(self, predicate, what: str):
        """
        Poll C{predicate} until true or fail after L{DEADLINE}.
        """
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            result = predicate()
            if result:
                return result
            time.sleep(0.05)
        self.fail(f"timed out waiting for {what}")

    def test_spreadRestartAndTerm(self) -> None:
        """
        Connections are served by both workers (different pids); a worker
        killed with SIGKILL is replaced in its slot; SIGTERM to the
        supervisor stops every worker and the supervisor exits 0, after
        which the port refuses connections.
        """
        proc, port = self.startSupervisor(2)
        workers = self.waitFor(
            lambda: len(children(proc.pid)) == 2 and children(proc.pid), "2 workers"
        )
        self._seen.update(workers)
        answers = [ask(port) for _ in range(40)]
        pids = {pid for pid, _ in answers}
        self.assertEqual(pids, workers)
        self.assertEqual({index for _, index in answers}, {0, 1})

        victim, victimIndex = answers[0]
        os.kill(victim, signal.SIGKILL)
        self.waitFor(lambda: not alive(victim), "the killed worker to be reaped")
        replaced = self.waitFor(
            lambda: (
                len(children(proc.pid) - workers) == 1 and children(proc.pid) - workers
            ),
            "a replacement worker",
        )
        self._seen.update(replaced)
        (newPid,) = replaced

        def newAnswers():
            got = ask(port)
            return got if got[0] == newPid else None

        self.assertEqual(
            self.waitFor(newAnswers, "the new worker to answer"), (newPid, victimIndex)
        )

        current = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(DEADLINE), 0)
        for pid in current:
            self.assertFalse(alive(pid), pid)
        self.assertRaises(ConnectionRefusedError, ask, port)
        self.assertIn(b"restarting", self.stderr())

    def test_sharedSocket(self) -> None:
        """
        In SHARED mode the workers adopt one socket and answer on it;
        SIGINT stops everything too.
        """
        proc, port = self.startSupervisor(2, SHARED)
        workers = self.waitFor(
            lambda: len(children(proc.pid)) == 2 and children(proc.pid), "2 workers"
        )
        self._seen.update(workers)
        pids = {ask(port)[0] for _ in range(10)}
        self.assertTrue(pids <= workers)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(DEADLINE), 0)
        for pid in workers:
            self.assertFalse(alive(pid))
        self.assertRaises(ConnectionRefusedError, ask, port)

    def test_crashLoopStopsCleanly(self) -> None:
        """
        Workers that exit at once are restarted after doubling delays up to
        the cap (not in a tight loop), and SIGTERM still ends the supervisor.
        """
        proc, port = self.startSupervisor(1, env={"STANDIN_CRASH": "1"})
        self.waitFor(lambda: b"restart in 1.0 s" in self.stderr(), "the backoff cap")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(DEADLINE), 0)
        delays = re.findall(rb"restart in ([0-9.]+) s", self.stderr())
        self.assertEqual(delays[:4], [b"0.2", b"0.4", b"0.8", b"1.0"])
        self.assertEqual(children(proc.pid), set())
