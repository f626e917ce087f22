# -*- test-case-name: tests.test_relay,tests.test_relay_faults -*-
"""
One direction of a spliced relay: source socket -> pipe -> destination,
moved by the kernel (docs/design-decisions.md rules 3-8 and 10).

  - read from the source only while the pipe is empty, so C{EAGAIN} from
    socket -> pipe always means "socket drained" and C{0} means end of stream;
  - pump the pipe into the destination at once; if it refuses (C{EAGAIN}),
    stop reading the source and wait for the destination to be writable
    (level-triggered reactors would spin otherwise);
  - on end of stream: the pipe is empty, so C{shutdown(SHUT_WR)} the
    destination and leave the other direction running;
  - the pipe goes back to the pool as soon as it is empty, so an idle relay
    holds no pipe;
  - at most L{MAX_ROUNDS} pipe-fulls per readiness event, and the per-turn
    byte budget and small-flow pieces of L{splicetx._relay.turns}.
  - with a bandwidth limit (C{limit}, a L{splicetx._relay.bandwidth.Bandwidth}),
    each read is at most what its bucket grants, and a spent bucket takes the
    source off the reactor until its timer.

A L{Direction} knows its engine only as a L{DirectionHost} and its two
sockets as L{DirectionSocket}s: the splice engine (L{splicetx._relay.splice})
and the fast path of a plain forward (L{splicetx._proxy.fastconn}) both provide
them.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.python.failure import Failure

from splicetx._relay import core as _core
from splicetx._relay.contract import CLOSED, ERROR, RESET
from splicetx._relay.turns import BULK_READ, PIECE, SMALL_WINDOW, monotonicNow, turnsFor

__all__ = [
    "DirectionHost",
    "DirectionSocket",
    "MAX_ROUNDS",
    "RESET_ERRNOS",
    "FALLBACK_ERRNOS",
    "spliceFailure",
    "socketLoss",
]

_splice = os.splice
_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
_EAGAIN = errno.EAGAIN

#: Pipe-fulls one readiness event may move before yielding to the reactor.
MAX_ROUNDS = 4

#: Errors that mean the peer is gone: the relay ends as a reset.
RESET_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.ENOTCONN,
    }
)

#: Errors of a first splice that mean "the kernel cannot splice this": the
#: relay falls back to copying when nothing has moved yet.
FALLBACK_ERRNOS = frozenset({errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.EOPNOTSUPP})


def errname(err: int) -> str:
    return f"{errno.errorcode.get(err, err)} ({os.strerror(err)})"


def spliceFailure(direction: Any, err: int, reading: bool) -> tuple[str, str]:
    """
    The relay's end when a splice of C{direction} failed with C{err}: from
    its source (C{reading}) or into its destination.

    @return: C{(reason, detail)} for the host's C{fail}.
    """
    where = direction.src.name if reading else direction.dst.name
    return (
        RESET if err in RESET_ERRNOS else ERROR,
        f"{direction.name}: {'read from' if reading else 'write to'} "
        f"{where} failed: {errname(err)}",
    )


def socketLoss(sock: Any, reason: Failure) -> tuple[str, str]:
    """
    The relay's end when the reactor dropped C{sock} (an error or hang-up
    event, or reactor shutdown): its pending socket error, if any, says
    which.

    @param sock: a L{DirectionSocket}.
    @return: C{(reason, detail)} for the host's C{fail}.
    """
    try:
        err = sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as e:
        err = e.errno or 0
    if err:
        return (
            RESET if err in RESET_ERRNOS else ERROR,
            f"transport {sock.name}: {errname(err)}",
        )
    return CLOSED, f"transport {sock.name} lost: {reason.getErrorMessage()}"


class _Inert:
    """
    The directions of a torn-down L{_SpliceSocket}: an event the reactor
    still delivers in the turn that tore it down does nothing.
    """

    __slots__ = ()

    done = True

    def readable(self) -> None:
        pass

    def writable(self) -> None:
        pass


INERT = _Inert()


#: One string per direction for every relay, not two new ones per relay.
_DIRECTION_NAMES = {("A", "B"): "A->B", ("B", "A"): "B->A"}


class DirectionHost(TypingProtocol):
    """
    What a L{Direction} needs of the engine it reports to (the splice
    engine here, a fast connection in L{splicetx._proxy.fastconn}).
    """

    @property
    def pool(self) -> Any:
        """
        Where pipes come from: C{take()}, C{give(pipe)}, C{discard(pipe)}.
        """

    @property
    def reactor(self) -> Any:
        """
        The reactor (for the byte budget of its turns).
        """

    def pipeFailed(self, direction: Any, e: OSError) -> None:
        """
        No pipe for C{direction}: the source is readable, nothing was read.
        """

    def spliceFailed(self, direction: Any, e: OSError, reading: bool) -> None:
        """
        A splice from the source (C{reading}) or into the destination failed.
        """

    def fail(self, reason: str, detail: str) -> None:
        """
        End the relay with C{reason}.
        """

    def directionDone(self) -> None:
        """
        A direction finished (end of stream passed on).
        """


class DirectionSocket(TypingProtocol):
    """
    What a L{Direction} needs of each of its two sockets
    (L{_SpliceSocket} here, a fast socket in L{splicetx._proxy.fastconn}).
    """

    engine: Any
    fd: int
    name: str
    sock: Any
    source: Any
    sink: Any

    def startReading(self) -> None: ...

    def stopReading(self) -> None: ...

    def startWriting(self) -> None: ...

    def stopWriting(self) -> None: ...


class Direction:
    """
    One direction of a spliced relay: source socket -> pipe -> destination.
    """

    __slots__ = (
        "engine",
        "pool",
        "src",
        "dst",
        "srcfd",
        "dstfd",
        "name",
        "pipe",
        "inPipe",
        "moved",
        "eof",
        "done",
        "turns",
        "bulk",
        "limit",
        "__weakref__",
    )

    def __init__(
        self,
        engine: DirectionHost,
        src: DirectionSocket,
        dst: DirectionSocket,
        pool: Any = None,
        turns: Any = None,
    ) -> None:
        """
        @param engine: the host it reports to.
        @param src: the socket it reads.
        @param dst: the socket it writes.
        @param pool: the host's pipe pool, when the caller has it at hand
            (else C{engine.pool} is asked).
        @param turns: the reactor's turn budget (L{turnsFor}), when the
            caller has it at hand.
        """
        self.engine: Any = engine
        self.pool = engine.pool if pool is None else pool
        self.src = src
        self.dst = dst
        self.srcfd = src.fd
        self.dstfd = dst.fd
        self.name = _DIRECTION_NAMES.get((src.name, dst.name)) or (
            f"{src.name}->{dst.name}"
        )
        self.pipe: Any = None
        self.inPipe = 0
        self.moved = 0
        self.eof = False
        self.done = False
        self.turns = turnsFor(engine.reactor) if turns is None else turns
        self.bulk = False
        #: A L{Bandwidth <splicetx._relay.bandwidth.Bandwidth>} bounding
        #: what this direction reads, or C{None} (no limit).
        self.limit: Any = None

    def readable(self, got: int | None = None) -> None:
        """
        The source is readable (and, by invariant, the pipe is empty).

        @param got: what the compiled turn returned when the caller (the
            compiled socket loop) asked it already; C{None} to ask it here.
        """
        if got is None:
            got = -1
            fast = _core.turn
            if fast is not None:
                # The compiled core's turn (docs/design-decisions.md, "A
                # compiled turn"): the common small message read, accounted
                # and written in one call; it returns -1 when this turn is
                # not one it takes (then all of the below runs), 0 when the
                # turn is over, -2 after one full pipe (the next round is
                # read here), or n > 0: a bulk read of n bytes is in
                # self.pipe.
                got = fast(self, BULK_READ, PIECE, SMALL_WINDOW, monotonicNow)
                if not got:
                    return
        turns = self.turns
        if self.bulk and turns.left <= 0 and monotonicNow() < turns.smallUntil:
            turns.wait(self, True)
            return
        limit = self.limit
        allowed = 0
        if limit is not None:
            allowed = limit.grant()
            if not allowed:
                limit.hold(self)
                return
        pipe = self.pipe
        if pipe is None:
            try:
                pipe = self.pipe = self.pool.take()
            except OSError as e:
                self.engine.pipeFailed(self, e)
                return
        rounds = MAX_ROUNDS
        if got == -2:
            rounds -= 1
        count = pipe.size
        if allowed and allowed < count:
            count = allowed
        srcfd = self.srcfd
        move = _core.move
        while True:
            wrote = False
            if got > 0:
                n = got
                got = -1
            elif move is None:
                try:
                    n = _splice(srcfd, pipe.writeFD, count, None, None, _FLAGS)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                except OSError as e:
                    self.engine.spliceFailed(self, e, True)
                    return
            else:
                # The compiled core reads and, for up to PIECE bytes, writes
                # too: what pump() would do next, with the same outcome.
                n, rest, err = move(
                    srcfd, pipe.writeFD, pipe.readFD, self.dstfd, count, PIECE
                )
                if n < 0:
                    if err == _EAGAIN:
                        break
                    self.engine.spliceFailed(self, OSError(err, os.strerror(err)), True)
                    return
                wrote = n <= PIECE
            if not n:
                self.pool.give(pipe)
                self.pipe = None
                self.eof = True
                self.src.stopReading()
                self.finish()
                return
            self.inPipe = n
            if limit is not None:
                limit.tokens -= n
            if n >= BULK_READ:
                turns.bulkUntil = monotonicNow() + SMALL_WINDOW
                if not self.bulk:
                    self.bulk = True
                    if turns.smalls:
                        turns.forget(self)
            elif self.bulk:
                # One small read in a bulk flow (a header, a lull) is not
                # a small flow: only a second one in a row counts.
                self.bulk = False
            else:
                now = monotonicNow()
                until = turns.smallUntil = now + SMALL_WINDOW
                if now < turns.bulkUntil:
                    # Watched only while bulk is about to serve it between
                    # pieces: with none, noting is bookkeeping for no one.
                    turns.noteSmall(self, until)
            left = turns.left = turns.left - n
            if left <= 0:
                turns.spent()
            if not wrote:
                r = self.pump()
            else:
                self.moved += n - rest
                self.inPipe = rest
                if err:
                    r = 1 if err == _EAGAIN else self.writeFailed(err)
                else:
                    r = 1 if rest else 0
            if r:
                if r == 1:
                    self.src.stopReading()
                    self.dst.startWriting()
                return
            rounds -= 1
            if n < count or not rounds or left <= 0:
                break
            if limit is not None:
                count = limit.grant()
                if not count:
                    break
                if count > pipe.size:
                    count = pipe.size
        self.pipe = None
        self.pool.give(pipe)
        if limit is not None and limit.tokens < limit.quantum:
            # Spent: off the reactor now, not at its next readable event.
            limit.hold(self)

    def pump(self) -> int:
        """
        Move the pipe's bytes to the destination.

        While a small flow is busy (L{splicetx._relay.turns._Turns.busy}), a bulk
        direction writes in pieces of L{PIECE} bytes and serves the waiting
        small flows between two pieces (L{splicetx._relay.turns._Turns.serveSmall}).

        @return: 0 when the pipe is empty, 1 when the destination refused
            more, 2 when the relay ended (with an error, or while small
            flows were served).
        """
        pipe = self.pipe
        dstfd = self.dstfd
        want = self.inPipe
        turns = self.turns
        # Pieces only while a small flow is busy: someone to serve between.
        pieces = want > PIECE and self.bulk and turns.busy()
        while True:
            if pieces and want > PIECE:
                want = PIECE
            try:
                m = _splice(pipe.readFD, dstfd, want, None, None, _FLAGS)
            except BlockingIOError:
                return 1
            except InterruptedError:
                continue
            except OSError as e:
                return self.writeFailed(e.errno or 0, e)
            if not m:
                return self.writeFailed(-1)
            self.moved += m
            left = self.inPipe - m
            self.inPipe = left
            if not left:
                return 0
            if m < want:
                # A short write: the socket buffer is full; wait for POLLOUT
                # rather than spend a system call to hear EAGAIN.
                return 1
            # One piece written (see PIECE): the small flows with bytes
            # waiting go now, not after this reactor turn.
            turns.serveSmall(self)
            if self.pipe is not pipe or self.dst is None:
                # What it ran ended this relay too (the engine's stop took
                # the pipe): nothing more to do here.
                return 2
            want = left

    def writeFailed(self, err: int, e: OSError | None = None) -> int:
        """
        A splice into the destination failed with C{err} (C{-1}: it wrote
        0 bytes): the relay ends.

        @param e: the exception, when Python raised one.
        @return: 2 (see L{pump}).
        """
        if err == -1:
            self.engine.fail(
                ERROR, f"{self.name}: splice into {self.dst.name} wrote 0 bytes"
            )
        else:
            self.engine.spliceFailed(self, e or OSError(err, os.strerror(err)), False)
        return 2

    def writable(self) -> None:
        """
        The destination is writable again and the pipe holds bytes.
        """
        r = self.pump()
        if r:
            return
        self.dst.stopWriting()
        pipe = self.pipe
        self.pipe = None
        self.pool.give(pipe)
        if self.eof:
            self.finish()
            return
        turns = self.turns
        if self.bulk and turns.left <= 0 and monotonicNow() < turns.smallUntil:
            turns.wait(self, False)
            return
        self.src.startReading()
        # The source was held back by us: it most likely has bytes now.
        self.readable()

    def resume(self, read: bool = True) -> None:
        """
        Its wait is over (for a turn of the byte budget, for a pipe): watch
        the source again and read it, unless its relay ended meanwhile.

        @param read: C{False} to only watch the source again (the reactor
            shuts down: the socket is to hear C{connectionLost}).
        """
        src = self.src
        if src is None or src.engine is None or self.done:
            return
        src.startReading()
        if read:
            self.readable()

    def finish(self) -> None:
        """
        End of stream from the source, pipe drained: half-close the
        destination; the other direction carries on.  When the other
        direction is already finished, the close that follows at once sends
        the FIN, so no separate C{shutdown} is needed.
        """
        self.done = True
        if not self.dst.source.done:
            try:
                self.dst.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.engine.directionDone()

    def __repr__(self) -> str:
        return (
            f"<splicetx direction {self.name} moved={self.moved} inPipe={self.inPipe}>"
        )


# The compiled socket loop calls the compiled turn of a Direction itself,
# with this module's constants (read here at each loop turn: a test's patch
# of them holds).
_core.setupDirection(Direction, globals())
