# -*- test-case-name: tests.test_relay -*-
"""
The splice engine: the kernel moves the bytes, socket -> pipe -> socket.

How it owns the sockets (DESIGN.md rule 1).  Twisted's epoll and poll reactors
keep one selectable per file descriptor and remove by fd number, so two
objects registered for one socket steal each other's events.  This engine
therefore registers exactly one object per socket, a L{_SpliceSocket}
(an C{IReadWriteDescriptor}) that serves both the direction that reads from
the socket and the direction that writes to it, and keeps the Twisted
transport fully quiet while it does: not reading, not writing, no producer, an
empty write buffer, and the methods that would re-register it
(C{startReading}, C{write}, C{resumeProducing} ...) shadowed on the instance
until the relay ends.  C{loseConnection}/C{abortConnection} on a quiet
transport end the relay instead.  We chose this over swapping the
transport's C{doRead}/C{doWrite} because the engine's own descriptors make the
reactor's view explicit (their C{__repr__} names the relay, which is what
trial's "reactor unclean" report shows) and keep the hot path free of the
transport's per-call checks.

The loop for one direction (DESIGN.md rules 3-8):

  - read from the source only while the pipe is empty, so C{EAGAIN} from
    socket -> pipe always means "socket drained" and C{0} means end of stream;
  - pump the pipe into the destination at once; if it refuses (C{EAGAIN}),
    stop reading the source and wait for the destination to be writable
    (level-triggered reactors would spin otherwise);
  - on end of stream: the pipe is empty, so C{shutdown(SHUT_WR)} the
    destination and leave the other direction running;
  - the pipe goes back to the pool as soon as it is empty, so an idle relay
    holds no pipe.

At most L{MAX_ROUNDS} pipe-fulls move per readiness event, and the relays of
one reactor share a budget of L{TURN_BUDGET} bytes per reactor turn: once it
is spent, bulk directions queue for the next turn (L{_Turns}) while small
reads go at once, so a request waits behind about one pipe-full of bulk work,
not one per bulk flow (docs/design-decisions.md rule 10).
"""

from __future__ import annotations

import errno
import os
import socket
import time
import weakref
from collections import deque
from typing import Any

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPullProducer, IReadWriteDescriptor
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay import CLOSED, ERROR, RESET, Relay, _closeTransport, _Side

_splice = os.splice
_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE

#: Pipe-fulls one readiness event may move before yielding to the reactor.
MAX_ROUNDS = 4

#: Bytes the spliced relays of one reactor may read in one reactor turn
#: before bulk directions wait for the next turn (rule 10).
TURN_BUDGET = 1 << 20

#: A direction whose last read moved at least this many bytes is bulk: it
#: waits its turn once the budget is spent.  Smaller reads never wait.
BULK_READ = 64 << 10

#: Seconds after a small flow's read (a small read following a small read)
#: during which the budget holds bulk back; with none for that long nothing
#: is waiting behind the bulk, and it runs unchecked (longer turns, fewer of
#: them).
SMALL_WINDOW = 0.1

_now = time.monotonic

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


def _noop(*args: object) -> None:
    return None


class _GuardedTransport:
    """
    Mixed in front of a relayed transport's class for the relay's duration
    (the instance's C{__class__} is swapped, and swapped back at the end):
    the methods that would re-register the socket with the reactor do
    nothing, writing raises, and closing ends the relay.  One class
    assignment each way, instead of shadowing a dozen methods per
    connection on the instance.

    The instance carries C{_splicetxGuard}: C{(relay, side name)}.
    """

    #: The class the instance had before (set on each guarded class).
    _splicetxOriginal: type
    _splicetxGuard: tuple[Any, str]

    startReading = stopReading = startWriting = stopWriting = _noop
    pauseProducing = resumeProducing = _noop

    def write(self, *args: object) -> None:
        raise RuntimeError(
            f"transport {self._splicetxGuard[1]} ({self!r}) is being relayed by "
            "splicetx; write to it after the relay ends"
        )

    writeSequence = loseWriteConnection = write

    def loseConnection(self, *args: object) -> None:
        run, name = self._splicetxGuard
        if run is not None:
            run.close(CLOSED, f"loseConnection() called on transport {name}")

    stopProducing = loseConnection

    def abortConnection(self) -> None:
        run, name = self._splicetxGuard
        if run is not None:
            run.abort(CLOSED, f"abortConnection() called on transport {name}")


_guardedClasses: dict[type, type] = {}


def _guardedClass(cls: type) -> type:
    """
    The guarded variant of transport class C{cls}: same name, module and
    interfaces, so C{repr}, C{isinstance} and C{providedBy} are unchanged.
    """
    guarded = _guardedClasses.get(cls)
    if guarded is None:
        guarded = type(
            cls.__name__,
            (_GuardedTransport, cls),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "_splicetxOriginal": cls,
            },
        )
        _guardedClasses[cls] = guarded
    return guarded


class _Turns:
    """
    The byte budget that the spliced relays of one reactor share per reactor
    turn (docs/design-decisions.md rule 10).

    Every read is charged.  Once L{TURN_BUDGET} bytes are spent, and while
    a small read happened in the last L{SMALL_WINDOW} seconds, a bulk
    direction (see L{BULK_READ}) that becomes readable stops reading and
    queues; a call at the next turn refills the budget and lets the queue
    go first, in order.  Small reads are never held back, so a request
    waits behind about a budget's worth of bulk work.

    @ivar left: bytes left in this turn's budget.
    @ivar queue: the bulk directions waiting for a turn, oldest first.
    @ivar smallUntil: until when (C{time.monotonic()}) bulk is held back.
    """

    def __init__(self, reactor: Any) -> None:
        # Weakly, and no DelayedCall kept (it refers to the reactor): the
        # registry below is keyed weakly on the reactor, and a strong path
        # from the value to the key would keep both alive forever.
        self._reactor = weakref.ref(reactor)
        self.left = TURN_BUDGET
        self.queue: deque[_Direction] = deque()
        self.pending = False
        self.smallUntil = 0.0
        reactor.addSystemEventTrigger("before", "shutdown", self.release)

    def spent(self) -> None:
        """
        The budget is spent: refill it at the next turn.
        """
        if not self.pending:
            reactor = self._reactor()
            if reactor is not None:
                self.pending = True
                reactor.callLater(0, self.refill)

    def wait(self, d: _Direction, reading: bool) -> None:
        """
        Hold bulk direction C{d} (its pipe empty) until a later turn.
        """
        if reading:
            d.src.stopReading()
        self.queue.append(d)
        self.spent()

    def release(self) -> None:
        """
        Reactor shutdown: put every waiting direction back on the reactor,
        so that its socket hears C{connectionLost} like the others (only
        registered objects do; rule 11).
        """
        queue = self.queue
        while queue:
            d = queue.popleft()
            src = d.src
            if src is not None and src.engine is not None and not d.done:
                src.startReading()

    def refill(self) -> None:
        self.pending = False
        self.left = TURN_BUDGET
        queue = self.queue
        while queue and self.left > 0:
            d = queue.popleft()
            src = d.src
            if src is None or src.engine is None or d.done:
                continue  # its relay ended meanwhile
            src.startReading()
            d.readable()
        if queue or self.left <= 0:
            self.spent()


_turns: weakref.WeakKeyDictionary[Any, _Turns] = weakref.WeakKeyDictionary()


def _turnsFor(reactor: Any) -> _Turns:
    turns = _turns.get(reactor)
    if turns is None:
        turns = _turns[reactor] = _Turns(reactor)
    return turns


def _errname(err: int) -> str:
    return f"{errno.errorcode.get(err, err)} ({os.strerror(err)})"


@implementer(IReadWriteDescriptor)
class _SpliceSocket:
    """
    The one reactor-registered object for one relayed socket.

    @ivar source: the L{_Direction} that reads from this socket.
    @ivar sink: the L{_Direction} that writes to this socket.
    """

    def __init__(self, engine: SpliceEngine, side: _Side) -> None:
        t = side.transport
        self.engine: SpliceEngine | None = engine
        self.reactor = engine.reactor
        self.name = side.name
        self.sock: socket.socket = t.socket
        self.fd: int = self.sock.fileno()
        self.reading = False
        self.writing = False
        self.source: Any = None
        self.sink: Any = None
        self._transport = t

    # IReadWriteDescriptor
    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.source.readable()

    def doWrite(self) -> None:
        self.sink.writable()

    def connectionLost(self, reason: Failure) -> None:
        engine = self.engine
        if engine is not None:
            engine.socketLost(self, reason)

    def logPrefix(self) -> str:
        return "splicetx"

    # registration bookkeeping (one epoll_ctl only when interest changes)
    def startReading(self) -> None:
        if not self.reading:
            self.reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def startWriting(self) -> None:
        if not self.writing:
            self.writing = True
            self.reactor.addWriter(self)

    def stopWriting(self) -> None:
        if self.writing:
            self.writing = False
            self.reactor.removeWriter(self)

    def teardown(self) -> None:
        """
        Leave the reactor (before anything closes the fd) and go inert.
        """
        self.stopReading()
        self.stopWriting()
        self.doRead = self.doWrite = _noop  # type: ignore[method-assign]
        self.fd = -1
        self.engine = None
        self.source = self.sink = None

    def __repr__(self) -> str:
        # Built on demand: a relay should not pay for it per connection.
        state = ("r" if self.reading else "") + ("w" if self.writing else "")
        try:
            peer = repr(self._transport.getPeer())
        except Exception:
            peer = "?"
        return (
            f"<splicetx splice socket {self.name} fd={self.fd} {peer} "
            f"[{state or 'idle'}]>"
        )


class _Direction:
    """
    One direction of a spliced relay: source socket -> pipe -> destination.
    """

    def __init__(
        self, engine: SpliceEngine, src: _SpliceSocket, dst: _SpliceSocket
    ) -> None:
        self.engine: Any = engine
        self.pool = engine.pool
        self.src = src
        self.dst = dst
        self.srcfd = src.fd
        self.dstfd = dst.fd
        self.name = f"{src.name}->{dst.name}"
        self.pipe: Any = None
        self.inPipe = 0
        self.moved = 0
        self.eof = False
        self.done = False
        self.turns = _turnsFor(engine.reactor)
        self.bulk = False

    def readable(self) -> None:
        """
        The source is readable (and, by invariant, the pipe is empty).
        """
        turns = self.turns
        if self.bulk and turns.left <= 0 and _now() < turns.smallUntil:
            turns.wait(self, True)
            return
        pipe = self.pipe
        if pipe is None:
            try:
                pipe = self.pipe = self.pool.take()
            except OSError as e:
                self.engine.pipeFailed(self, e)
                return
        rounds = MAX_ROUNDS
        count = pipe.size
        srcfd = self.srcfd
        while True:
            try:
                n = _splice(srcfd, pipe.writeFD, count, None, None, _FLAGS)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                self.engine.spliceFailed(self, e, True)
                return
            if not n:
                self.pool.give(pipe)
                self.pipe = None
                self.eof = True
                self.src.stopReading()
                self.finish()
                return
            self.inPipe = n
            if n >= BULK_READ:
                self.bulk = True
            elif self.bulk:
                # One small read in a bulk flow (a header, a lull) is not
                # a small flow: only a second one in a row counts.
                self.bulk = False
            else:
                turns.smallUntil = _now() + SMALL_WINDOW
            left = turns.left = turns.left - n
            if left <= 0:
                turns.spent()
            r = self.pump()
            if r:
                if r == 1:
                    self.src.stopReading()
                    self.dst.startWriting()
                return
            rounds -= 1
            if n < count or not rounds or left <= 0:
                break
        self.pipe = None
        self.pool.give(pipe)

    def pump(self) -> int:
        """
        Move the pipe's bytes to the destination.

        @return: 0 when the pipe is empty, 1 when the destination refused
            more, 2 when the relay ended with an error.
        """
        pipe = self.pipe
        dstfd = self.dstfd
        while True:
            try:
                m = _splice(pipe.readFD, dstfd, self.inPipe, None, None, _FLAGS)
            except BlockingIOError:
                return 1
            except InterruptedError:
                continue
            except OSError as e:
                self.engine.spliceFailed(self, e, False)
                return 2
            if not m:
                self.engine.fail(
                    ERROR, f"{self.name}: splice into {self.dst.name} wrote 0 bytes"
                )
                return 2
            self.moved += m
            left = self.inPipe - m
            self.inPipe = left
            if not left:
                return 0
            # A short write: the socket buffer is full; wait for POLLOUT
            # rather than spend a system call to hear EAGAIN.
            return 1

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
        if self.bulk and turns.left <= 0 and _now() < turns.smallUntil:
            turns.wait(self, False)
            return
        self.src.startReading()
        # The source was held back by us: it most likely has bytes now.
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


def _bufferEmpty(t: Any) -> bool:
    """
    Whether a L{tcp.Connection}'s write buffer is empty.
    """
    return not (len(t.dataBuffer) - t.offset + t._tempDataLen)


@implementer(IPullProducer)
class _Drained:
    """
    A pull producer registered on a transport during hand-over: the transport
    calls C{resumeProducing} at registration and again each time its write
    buffer has drained, which is the public signal that the kernel path may
    take over the socket (DESIGN.md rule 2).
    """

    def __init__(self, engine: SpliceEngine, side: _Side) -> None:
        self.engine: SpliceEngine | None = engine
        self.side = side

    def resumeProducing(self) -> None:
        t = self.side.transport
        if self.engine is None:
            return
        if not _bufferEmpty(t):
            return
        engine, self.engine = self.engine, None
        if t.producer is self:
            t.unregisterProducer()
        engine.drained(self.side)

    def stopProducing(self) -> None:
        self.engine = None


class SpliceEngine:
    """
    Runs a relay through kernel pipes.  See the module docstring.
    """

    name = "splice"

    def __init__(self, run: Relay, toA: bytes, toB: bytes) -> None:
        self.run: Relay | None = run
        self.reactor = run._reactor
        self.pool = run.pipePool()
        self._toA = toA
        self._toB = toB
        self._reserved = False
        self._installed = False
        self._stopped = False
        self._waiting: set[str] = set()
        self._drainers: list[_Drained] = []
        self._socks: list[_SpliceSocket] = []
        self._ab: _Direction | None = None
        self._ba: _Direction | None = None
        self._doneAToB = self._doneBToA = 0
        self._guarded: list[Any] = []

    # -- byte counts ----------------------------------------------------------

    def bytesAToB(self) -> int:
        d = self._ab
        return len(self._toB) + (d.moved if d is not None else self._doneAToB)

    def bytesBToA(self) -> int:
        d = self._ba
        return len(self._toA) + (d.moved if d is not None else self._doneBToA)

    # -- hand-over ----------------------------------------------------------------

    def start(self) -> None:
        run = self.run
        assert run is not None
        pool = self.pool
        if not pool.reserve(2):
            run._engine = None
            run._startCopy(
                f"pipe limit reached ({pool.maxPipes} pipes)", self._toA, self._toB
            )
            return
        self._reserved = True
        # Prove that pipes can be made now (EMFILE, ENFILE): fall back with
        # nothing lost if not.  The pipes stay in the pool for reuse; with two
        # idle pipes in the pool there is nothing to prove.
        taken = []
        try:
            for _ in range(max(0, 2 - pool.idle)):
                taken.append(pool.take())
        except OSError as e:
            for p in taken:
                pool.give(p)
            pool.unreserve(2)
            self._reserved = False
            run._engine = None
            run._startCopy(
                f"cannot create pipes: {_errname(e.errno or 0)}", self._toA, self._toB
            )
            return
        for p in taken:
            pool.give(p)

        a, b = run._sides
        for side in (a, b):
            t = side.transport
            t.stopReading()
            if t.producer is not None:
                t.unregisterProducer()
        if self._toB:
            b.transport.write(self._toB)
        if self._toA:
            a.transport.write(self._toA)
        self._waiting = {"A", "B"}
        for side in (a, b):
            if _bufferEmpty(side.transport):
                # The usual case: nothing to flush, no producer needed.
                self._waiting.discard(side.name)
                continue
            drainer = _Drained(self, side)
            self._drainers.append(drainer)
            if not side.lost:
                side.transport.registerProducer(drainer, False)
        if not self._waiting:
            self._install()

    def drained(self, side: _Side) -> None:
        self._waiting.discard(side.name)
        if not self._waiting and not self._stopped:
            self._install()

    def _install(self) -> None:
        run = self.run
        assert run is not None
        a, b = run._sides
        self._installed = True
        for side in (a, b):
            self._guard(side)
        sa = _SpliceSocket(self, a)
        sb = _SpliceSocket(self, b)
        self._socks = [sa, sb]
        ab = self._ab = _Direction(self, sa, sb)
        ba = self._ba = _Direction(self, sb, sa)
        sa.source, sa.sink = ab, ba
        sb.source, sb.sink = ba, ab
        sa.startReading()
        sb.startReading()

    def _guard(self, side: _Side) -> None:
        """
        Quiet the transport's own re-registering and writing methods while
        the kernel owns its socket (see L{_GuardedTransport}).
        """
        t = side.transport
        t._splicetxGuard = (self.run, side.name)
        t.__class__ = _guardedClass(type(t))
        self._guarded.append(t)

    def _unguard(self) -> None:
        for t in self._guarded:
            original = getattr(type(t), "_splicetxOriginal", None)
            if original is not None:
                t.__class__ = original
            t.__dict__.pop("_splicetxGuard", None)
        self._guarded = []

    # -- events from the sides (hand-over only) ---------------------------------

    def dataReceived(self, side: _Side, data: bytes) -> None:
        # Reading stops before hand-over starts, so this only happens with
        # transports that deliver synchronously; keep order by buffering.
        assert side.peer is not None
        side.peer.transport.write(data)
        if side.name == "A":
            self._toB += data
        else:
            self._toA += data

    def readConnectionLost(self, side: _Side) -> None:
        pass

    def connectionLost(self, side: _Side, reason: Failure) -> None:
        # Leave it to the relay's default: a lost transport ends the relay.
        pass

    # -- the relay's decisions -------------------------------------------------

    def directionDone(self) -> None:
        ab, ba = self._ab, self._ba
        if ab is not None and ba is not None and ab.done and ba.done:
            run = self.run
            assert run is not None
            run._end("done", "both directions finished", abort=False)

    def fail(self, reason: str, detail: str) -> None:
        run = self.run
        if run is not None:
            run._end(reason, detail, abort=True)

    def _nothingMoved(self) -> bool:
        ab, ba = self._ab, self._ba
        return (
            ab is not None
            and ba is not None
            and ab.moved == ba.moved == ab.inPipe == ba.inPipe == 0
            and not ab.eof
            and not ba.eof
        )

    def spliceFailed(self, direction: _Direction, e: OSError, reading: bool) -> None:
        err = e.errno or 0
        where = direction.src.name if reading else direction.dst.name
        if err in FALLBACK_ERRNOS and reading and self._nothingMoved():
            self._fallBack(f"first splice failed: {_errname(err)}")
            return
        reason = RESET if err in RESET_ERRNOS else ERROR
        self.fail(
            reason,
            f"{direction.name}: {'read from' if reading else 'write to'} "
            f"{where} failed: {_errname(err)}",
        )

    def pipeFailed(self, direction: _Direction, e: OSError) -> None:
        if self._nothingMoved():
            self._fallBack(f"cannot create a pipe: {_errname(e.errno or 0)}")
            return
        self.fail(
            ERROR, f"{direction.name}: cannot create a pipe: {_errname(e.errno or 0)}"
        )

    def socketLost(self, sock: _SpliceSocket, reason: Failure) -> None:
        """
        The reactor dropped one of our sockets: an error/hang-up event, or
        reactor shutdown.
        """
        try:
            err = sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as e:
            err = e.errno or 0
        if err:
            self.fail(
                RESET if err in RESET_ERRNOS else ERROR,
                f"transport {sock.name}: {_errname(err)}",
            )
        else:
            self.fail(CLOSED, f"transport {sock.name} lost: {reason.getErrorMessage()}")

    def _fallBack(self, why: str) -> None:
        run = self.run
        assert run is not None
        self.stop()
        run._fallBack(why)

    # -- the end ----------------------------------------------------------------

    def stop(self) -> None:
        """
        Leave the reactor, give back or close the pipes, un-quiet the
        transports.  Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        for drainer in self._drainers:
            t = drainer.side.transport
            drainer.engine = None
            if getattr(t, "producer", None) is drainer:
                t.unregisterProducer()
        for sock in self._socks:
            sock.teardown()
        for d in (self._ab, self._ba):
            if d is not None and d.pipe is not None:
                if d.inPipe:
                    self.pool.discard(d.pipe)
                else:
                    self.pool.give(d.pipe)
                d.pipe = None
        if self._reserved:
            self._reserved = False
            self.pool.unreserve(2)
        self._unguard()

    def closeTransport(self, side: _Side, abort: bool) -> None:
        """
        Close a transport.  Once installed the transport's buffer is empty
        and it is not registered with the reactor, so it is closed at once
        (this also works while the reactor shuts down).
        """
        t = side.transport
        if self._installed:
            # A clean close shares Twisted's own connectionDone failure, as
            # Twisted's transports do: no Failure to build per connection.
            t.connectionLost(Failure(ConnectionAborted()) if abort else connectionDone)
        else:
            _closeTransport(t, abort)

    def release(self) -> None:
        """
        Break reference cycles once the result is out (DESIGN.md rule 13).
        """
        for d in (self._ab, self._ba):
            if d is not None:
                d.engine = None
                d.src = d.dst = None  # type: ignore[assignment]
        if self._ab is not None:
            self._doneAToB = self._ab.moved
        if self._ba is not None:
            self._doneBToA = self._ba.moved
        self._ab = self._ba = None
        self._socks = []
        self._drainers = []
        self.run = None
