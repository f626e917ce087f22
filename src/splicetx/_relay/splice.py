# -*- test-case-name: tests.test_relay -*-
"""
The splice engine: the kernel moves the bytes, socket -> pipe -> socket.

How it owns the sockets (docs/design-decisions.md rule 1).  Twisted's epoll
and poll reactors keep one selectable per file descriptor and remove by fd
number, so two objects registered for one socket steal each other's events.  This engine
therefore registers exactly one object per socket, a L{_SpliceSocket}
(an C{IReadWriteDescriptor}) that serves both the direction that reads from
the socket and the direction that writes to it, and keeps the Twisted
transport fully quiet while it does: not reading, not writing, no producer, an
empty write buffer, and the methods that would re-register it
(C{startReading}, C{write}, C{resumeProducing} ...) shadowed on the instance
until the relay ends (L{splicetx._relay.transports.guardTransport}).
C{loseConnection}/C{abortConnection} on a quiet transport end the relay
instead.  We chose this over swapping the
transport's C{doRead}/C{doWrite} because the engine's own descriptors make the
reactor's view explicit (their C{__repr__} names the relay, which is what
trial's "reactor unclean" report shows) and keep the hot path free of the
transport's per-call checks.

Where the sockets are watched (docs/design-decisions.md rule 15): on a
reactor that can carry a L{SocketLoop <splicetx._relay.socketloop.SocketLoop>}
(Linux, C{epoll}), each relayed socket is a L{_LoopSocket}, a member of the
reactor's loop, the same set the fast path's sockets are in, so a relay
started by L{relay() <splicetx.relay>} pays the loop's dispatch per event, not
the reactor's.  Elsewhere each socket is a L{_SpliceSocket} registered with
the reactor itself.  Either way it is the one object watching its socket.

The loop of each direction, with its per-event bound, per-turn budget and
small-flow pieces (docs/design-decisions.md rules 3-8 and 10), is
L{splicetx._relay.direction}; this module gives it its sockets and reports.

The engine knows its relay only as an L{IEngineHost}: it reports the end
with L{IEngineHost.ended}, a fallback to copying mid-relay with
L{IEngineHost.fellBack}, and a fallback before anything moved by raising
L{FallBack} from L{SpliceEngine.start}.
"""

from __future__ import annotations

import select
from typing import Any

from twisted.internet.interfaces import (
    IPullProducer,
    IReactorFDSet,
    IReadWriteDescriptor,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay.bandwidth import BandwidthPlan, directionLimits
from splicetx._relay.contract import (
    DONE,
    ERROR,
    FallBack,
    IEngineHost,
    IRelayEngine,
    IRelaySide,
)
from splicetx._relay.direction import (
    FALLBACK_ERRNOS,
    INERT,
    Direction,
    errname,
    socketLoss,
    spliceFailure,
)
from splicetx._relay.pipes import PipePool
from splicetx._relay.socketloop import LoopMember, SocketLoop, loopFor
from splicetx._relay.transports import (
    bufferEmpty,
    closeNow,
    closeTransport,
    guardTransport,
    socketOf,
    unguardTransport,
)


@implementer(IReadWriteDescriptor)
class _SpliceSocket:
    """
    The one reactor-registered object for one relayed socket (where the
    reactor carries no L{SocketLoop}; see L{_LoopSocket}).

    @ivar source: the L{Direction} that reads from this socket.
    @ivar sink: the L{Direction} that writes to this socket.
    """

    __slots__ = (
        "engine",
        "reactor",
        "name",
        "sock",
        "fd",
        "reading",
        "writing",
        "source",
        "sink",
        "_transport",
        "__weakref__",
    )

    def __init__(self, engine: SpliceEngine, side: IRelaySide) -> None:
        t = side.transport
        self.engine: SpliceEngine | None = engine
        self.reactor = engine.reactor
        self.name = side.name
        self.sock = socketOf(t)
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
        # Late events of this reactor turn go nowhere.
        self.fd = -1
        self.engine = None
        self.source = self.sink = INERT

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


class _LoopSocket(LoopMember):
    """
    A relayed socket as a member of the reactor's L{SocketLoop}: the loop
    calls C{source.readable()} and C{sink.writable()} itself (no reactor
    dispatch per event), errors and hang-ups reach the directions through
    their next splice, and at reactor shutdown the loop passes on
    C{connectionLost}.  Otherwise what L{_SpliceSocket} is.
    """

    __slots__ = ("engine", "reactor", "name", "sock", "_transport", "__weakref__")

    engine: Any
    name: str
    sock: Any
    source: Any
    sink: Any

    def __init__(self, engine: SpliceEngine, side: IRelaySide, loop: SocketLoop):
        self.loop = loop
        _SpliceSocket.__init__(self, engine, side)  # type: ignore[arg-type]

    # The rest is _SpliceSocket's (a class with both slot layouts cannot be).
    connectionLost = _SpliceSocket.connectionLost
    __repr__ = _SpliceSocket.__repr__

    def teardown(self) -> None:
        """
        Leave the loop (before anything closes the fd) and go inert.
        """
        _SpliceSocket.teardown(self)  # type: ignore[arg-type]

    def crashed(self) -> None:
        """
        A direction raised while the loop handed it an event: end the relay
        (the loop has logged the traceback).
        """
        engine = self.engine
        if engine is not None:
            engine.fail(ERROR, f"internal error on socket {self.name}")


def socketLoopOf(reactor: Any) -> SocketLoop | None:
    """
    The L{SocketLoop} a relay on C{reactor} puts its sockets in, or C{None}
    where there is none (no C{epoll}, or a reactor without C{IReactorFDSet}):
    then each socket is registered with the reactor itself.

    @param reactor: the reactor of the relay.
    """
    if not _EPOLL or not IReactorFDSet.providedBy(reactor):
        return None
    return loopFor(reactor)


_EPOLL = hasattr(select, "epoll")


@implementer(IPullProducer)
class _Drained:
    """
    A pull producer registered on a transport during hand-over: the transport
    calls C{resumeProducing} at registration and again each time its write
    buffer has drained, which is the public signal that the kernel path may
    take over the socket (docs/design-decisions.md rule 2).
    """

    def __init__(self, engine: SpliceEngine, side: IRelaySide) -> None:
        self.engine: SpliceEngine | None = engine
        self.side = side

    def resumeProducing(self) -> None:
        t = self.side.transport
        if self.engine is None:
            return
        if not bufferEmpty(t):
            return
        engine, self.engine = self.engine, None
        if t.producer is self:
            t.unregisterProducer()
        engine.drained(self.side)

    def stopProducing(self) -> None:
        self.engine = None


@implementer(IRelayEngine)
class SpliceEngine:
    """
    Runs a relay through kernel pipes.  See the module docstring.

    @ivar host: the relay, until the result is out.
    @ivar reactor: the reactor the sockets are registered with.
    @ivar pool: where the pipes come from.
    """

    name = "splice"

    __slots__ = (
        "host",
        "reactor",
        "pool",
        "_a",
        "_b",
        "_toA",
        "_toB",
        "_reserved",
        "_installed",
        "_stopped",
        "_waiting",
        "_drainers",
        "_socks",
        "_ab",
        "_ba",
        "_doneAToB",
        "_doneBToA",
        "_guarded",
        "_bandwidth",
        "__weakref__",
    )

    def __init__(
        self,
        host: IEngineHost,
        reactor: IReactorFDSet,
        pool: PipePool,
        a: IRelaySide,
        b: IRelaySide,
        toA: bytes,
        toB: bytes,
        bandwidth: int | BandwidthPlan | None = None,
    ) -> None:
        """
        @param host: the relay to report the end or a fallback to.
        @param reactor: the reactor both transports run on.
        @param pool: the pool to take pipes from.
        @param a: side A.
        @param b: side B.
        @param toA: bytes to write to A first.
        @param toB: bytes to write to B first.
        @param bandwidth: bytes per second each direction may move at most
            (a L{Bandwidth} each), a L{BandwidthPlan} (shared buckets too),
            or C{None}.
        """
        self.host: IEngineHost | None = host
        self._bandwidth = bandwidth
        self.reactor = reactor
        self.pool = pool
        self._a = a
        self._b = b
        self._toA = toA
        self._toB = toB
        self._reserved = False
        self._installed = False
        self._stopped = False
        # The sides whose hand-over is pending (a list: a set of two costs
        # three times the memory, for every live relay).
        self._waiting: list[str] = []
        self._drainers: list[_Drained] = []
        self._socks: list[_SpliceSocket | _LoopSocket] = []
        self._ab: Direction | None = None
        self._ba: Direction | None = None
        self._doneAToB = self._doneBToA = 0
        self._guarded: list[Any] = []

    # -- byte counts ----------------------------------------------------------

    def bytesAToB(self) -> int:
        d = self._ab
        return len(self._toB) + (d.moved if d is not None else self._doneAToB)

    def bytesBToA(self) -> int:
        d = self._ba
        return len(self._toA) + (d.moved if d is not None else self._doneBToA)

    def endedDirections(self) -> tuple[bool, bool]:
        ab, ba = self._ab, self._ba
        return (ab is not None and ab.done), (ba is not None and ba.done)

    # -- hand-over ----------------------------------------------------------------

    def start(self) -> None:
        """
        Check that pipes can be had, then quiet both transports, write the
        hand-over bytes and wait for both write buffers to drain.

        @raise FallBack: when no pipe can be had (nothing was taken).
        """
        pool = self.pool
        if not pool.reserve(2):
            raise FallBack(f"pipe limit reached ({pool.maxPipes} pipes)")
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
            raise FallBack(f"cannot create pipes: {errname(e.errno or 0)}") from None
        for p in taken:
            pool.give(p)

        a, b = self._a, self._b
        for side in (a, b):
            t = side.transport
            t.stopReading()
            if t.producer is not None:
                t.unregisterProducer()
        if self._toB:
            b.transport.write(self._toB)
        if self._toA:
            a.transport.write(self._toA)
        self._waiting = ["A", "B"]
        for side in (a, b):
            if bufferEmpty(side.transport):
                # The usual case: nothing to flush, no producer needed.
                self._waiting.remove(side.name)
                continue
            drainer = _Drained(self, side)
            self._drainers.append(drainer)
            if not side.lost:
                side.transport.registerProducer(drainer, False)
        if not self._waiting:
            self._install()

    def drained(self, side: IRelaySide) -> None:
        """
        C{side}'s write buffer drained (its L{_Drained} says so); once both
        have, the kernel takes the sockets over.
        """
        waiting = self._waiting
        if side.name in waiting:
            waiting.remove(side.name)
        if not waiting and not self._stopped:
            self._install()

    def _install(self) -> None:
        a, b = self._a, self._b
        self._installed = True
        for side in (a, b):
            self._guard(side)
        loop = socketLoopOf(self.reactor)
        if loop is not None:
            try:
                self._watch(_LoopSocket(self, a, loop), _LoopSocket(self, b, loop))
                return
            except OSError:
                # No descriptor left for the loop's epoll set (EMFILE): the
                # reactor watches these two sockets itself.
                for sock in self._socks:
                    sock.teardown()
        self._watch(_SpliceSocket(self, a), _SpliceSocket(self, b))

    def _watch(
        self, sa: _SpliceSocket | _LoopSocket, sb: _SpliceSocket | _LoopSocket
    ) -> None:
        """
        Give the two sockets their directions and start reading both.
        """
        self._socks = [sa, sb]
        ab = self._ab = Direction(self, sa, sb)
        ba = self._ba = Direction(self, sb, sa)
        sa.source, sa.sink = ab, ba
        sb.source, sb.sink = ba, ab
        if self._bandwidth is not None:
            ab.limit, ba.limit = directionLimits(self._bandwidth, self.reactor)
        sa.startReading()
        sb.startReading()

    def _guard(self, side: IRelaySide) -> None:
        """
        Quiet the transport's own re-registering and writing methods while
        the kernel owns its socket (see
        L{splicetx._relay.transports._GuardedTransport}).
        """
        assert self.host is not None
        t = side.transport
        guardTransport(t, self.host, side.name)
        self._guarded.append(t)

    def _unguard(self) -> None:
        for t in self._guarded:
            unguardTransport(t)
        self._guarded = []

    # -- events from the sides (hand-over only) ---------------------------------

    def dataReceived(self, side: IRelaySide, data: bytes) -> None:
        # Reading stops before hand-over starts, so this only happens with
        # transports that deliver synchronously; keep order by buffering.
        assert side.peer is not None
        side.peer.transport.write(data)
        if side.name == "A":
            self._toB += data
        else:
            self._toA += data

    def readConnectionLost(self, side: IRelaySide) -> None:
        pass

    def connectionLost(self, side: IRelaySide, reason: Failure) -> None:
        # Leave it to the relay's default: a lost transport ends the relay.
        pass

    # -- the relay's decisions -------------------------------------------------

    def directionDone(self) -> None:
        ab, ba = self._ab, self._ba
        if ab is not None and ba is not None and ab.done and ba.done:
            host = self.host
            assert host is not None
            host.ended(DONE, "both directions finished", False)

    def fail(self, reason: str, detail: str) -> None:
        host = self.host
        if host is not None:
            host.ended(reason, detail, True)

    def _nothingMoved(self) -> bool:
        ab, ba = self._ab, self._ba
        return (
            ab is not None
            and ba is not None
            and ab.moved == ba.moved == ab.inPipe == ba.inPipe == 0
            and not ab.eof
            and not ba.eof
        )

    def spliceFailed(self, direction: Direction, e: OSError, reading: bool) -> None:
        err = e.errno or 0
        if err in FALLBACK_ERRNOS and reading and self._nothingMoved():
            self._fallBack(f"first splice failed: {errname(err)}")
            return
        self.fail(*spliceFailure(direction, err, reading))

    def pipeFailed(self, direction: Direction, e: OSError) -> None:
        if self._nothingMoved():
            self._fallBack(f"cannot create a pipe: {errname(e.errno or 0)}")
            return
        self.fail(
            ERROR, f"{direction.name}: cannot create a pipe: {errname(e.errno or 0)}"
        )

    def socketLost(self, sock: _SpliceSocket, reason: Failure) -> None:
        """
        The reactor dropped one of our sockets: an error/hang-up event, or
        reactor shutdown.
        """
        self.fail(*socketLoss(sock, reason))

    def _fallBack(self, why: str) -> None:
        host = self.host
        assert host is not None
        self.stop()
        host.fellBack(why)

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
        if self._socks and isinstance(self._socks[0], _LoopSocket):
            self._socks[0].loop.closeIfIdle()
        for d in (self._ab, self._ba):
            if d is not None and d.limit is not None:
                d.limit.cancel(d)
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

    def closeTransport(self, side: IRelaySide, abort: bool) -> None:
        """
        Close a transport.  Once installed the transport's buffer is empty
        and it is not registered with the reactor, so it is closed at once
        (this also works while the reactor shuts down).
        """
        t = side.transport
        if self._installed:
            closeNow(t, abort)
        else:
            closeTransport(t, abort)

    def release(self) -> None:
        """
        Break reference cycles once the result is out
        (docs/design-decisions.md rule 13).
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
        self.host = None
