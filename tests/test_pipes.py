# -*- test-case-name: tests.test_pipes -*-
"""
Tests for L{splicetx._relay.pipes}: pipe sizing, the pipe cap and the idle pool.
"""

from __future__ import annotations

import errno
import fcntl
import os
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from splicetx._relay.pipes import (
    DEFAULT_PIPE_SIZE,
    Pipe,
    PipeLimitReached,
    PipePool,
    UnreservedPipes,
    pipeMaxSize,
)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class PipeTests(SynchronousTestCase):
    """
    L{Pipe.open} asks for a size and keeps what the kernel grants.
    """

    def test_sizeGranted(self) -> None:
        """A 1 MiB pipe is 1 MiB when pipe-max-size allows it."""
        p = Pipe.open(1 << 20)
        self.addCleanup(p.close)
        self.assertEqual(p.size, min(1 << 20, max(pipeMaxSize(), 1 << 20)))
        self.assertEqual(fcntl.fcntl(p.writeFD, fcntl.F_GETPIPE_SZ), p.size)

    def test_roundedUp(self) -> None:
        """The kernel rounds a size up to a power of two pages."""
        p = Pipe.open(100_000)
        self.addCleanup(p.close)
        self.assertEqual(p.size, 131072)

    def test_nonBlockingCloseOnExec(self) -> None:
        """Both ends are non-blocking and close-on-exec."""
        p = Pipe.open(65536)
        self.addCleanup(p.close)
        for fd in (p.readFD, p.writeFD):
            self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
            self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)

    def test_refusedSizeKeepsDefault(self) -> None:
        """EPERM from F_SETPIPE_SZ (user pipe memory used up) is not an error."""
        real = fcntl.fcntl

        def refuse(fd: int, cmd: int, *args: int) -> int:
            if cmd == fcntl.F_SETPIPE_SZ:
                raise OSError(errno.EPERM, "Operation not permitted")
            return real(fd, cmd, *args)

        with mock.patch("splicetx._relay.pipes.fcntl.fcntl", refuse):
            p = Pipe.open(1 << 20)
        self.addCleanup(p.close)
        self.assertEqual(p.size, real(p.writeFD, fcntl.F_GETPIPE_SZ))
        self.assertLess(p.size, 1 << 20)

    def test_otherErrorsCloseAndRaise(self) -> None:
        """An unexpected fcntl error closes the pipe and propagates."""
        before = _fds()

        def broken(fd: int, cmd: int, *args: int) -> int:
            raise OSError(errno.EIO, "I/O error")

        with mock.patch("splicetx._relay.pipes.fcntl.fcntl", broken):
            self.assertRaises(OSError, Pipe.open, 1 << 20)
        self.assertEqual(_fds(), before)

    def test_closeTwice(self) -> None:
        """Closing twice is harmless and releases both fds."""
        before = _fds()
        p = Pipe.open(65536)
        self.assertEqual(_fds(), before + 2)
        p.close()
        p.close()
        self.assertEqual(_fds(), before)
        self.assertIn("r=-1", repr(p))


class PipePoolTests(SynchronousTestCase):
    """
    L{PipePool}: reservations against the cap, reuse of empty pipes.
    """

    def test_defaults(self) -> None:
        """1 MiB pipes by default; the cap follows RLIMIT_NOFILE."""
        import resource

        pool = PipePool()
        self.assertEqual(pool.pipeSize, DEFAULT_PIPE_SIZE)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertEqual(pool.maxPipes, max(2, soft // 4))

    def test_reserveCap(self) -> None:
        """Reservations beyond maxPipes are refused, and can be given back."""
        pool = PipePool(maxPipes=4)
        self.assertTrue(pool.reserve(2))
        self.assertTrue(pool.reserve(2))
        self.assertFalse(pool.reserve(2))
        pool.unreserve(2)
        self.assertTrue(pool.reserve(2))
        self.assertEqual(pool.reserved, 4)

    def test_reuse(self) -> None:
        """An empty pipe given back is lent again without a new pipe2()."""
        pool = PipePool(pipeSize=65536)
        self.addCleanup(pool.close)
        p = pool.take()
        pool.give(p)
        self.assertIs(pool.take(), p)
        self.assertEqual(pool.created, 1)
        self.assertEqual(pool.inUse, 1)

    def test_idleBound(self) -> None:
        """Beyond maxIdle, returned pipes are closed."""
        before = _fds()
        pool = PipePool(pipeSize=65536, maxIdle=1)
        a, b = pool.take(), pool.take()
        pool.give(a)
        pool.give(b)
        self.assertEqual(pool.idle, 1)
        self.assertEqual(b.readFD, -1)
        pool.close()
        self.assertEqual(_fds(), before)

    def test_discardNeverReuses(self) -> None:
        """A pipe that may hold data is closed, not pooled."""
        pool = PipePool(pipeSize=65536)
        p = pool.take()
        os.write(p.writeFD, b"stale")
        pool.discard(p)
        self.assertEqual(pool.idle, 0)
        self.assertEqual(p.readFD, -1)
        q = pool.take()
        self.addCleanup(pool.close)
        self.assertRaises(BlockingIOError, os.read, q.readFD, 10)

    def test_badArguments(self) -> None:
        """Nonsense sizes and caps are refused at construction."""
        self.assertRaises(ValueError, PipePool, pipeSize=0)
        self.assertRaises(ValueError, PipePool, maxPipes=-1)
        self.assertRaises(ValueError, PipePool, maxIdle=-1)

    def test_repr(self) -> None:
        """The repr shows size, reservations and use."""
        r = repr(PipePool(pipeSize=65536, maxPipes=10))
        self.assertIn("size=65536", r)
        self.assertIn("reserved=0/10", r)


class UnreservedPipesTests(SynchronousTestCase):
    """
    L{UnreservedPipes}: lending without reservations under the pool's cap.
    """

    def test_capCountsReservedAndLent(self) -> None:
        """
        Pipes reserved by other relays and pipes lent here together stay
        under C{maxPipes}; past it C{take} raises L{PipeLimitReached}, and a
        pipe given back makes room (and calls C{onReturn}).
        """
        pool = PipePool(64 << 10, maxPipes=3)
        self.addCleanup(pool.close)
        lender = UnreservedPipes(pool)
        self.assertTrue(pool.reserve(1))
        first = lender.take()
        second = lender.take()
        with self.assertRaises(PipeLimitReached) as caught:
            lender.take()
        self.assertIn("pipe limit reached (3 pipes)", str(caught.exception))
        returned: list[bool] = []
        lender.onReturn = lambda: returned.append(True)
        lender.give(first)
        self.assertEqual((lender.lent, pool.inUse, returned), (1, 1, [True]))
        third = lender.take()
        lender.discard(second)
        lender.give(third)
        self.assertEqual((lender.lent, pool.inUse, len(returned)), (0, 0, 3))
