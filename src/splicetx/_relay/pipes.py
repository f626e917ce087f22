# -*- test-case-name: tests.test_pipes -*-
"""
Kernel pipes for the splice engine: creation, sizing, a per-process cap and a
small pool of idle (always empty) pipes.

A spliced relay moves bytes socket -> pipe -> socket, so every direction that
has bytes in flight needs one pipe (two file descriptors).  Pipes are taken
from a L{PipePool} when a direction has data to move and given back as soon as
that pipe is empty again, so an idle relayed connection holds no pipe at all.

The pool enforces two limits:

  - C{maxPipes}: the number of pipes the spliced relays of this process may
    hold at once.  A relay I{reserves} its two pipes when it starts (see
    L{PipePool.reserve}); past the cap the relay uses the copy engine instead,
    so a burst of connections can never exhaust the file descriptor table
    through pipes, and a relay whose peer stopped reading cannot starve the
    others of pipes.
  - C{maxIdle}: how many empty pipes are kept open for reuse, so the hot path
    does not pay for C{pipe2}/C{F_SETPIPE_SZ}/C{close} on every burst.

A pipe that may still hold data is never pooled: it is closed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
from typing import Any

__all__ = [
    "Pipe",
    "PipePool",
    "UnreservedPipes",
    "PipeLimitReached",
    "DEFAULT_PIPE_SIZE",
    "defaultPipePool",
]

#: Default pipe size.  Measured on a 2-core machine (see docs/benchmarks.md):
#: 1 MiB pipes halve the CPU seconds per GB of the kernel default of 64 KiB,
#: because each splice call moves ~10x more bytes per system call.
DEFAULT_PIPE_SIZE = 1 << 20

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def pipeMaxSize() -> int:
    """
    Return the largest pipe size an unprivileged process may ask for.

    @return: C{/proc/sys/fs/pipe-max-size}, or 1 MiB when it cannot be read.
    """
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1 << 20


class Pipe:
    """
    One non-blocking, close-on-exec kernel pipe.

    @ivar readFD: the read end.
    @ivar writeFD: the write end.
    @ivar size: the capacity the kernel granted, in bytes (C{F_GETPIPE_SZ}).
    """

    __slots__ = ("readFD", "writeFD", "size")

    def __init__(self, readFD: int, writeFD: int, size: int) -> None:
        self.readFD = readFD
        self.writeFD = writeFD
        self.size = size

    @classmethod
    def open(cls, size: int) -> Pipe:
        """
        Create a pipe and try to resize it to C{size} bytes.

        A refused resize (C{EPERM} once the user's pipe memory is used up,
        C{EINVAL} above C{pipe-max-size}, C{EBUSY}) is not an error: the
        pipe keeps whatever size the kernel grants.

        @param size: the wanted capacity in bytes.
        @raise OSError: when the pipe itself cannot be created (C{EMFILE},
            C{ENFILE}).
        """
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            granted = fcntl.fcntl(w, _F_GETPIPE_SZ)
            if size != granted:
                try:
                    granted = fcntl.fcntl(w, _F_SETPIPE_SZ, size)
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EINVAL, errno.EBUSY):
                        raise
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        return cls(r, w, granted)

    def close(self) -> None:
        """
        Close both ends.  Safe to call twice.
        """
        if self.readFD >= 0:
            os.close(self.readFD)
            os.close(self.writeFD)
            self.readFD = self.writeFD = -1

    def __repr__(self) -> str:
        return f"<Pipe r={self.readFD} w={self.writeFD} size={self.size}>"


def _defaultMaxPipes() -> int:
    """
    Derive a pipe cap from the soft C{RLIMIT_NOFILE}: pipes may use at most
    half of the file descriptors (each pipe costs two).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(2, soft // 4)


class PipePool:
    """
    Pipes for the spliced relays of one process.

    @ivar pipeSize: the size new pipes are asked to have.
    @ivar maxPipes: how many pipes live relays may reserve at once.
    @ivar maxIdle: how many empty pipes are kept for reuse.
    @ivar reserved: how many pipes are reserved by live relays.
    @ivar inUse: how many pipes are currently lent out (have data in flight).
    @ivar created: how many pipes this pool has opened in its lifetime.
    """

    def __init__(
        self,
        pipeSize: int = DEFAULT_PIPE_SIZE,
        maxPipes: int | None = None,
        maxIdle: int = 64,
    ) -> None:
        """
        @param pipeSize: the wanted pipe size in bytes (rounded up to a power
            of two by the kernel; capped by C{pipe-max-size} unless the
            process is privileged).
        @param maxPipes: cap on reserved pipes; default: a quarter of the
            soft C{RLIMIT_NOFILE} at the time of the first reservation.
        @param maxIdle: how many empty pipes to keep open for reuse.
        @raise ValueError: for a non-positive size or cap.
        """
        if pipeSize <= 0:
            raise ValueError(f"pipe size must be positive, not {pipeSize!r}")
        if maxPipes is not None and maxPipes < 0:
            raise ValueError(f"maxPipes must not be negative, not {maxPipes!r}")
        if maxIdle < 0:
            raise ValueError(f"maxIdle must not be negative, not {maxIdle!r}")
        self.pipeSize = pipeSize
        self._maxPipes = maxPipes
        self.maxIdle = maxIdle
        self.reserved = 0
        self.inUse = 0
        self.created = 0
        self._idle: list[Pipe] = []

    @property
    def maxPipes(self) -> int:
        """
        The cap on reserved pipes (computed from C{RLIMIT_NOFILE} on first use
        when not given).
        """
        if self._maxPipes is None:
            self._maxPipes = _defaultMaxPipes()
        return self._maxPipes

    @property
    def idle(self) -> int:
        """
        How many empty pipes are open in the pool.
        """
        return len(self._idle)

    def reserve(self, count: int = 2) -> bool:
        """
        Reserve C{count} pipes for one relay.

        @return: C{True} when the reservation fits under L{maxPipes},
            C{False} (and nothing reserved) otherwise.
        """
        if self.reserved + count > self.maxPipes:
            return False
        self.reserved += count
        return True

    def unreserve(self, count: int = 2) -> None:
        """
        Give back a reservation made with L{reserve}.
        """
        self.reserved -= count

    def take(self) -> Pipe:
        """
        Lend an empty pipe, opening one when none is idle.

        @raise OSError: when a new pipe cannot be created.
        """
        if self._idle:
            pipe = self._idle.pop()
        else:
            pipe = Pipe.open(self.pipeSize)
            self.created += 1
        self.inUse += 1
        return pipe

    def give(self, pipe: Pipe) -> None:
        """
        Return an B{empty} pipe.  It is kept for reuse up to L{maxIdle},
        closed otherwise.
        """
        self.inUse -= 1
        if len(self._idle) < self.maxIdle and pipe.readFD >= 0:
            self._idle.append(pipe)
        else:
            pipe.close()

    def discard(self, pipe: Pipe) -> None:
        """
        Close a lent pipe that may still hold data (it is never reused).
        """
        self.inUse -= 1
        pipe.close()

    def close(self) -> None:
        """
        Close every idle pipe.  Lent pipes are closed when they come back.
        """
        idle, self._idle = self._idle, []
        for pipe in idle:
            pipe.close()

    def __repr__(self) -> str:
        return (
            f"<PipePool size={self.pipeSize} reserved={self.reserved}/"
            f"{self._maxPipes if self._maxPipes is not None else 'auto'} "
            f"inUse={self.inUse} idle={len(self._idle)}>"
        )


class PipeLimitReached(OSError):
    """
    No pipe may be lent: the pool's cap is reached.
    """


class UnreservedPipes:
    """
    Lends a L{PipePool}'s pipes to relays that reserve none up front (the
    fast path of a plain forward, L{splicetx._proxy.fastconn}): an idle connection
    then costs no pipe and no reservation, so the connections a process
    holds are bounded by its file descriptors (two each), not by
    C{maxPipes / 2}.  The cap still holds for pipes lent here: the pipes
    reserved by other relays plus those lent here stay under the pool's
    C{maxPipes}; past it, C{take} raises L{PipeLimitReached}, and the
    direction that asked waits (its source unread, nothing lost) until
    L{onReturn} says a pipe came back.

    @ivar pool: the pool.
    @ivar lent: pipes lent out here now.
    @ivar onReturn: called (with no argument) each time a pipe comes back
        while it is set, or C{None}.
    """

    __slots__ = ("pool", "lent", "onReturn")

    def __init__(self, pool: PipePool) -> None:
        self.pool = pool
        self.lent = 0
        self.onReturn: Any = None

    def take(self) -> Pipe:
        """
        Lend an empty pipe (see L{PipePool.take}).

        @raise PipeLimitReached: when the cap is reached.
        @raise OSError: when a new pipe cannot be created.
        """
        pool = self.pool
        if pool.reserved + self.lent >= pool.maxPipes:
            raise PipeLimitReached(
                errno.EMFILE, f"pipe limit reached ({pool.maxPipes} pipes)"
            )
        pipe = pool.take()
        self.lent += 1
        return pipe

    def give(self, pipe: Pipe) -> None:
        """
        Return an empty pipe (see L{PipePool.give}).
        """
        self.lent -= 1
        self.pool.give(pipe)
        if self.onReturn is not None:
            self.onReturn()

    def discard(self, pipe: Pipe) -> None:
        """
        Close a lent pipe that may hold data (see L{PipePool.discard}).
        """
        self.lent -= 1
        self.pool.discard(pipe)
        if self.onReturn is not None:
            self.onReturn()


_default: PipePool | None = None


def defaultPipePool() -> PipePool:
    """
    Return the process-wide pool used when a relay is not given one.
    """
    global _default
    if _default is None:
        _default = PipePool()
    return _default
