# -*- test-case-name: tests.test_relay -*-
"""
L{relay}: pair two connected Twisted transports and move bytes between them
until both directions are finished.

This module holds the relay itself: argument checking, the choice of engine,
the protocol objects that stand in for the transports' own protocols while a
relay runs, and the end of a relay (closing both transports and firing the
L{RelayResult}).  The engines live in L{splicetx._relay.splice} (kernel path) and
L{splicetx._relay.copy} (userspace path); what the relay and the engines share is
below all three, in L{splicetx._relay.contract} (results, reasons, the engine
interfaces) and L{splicetx._relay.transports} (what is read from Twisted's
transports).  The engines never import this module: they talk back through
the L{IEngineHost} the relay gives them.

A relay's life is one L{_Phase}, held in C{Relay._phase}::

    NEW       -> made, start() not called yet
    SPLICING  -> the splice engine runs: first its hand-over (it waits for
                 both write buffers to drain), then the kernel moves bytes
    COPYING   -> the copy engine runs: from the start, or after the splice
                 engine fell back (nothing is lost; byte counts carry over)
    CLOSING   -> the end is decided (both directions finished, a reset, an
                 error, a cancel or a transport closed by the application):
                 the engine has stopped, both transports are being closed
                 (aborted on a fault)
    FINISHED  -> both transports called connectionLost (or the relay was
                 cancelled, or start() refused its arguments); the
                 RelayResult is delivered

In SPLICING and COPYING an end of stream on one side half-closes the other
and that direction is finished; the relay goes on with the other.  A method
called in a phase that does not allow it is refused by L{Relay._require};
ending a relay that is not running (L{Relay.abort}, L{Relay.close}) does
nothing.

While a transport is relayed, its original protocol receives nothing; it gets
C{connectionLost} when the transport closes, as it would without splicetx.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay.bandwidth import BandwidthPlan
from splicetx._relay.contract import (
    CANCELLED,
    CLOSED,
    DONE,
    ENGINES,
    ERROR,
    RESET,
    FallBack,
    IEngineHost,
    IRelayEngine,
    IRelaySide,
    RelayResult,
    RelayUsageError,
    WrongPhase,
)
from splicetx._relay.copy import CopyEngine
from splicetx._relay.pipes import PipePool, defaultPipePool
from splicetx._relay.runtime import LOG_RELAY, defaultReactor
from splicetx._relay.splice import SpliceEngine
from splicetx._relay.transports import (
    closeTransport,
    deliveryPoint,
    isConnected,
    spliceUnavailableReason,
)

__all__ = [
    "Relay",
    "RelayResult",
    "RelayUsageError",
    "relay",
    "spliceUnavailableReason",
    "DONE",
    "RESET",
    "ERROR",
    "CANCELLED",
    "CLOSED",
]

_log = Logger(namespace=LOG_RELAY)


class _Phase(enum.Enum):
    """
    Where a L{Relay} is in its life; see the module docstring.
    """

    NEW = "new"
    SPLICING = "splicing"
    COPYING = "copying"
    CLOSING = "closing"
    FINISHED = "finished"


#: The phases in which an engine runs and the relay can still end.
_RUNNING = frozenset({_Phase.SPLICING, _Phase.COPYING})


@implementer(IProtocol, IHalfCloseableProtocol, IRelaySide)
class _Side:
    """
    The protocol that stands in for a relayed transport's own protocol.

    It forwards what the transport delivers to the running engine and, when
    the transport closes, gives the original protocol its C{connectionLost}.
    Engines see it as an L{IRelaySide}.

    @ivar name: C{"A"} or C{"B"}.
    @ivar transport: the relayed transport.
    @ivar peer: the other L{_Side}.
    @ivar original: the protocol that was attached to the transport.
    @ivar lost: C{True} once the transport has called C{connectionLost}.
    @ivar lostReason: the reason it gave, once lost.
    @ivar readEOF: C{True} once the transport delivered end of stream.
    @ivar run: the relay, until it has finished.
    """

    __slots__ = (
        "run",
        "name",
        "transport",
        "peer",
        "_owner",
        "_attr",
        "original",
        "lost",
        "lostReason",
        "readEOF",
        "__weakref__",
    )

    def __init__(self, run: Relay, name: str, transport: Any) -> None:
        self.run: Relay | None = run
        self.name = name
        self.transport = transport
        self.peer: _Side | None = None
        self._owner, self._attr = deliveryPoint(transport)
        self.original = getattr(self._owner, self._attr)
        self.lost = False
        self.lostReason: Failure | None = None
        self.readEOF = False

    def interpose(self) -> None:
        """
        Take the original protocol's place on the transport.
        """
        setattr(self._owner, self._attr, self)

    def makeConnection(self, transport: Any) -> None:
        pass

    def connectionMade(self) -> None:
        pass

    def logPrefix(self) -> str:
        return f"splicetx-{self.name}"

    def dataReceived(self, data: bytes) -> None:
        run = self.run
        if run is not None and run._engine is not None:
            run._engine.dataReceived(self, data)

    def readConnectionLost(self) -> None:
        self.readEOF = True
        run = self.run
        if run is not None and run._engine is not None:
            run._engine.readConnectionLost(self)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.lost:
            return
        self.lost = True
        self.lostReason = reason
        # Put the original protocol back where it was, then tell it.
        if getattr(self._owner, self._attr, None) is self:
            setattr(self._owner, self._attr, self.original)
        run = self.run
        try:
            self.original.connectionLost(reason)
        except Exception:
            _log.failure(
                "connectionLost of {protocol!r} failed", protocol=self.original
            )
        if run is not None:
            run._sideLost(self, reason)
        else:
            self.original = None

    def __repr__(self) -> str:
        return f"<splicetx side {self.name} of {self.transport!r}>"


@implementer(IEngineHost)
class _EngineHost:
    """
    The L{IEngineHost} a relay gives its engines: it forwards to the relay's
    private methods, so the engines see two calls and nothing of L{Relay}.
    """

    __slots__ = ("_relay",)

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def ended(self, reason: str, detail: str, abort: bool) -> None:
        self._relay._end(reason, detail, abort)

    def fellBack(self, reason: str) -> None:
        self._relay._fallBack(reason)


class Relay:
    """
    One relay between two connected transports, A and B.

    Most code calls L{relay}, which makes a L{Relay} and starts it.  Keep the
    object when you need live byte counts (L{bytesAToB}, L{bytesBToA}) or to
    end it with a reason of your own (L{abort}).

    @ivar fallbackReason: why the copy engine runs, or C{None} (the splice
        engine runs, or the relay has not started).
    """

    def __init__(
        self,
        transportA: ITransport,
        transportB: ITransport,
        *,
        reactor: IReactorTime | None = None,
        engine: str = "auto",
        toA: bytes = b"",
        toB: bytes = b"",
        pipePool: PipePool | None = None,
        bandwidth: int | BandwidthPlan | None = None,
    ) -> None:
        """
        @param transportA: a connected transport (usually the client side).
        @param transportB: another connected transport (usually the upstream).
        @param reactor: the reactor both run on (default: the global one);
            the splice engine also needs it to provide C{IReactorFDSet}.
        @param engine: C{"auto"} (splice when possible), C{"splice"} (fail
            with L{RelayUsageError} when the transports cannot be spliced;
            still falls back to copying on resource limits) or C{"copy"}.
        @param toA: bytes to deliver to A before anything relayed from B
            (e.g. bytes the B side read past a handshake).
        @param toB: bytes to deliver to B before anything relayed from A.
        @param pipePool: the L{PipePool} to take pipes from (default: the
            process-wide one, 1 MiB pipes).
        @param bandwidth: bytes per second each direction may move at most
            (L{splicetx._relay.bandwidth}), a L{BandwidthPlan} (buckets
            shared with other relays too), or C{None} for no limit.  Both
            engines apply it (the copy engine by pausing a source).
        """
        self._reactor: Any = defaultReactor(reactor)
        self._bandwidth = bandwidth
        self._a: Any = transportA
        self._b: Any = transportB
        self._engineChoice = engine
        self._toA = bytes(toA)
        self._toB = bytes(toB)
        self._pool = pipePool
        self._phase = _Phase.NEW
        self._deferred: Deferred[RelayResult] | None = None
        self._engine: IRelayEngine | None = None
        self._host: IEngineHost | None = None
        self._sides: list[_Side] = []
        self._ending: tuple[str, str] | None = None
        self._result: RelayResult | None = None
        self._started = 0.0
        self.fallbackReason: str | None = None
        # Byte counts of engines that already ended (after a fallback).
        self._carriedAToB = 0
        self._carriedBToA = 0

    # -- public -------------------------------------------------------------

    @property
    def engine(self) -> str | None:
        """
        C{"splice"} or C{"copy"} once started, else C{None}.
        """
        return None if self._engine is None else self._engine.name

    @property
    def bytesAToB(self) -> int:
        """
        Bytes relayed so far from A to B.
        """
        e = self._engine
        return self._carriedAToB + (e.bytesAToB() if e is not None else 0)

    @property
    def bytesBToA(self) -> int:
        """
        Bytes relayed so far from B to A.
        """
        e = self._engine
        return self._carriedBToA + (e.bytesBToA() if e is not None else 0)

    @property
    def endedDirections(self) -> tuple[bool, bool]:
        """
        Which directions have ended: C{(aToB, bToA)}, each C{True} once its
        source sent end of stream and the destination was half-closed.
        Derived from the engine's state (no system call, nothing kept per
        byte), so a timer may poll it along with L{bytesAToB} and
        L{bytesBToA}.
        """
        e = self._engine
        if e is None:
            return False, False
        return e.endedDirections()

    @property
    def halfClosed(self) -> bool:
        """
        C{True} while exactly one direction has ended and the relay still
        runs (the other direction carries on).
        """
        if self._phase not in _RUNNING:
            return False
        aToB, bToA = self.endedDirections
        return aToB != bToA

    def start(self) -> Deferred[RelayResult]:
        """
        Start relaying.

        @return: a C{Deferred} that fires with a L{RelayResult} once both
            transports are closed; it fails with L{RelayUsageError} on misuse.
            Cancelling it aborts both transports; it then fires with a
            L{RelayResult} whose C{reason} is L{CANCELLED}.
        @raise RelayUsageError: when called twice (it is also a
            C{RuntimeError}, as it always was).
        """
        self._require("start", _Phase.NEW)
        d: Deferred[RelayResult] = Deferred(self._cancel)
        self._deferred = d
        self._started = self._reactor.seconds()
        try:
            engine, reason = self._check()
        except RelayUsageError:
            self._phase = _Phase.FINISHED
            d.errback()
            return d
        a = _Side(self, "A", self._a)
        b = _Side(self, "B", self._b)
        a.peer, b.peer = b, a
        self._sides = [a, b]
        host = self._host = _EngineHost(self)
        # Running from here on: a transport lost while the engine takes over
        # ends the relay.
        if engine == "splice":
            self._phase = _Phase.SPLICING
        else:
            self._phase = _Phase.COPYING
        a.interpose()
        b.interpose()
        if engine != "splice":
            self._startCopy(reason, self._toA, self._toB)
            return d
        splice = SpliceEngine(
            host,
            self._reactor,
            self.pipePool(),
            a,
            b,
            self._toA,
            self._toB,
            self._bandwidth,
        )
        self._engine = splice
        try:
            splice.start()
        except FallBack as e:
            # Nothing was taken or moved: the copy engine starts from scratch.
            self._engine = None
            self._startCopy(e.reason, self._toA, self._toB)
        return d

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End the relay now: both transports are aborted (reset).  Does nothing
        when the relay is not running (not started, or already ending).

        @param reason: the L{RelayResult.reason} to report.
        @param detail: the L{RelayResult.detail} to report.
        """
        self._end(reason, detail, abort=True)

    def close(self, reason: str = CLOSED, detail: str = "closed") -> None:
        """
        End the relay now and close both transports without a reset.  Bytes
        held in kernel pipes are dropped; bytes in the transports' own write
        buffers are still delivered.  Does nothing when the relay is not
        running.

        @param reason: the L{RelayResult.reason} to report.
        @param detail: the L{RelayResult.detail} to report.
        """
        self._end(reason, detail, abort=False)

    def __repr__(self) -> str:
        return (
            f"<Relay {self.engine or 'unstarted'} {self._a!r} <-> {self._b!r} "
            f"a->b={self.bytesAToB} b->a={self.bytesBToA}>"
        )

    # -- phases -------------------------------------------------------------

    def _require(self, call: str, *phases: _Phase) -> None:
        """
        Refuse C{call} unless the relay is in one of C{phases}: the one way a
        call in the wrong phase is refused.

        @raise WrongPhase: when it is not.
        """
        if self._phase not in phases:
            if self._phase is _Phase.NEW:
                raise WrongPhase(f"Relay.{call}() needs a started relay")
            if call == "start":
                raise WrongPhase(
                    f"Relay.start() was already called (the relay is "
                    f"{self._phase.value})"
                )
            raise WrongPhase(
                f"Relay.{call}() is not allowed while the relay is {self._phase.value}"
            )

    # -- engine selection ---------------------------------------------------

    def _check(self) -> tuple[str, str | None]:
        a, b = self._a, self._b
        if self._engineChoice not in ENGINES:
            raise RelayUsageError(
                f"unknown engine {self._engineChoice!r}; use one of "
                + ", ".join(ENGINES)
            )
        if a is b:
            raise RelayUsageError(f"cannot relay {a!r} to itself")
        for name, t in (("A", a), ("B", b)):
            if t is None:
                raise RelayUsageError(f"transport {name} is None")
            if not isConnected(t):
                raise RelayUsageError(f"transport {name} ({t!r}) is not connected")
            owner, attrname = deliveryPoint(t)
            if isinstance(getattr(owner, attrname, None), _Side):
                raise RelayUsageError(
                    f"transport {name} ({t!r}) is already being relayed"
                )
        if self._engineChoice == "copy":
            return "copy", "engine='copy' requested"
        for name, t in (("A", a), ("B", b)):
            why = spliceUnavailableReason(t, self._reactor)
            if why is not None:
                if self._engineChoice == "splice":
                    raise RelayUsageError(
                        f"engine='splice' cannot serve transport {name}: {why}"
                    )
                return "copy", f"transport {name}: {why}"
        return "splice", None

    def pipePool(self) -> PipePool:
        """
        The pool this relay takes its pipes from.

        @return: the L{PipePool} given to the constructor, else the
            process-wide one.
        """
        if self._pool is None:
            self._pool = defaultPipePool()
        return self._pool

    def _startCopy(self, reason: str | None, toA: bytes, toB: bytes) -> None:
        self._phase = _Phase.COPYING
        self.fallbackReason = reason
        a, b = self._sides
        assert self._host is not None
        copy = CopyEngine(self._host, a, b, toA, toB, self._reactor, self._bandwidth)
        self._engine = copy
        copy.start()

    def _fallBack(self, reason: str) -> None:
        """
        Switch a running splice relay to the copy engine (the engine's
        L{IEngineHost.fellBack}).  The splice engine has stopped and held
        nothing in kernel pipes, so nothing is lost.
        """
        self._require("fellBack", _Phase.SPLICING)
        old = self._engine
        assert old is not None
        self._carriedAToB += old.bytesAToB()
        self._carriedBToA += old.bytesBToA()
        _log.debug("splicetx: falling back to the copy engine: {why}", why=reason)
        self._startCopy(reason, b"", b"")

    # -- the end --------------------------------------------------------------

    def _cancel(self, d: Deferred[RelayResult]) -> None:
        self.abort(CANCELLED, "cancelled")
        if self._phase is _Phase.CLOSING:
            # Transports finish closing in a later reactor turn; the caller
            # of cancel() gets its answer now.
            self._fire()

    def _end(self, reason: str, detail: str, abort: bool) -> None:
        """
        Stop the engine and close both transports; fire the result once both
        are closed.  Does nothing unless the relay is running.
        """
        if self._phase not in _RUNNING:
            return
        self._phase = _Phase.CLOSING
        self._ending = (reason, detail)
        # No log event here: the RelayResult carries the reason, and the
        # application logs it once per connection (the proxy does).
        engine = self._engine
        if engine is not None:
            engine.stop()
        for side in self._sides:
            if not side.lost:
                if engine is not None:
                    engine.closeTransport(side, abort)
                else:
                    closeTransport(side.transport, abort)
        self._maybeFire()

    def _sideLost(self, side: _Side, reason: Failure) -> None:
        if self._phase in _RUNNING:
            engine = self._engine
            if engine is not None:
                engine.connectionLost(side, reason)
            if self._phase in _RUNNING:
                # The engine did not decide: the transport was closed under us.
                clean = bool(reason.check(ConnectionDone))
                self._end(
                    CLOSED if clean else RESET,
                    f"transport {side.name} lost: {reason.getErrorMessage()}",
                    abort=not clean,
                )
        self._maybeFire()

    def _maybeFire(self) -> None:
        if self._phase is _Phase.CLOSING and all(s.lost for s in self._sides):
            self._fire()

    def _fire(self) -> None:
        if self._phase is not _Phase.CLOSING:
            return
        assert self._ending is not None
        reason, detail = self._ending
        self._phase = _Phase.FINISHED
        self._result = RelayResult(
            engine=self.engine or "copy",
            bytesAToB=self.bytesAToB,
            bytesBToA=self.bytesBToA,
            duration=max(0.0, self._reactor.seconds() - self._started),
            reason=reason,
            detail=detail,
            fallbackReason=self.fallbackReason,
        )
        if self._engine is not None:
            self._engine.release()
        self._host = None
        # Break the cycles through the sides (relay -> side -> the original
        # protocol -> relay, in a proxy) so that a finished relay is freed by
        # reference counting, not left to the cyclic garbage collector.
        # A side not lost yet (a cancel fires before the transports finish
        # closing) keeps its original protocol to give it back; it lets go of
        # it in its own connectionLost.
        for side in self._sides:
            side.run = None
            side.peer = None
            if side.lost:
                side.original = None
        self._sides = []
        d, self._deferred = self._deferred, None
        if d is not None and not d.called:
            d.callback(self._result)

    # For tests and logs.
    @property
    def result(self) -> RelayResult | None:
        """
        The L{RelayResult} once the relay has ended, else C{None}.
        """
        return self._result


def relay(
    transportA: ITransport,
    transportB: ITransport,
    *,
    reactor: IReactorTime | None = None,
    engine: str = "auto",
    toA: bytes = b"",
    toB: bytes = b"",
    pipePool: PipePool | None = None,
) -> Deferred[RelayResult]:
    """
    Relay bytes between two connected transports until both directions are
    finished, then close both.

    When both are plain TCP or UNIX stream sockets on Linux and the reactor
    provides C{IReactorFDSet}, the kernel moves the bytes with C{splice(2)}
    (socket -> pipe -> socket); otherwise a userspace copy with the same
    guarantees runs (TLS, fake transports, other reactors, resource limits).

    Bytes already written to either transport are delivered first; C{toB} and
    C{toA} (bytes read past a handshake) are delivered next, before anything
    relayed.  An end of stream from one side half-closes the other
    (C{shutdown(SHUT_WR)}) and the other direction keeps running.

    @param transportA: a connected transport (usually the client side).
    @param transportB: another connected transport (usually the upstream).
    @param reactor: the reactor both run on (default: the global reactor).
    @param engine: C{"auto"}, C{"splice"} or C{"copy"}; see L{Relay}.
    @param toA: bytes to deliver to A first.
    @param toB: bytes to deliver to B first.
    @param pipePool: a L{PipePool} (pipe size and cap); default: the
        process-wide pool with L{DEFAULT_PIPE_SIZE} pipes.
    @return: a C{Deferred} firing with a L{RelayResult}.  Ordinary endings
        (EOFs, resets, refused writes, cancellation) are results; the
        C{Deferred} fails with L{RelayUsageError} only on misuse.
    """
    return Relay(
        transportA,
        transportB,
        reactor=reactor,
        engine=engine,
        toA=toA,
        toB=toB,
        pipePool=pipePool,
    ).start()
