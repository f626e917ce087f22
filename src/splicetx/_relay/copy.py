# -*- test-case-name: tests.test_relay -*-
"""
The copy engine: bytes go through Python, with Twisted's producer/consumer
flow control.  It serves everything the splice engine cannot: TLS, wrapped or
fake transports, reactors without C{IReactorFDSet}, and every fallback.

Each transport is the other's streaming producer, so a destination that stops
reading pauses its source after one transport buffer (64 KiB) and memory stays
bounded.  With a bandwidth limit, each direction has a L{Bandwidth} bucket
too: once spent, the source is paused until a timer refills it (a source
resumes only when neither its destination nor its bucket holds it).

An end of stream from one side half-closes the other through
C{loseWriteConnection} when that transport supports it; a transport that
cannot half-close (TLS) is closed once the other side has finished.

The engine knows its relay only as an L{IEngineHost}: it reports the end with
L{IEngineHost.ended}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay.bandwidth import Bandwidth, BandwidthPlan, Limits, directionLimits
from splicetx._relay.contract import (
    CLOSED,
    DONE,
    RESET,
    IEngineHost,
    IRelayEngine,
    IRelaySide,
)
from splicetx._relay.transports import canHalfClose, closeTransport


@implementer(IPushProducer)
class _Pauser:
    """
    Pauses and resumes reading from one side on behalf of the other side's
    write buffer.  C{stopProducing} is ignored: the relay decides when to
    close.
    """

    def __init__(self, side: IRelaySide) -> None:
        self.side = side
        #: Paused by the destination's full write buffer.
        self.paused = False
        #: Held by the bandwidth limit of the side's direction.
        self.held = False

    def pauseProducing(self) -> None:
        self.paused = True
        side = self.side
        if not side.lost and not side.readEOF:
            side.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        side = self.side
        if not self.held and not side.lost and not side.readEOF:
            side.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


@implementer(IRelayEngine)
class CopyEngine:
    """
    Runs a relay by copying through userspace.  See the module docstring.

    @ivar host: the relay, until the result is out.
    """

    name = "copy"

    def __init__(
        self,
        host: IEngineHost,
        a: IRelaySide,
        b: IRelaySide,
        toA: bytes,
        toB: bytes,
        reactor: Any = None,
        bandwidth: int | BandwidthPlan | None = None,
    ) -> None:
        """
        @param host: the relay to report the end to.
        @param a: side A.
        @param b: side B.
        @param toA: bytes to write to A first.
        @param toB: bytes to write to B first.
        @param reactor: the reactor of the bandwidth limit's timers.
        @param bandwidth: bytes per second each direction may move at most,
            a L{BandwidthPlan}, or C{None} (needs C{reactor}).
        """
        self.host: IEngineHost | None = host
        self._a = a
        self._b = b
        self._toA = toA
        self._toB = toB
        self._aToB = 0
        self._bToA = 0
        self._sent: dict[str, bool] = {"A": False, "B": False}
        self._registered: list[Any] = []
        # Per source side: its Bandwidth, its _Pauser, its pending timer.
        self._limits: dict[str, Bandwidth | Limits] | None = None
        if bandwidth is not None and reactor is not None:
            fromA, fromB = directionLimits(bandwidth, reactor)
            if fromA is not None:
                self._limits = {"A": fromA, "B": fromB}
        self._pausers: dict[str, _Pauser] = {}
        self._timers: dict[str, Any] = {}

    def bytesAToB(self) -> int:
        return self._aToB

    def bytesBToA(self) -> int:
        return self._bToA

    def endedDirections(self) -> tuple[bool, bool]:
        sent = self._sent
        return sent["A"], sent["B"]

    def start(self) -> None:
        a, b = self._a, self._b
        for side in (a, b):
            t = side.transport
            if getattr(t, "producer", None) is not None:
                t.unregisterProducer()
        for consumer, producer in ((a, b), (b, a)):
            if not consumer.lost:
                pauser = self._pausers[producer.name] = _Pauser(producer)
                consumer.transport.registerProducer(pauser, True)
                self._registered.append(consumer.transport)
        if self._toB:
            self._aToB += len(self._toB)
            b.transport.write(self._toB)
        if self._toA:
            self._bToA += len(self._toA)
            a.transport.write(self._toA)
        for side in (a, b):
            if not side.lost and not side.readEOF:
                side.transport.resumeProducing()
        # A side may have hit end of stream before the hand-over.
        for side in (a, b):
            if side.readEOF:
                self.readConnectionLost(side)

    def dataReceived(self, side: IRelaySide, data: bytes) -> None:
        if side.name == "A":
            self._aToB += len(data)
        else:
            self._bToA += len(data)
        peer = side.peer
        assert peer is not None
        peer.transport.write(data)
        if self._limits is not None:
            self._spend(side, len(data))

    def _spend(self, side: IRelaySide, n: int) -> None:
        """
        C{side} sent C{n} bytes: once its bucket is spent, pause it until
        its timer.
        """
        assert self._limits is not None
        name = side.name
        bucket = self._limits[name]
        bucket.tokens -= n
        if bucket.grant() or name in self._timers:
            return
        pauser = self._pausers.get(name)
        if pauser is not None:
            pauser.held = True
        if not side.lost and not side.readEOF:
            side.transport.pauseProducing()
        self._timers[name] = bucket.reactor.callLater(
            bucket.wait(), self._refilled, side
        )

    def _refilled(self, side: IRelaySide) -> None:
        del self._timers[side.name]
        pauser = self._pausers.get(side.name)
        if pauser is not None:
            pauser.held = False
            if pauser.paused:
                return
        if not side.lost and not side.readEOF:
            side.transport.resumeProducing()

    def readConnectionLost(self, side: IRelaySide) -> None:
        """
        C{side}'s peer sent end of stream: half-close the other transport.
        """
        if self._sent[side.name]:
            return
        self._sent[side.name] = True
        peer = side.peer
        assert peer is not None
        host = self.host
        assert host is not None
        if canHalfClose(peer.transport):
            peer.transport.loseWriteConnection()
            if all(self._sent.values()):
                host.ended(DONE, "both directions finished", False)
        else:
            # Cannot half-close (TLS): close it once its buffer is flushed.
            if all(self._sent.values()):
                host.ended(DONE, "both directions finished", False)
            else:
                host.ended(
                    CLOSED,
                    f"{side.name} finished sending and {peer.name} cannot be "
                    "half-closed (TLS)",
                    False,
                )

    def writeConnectionLost(self, side: IRelaySide) -> None:
        pass

    def connectionLost(self, side: IRelaySide, reason: Failure) -> None:
        host = self.host
        assert host is not None
        if reason.check(ConnectionDone):
            # A clean close without a half-close first (TLS close_notify, a
            # transport that does not half-close): whatever it sent is
            # delivered, nothing more can go to it.
            self._sent[side.name] = True
            if all(self._sent.values()):
                host.ended(DONE, "both directions finished", False)
            else:
                host.ended(
                    CLOSED, f"transport {side.name} closed the connection", False
                )
        else:
            host.ended(
                RESET,
                f"transport {side.name} lost: {reason.getErrorMessage()}",
                True,
            )

    def stop(self) -> None:
        for t in self._registered:
            if getattr(t, "producer", None) is not None:
                t.unregisterProducer()
        self._registered = []
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()

    def closeTransport(self, side: IRelaySide, abort: bool) -> None:
        closeTransport(side.transport, abort)

    def release(self) -> None:
        self.host = None
