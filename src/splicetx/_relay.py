# -*- test-case-name: tests.test_relay -*-
"""
L{relay}: pair two connected Twisted transports and move bytes between them
until both directions are finished.

This module holds what both engines share: argument checking, the choice of
engine, the protocol objects that stand in for the transports' own protocols
while a relay runs, and the end of a relay (closing both transports and firing
the L{RelayResult}).  The engines themselves live in L{splicetx._splice}
(kernel path) and L{splicetx._copy} (userspace path).

A relay's life, in one place::

    handing over  -> the engine prepares (the splice engine waits for both
                     write buffers to drain; the copy engine starts at once)
    relaying      -> bytes move both ways; an EOF on one side half-closes the
                     other and that direction is finished
    closing       -> both directions finished, a reset, an error, a cancel or a
                     transport closed by the application: the engine stops,
                     both transports are closed (aborted on a fault)
    closed        -> both transports have called connectionLost; the
                     RelayResult is delivered

While a transport is relayed, its original protocol receives nothing; it gets
C{connectionLost} when the transport closes, as it would without splicetx.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import attr
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IReactorFDSet,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._pipes import PipePool, defaultPipePool
from splicetx._reactor import defaultReactor

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

_log = Logger()

#: Both directions ended with an end of stream; everything was delivered.
DONE = "done"
#: A peer reset the connection (or the write side was broken).
RESET = "reset"
#: Another error ended the relay (see L{RelayResult.detail}).
ERROR = "error"
#: The relay was cancelled (L{Deferred.cancel} or L{Relay.abort}).
CANCELLED = "cancelled"
#: A transport was closed before both directions finished: closed by the
#: application, a peer that closed without a half-close (TLS), or reactor
#: shutdown.
CLOSED = "closed"

ENGINES = ("auto", "splice", "copy")


class RelayUsageError(ValueError):
    """
    L{relay} was called with arguments it cannot work with: a transport that
    is not connected, the same transport twice, a transport that is already
    being relayed, an unknown engine, or C{engine="splice"} for transports the
    kernel path cannot serve.
    """


@attr.s(frozen=True, auto_attribs=True, slots=True)
class RelayResult:
    """
    How a relay went.

    @ivar engine: C{"splice"} or C{"copy"}: the engine that moved the bytes
        (the one running when the relay ended).
    @ivar bytesAToB: bytes relayed from transport A to transport B, including
        the C{toB} bytes handed over at the start.
    @ivar bytesBToA: bytes relayed from B to A, including C{toA}.
    @ivar duration: seconds from L{relay} to the end, by the reactor's clock.
    @ivar reason: how it ended: L{DONE}, L{RESET}, L{ERROR}, L{CANCELLED} or
        L{CLOSED}.
    @ivar detail: a human-readable explanation of C{reason}.
    @ivar fallbackReason: why the copy engine was used, or C{None} when the
        splice engine ran.
    """

    engine: str
    bytesAToB: int
    bytesBToA: int
    duration: float
    reason: str
    detail: str
    fallbackReason: str | None = None

    @property
    def clean(self) -> bool:
        """
        C{True} when both directions ended with an end of stream.
        """
        return self.reason == DONE


def _platformReason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"splice(2) is Linux-only (platform {sys.platform})"
    if not hasattr(os, "splice"):
        return "os.splice is unavailable (Python < 3.10)"
    return None


_PLATFORM_REASON = _platformReason()


def _streamSocketClasses() -> frozenset[type]:
    classes: set[type] = {tcp.Server, tcp.Client}
    try:
        from twisted.internet import unix
    except ImportError:  # pragma: no cover (platforms without AF_UNIX)
        pass
    else:
        classes.update((unix.Server, unix.Client))
    return frozenset(classes)


#: Twisted's transport classes whose socket is always a connected stream
#: socket: checked by exact type, so a subclass takes the general path.
_STREAM_SOCKET_CLASSES = _streamSocketClasses()


def spliceUnavailableReason(transport: object, reactor: object) -> str | None:
    """
    Tell why the splice engine cannot serve C{transport} on C{reactor}.

    @return: C{None} when it can, otherwise a short reason such as
        C{"TLS transport"}.
    """
    if _PLATFORM_REASON is not None:
        return _PLATFORM_REASON
    if not IReactorFDSet.providedBy(reactor):
        return f"reactor {type(reactor).__name__} does not provide IReactorFDSet"
    if type(transport) in _STREAM_SOCKET_CLASSES:
        # The common case: a stream socket by construction, TLS only if
        # startTLS() set the flag; the general checks are not needed.
        if transport.TLS:  # type: ignore[attr-defined]
            return "TLS transport"
    else:
        why = _notAPlainStreamSocket(transport)
        if why is not None:
            return why
    if getattr(transport, "_writeDisconnected", False) or getattr(
        transport, "_writeDisconnecting", False
    ):
        return "transport already half-closed"
    return None


def _notAPlainStreamSocket(transport: object) -> str | None:
    """
    Why C{transport}, of a class other than Twisted's own TCP/UNIX ones, is
    not a plain (non-TLS) stream socket transport, or C{None} when it is.
    """
    if isinstance(transport, ProtocolWrapper):
        if ISSLTransport.providedBy(transport) or hasattr(
            transport, "getPeerCertificate"
        ):
            return "TLS transport"
        return f"wrapped transport ({type(transport).__name__})"
    if not isinstance(transport, tcp.Connection):
        return f"not a socket transport ({type(transport).__name__})"
    if getattr(transport, "TLS", False) or ISSLTransport.providedBy(transport):
        return "TLS transport"
    sock = getattr(transport, "socket", None)
    if sock is None or sock.type != socket.SOCK_STREAM:
        return "not a stream socket"
    return None


def _deliveryPoint(transport: Any) -> tuple[Any, str]:
    """
    Find the object and attribute through which C{transport} delivers bytes
    and connection events to its protocol.

    @raise RelayUsageError: when there is none.
    """
    if type(transport) in _STREAM_SOCKET_CLASSES and not transport.TLS:
        return transport, "protocol"
    if isinstance(transport, ProtocolWrapper):
        return transport, "wrappedProtocol"
    if getattr(transport, "TLS", False) and isinstance(
        getattr(transport, "protocol", None), ProtocolWrapper
    ):
        return transport.protocol, "wrappedProtocol"
    if hasattr(transport, "protocol"):
        return transport, "protocol"
    raise RelayUsageError(
        f"cannot relay {transport!r}: it has no protocol to take events from"
    )


def _isConnected(transport: Any) -> bool:
    if getattr(transport, "disconnecting", False):
        return False
    if getattr(transport, "disconnected", False):
        return False
    return bool(getattr(transport, "connected", True))


@implementer(IProtocol, IHalfCloseableProtocol)
class _Side:
    """
    The protocol that stands in for a relayed transport's own protocol.

    It forwards what the transport delivers to the running engine and, when
    the transport closes, gives the original protocol its C{connectionLost}.

    @ivar name: C{"A"} or C{"B"}.
    @ivar transport: the relayed transport.
    @ivar peer: the other L{_Side}.
    @ivar original: the protocol that was attached to the transport.
    @ivar lost: C{True} once the transport has called C{connectionLost}.
    """

    def __init__(self, run: Relay, name: str, transport: Any) -> None:
        self.run: Relay | None = run
        self.name = name
        self.transport = transport
        self.peer: _Side | None = None
        self._owner, self._attr = _deliveryPoint(transport)
        self.original = getattr(self._owner, self._attr)
        self.lost = False
        self.lostReason: Failure | None = None
        self.readEOF = False

    def interpose(self) -> None:
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


class Relay:
    """
    One relay between two connected transports, A and B.

    Most code calls L{relay}, which makes a L{Relay} and starts it.  Keep the
    object when you need live byte counts (L{bytesAToB}, L{bytesBToA}) or to
    end it with a reason of your own (L{abort}).
    """

    def __init__(
        self,
        transportA: Any,
        transportB: Any,
        *,
        reactor: Any | None = None,
        engine: str = "auto",
        toA: bytes = b"",
        toB: bytes = b"",
        pipePool: PipePool | None = None,
    ) -> None:
        """
        @param transportA: a connected transport (usually the client side).
        @param transportB: another connected transport (usually the upstream).
        @param reactor: the reactor both run on (default: the global one).
        @param engine: C{"auto"} (splice when possible), C{"splice"} (fail
            with L{RelayUsageError} when the transports cannot be spliced;
            still falls back to copying on resource limits) or C{"copy"}.
        @param toA: bytes to deliver to A before anything relayed from B
            (e.g. bytes the B side read past a handshake).
        @param toB: bytes to deliver to B before anything relayed from A.
        @param pipePool: the L{PipePool} to take pipes from (default: the
            process-wide one, 1 MiB pipes).
        """
        self._reactor = defaultReactor(reactor)
        self._a = transportA
        self._b = transportB
        self._engineChoice = engine
        self._toA = bytes(toA)
        self._toB = bytes(toB)
        self._pool = pipePool
        self._deferred: Deferred[RelayResult] | None = None
        self._engine: Any | None = None
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

    def start(self) -> Deferred[RelayResult]:
        """
        Start relaying.

        @return: a L{Deferred} that fires with a L{RelayResult} once both
            transports are closed; it fails with L{RelayUsageError} on misuse.
            Cancelling it aborts both transports; it then fires with a
            L{RelayResult} whose C{reason} is L{CANCELLED}.
        @raise RuntimeError: when called twice.
        """
        if self._deferred is not None:
            raise RuntimeError("Relay.start() was already called")
        d: Deferred[RelayResult] = Deferred(self._cancel)
        self._deferred = d
        self._started = self._reactor.seconds()
        try:
            engine, reason = self._check()
        except RelayUsageError:
            d.errback()
            return d
        a = _Side(self, "A", self._a)
        b = _Side(self, "B", self._b)
        a.peer, b.peer = b, a
        self._sides = [a, b]
        a.interpose()
        b.interpose()
        if engine == "splice":
            self._engine = _splice.SpliceEngine(self, self._toA, self._toB)
        else:
            self._startCopy(reason, self._toA, self._toB)
            return d
        self._engine.start()
        return d

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End the relay now: both transports are aborted (reset).

        @param reason: the L{RelayResult.reason} to report.
        @param detail: the L{RelayResult.detail} to report.
        """
        self._end(reason, detail, abort=True)

    def close(self, reason: str = CLOSED, detail: str = "closed") -> None:
        """
        End the relay now and close both transports without a reset.  Bytes
        held in kernel pipes are dropped; bytes in the transports' own write
        buffers are still delivered.
        """
        self._end(reason, detail, abort=False)

    def __repr__(self) -> str:
        return (
            f"<Relay {self.engine or 'unstarted'} {self._a!r} <-> {self._b!r} "
            f"a->b={self.bytesAToB} b->a={self.bytesBToA}>"
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
            if not _isConnected(t):
                raise RelayUsageError(f"transport {name} ({t!r}) is not connected")
            owner, attrname = _deliveryPoint(t)
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
        """
        if self._pool is None:
            self._pool = defaultPipePool()
        return self._pool

    def _startCopy(self, reason: str | None, toA: bytes, toB: bytes) -> None:
        self.fallbackReason = reason
        self._engine = _copy.CopyEngine(self, toA, toB)
        self._engine.start()

    def _fallBack(self, reason: str) -> None:
        """
        Switch a running splice relay to the copy engine.  Only called while
        nothing is held in kernel pipes, so nothing is lost.
        """
        old = self._engine
        assert old is not None
        self._carriedAToB += old.bytesAToB()
        self._carriedBToA += old.bytesBToA()
        _log.debug("splicetx: falling back to the copy engine: {why}", why=reason)
        self._startCopy(reason, b"", b"")

    # -- the end --------------------------------------------------------------

    def _cancel(self, d: Deferred[RelayResult]) -> None:
        self.abort(CANCELLED, "cancelled")
        if self._result is None:
            # Transports finish closing in a later reactor turn; the caller
            # of cancel() gets its answer now.
            self._fire()

    def _end(self, reason: str, detail: str, abort: bool) -> None:
        """
        Stop the engine and close both transports; fire the result once both
        are closed.
        """
        if self._ending is not None or self._deferred is None:
            return
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
                    _closeTransport(side.transport, abort)
        self._maybeFire()

    def _sideLost(self, side: _Side, reason: Failure) -> None:
        if self._ending is None:
            engine = self._engine
            if engine is not None:
                engine.connectionLost(side, reason)
            if self._ending is None:
                # The engine did not decide: the transport was closed under us.
                clean = bool(reason.check(ConnectionDone))
                self._end(
                    CLOSED if clean else RESET,
                    f"transport {side.name} lost: {reason.getErrorMessage()}",
                    abort=not clean,
                )
        self._maybeFire()

    def _maybeFire(self) -> None:
        if self._ending is None:
            return
        if all(s.lost for s in self._sides):
            self._fire()

    def _fire(self) -> None:
        if self._result is not None:
            return
        assert self._ending is not None
        reason, detail = self._ending
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


def _closeTransport(transport: Any, abort: bool) -> None:
    try:
        if abort and hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()
    except Exception:
        _log.failure("closing {transport!r} failed", transport=transport)


def relay(
    transportA: Any,
    transportB: Any,
    *,
    reactor: Any | None = None,
    engine: str = "auto",
    toA: bytes = b"",
    toB: bytes = b"",
    pipePool: PipePool | None = None,
) -> Deferred[RelayResult]:
    """
    Relay bytes between two connected transports until both directions are
    finished, then close both.

    When both are plain TCP or UNIX stream sockets on Linux and the reactor
    provides L{IReactorFDSet}, the kernel moves the bytes with C{splice(2)}
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
    @return: a L{Deferred} firing with a L{RelayResult}.  Ordinary endings
        (EOFs, resets, refused writes, cancellation) are results; the
        L{Deferred} fails with L{RelayUsageError} only on misuse.
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


# The engines import this module's names; they are imported here, at the end,
# and never lazily: a fallback must work when no file descriptor is left
# (importing a module opens its file).
from splicetx import _copy, _splice  # noqa: E402
