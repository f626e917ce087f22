# -*- test-case-name: tests.test_reload -*-
"""
Subprocess tests of SIGHUP reloads of C{twist splice-proxy --config}
(L{splicetx._app.reload}), alone and with C{--workers}, over 127.0.0.1 only:
under a continuous connect/echo/close load, with a live connection, with
a bad file, and with listeners added and removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx._app.reload import ConfigChanges, compareConfigs, reloadedConfig
from splicetx._app.worker import ENV_READY
from splicetx._config.model import Forward, ProxyConfig
from splicetx._config.values import ConfigError
from splicetx._proxy.access import AccessControl

from . import test_workers
from ._cli_support import LOOPBACK, ProxyProcess
from .test_ops_cli import freePorts

#: Seconds any one wait may take before a test fails (bounds, not limits
#: that are asserted).
DEADLINE = 60.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        try:
            sock.sendall(self.server.tag)  # type: ignore[attr-defined]
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def echoBackend(test: SynchronousTestCase, tag: bytes) -> int:
    """
    Start a loopback echo server that first sends C{tag}, then echoes to the
    end; return its port (stopped in cleanup).
    """
    server = _Server((LOOPBACK, 0), _Echo)
    server.tag = tag  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    test.addCleanup(stop)
    return server.server_address[1]


def exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """
    Connect, send C{data}, half-close and read to the end.

    @raise OSError: when the connection fails.
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def readExactly(sock: socket.socket, n: int) -> bytes:
    """
    Read C{n} bytes (fewer if the connection ends first).
    """
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


class Churn:
    """
    A thread that connects, echoes a line and closes, again and again,
    counting the exchanges that failed and the backend tags it saw.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.tags: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Churn:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            line = b"ping %d\n" % n
            try:
                answer = exchange(self.port, line)
            except OSError as e:
                self.failures.append(f"#{n}: {e!r}")
                continue
            if not answer.endswith(line) or len(answer) != len(line) + 1:
                self.failures.append(f"#{n}: answer {answer!r}")
                continue
            self.ok += 1
            self.tags.append(answer[:1])
            time.sleep(0.002)

    def waitForTag(self, tag: bytes) -> None:
        """
        Wait until an exchange answered with C{tag} after this call.
        """
        start = len(self.tags)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            if tag in self.tags[start:]:
                return
            time.sleep(0.02)
        raise AssertionError(f"no answer tagged {tag!r}; last {self.tags[-5:]!r}")

    def waitForMore(self, n: int) -> None:
        """
        Wait until C{n} more exchanges succeeded (or failed).
        """
        start = self.ok + len(self.failures)
        end = time.monotonic() + DEADLINE
        while self.ok + len(self.failures) < start + n:
            if time.monotonic() > end:
                raise AssertionError(f"the churn client made no progress: {self.ok}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)


class _ReloadTestCase(SynchronousTestCase):
    """
    Starts C{splice-proxy --config FILE} processes killed in cleanup.
    """

    workers: tuple[str, ...] = ()

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "rinetd.conf")

    def writeConfig(self, *lines: str) -> None:
        """
        Replace the configuration file (atomically, like an editor would).
        """
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def start(self) -> ProxyProcess:
        proxy = ProxyProcess(["--config", self.path, *self.workers])
        self.addCleanup(proxy.kill)
        proxy.waitForEvent(
            lambda e: e.get("splicetxEvent") in ("ready", "supervisor-ready"),
            DEADLINE,
        )
        return proxy

    def reload(self, proxy: ProxyProcess) -> dict[str, Any]:
        """
        Send SIGHUP and return the next C{reload} event.
        """
        seen = len(self.reloads(proxy))
        proxy.signal(signal.SIGHUP)
        proxy.waitForEvent(lambda e: len(self.reloads(proxy)) > seen, DEADLINE)
        return self.reloads(proxy)[seen]

    def reloads(self, proxy: ProxyProcess) -> list[dict[str, Any]]:
        return [e for e in list(proxy.events) if e.get("splicetxEvent") == "reload"]

    def waitServed(self, port: int, tag: bytes) -> None:
        """
        Wait until a connection to C{port} is answered by the backend
        tagged C{tag}.
        """
        end = time.monotonic() + DEADLINE
        answer = b""
        while time.monotonic() < end:
            try:
                answer = exchange(port, b"x")
            except OSError:
                answer = b""
            if answer == tag + b"x":
                return
            time.sleep(0.05)
        raise AssertionError(f"port {port} answered {answer!r}, not {tag!r}")

    def assertRefused(self, port: int) -> None:
        """
        Connections to C{port} are refused.
        """
        with self.assertRaises(ConnectionRefusedError):
            exchange(port, b"x")

    def churnAcrossReloads(self) -> None:
        """
        Three reloads that switch the upstream back and forth under a churn
        load: every exchange succeeds and each reload takes effect.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        (port,) = freePorts(1)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {a}")
        proxy = self.start()
        self.waitServed(port, b"A")
        churn = Churn(port).start()
        self.addCleanup(churn.stop)
        for backend, tag in [(b, b"B"), (a, b"A"), (b, b"B")]:
            churn.waitForMore(50)
            self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {backend}")
            event = self.reload(proxy)
            self.assertEqual((event.get("changed"), event.get("error")), (1, None))
            churn.waitForTag(tag)
        churn.waitForMore(50)
        churn.stop()
        self.assertEqual(churn.failures, [])
        self.assertGreater(churn.ok, 0)


class ReloadTests(_ReloadTestCase):
    """
    SIGHUP reloads of a single C{splice-proxy} process.
    """

    def test_churn(self) -> None:
        """
        A connect/echo/close load sees no failure across three reloads, and
        new connections go to the new upstream.
        """
        self.churnAcrossReloads()

    def test_liveConnectionSurvives(self) -> None:
        """
        A connection open across a reload that changes its upstream, and
        one across a reload that removes its listener, carry on with their
        old upstream; new connections follow the new file.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        p1, p2 = freePorts(2)
        self.writeConfig(
            f"{LOOPBACK} {p1} {LOOPBACK} {a}", f"{LOOPBACK} {p2} {LOOPBACK} {a}"
        )
        proxy = self.start()
        first = socket.create_connection((LOOPBACK, p1), timeout=DEADLINE)
        second = socket.create_connection((LOOPBACK, p2), timeout=DEADLINE)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        for s in (first, second):
            s.sendall(b"before ")
            self.assertEqual(readExactly(s, 8), b"Abefore ")
        self.writeConfig(f"{LOOPBACK} {p1} {LOOPBACK} {b}")
        event = self.reload(proxy)
        self.assertEqual((event["changed"], event["removed"]), (1, 1))
        self.waitServed(p1, b"B")
        self.assertRefused(p2)
        for s in (first, second):
            s.sendall(b"after")
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(100):
                out += chunk
            self.assertEqual(out, b"after")

    def test_badFileKeepsOldConfig(self) -> None:
        """
        A file that does not parse is logged with its error and the running
        configuration carries on: connections still go to the old upstream.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        (port,) = freePorts(1)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {a}")
        proxy = self.start()
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {b} extra words")
        event = self.reload(proxy)
        self.assertIn("rinetd.conf:1", event["error"])
        self.assertEqual(exchange(port, b"x"), b"Ax")
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {b}")
        self.assertEqual(self.reload(proxy)["changed"], 1)
        self.waitServed(port, b"B")

    def test_addedAndRemovedListeners(self) -> None:
        """
        A reload opens the listeners the file added and closes those it
        removed; one that cannot open is logged and the rest applies.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        p1, p2 = freePorts(2)
        busy = socket.socket()
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        p3 = busy.getsockname()[1]
        self.writeConfig(f"{LOOPBACK} {p1} {LOOPBACK} {a}")
        proxy = self.start()
        self.waitServed(p1, b"A")
        self.writeConfig(
            f"{LOOPBACK} {p2} {LOOPBACK} {b}", f"{LOOPBACK} {p3} {LOOPBACK} {b}"
        )
        event = self.reload(proxy)
        self.assertEqual((event["added"], event["removed"]), (2, 1))
        self.assertEqual(len(event["failed"]), 1)
        self.assertIn(str(p3), event["failed"][0])
        self.waitServed(p2, b"B")
        self.assertRefused(p1)
        # The listener that failed is tried again by the next reload.
        busy.close()
        event = self.reload(proxy)
        self.assertEqual((event["added"], event["failed"]), (1, []))
        self.waitServed(p3, b"B")

    def test_reloadDuringDrainIgnored(self) -> None:
        """
        A SIGHUP that arrives while SIGTERM drains is logged and ignored:
        the live connection finishes with its upstream.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        (port,) = freePorts(1)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {a}")
        proxy = self.start()
        live = socket.create_connection((LOOPBACK, port), timeout=DEADLINE)
        self.addCleanup(live.close)
        self.assertEqual(readExactly(live, 1), b"A")
        proxy.signal(signal.SIGTERM)
        proxy.waitForEvent(lambda e: "no longer accepting" in str(e), DEADLINE)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {b}")
        event = self.reload(proxy)
        self.assertTrue(event.get("ignored"))
        live.sendall(b"bye")
        live.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := live.recv(100):
            out += chunk
        self.assertEqual(out, b"bye")
        self.assertEqual(proxy.wait(DEADLINE), 0)


class PoolReloadTests(_ReloadTestCase):
    """
    SIGHUP reloads of a TOML file whose forward balances over a pool.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.path.replace("rinetd.conf", "pools.toml")

    def poolConfig(self, port: int, *backends: int) -> None:
        """
        Write a one-forward TOML file balancing C{port} over C{backends}.
        """
        members = ", ".join(f'"tcp:{LOOPBACK}:{b}"' for b in backends)
        self.writeConfig(
            "[[forward]]",
            'name = "web"',
            f'listen = "tcp:{port}:interface={LOOPBACK}"',
            f"connect = [{members}]",
        )

    def test_poolMembersReplaced(self) -> None:
        """
        A reload that replaces a pool's members sends new connections to the
        new members only, with no failed exchange under a churn load, and a
        connection open across it keeps its member.
        """
        a, b, c = (echoBackend(self, t) for t in (b"A", b"B", b"C"))
        (port,) = freePorts(1)
        self.poolConfig(port, a, b)
        proxy = self.start()
        self.waitServed(port, b"A")
        live = socket.create_connection((LOOPBACK, port), timeout=DEADLINE)
        self.addCleanup(live.close)
        live.sendall(b"x")
        tag = readExactly(live, 2)[:1]
        self.assertIn(tag, (b"A", b"B"))
        churn = Churn(port).start()
        self.addCleanup(churn.stop)
        churn.waitForMore(50)
        self.poolConfig(port, c)
        event = self.reload(proxy)
        self.assertEqual((event.get("changed"), event.get("error")), (1, None))
        churn.waitForTag(b"C")
        seen = len(churn.tags)
        churn.waitForMore(50)
        churn.stop()
        self.assertEqual(churn.failures, [])
        self.assertEqual(set(churn.tags[seen:]), {b"C"})
        live.sendall(b"after")
        live.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := live.recv(100):
            out += chunk
        self.assertEqual(out, b"after")


class WorkersReloadTests(_ReloadTestCase):
    """
    SIGHUP reloads of C{--workers 2}: a new generation of workers replaces
    the old one on the same sockets.
    """

    workers = ("--workers", "2")

    def test_churn(self) -> None:
        """
        A connect/echo/close load sees no failure across three reloads of
        the workers, and new connections go to the new upstream.
        """
        self.churnAcrossReloads()

    def test_badFileKeepsOldConfig(self) -> None:
        """
        The supervisor checks the file first: a bad one is logged and the
        workers carry on.
        """
        a = echoBackend(self, b"A")
        (port,) = freePorts(1)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {a}")
        proxy = self.start()
        self.waitServed(port, b"A")
        self.writeConfig("nonsense")
        event = self.reload(proxy)
        self.assertIn("rinetd.conf:1", event["error"])
        self.assertEqual(exchange(port, b"x"), b"Ax")

    def test_restartedWorkerRunsCheckedConfig(self) -> None:
        """
        A worker restarted after a crash runs the configuration the
        supervisor checked, not the file as it is now (being edited, or
        bad).
        """
        a = echoBackend(self, b"A")
        (port,) = freePorts(1)
        self.writeConfig(f"{LOOPBACK} {port} {LOOPBACK} {a}")
        proxy = self.start()
        ready = proxy.waitForEvent(
            lambda e: e.get("splicetxEvent") == "ready" and e.get("worker") == 0,
            DEADLINE,
        )
        self.writeConfig("nonsense")
        os.kill(ready["pid"], signal.SIGKILL)
        proxy.waitForEvent(
            lambda e: (
                e.get("splicetxEvent") == "ready"
                and e.get("worker") == 0
                and e.get("pid") != ready["pid"]
            ),
            DEADLINE,
        )
        for _ in range(10):
            self.assertEqual(exchange(port, b"x"), b"Ax")

    def test_addedAndRemovedListeners(self) -> None:
        """
        The supervisor opens the sockets of added listeners for the new
        generation and closes those of removed ones.
        """
        a, b = echoBackend(self, b"A"), echoBackend(self, b"B")
        p1, p2 = freePorts(2)
        self.writeConfig(f"{LOOPBACK} {p1} {LOOPBACK} {a}")
        proxy = self.start()
        self.waitServed(p1, b"A")
        self.writeConfig(f"{LOOPBACK} {p2} {LOOPBACK} {b}")
        event = self.reload(proxy)
        self.assertEqual((event["added"], event["removed"]), (1, 1))
        self.waitServed(p2, b"B")
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                exchange(p1, b"x")
            except ConnectionRefusedError:
                break
            except ConnectionResetError:
                # Accepted by the kernel as the old generation let go of the
                # socket: not served, and not refused yet either.
                pass
            time.sleep(0.05)
        self.assertRefused(p1)


class SystemdWorkersTests(SynchronousTestCase):
    """
    C{--workers} with a C{systemd:} listener (socket activation).
    """

    def test_workersAdoptSystemdSocket(self) -> None:
        """
        The workers serve the socket systemd handed to the supervisor
        instead of checking the C{systemd:} string against their own
        environment (which made them exit with status 64 in a loop).
        """
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            raise SkipTest("systemd-socket-activate is not installed")
        a = echoBackend(self, b"A")
        (port,) = freePorts(1)
        command = [
            tool,
            "-l",
            f"{LOOPBACK}:{port}",
            "--fdname=proxy",
            # It passes on only a minimal environment: add this test run's
            # import path, so the proxy runs the code under test.
            "-E",
            "PYTHONPATH=" + os.pathsep.join(sys.path),
            sys.executable,
            "-m",
            "twisted",
            "--log-format=json",
            "splice-proxy",
            "--listen",
            "systemd:domain=INET:name=proxy",
            "--connect",
            f"tcp:{LOOPBACK}:{a}",
            "--workers",
            "2",
        ]
        proxy = ProxyProcess([], command=command, env=dict(os.environ))
        self.addCleanup(proxy.kill)
        # systemd-socket-activate starts the proxy on the first connection.
        answer = b""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and answer != b"Ax":
            try:
                answer = exchange(port, b"x")
            except OSError:
                time.sleep(0.1)
        self.assertEqual(answer, b"Ax")
        proxy.waitForEvent(
            lambda e: e.get("splicetxEvent") == "ready" and e.get("worker") == 1,
            DEADLINE,
        )
        for _ in range(5):
            self.assertEqual(exchange(port, b"x"), b"Ax")
        self.assertNotIn("no such socket", proxy.stderr)
        self.assertIsNone(proxy.proc.poll())


class SupervisorReloadUnitTests(SynchronousTestCase):
    """
    L{WorkerSupervisor.reload} driven by a fake clock and process reactor:
    the order of a generation change.
    """

    setUp = test_workers.SupervisorUnitTests.setUp

    def ready(self, index: int) -> None:
        """
        Make the C{index}-th spawned process report ready.
        """
        proto, _exe, _args, env, *_ = self.reactor.spawned[index]
        proto.childDataReceived(int(env[ENV_READY]), b"ready\n")

    def test_newGenerationOnTheSameSockets(self) -> None:
        """
        The new workers get the very sockets of the workers they replace,
        and the old ones get SIGTERM only once every new one is ready.
        """
        self.sup.start()
        d = self.sup.reload([self.listener])
        self.assertEqual(len(self.reactor.spawned), 4)
        oldFDs = [self.reactor.spawned[i][4][3] for i in (0, 1)]
        newFDs = [self.reactor.spawned[i][4][3] for i in (2, 3)]
        self.assertEqual(oldFDs, newFDs)
        self.ready(2)
        self.assertNoResult(d)
        self.assertEqual(self.reactor.spawned[0][5].signals, [])
        self.ready(3)
        self.successResultOf(d)
        self.assertEqual(
            [p.signals for *_, p in self.reactor.spawned],
            [["TERM"], ["TERM"], [], []],
        )
        self.assertEqual(self.sup.pids, {0: 1003, 1: 1004})
        # The old generation's exits restart nothing.
        self.reactor.end(0)
        self.reactor.end(1)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_newWorkerFails(self) -> None:
        """
        A new worker that exits before it is ready fails the reload: the
        rest of the new generation is stopped, the old one carries on.
        """
        self.sup.start()
        d = self.sup.reload([self.listener])
        self.ready(2)
        self.reactor.end(3, code=64)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(self.reactor.spawned[2][5].signals, ["TERM"])
        self.assertEqual(self.reactor.spawned[0][5].signals, [])
        self.assertEqual(self.sup.pids, {0: 1001, 1: 1002})
        self.reactor.end(2)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 4)
        # The old workers still have their sockets: a restart reuses them.
        self.reactor.end(0, code=1)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 5)

    def test_newWorkerFailsAfterItsReady(self) -> None:
        """
        A new worker that reported ready but exits before the rest of its
        generation is ready fails the reload too, and the sockets the old
        workers share with the new ones stay open.
        """
        self.sup.start()
        d = self.sup.reload([self.listener])
        self.ready(2)
        self.reactor.end(2, code=1)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(self.reactor.spawned[3][5].signals, ["TERM"])
        self.assertEqual(self.sup.pids, {0: 1001, 1: 1002})
        kept = [
            sock.fileno() for slot in self.sup._slots for sock in slot.sockets.values()
        ]
        self.assertEqual(len(kept), 2)
        self.assertNotIn(-1, kept)
        self.assertEqual(kept, [self.reactor.spawned[i][4][3] for i in (0, 1)])

    def test_stopDuringReload(self) -> None:
        """
        A stop while a reload waits fails it and stops both generations.
        """
        self.sup.start()
        d = self.sup.reload([self.listener])
        stopped = self.sup.stop()
        self.failureResultOf(d, RuntimeError)
        self.assertEqual([p.signals for *_, p in self.reactor.spawned], [["TERM"]] * 4)
        for i in range(4):
            self.reactor.end(i)
        self.successResultOf(stopped)


class CompareConfigsTests(SynchronousTestCase):
    """
    L{compareConfigs} and L{reloadedConfig}.
    """

    def test_compare(self) -> None:
        """
        Forwards are matched by their listening strings: new ones are added,
        missing ones removed, those with another upstream or other rules
        changed, the rest left alone.
        """
        old = ProxyConfig(
            forwards=[
                Forward(listens=["tcp:1"], connect="tcp:h:1"),
                Forward(listens=["tcp:2"], connect="tcp:h:2"),
                Forward(listens=["tcp:3"], connect="tcp:h:3"),
                Forward(listens=["tcp:4"], connect="tcp:h:4"),
            ]
        )
        new = ProxyConfig(
            forwards=[
                Forward(listens=["tcp:1"], connect="tcp:h:1"),
                Forward(listens=["tcp:2"], connect="tcp:h:9"),
                Forward(
                    listens=["tcp:3"],
                    connect="tcp:h:3",
                    acl=AccessControl(["127.0.0.1"]),
                ),
                Forward(listens=["tcp:5"], connect="tcp:h:5"),
            ]
        )
        changes = compareConfigs(old, new)
        self.assertEqual([f.listen for f in changes.added], ["tcp:5"])
        self.assertEqual([f.listen for f in changes.removed], ["tcp:4"])
        self.assertEqual([n.listen for _, n in changes.changed], ["tcp:2", "tcp:3"])
        self.assertEqual(compareConfigs(new, new), ConfigChanges())

    def test_reloadedKeepsCommandLine(self) -> None:
        """
        The command line's forward stays; the file's forwards are read
        again; a file forward on a --listen endpoint is an error.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "c.conf")
        with open(path, "w") as f:
            f.write("127.0.0.1 8080 127.0.0.1 80\n")
        command = Forward(listens=["tcp:9"], connect="tcp:h:9")
        config = ProxyConfig(forwards=[command], configFile=path)
        new = reloadedConfig(config)
        self.assertEqual(new.forwards[0], command)
        self.assertEqual([f.connectPort for f in new.forwards[1:]], [80])
        listen = new.forwards[1].listen
        taken = ProxyConfig(
            forwards=[Forward(listens=[listen], connect="tcp:h:9")], configFile=path
        )
        with self.assertRaises(ConfigError):
            reloadedConfig(taken)
        with self.assertRaises(ConfigError):
            reloadedConfig(ProxyConfig(forwards=[command]))
