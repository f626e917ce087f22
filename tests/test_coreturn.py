# -*- test-case-name: tests.test_coreturn -*-
"""
The compiled core's small-message turn (C{_ccore.turn}, what
L{splicetx._relay.direction.Direction.readable} asks first) on real sockets
and pipes: every outcome it returns, what it leaves in the direction, its
pool and its turn budget, and each condition under which it leaves the turn
to the pure-Python reference.

The host and the two sockets around the direction are recorders (no kernel
in them); the bytes go through real socket pairs and pipes.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from splicetx._relay import core
from splicetx._relay import direction as _direction
from splicetx._relay.bandwidth import Bandwidth
from splicetx._relay.direction import BULK_READ, PIECE, Direction
from splicetx._relay.pipes import PipePool, UnreservedPipes
from splicetx._relay.turns import SMALL_WINDOW, TURN_BUDGET

from ._directionfakes import RecordedEndpoint
from .test_core import _ext


class _Reactor:
    """
    What a direction's turn budget asks of a reactor; calls run at once.
    """

    def __init__(self) -> None:
        self.later: list[Any] = []

    def addSystemEventTrigger(self, *args: Any) -> None:
        pass

    def callLater(self, delay: float, f: Any, *args: Any) -> None:
        self.later.append(f)


class _Host:
    """
    A direction's host that records what it is told.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.reactor = _Reactor()
        self.told: list[tuple[Any, ...]] = []

    def pipeFailed(self, d: Any, e: OSError) -> None:
        self.told.append(("pipeFailed", e))

    def spliceFailed(self, d: Any, e: OSError, reading: bool) -> None:
        self.told.append(("spliceFailed", e, reading))

    def fail(self, reason: str, detail: str) -> None:
        self.told.append(("fail", reason))

    def directionDone(self) -> None:
        self.told.append(("done",))


def _tcpPair() -> tuple[socket.socket, socket.socket]:
    """
    Both ends of a TCP connection on loopback.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


class _DirectionCase(SynchronousTestCase):
    """
    A direction from one socket pair to another, its pool with one idle
    pipe, the compiled core in use.
    """

    def setUp(self) -> None:
        self.ext = _ext()
        self.addCleanup(core.use, core.current() == core.COMPILED)
        core.use(True)
        self.pipes = PipePool(pipeSize=1 << 16)
        self.addCleanup(self.pipes.close)
        self.pool = UnreservedPipes(self.pipes)
        self.pipes.give(self.pipes.take())  # one idle pipe
        self.assertGreater(self.pipes.maxPipes, 2)  # the cap computed
        self.direction()

    def direction(self, tcp: bool = False) -> None:
        self.host = _Host(self.pool)
        self.srcPeer, src = _tcpPair() if tcp else socket.socketpair()
        dst, self.dstPeer = socket.socketpair()
        for s in (src, dst):
            s.setblocking(False)
        for s in (src, dst, self.srcPeer, self.dstPeer):
            self.addCleanup(s.close)
        self.src = RecordedEndpoint(src, "A", self.host)
        self.dst = RecordedEndpoint(dst, "B", self.host)
        self.d = Direction(self.host, self.src, self.dst)
        back = Direction(self.host, self.dst, self.src)
        self.src.source = self.dst.sink = self.d
        self.dst.source = self.src.sink = back
        self.d.turns.left = TURN_BUDGET
        self.d.turns.bulkUntil = 0.0

    def turn(self, bulkRead: int = BULK_READ, clock: Any = time.monotonic) -> int:
        return self.ext.turn(self.d, bulkRead, PIECE, SMALL_WINDOW, clock)

    def assertPoolAtRest(self) -> None:
        self.assertEqual((self.pipes.inUse, self.pool.lent, self.pipes.idle), (0, 0, 1))
        self.assertIsNone(self.d.pipe)


class TurnTests(_DirectionCase):
    """
    C{turn(d, bulkRead, piece, window, clock)}: each outcome.
    """

    def test_smallMessage(self) -> None:
        """
        A small message is read, written and counted; the pipe stays in the
        pool (as taken and given back), the turn budget is charged and the
        small-flow window opened.
        """
        self.srcPeer.sendall(b"hello")
        before = time.monotonic()
        self.assertEqual(self.turn(), 0)
        self.assertEqual(self.dstPeer.recv(10), b"hello")
        self.assertEqual((self.d.moved, self.d.inPipe), (5, 0))
        self.assertEqual(self.d.turns.left, TURN_BUDGET - 5)
        self.assertGreaterEqual(self.d.turns.smallUntil, before + SMALL_WINDOW)
        self.assertEqual(self.src.calls + self.dst.calls, [])
        self.assertPoolAtRest()

    def test_drained(self) -> None:
        """
        Nothing to read: the turn is over and nothing changed.
        """
        self.assertEqual(self.turn(), 0)
        self.assertEqual((self.d.moved, self.d.turns.left), (0, TURN_BUDGET))
        self.assertPoolAtRest()

    def test_endOfStream(self) -> None:
        """
        The peer's FIN: the direction finishes (source unwatched, the
        destination half-closed, the host told).
        """
        self.srcPeer.shutdown(socket.SHUT_WR)
        self.assertEqual(self.turn(), 0)
        self.assertTrue(self.d.eof and self.d.done)
        self.assertEqual(self.src.calls, ["stopReading"])
        self.assertEqual(self.host.told, [("done",)])
        self.assertEqual(self.dstPeer.recv(10), b"")
        self.assertPoolAtRest()

    def test_readFails(self) -> None:
        """
        A reset source: the host hears the read's error, with the pipe held
        by the direction, as the pure path leaves it.
        """
        self.direction(tcp=True)
        self.srcPeer.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.srcPeer.close()
        self.assertEqual(self.turn(), 0)
        ((what, e, reading),) = self.host.told
        self.assertEqual((what, reading), ("spliceFailed", True))
        self.assertIsInstance(e, ConnectionResetError)
        self.assertEqual(e.errno, errno.ECONNRESET)
        self.assertIsNotNone(self.d.pipe)
        self.assertEqual((self.pipes.inUse, self.pool.lent), (1, 1))

    def test_destinationFull(self) -> None:
        """
        A destination that takes none of it: the pipe is held with the
        bytes, the source unwatched and the destination watched; when it
        drains, L{Direction.writable} delivers all of it.
        """
        dst = self.dst.sock
        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        filled = 0
        try:
            while True:
                filled += dst.send(b"f" * 65536)
        except BlockingIOError:
            pass
        self.srcPeer.sendall(b"y" * 1000)
        self.assertEqual(self.turn(), 0)
        self.assertEqual(self.src.calls, ["stopReading"])
        self.assertEqual(self.dst.calls, ["startWriting"])
        self.assertEqual((self.d.inPipe, self.d.moved), (1000, 0))
        self.assertIsNotNone(self.d.pipe)
        self.assertEqual(self.pipes.inUse, 1)
        got = b""
        while len(got) < filled:
            got += self.dstPeer.recv(1 << 20)
        self.d.writable()
        got = got[filled:]
        while len(got) < 1000:
            got += self.dstPeer.recv(1 << 20)
        self.assertEqual(got, b"y" * 1000)
        self.assertEqual(self.d.moved, 1000)
        self.assertPoolAtRest()

    def test_destinationGone(self) -> None:
        """
        A destination whose peer is gone: the host hears the write's error.
        """
        self.dstPeer.close()
        self.srcPeer.sendall(b"z")
        self.assertEqual(self.turn(), 0)
        ((what, e, reading),) = self.host.told
        self.assertEqual((what, reading), ("spliceFailed", False))
        self.assertIn(e.errno, (errno.EPIPE, errno.ECONNRESET))
        self.assertEqual((self.d.inPipe, self.pipes.inUse), (1, 1))

    def test_bulkRead(self) -> None:
        """
        A read of C{bulkRead} bytes or more returns its size, the bytes in
        the pipe the direction now holds, and nothing accounted yet: the
        Python path goes on from its read.
        """
        self.srcPeer.sendall(b"b" * 100)
        self.assertEqual(self.turn(bulkRead=100), 100)
        self.assertEqual((self.d.moved, self.d.turns.left), (0, TURN_BUDGET))
        self.assertEqual(self.pipes.inUse, 1)
        self.assertEqual(os.read(self.d.pipe.readFD, 200), b"b" * 100)

    def test_fullPipe(self) -> None:
        """
        A small read that filled the pipe: written, then C{-2}, the (empty)
        pipe held for the Python path's next round.
        """
        pipe = self.pipes.take()
        self.pipes.give(pipe)
        self.srcPeer.sendall(b"p" * (pipe.size + 10))
        self.assertEqual(self.turn(bulkRead=pipe.size + 1), -2)
        self.assertIs(self.d.pipe, pipe)
        self.assertEqual((self.d.moved, self.d.inPipe), (pipe.size, 0))

    def test_readableGoesOn(self) -> None:
        """
        Through L{Direction.readable}, a full pipe and a bulk read both end
        with every byte delivered and the pool at rest.
        """
        pipe = self.pipes.take()
        self.pipes.give(pipe)
        data = bytes(range(256)) * ((pipe.size * 3) // 256)
        self.srcPeer.sendall(data)
        self.d.readable()
        got = b""
        while len(got) < len(data):
            got += self.dstPeer.recv(1 << 20)
        self.assertEqual(got, data)
        self.assertEqual(self.d.moved, len(data))
        self.assertPoolAtRest()

    def test_budgetSpent(self) -> None:
        """
        A read that spends the turn budget asks for a refill.
        """
        self.d.turns.left = 3
        self.d.turns.pending = False
        self.srcPeer.sendall(b"12345")
        self.assertEqual(self.turn(), 0)
        self.assertEqual(self.d.turns.left, -2)
        self.assertEqual(self.host.reactor.later, [self.d.turns.refill])

    def test_notedWhileBulk(self) -> None:
        """
        While a bulk read is recent, a small flow is noted (watched for
        serving); with none, not.
        """
        noted: list[Any] = []
        # On the class: the budget has slots (the compiled core reads them).
        self.patch(
            type(self.d.turns), "noteSmall", lambda turns, d, until: noted.append(d)
        )
        self.srcPeer.sendall(b"a")
        self.turn()
        self.assertEqual(noted, [])
        self.d.turns.bulkUntil = time.monotonic() + 60
        self.srcPeer.sendall(b"b")
        self.turn()
        self.assertEqual(noted, [self.d])

    def test_clock(self) -> None:
        """
        Another clock than C{time.monotonic} (a test's patch) is called.
        """
        self.srcPeer.sendall(b"c")
        self.turn(clock=lambda: 1000.0)
        self.assertEqual(self.d.turns.smallUntil, 1000.0 + SMALL_WINDOW)

    def assertLeft(self) -> None:
        """
        The turn is left to Python: C{-1}, nothing read.
        """
        self.srcPeer.sendall(b"q")
        self.assertEqual(self.turn(), -1)
        self.assertEqual((self.d.moved, self.d.turns.left), (0, TURN_BUDGET))
        self.assertEqual(self.d.src.sock.recv(10, socket.MSG_PEEK), b"q")

    def test_leftWhenBulk(self) -> None:
        """A bulk direction (its turn may wait): Python's."""
        self.d.bulk = True
        self.assertLeft()

    def test_leftWithLimit(self) -> None:
        """A bandwidth limit: Python's."""
        self.d.limit = Bandwidth(1 << 20, self.host.reactor)
        self.assertLeft()

    def test_leftWithPipeHeld(self) -> None:
        """A pipe already held: Python's."""
        self.d.pipe = self.pool.take()
        self.addCleanup(self.pool.give, self.d.pipe)
        self.assertLeft()

    def test_leftWithNoIdlePipe(self) -> None:
        """No idle pipe (one is to be made): Python's."""
        self.pipes.close()
        self.assertLeft()

    def test_leftAtTheCap(self) -> None:
        """The pipe cap reached: Python's (which tells the host)."""
        self.pipes._maxPipes = self.pipes.reserved
        self.assertLeft()

    def test_leftWithCapUnknown(self) -> None:
        """The cap not computed yet: Python's."""
        self.pipes._maxPipes = None
        self.assertLeft()

    def test_leftWithWaiter(self) -> None:
        """Someone waits for a pipe to come back: Python's (give tells it)."""
        self.pool.onReturn = lambda: None
        self.assertLeft()

    def test_leftWithOtherPool(self) -> None:
        """A pool of another class (a subclass may take otherwise): Python's."""

        class Pool(PipePool):
            pass

        self.d.pool = Pool()
        self.assertLeft()

    def test_plainPool(self) -> None:
        """A L{PipePool} itself (the splice engine's) is taken from in C too."""
        self.d.pool = self.pipes
        self.srcPeer.sendall(b"hi")
        self.assertEqual(self.turn(), 0)
        self.assertEqual(self.dstPeer.recv(10), b"hi")
        self.assertEqual((self.pipes.inUse, self.pipes.idle), (0, 1))

    def test_badArguments(self) -> None:
        """Wrong arguments raise."""
        self.assertRaises(TypeError, self.ext.turn, self.d)
        self.assertRaises(TypeError, self.ext.turn, self.d, "x", 1, 0.1, time.monotonic)
        self.assertRaises(TypeError, self.ext.setup, 1, 2, 3)


class _Member:
    """
    A socket loop member whose source is a direction (or anything).
    """

    def __init__(self, fd: int, source: Any) -> None:
        self.fd = fd
        self.source = source
        self.sink = None
        self.reading = True
        self.writing = False


class _Recorder:
    """
    A direction's stand-in that records C{readable}'s argument.
    """

    def __init__(self) -> None:
        self.got: list[Any] = []

    def readable(self, got: Any = "none") -> None:
        self.got.append(got)


class DispatchTurnTests(_DirectionCase):
    """
    C{dispatch(..., turn)}: a member whose source is a L{Direction} has its
    turn run in C; its C{readable} is called only with what is left to do.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ep = select.epoll()
        self.addCleanup(self.ep.close)
        self.ep.register(self.d.srcfd, select.EPOLLIN)
        self.members = {self.d.srcfd: _Member(self.d.srcfd, self.d)}
        self.readables: list[Any] = []
        real = Direction.readable

        def readable(d: Any, got: Any = None) -> None:
            self.readables.append(got)
            real(d, got)

        self.patch(Direction, "readable", readable)

    def dispatch(self, turn: Any) -> int:
        return self.ext.dispatch(
            self.ep.fileno(), self.members, 8, select.EPOLLIN, 0, [], turn
        )

    def test_dispatchedSmall(self) -> None:
        """
        A small message moves with no Python call.
        """
        self.srcPeer.sendall(b"hello")
        self.assertEqual(self.dispatch(self.ext.turn), 1)
        self.assertEqual(self.dstPeer.recv(10), b"hello")
        self.assertEqual(self.readables, [])
        self.assertPoolAtRest()

    def test_dispatchedLeft(self) -> None:
        """
        A turn C{turn()} leaves to Python: C{readable(-1)}, which does not
        ask it again and moves the bytes itself.
        """
        self.d.bulk = True
        self.srcPeer.sendall(b"hello")
        self.dispatch(self.ext.turn)
        self.assertEqual(self.readables, [-1])
        self.assertEqual(self.dstPeer.recv(10), b"hello")
        self.assertPoolAtRest()

    def test_dispatchedFullPipe(self) -> None:
        """
        After a full pipe: C{readable(-2)}, which reads the next rounds.
        """
        pipe = self.pipes.take()
        self.pipes.give(pipe)
        data = b"r" * (pipe.size + 100)
        self.srcPeer.sendall(data)
        self.patch(_direction, "BULK_READ", pipe.size + 1)
        self.dispatch(self.ext.turn)
        self.assertEqual(self.readables, [-2])
        got = b""
        while len(got) < len(data):
            got += self.dstPeer.recv(1 << 20)
        self.assertEqual(got, data)
        self.assertPoolAtRest()

    def test_notDispatchedWithoutTurn(self) -> None:
        """
        With no turn (C{None}, or six arguments), C{readable()} as before.
        """
        self.srcPeer.sendall(b"hello")
        self.dispatch(None)
        self.assertEqual(self.readables, [None])
        self.assertEqual(self.dstPeer.recv(10), b"hello")

    def test_otherSources(self) -> None:
        """
        A member whose source is not a L{Direction}: C{readable()}.
        """
        other = _Recorder()
        self.members[self.d.srcfd].source = other
        self.srcPeer.sendall(b"x")
        self.dispatch(self.ext.turn)
        self.assertEqual(other.got, ["none"])
