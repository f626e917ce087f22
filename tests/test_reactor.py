"""
Tests for L{splicetx.reactor}: Twisted's epoll reactor that hands the
socket loop its events without a legacy log context, and keeps that
context for every other descriptor.  Real socket pairs in a real reactor
instance (not the global one), polled by hand; the install paths in a
subprocess, where no reactor is installed yet.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet.test.test_core import SystemEventTestsBuilder
from twisted.internet.test.test_threads import ThreadTestsBuilder
from twisted.internet.test.test_time import TimeTestsBuilder
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase

from splicetx._relay import core
from splicetx._relay.socketloop import SocketLoop
from splicetx.reactor import SpliceEPollReactor, installDefault

from .test_socketloop import _Member as _TurnMember


class _Member(_TurnMember):
    """
    A socket-pair end in a L{SocketLoop} that also records the legacy log
    context (C{system}) of each event it reads.
    """

    __slots__ = ("systems",)

    def __init__(self, loop: SocketLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self.systems: list[str] = []

    def readable(self, *ignored: Any) -> None:
        super().readable()
        self.systems.append(context.get(log.ILogContext)["system"])


class _Reader:
    """
    A plain C{IReadDescriptor} on a socket, recording the C{system} of the
    log context its C{doRead} runs in.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.systems: list[str] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "plain-reader"

    def doRead(self) -> None:
        self.sock.recv(1)
        self.systems.append(context.get(log.ILogContext)["system"])

    def connectionLost(self, reason: Any) -> None:
        pass


class SpliceEPollReactorTests(SynchronousTestCase):
    """
    One C{doPoll} of a L{SpliceEPollReactor} with a socket loop and a plain
    reader ready.
    """

    def setUp(self) -> None:
        self.reactor = SpliceEPollReactor()
        self.addCleanup(self._closeReactor)

    def _closeReactor(self) -> None:
        self.reactor._poller.close()
        self.reactor.waker.connectionLost(None)

    def loop(self) -> SocketLoop:
        loop = SocketLoop(self.reactor)
        self.addCleanup(loop.connectionLost, None)
        return loop

    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.setblocking(False)
        return a, b

    def loopAndReader(
        self,
    ) -> tuple[SocketLoop, _Member, socket.socket, _Reader, socket.socket]:
        """
        A socket loop with a reading member, and a plain reader: each with
        the other end of its socket pair.
        """
        loop = self.loop()
        a, b = self.pair()
        member = _Member(loop, a)
        member.startReading()
        c, d = self.pair()
        reader = _Reader(c)
        self.reactor.addReader(reader)
        return loop, member, b, reader, d

    def test_loopWithoutLogContext(self) -> None:
        """
        A ready socket loop is handed its event in the caller's log context
        (no C{callWithLogger}); a plain reader ready in the same poll runs
        in a context named by its C{logPrefix}, as on C{EPollReactor}.
        """
        loop, member, b, reader, d = self.loopAndReader()
        outer = context.get(log.ILogContext)["system"]
        b.send(b"x")
        d.send(b"y")
        self.reactor.doPoll(1)
        self.assertEqual(member.systems, [outer])
        self.assertEqual(reader.systems, ["plain-reader"])
        self.assertNotEqual(outer, "plain-reader")
        self.assertNotEqual(outer, loop.logPrefix())

    def test_loopFailureDisconnects(self) -> None:
        """
        A socket loop whose C{doRead} raises is logged and disconnected by
        the reactor's own rules (C{_doReadOrWrite}), as any descriptor is:
        out of the reactor, its members told C{connectionLost}.
        """
        loop = self.loop()
        a, b = self.pair()
        member = _Member(loop, a)
        member.startReading()

        def broken(*args: Any) -> int:
            raise RuntimeError("broken loop")

        # The compiled turn raising with no member to blame: doRead lets it
        # out (socketloop), and the reactor has the last word.
        self.patch(core, "dispatch", broken)
        b.send(b"x")
        self.reactor.doPoll(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNotIn(loop, self.reactor.getReaders())
        self.assertFalse(member.reading)
        self.assertEqual(member.systems, [])

    def test_loopDisconnectFailureLeavesTheOthers(self) -> None:
        """
        When disconnecting a failed socket loop fails too, both errors are
        logged and a plain reader ready in the same poll is still
        dispatched: the poll's other events are not lost.
        """
        loop, member, b, reader, d = self.loopAndReader()

        def broken(*args: Any) -> int:
            raise RuntimeError("broken loop")

        def brokenLoss(*args: Any) -> None:
            raise ValueError("broken disconnect")

        self.patch(core, "dispatch", broken)
        self.patch(SocketLoop, "connectionLost", brokenLoss)
        b.send(b"x")
        d.send(b"y")
        # The loop's descriptor and the reader's come in one poll.
        self.reactor.doPoll(1)
        if not reader.systems:
            self.reactor.doPoll(1)
        self.assertEqual(reader.systems, ["plain-reader"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_mainLoopGoesOnAfterAnError(self) -> None:
        """
        An error in one iteration of the main loop is logged, and the loop
        goes on with the next, as on Twisted's own main loop.
        """
        r = self.reactor
        timeouts: list[float | None] = []
        realTimeout = r.timeout

        def timeout() -> float | None:
            timeouts.append(None)
            if len(timeouts) == 1:
                raise RuntimeError("one bad iteration")
            return realTimeout()

        r.timeout = timeout  # type: ignore[method-assign]
        r.callLater(0, lambda: r.callLater(0, r.stop))
        r.run(installSignalHandlers=False)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertGreaterEqual(len(timeouts), 2)

    def test_installDefaultLeavesAnInstalledReactor(self) -> None:
        """
        With a reactor installed (this test process has one),
        L{installDefault} installs nothing.
        """
        from twisted.internet import reactor

        self.assertIsNone(installDefault())
        from twisted.internet import reactor as after

        self.assertIs(after, reactor)

    def test_timedCallResetLater(self) -> None:
        """
        A timed call reset to a later time (Twisted moves it lazily: it
        stays first in the heap with its old time) runs at its new time,
        not at its old one: the iteration that finds the old time due runs
        C{runUntilCurrent}, which moves the call.
        """
        r = self.reactor
        start = r.seconds()
        fired: list[float] = []
        call = r.callLater(0.05, lambda: fired.append(r.seconds()))
        r.callLater(0.01, call.reset, 0.2)
        r.callLater(0.5, r.stop)
        r.run(installSignalHandlers=False)
        self.assertEqual(len(fired), 1)
        self.assertGreaterEqual(fired[0] - start, 0.2)

    def test_pollWaitsForTheFirstTimedCall(self) -> None:
        """
        With a timed call pending and nothing else to do, the iteration
        polls with the time left until that call, as C{timeout()} says.
        """
        r = self.reactor
        timeouts: list[float | None] = []
        realPoll = r.doIteration

        def poll(timeout: float | None) -> None:
            timeouts.append(timeout)
            realPoll(timeout)

        r.doIteration = poll  # type: ignore[method-assign]
        r.callLater(0, lambda: r.callLater(0.3, r.stop))
        r.run(installSignalHandlers=False)
        waits = [t for t in timeouts if t]
        self.assertTrue(waits, timeouts)
        self.assertLessEqual(max(waits), 0.3)
        self.assertGreater(max(waits), 0.1)


class InstallTests(SynchronousTestCase):
    """
    Installing the reactor in a process that has none yet.
    """

    def run_python(self, code: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def test_install(self) -> None:
        """
        L{splicetx.reactor.install} makes it the global reactor.
        """
        got = self.run_python(
            "from splicetx import reactor; reactor.install(); "
            "from twisted.internet import reactor as r; print(type(r).__name__)"
        )
        self.assertEqual(got, "SpliceEPollReactor")

    def test_installDefault(self) -> None:
        """
        L{installDefault} installs it when no reactor is installed, and
        returns it.
        """
        got = self.run_python(
            "from splicetx.reactor import installDefault; r = installDefault(); "
            "from twisted.internet import reactor; print(r is reactor, "
            "type(reactor).__name__)"
        )
        self.assertEqual(got, "True SpliceEPollReactor")

    def test_beforeProtocolModules(self) -> None:
        """
        C{twist splice-proxy} installs it before it imports the
        C{--protocol} module, so a module that imports the global reactor
        at its top gets this one.
        """
        work = tempfile.mkdtemp(prefix="splicetx-test-reactor-")
        self.addCleanup(shutil.rmtree, work, True)
        with open(os.path.join(work, "reactormodule.py"), "w") as f:
            f.write(
                "import sys\n"
                "from twisted.internet import reactor\n"
                "from splicetx.proxy import SpliceProxyProtocol\n"
                "sys.stderr.write('REACTOR=' + type(reactor).__name__ + '\\n')\n"
                "class Proto(SpliceProxyProtocol):\n"
                "    pass\n"
            )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "twisted",
                "splice-proxy",
                "--check",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--connect",
                "tcp:127.0.0.1:9",
                "--protocol",
                "reactormodule.Proto",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=work),
        )
        self.assertIn("REACTOR=SpliceEPollReactor", out.stderr, out.stderr)

    def test_notByProxyService(self) -> None:
        """
        L{splicetx.service.proxyService} (a program of the user's own)
        installs no reactor of ours: the program chose its own, or gets
        Twisted's default.
        """
        got = self.run_python(
            "from splicetx.service import proxyService; "
            "proxyService(arguments=['--listen', 'tcp:0:interface=127.0.0.1', "
            "'--connect', 'tcp:127.0.0.1:9']); "
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        self.assertNotEqual(got, "SpliceEPollReactor")
        self.assertTrue(got.endswith("Reactor"), got)

    def test_plugin(self) -> None:
        """
        The reactor is named C{splicetx} for C{twist --reactor} and
        C{trial --reactor}.
        """
        got = self.run_python(
            "from twisted.application.reactors import getReactorTypes; "
            "print([r.moduleName for r in getReactorTypes() "
            "if r.shortName == 'splicetx'])"
        )
        self.assertEqual(got, "['splicetx.reactor']")


class _OnSpliceReactor:
    """
    Twisted's own reactor tests (L{ReactorBuilder}), built on
    L{SpliceEPollReactor} only: its main loop runs C{runUntilCurrent} and
    C{timeout} only when there is something for them to do, and these say
    that timed calls, thread calls, system events and stopping behave as on
    Twisted's reactors.
    """

    _reactors = ["splicetx.reactor.SpliceEPollReactor"]


class SpliceTimeTests(_OnSpliceReactor, TimeTestsBuilder):
    pass


class SpliceSystemEventTests(_OnSpliceReactor, SystemEventTestsBuilder):
    pass


class SpliceThreadTests(_OnSpliceReactor, ThreadTestsBuilder):
    pass


globals().update(SpliceTimeTests.makeTestCaseClasses())
globals().update(SpliceSystemEventTests.makeTestCaseClasses())
globals().update(SpliceThreadTests.makeTestCaseClasses())
