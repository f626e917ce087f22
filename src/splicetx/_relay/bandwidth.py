# -*- test-case-name: tests.test_bandwidth -*-
"""
A bandwidth limit for one direction of a spliced relay: a token bucket that
sizes each splice from the source and, once spent, takes the direction off
the reactor until a timer says enough tokens came back
(docs/design-decisions.md, "Bandwidth per connection").

The kernel still moves the bytes: the bucket only bounds the byte count
given to C{splice(source -> pipe)} and decides when the source is read
again.  A direction without a limit (C{Direction.limit is None}) pays one
C{is None} check per read.
"""

from __future__ import annotations

from typing import Any

from splicetx._relay.turns import monotonicNow

__all__ = ["Bandwidth", "MIN_BURST", "MAX_QUANTUM"]

#: The smallest burst: a bucket holds one second of its rate, or this many
#: bytes when that is more (so that slow limits still splice in useful
#: pieces).
MIN_BURST = 256 * 1024

#: The most bytes a held direction waits for before it reads again (and
#: the least it waits for is a twentieth of a second of its rate): bursts
#: of useful size, a timer at most twenty times a second per direction.
MAX_QUANTUM = 64 * 1024


class Bandwidth:
    """
    The token bucket of one direction: at most C{rate} bytes per second on
    average, up to C{burst} bytes at once.

    @ivar rate: bytes per second.
    @ivar burst: the bucket's size: C{max(rate, MIN_BURST)}.
    @ivar quantum: the fewest tokens a read is granted: below that the
        direction waits (C{min(MAX_QUANTUM, rate / 20)}, at least 1).
    @ivar tokens: the bytes the direction may read now (a float).
    """

    __slots__ = ("rate", "burst", "quantum", "tokens", "last", "reactor", "timer")

    def __init__(self, rate: int, reactor: Any) -> None:
        """
        @param rate: bytes per second, positive.
        @param reactor: the reactor to run the refill timer on
            (C{IReactorTime}).
        """
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.rate = rate
        self.burst = max(rate, MIN_BURST)
        self.quantum = max(1, min(MAX_QUANTUM, rate // 20))
        self.tokens = float(self.burst)
        self.last = monotonicNow()
        self.reactor = reactor
        self.timer: Any = None

    def grant(self) -> int:
        """
        Refill the bucket for the time since the last grant.

        @return: the bytes the direction may read now; 0 when fewer than
            L{quantum} (the direction should L{hold}).
        """
        now = monotonicNow()
        tokens = self.tokens + (now - self.last) * self.rate
        burst = self.burst
        if tokens > burst:
            tokens = burst
        self.tokens = tokens
        self.last = now
        return int(tokens) if tokens >= self.quantum else 0

    def hold(self, direction: Any) -> None:
        """
        Take C{direction} off the reactor (rule 4: never stay registered
        for reading while waiting) until L{quantum} tokens are back; then
        it resumes (C{direction.resume()}) and reads.
        """
        direction.src.stopReading()
        if self.timer is not None:
            return
        self.timer = self.reactor.callLater(self.wait(), self._refilled, direction)
        direction.turns.held.add(direction)

    def wait(self) -> float:
        """
        @return: the seconds until L{quantum} tokens are back (a
            millisecond at least).
        """
        delay = (self.quantum - self.tokens) / self.rate
        return delay if delay > 0.001 else 0.001

    def _refilled(self, direction: Any) -> None:
        self.timer = None
        direction.turns.held.discard(direction)
        direction.resume()

    def cancel(self, direction: Any) -> None:
        """
        The relay ended (or the reactor shuts down): forget the timer.
        """
        timer = self.timer
        if timer is not None:
            self.timer = None
            direction.turns.held.discard(direction)
            if timer.active():
                timer.cancel()

    def __repr__(self) -> str:
        return (
            f"<splicetx bandwidth {self.rate} B/s tokens={int(self.tokens)} "
            f"waiting={self.timer is not None}>"
        )
