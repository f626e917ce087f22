# -*- test-case-name: tests.test_relay -*-
"""
What a relay and its engines agree on: how a relay can end (the reason
constants and L{RelayResult}), how it is misused (L{RelayUsageError}), and
the boundary between L{splicetx._relay.relay.Relay} and the engine that moves its
bytes (L{IRelayEngine}, L{IEngineHost}, L{IRelaySide}, L{FallBack}).

This module is below both the relay and the engines: it imports neither, so
the engines (L{splicetx._relay.splice}, L{splicetx._relay.copy}) never import the relay
that drives them.

Why zope interfaces for the engine boundary, not C{typing.Protocol}: Twisted
and the rest of splicetx describe every seam with C{zope.interface} (the
sides are already C{IProtocol}s, the splice sockets C{IReadWriteDescriptor}s),
mypy checks implementers through the C{mypy-zope} plugin, and C{verifyObject}
can prove in a test that an engine or a host really has the methods.  The
declarations cost nothing at run time: C{@implementer} is a class decorator,
and no call on the hot path goes through an interface.

The engine talks back to its relay only through an L{IEngineHost}: it calls
L{IEngineHost.ended} when it decided how the relay ends and
L{IEngineHost.fellBack} when the kernel path gave up mid-relay with nothing
lost; when it cannot take the transports over at all it raises L{FallBack}
from L{IRelayEngine.start} instead.  It never reads or sets the relay's own
attributes.
"""

from __future__ import annotations

import attr
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

__all__ = [
    "RelayResult",
    "RelayUsageError",
    "DONE",
    "RESET",
    "ERROR",
    "CANCELLED",
    "CLOSED",
    "ENGINES",
]

#: Both directions ended with an end of stream; everything was delivered.
DONE = "done"
#: A peer reset the connection (or the write side was broken).
RESET = "reset"
#: Another error ended the relay (see L{RelayResult.detail}).
ERROR = "error"
#: The relay was cancelled (C{Deferred.cancel} or
#: L{Relay.abort <splicetx._relay.relay.Relay.abort>}).
CANCELLED = "cancelled"
#: A transport was closed before both directions finished: closed by the
#: application, a peer that closed without a half-close (TLS), or reactor
#: shutdown.
CLOSED = "closed"

#: The engine names L{splicetx.relay} accepts.
ENGINES = ("auto", "splice", "copy")


class RelayUsageError(ValueError):
    """
    L{splicetx.relay} was called with arguments it cannot work with: a
    transport that is not connected, the same transport twice, a transport
    that is already being relayed, an unknown engine, or C{engine="splice"}
    for transports the kernel path cannot serve.
    """


class WrongPhase(RelayUsageError, RuntimeError):
    """
    A L{Relay <splicetx._relay.relay.Relay>} method was called in a phase that does
    not allow it (C{start()} twice, or on a finished relay).  It is also a
    C{RuntimeError}, which is what C{start()} raised before relays had
    phases.
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
    @ivar duration: seconds from L{splicetx.relay} to the end, by the
        reactor's clock.
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


class FallBack(Exception):
    """
    Raised by L{IRelayEngine.start} when the splice engine cannot take the
    transports over (no pipe can be had); nothing has been taken or moved, so
    the relay starts the copy engine with the same hand-over bytes.

    @ivar reason: why, for L{RelayResult.fallbackReason}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IRelaySide(Interface):
    """
    One relayed transport as an engine sees it: the relay's stand-in for the
    transport's own protocol.
    """

    name = Attribute("C{'A'} or C{'B'}.")
    transport = Attribute("The relayed transport.")
    peer = Attribute("The other side (C{None} once the relay has ended).")
    lost = Attribute("C{True} once the transport called C{connectionLost}.")
    readEOF = Attribute("C{True} once the transport delivered end of stream.")


class IEngineHost(Interface):
    """
    What a relay offers the engine that runs it: the only way an engine
    changes the relay's course.
    """

    def ended(reason: str, detail: str, abort: bool) -> None:
        """
        End the relay: stop the engine and close both transports (abort
        them when C{abort}), then deliver the result.  Does nothing when the
        relay is already ending.

        @param reason: the L{RelayResult.reason}.
        @param detail: the L{RelayResult.detail}.
        @param abort: reset the connections instead of closing them.
        """

    def fellBack(reason: str) -> None:
        """
        The running engine stopped itself with nothing held in kernel
        pipes: carry its byte counts over and go on with the copy engine.

        @param reason: the L{RelayResult.fallbackReason}.
        """


class IRelayEngine(Interface):
    """
    Moves a relay's bytes: L{splicetx._relay.splice.SpliceEngine} (kernel pipes)
    or L{splicetx._relay.copy.CopyEngine} (userspace).  Made by the relay with its
    L{IEngineHost}, both L{IRelaySide}s and the hand-over bytes.
    """

    name = Attribute("C{'splice'} or C{'copy'}, for L{RelayResult.engine}.")

    def start() -> None:
        """
        Take both transports over and start moving bytes.

        @raise FallBack: when the engine cannot start and nothing was taken
            (only the splice engine does).
        """

    def bytesAToB() -> int:
        """
        @return: bytes moved from A to B so far, hand-over bytes included.
        """

    def bytesBToA() -> int:
        """
        @return: bytes moved from B to A so far, hand-over bytes included.
        """

    def endedDirections() -> tuple[bool, bool]:
        """
        Which directions have ended (end of stream read and passed on as a
        half-close), without a system call: two attribute reads, cheap
        enough for a periodic check.

        @return: C{(aToBEnded, bToAEnded)}.
        """

    def dataReceived(side: IRelaySide, data: bytes) -> None:
        """
        C{side}'s transport delivered C{data}.

        @param side: the side that read.
        @param data: the bytes.
        """

    def readConnectionLost(side: IRelaySide) -> None:
        """
        C{side}'s transport delivered end of stream.

        @param side: the side that read it.
        """

    def connectionLost(side: IRelaySide, reason: Failure) -> None:
        """
        C{side}'s transport is closed.  The engine may end the relay
        (L{IEngineHost.ended}); when it does not, the relay ends as
        L{CLOSED} or L{RESET}.

        @param side: the side whose transport closed.
        @param reason: why it closed.
        """

    def stop() -> None:
        """
        Stop moving bytes and give back what the engine holds; idempotent.
        """

    def closeTransport(side: IRelaySide, abort: bool) -> None:
        """
        Close C{side}'s transport (after L{stop}).

        @param side: the side to close.
        @param abort: reset instead of a clean close.
        """

    def release() -> None:
        """
        Break reference cycles once the result is out.
        """
