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

import math
from collections import deque
from typing import Any, NamedTuple

from splicetx._relay.turns import monotonicNow

__all__ = [
    "Bandwidth",
    "BandwidthPlan",
    "Limits",
    "MAX_QUANTUM",
    "MIN_BURST",
    "SharedBandwidth",
    "directionLimits",
    "sharedPair",
]

#: The smallest burst: a bucket holds one second of its rate, or this many
#: bytes when that is more (so that slow limits still splice in useful
#: pieces).
MIN_BURST = 256 * 1024

#: The most bytes a held direction waits for before it reads again (and
#: the least it waits for is a twentieth of a second of its rate): bursts
#: of useful size, a timer at most twenty times a second per direction.
MAX_QUANTUM = 64 * 1024


class _Bucket:
    """
    A token bucket: at most C{rate} bytes per second on average, up to
    C{burst} bytes at once.

    @ivar rate: bytes per second.
    @ivar burst: the bucket's size: C{max(rate, MIN_BURST)}.
    @ivar quantum: the fewest tokens a read is granted: below that the
        direction waits (C{min(MAX_QUANTUM, rate / 20)}, at least 1).
    @ivar tokens: the bytes that may be read now (a float).
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

    def available(self, sharer: Any = None) -> float:
        """
        Refill the bucket for the time since the last refill.

        @param sharer: who asks (a L{SharedBandwidth} answers those queued
            behind others with nothing).
        @return: the tokens there are.
        """
        now = monotonicNow()
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.tokens = tokens
        self.last = now
        return tokens

    def wait(self) -> float:
        """
        @return: the seconds until L{quantum} tokens are back (a
            millisecond at least).
        """
        delay = (self.quantum - self.tokens) / self.rate
        return delay if delay > 0.001 else 0.001


class Bandwidth(_Bucket):
    """
    The token bucket of one direction (C{--connection-bandwidth}).
    """

    __slots__ = ()

    def grant(self) -> int:
        """
        Refill the bucket for the time since the last grant.

        @return: the bytes the direction may read now; 0 when fewer than
            C{quantum} (the direction should L{hold}).
        """
        tokens = self.available()
        return int(tokens) if tokens >= self.quantum else 0

    def hold(self, direction: Any) -> None:
        """
        Take C{direction} off the reactor (rule 4: never stay registered
        for reading while waiting) until C{quantum} tokens are back; then
        it resumes (C{direction.resume()}) and reads.
        """
        direction.src.stopReading()
        if self.timer is not None:
            return
        self.timer = self.reactor.callLater(self.wait(), self._refilled, direction)
        direction.turns.held.add(direction)

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


class SharedBandwidth(_Bucket):
    """
    A token bucket shared by many directions: one direction of traffic of
    one client (C{--client-bandwidth}) or of one listener
    (C{--listener-bandwidth}).

    Fairness: while the bucket is spent, the directions that wait for it
    queue in the order they ran dry; one timer refills the bucket and wakes
    them in that order, each with at least C{quantum} tokens, and a
    direction that is not at the head cannot take tokens from the ones
    queued before it.  So the sharers take turns in pieces of
    C{quantum} bytes (round robin), and an idle sharer costs nothing.

    @ivar queue: the L{Limits} waiting for it, first in line first, or
        C{None} when none is (a C{deque} weighs 760 bytes, and a client
        has two of these buckets).
    """

    __slots__ = ("queue", "waking")

    def __init__(self, rate: int, reactor: Any) -> None:
        """
        @param rate: bytes per second, positive.
        @param reactor: the reactor to run the refill timer on.
        """
        super().__init__(rate, reactor)
        self.queue: deque[tuple[Limits, Any]] | None = None
        self.waking: Limits | None = None

    def available(self, sharer: Any = None) -> float:
        """
        Refill the bucket for the time since; the tokens C{sharer} may
        take now (none while others queue before it).
        """
        tokens = super().available()
        if self.queue and self.waking is not sharer:
            return 0.0
        return tokens

    def enqueue(self, sharer: Limits, direction: Any) -> None:
        """
        C{direction} (whose limits are C{sharer}) waits for this bucket.
        """
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append((sharer, direction))
        if self.timer is None:
            self.timer = self.reactor.callLater(self.wait(), self._refilled)

    def forget(self, sharer: Limits) -> None:
        """
        C{sharer}'s relay ended: it waits no more.
        """
        queue = self.queue
        if queue is None:
            return
        for i, (s, _) in enumerate(queue):
            if s is sharer:
                del queue[i]
                break
        if not queue:
            self.queue = None
            timer, self.timer = self.timer, None
            if timer is not None and timer.active():
                timer.cancel()

    def _refilled(self) -> None:
        self.timer = None
        queue = self.queue
        self.available(self)
        if queue is None:
            return
        # Wake the first in line while there are tokens for it: each reads
        # at once (resume() calls readable()), so none can jump the line.
        while queue and self.tokens >= self.quantum:
            sharer, direction = queue.popleft()
            sharer.queuedOn = None
            direction.turns.held.discard(direction)
            self.waking = sharer
            try:
                direction.resume()
            finally:
                self.waking = None
            self.available(self)
        if not queue:
            self.queue = None
        elif self.timer is None:
            self.timer = self.reactor.callLater(self.wait(), self._refilled)

    def __repr__(self) -> str:
        return (
            f"<splicetx shared bandwidth {self.rate} B/s tokens={int(self.tokens)} "
            f"queued={len(self.queue or ())}>"
        )


class Limits:
    """
    The bandwidth limits of one direction when some are shared: its own
    L{Bandwidth} (C{--connection-bandwidth}) if any, and the
    L{SharedBandwidth} buckets of its client and of its listener.  It has
    the interface of a L{Bandwidth} for the direction (C{grant}, C{hold},
    C{tokens}, C{quantum}, C{wait}, C{cancel}): a grant is the least any
    bucket allows, and a spend (C{tokens -= n}) is taken from each.

    @ivar buckets: the buckets, its own first.
    """

    __slots__ = ("buckets", "quantum", "_tokens", "reactor", "timer", "queuedOn")

    def __init__(self, buckets: list[Any], reactor: Any) -> None:
        self.buckets = buckets
        self.quantum = min(b.quantum for b in buckets)
        self._tokens = 0.0
        self.reactor = reactor
        self.timer: Any = None
        #: The shared bucket it waits in the queue of, or C{None}.
        self.queuedOn: SharedBandwidth | None = None

    def _short(self) -> Any:
        """
        Refill every bucket: the first that allows less than its quantum
        (C{None}: none), and set L{tokens} to what they all allow.
        """
        allowed = math.inf
        for b in self.buckets:
            t = b.available(self)
            if t < b.quantum:
                self._tokens = 0.0
                return b
            if t < allowed:
                allowed = t
        self._tokens = allowed
        return None

    def grant(self) -> int:
        """
        @return: the bytes the direction may read now (the least its
            buckets allow); 0 when one is spent (then L{hold}).
        """
        if self._short() is not None:
            return 0
        return int(self._tokens)

    @property
    def tokens(self) -> float:
        """
        What the last grant allowed, less what was read since.
        """
        return self._tokens

    @tokens.setter
    def tokens(self, value: float) -> None:
        spent = self._tokens - value
        self._tokens = value
        for b in self.buckets:
            b.tokens -= spent

    def hold(self, direction: Any) -> None:
        """
        Take C{direction} off the reactor until the bucket that is spent
        has tokens for it again: its own by a timer, a shared one in its
        queue.
        """
        direction.src.stopReading()
        if self.timer is not None or self.queuedOn is not None:
            return
        short = self._short()
        if short is None:
            short = min(self.buckets, key=lambda b: b.tokens / b.quantum)
        direction.turns.held.add(direction)
        if isinstance(short, SharedBandwidth):
            self.queuedOn = short
            short.enqueue(self, direction)
        else:
            self.timer = self.reactor.callLater(short.wait(), self._refilled, direction)

    def wait(self) -> float:
        """
        @return: the seconds until every bucket has its quantum back (for
            the copy engine, which polls: a shared bucket with a line is
            asked again no sooner than a quantum's time).
        """
        return max(
            max(b.wait(), b.quantum / b.rate) if getattr(b, "queue", None) else b.wait()
            for b in self.buckets
        )

    def _refilled(self, direction: Any) -> None:
        self.timer = None
        direction.turns.held.discard(direction)
        direction.resume()

    def cancel(self, direction: Any) -> None:
        """
        The relay ended (or the reactor shuts down): forget the timer and
        the place in line.
        """
        timer, self.timer = self.timer, None
        if timer is not None:
            direction.turns.held.discard(direction)
            if timer.active():
                timer.cancel()
        shared, self.queuedOn = self.queuedOn, None
        if shared is not None:
            direction.turns.held.discard(direction)
            shared.forget(self)


class BandwidthPlan(NamedTuple):
    """
    The bandwidth limits of one connection: its own rate per direction,
    and the shared buckets (up, down) it takes part in.

    @ivar rate: bytes per second each direction of the connection may move
        (C{--connection-bandwidth}), or C{None}.
    @ivar shared: C{(up, down)} pairs of L{SharedBandwidth}: up for the
        A to B direction (client to upstream), down for the other.
    """

    rate: int | None
    shared: tuple[tuple[SharedBandwidth, SharedBandwidth], ...]


def sharedPair(rate: int, reactor: Any) -> tuple[SharedBandwidth, SharedBandwidth]:
    """
    The two shared buckets (up, down) of C{rate} bytes per second each.
    """
    return SharedBandwidth(rate, reactor), SharedBandwidth(rate, reactor)


def directionLimits(plan: int | BandwidthPlan | None, reactor: Any) -> tuple[Any, Any]:
    """
    The limits of the two directions (A to B, B to A) of a relay.

    @param plan: C{None} (no limit), bytes per second each direction
        (a L{Bandwidth} each), or a L{BandwidthPlan}.
    @return: two L{Bandwidth}, two L{Limits}, or C{(None, None)}.
    """
    if plan is None:
        return None, None
    if not isinstance(plan, BandwidthPlan):
        return Bandwidth(plan, reactor), Bandwidth(plan, reactor)
    rate, shared = plan
    if not shared:
        if rate is None:
            return None, None
        return Bandwidth(rate, reactor), Bandwidth(rate, reactor)
    up: list[Any] = [] if rate is None else [Bandwidth(rate, reactor)]
    down: list[Any] = [] if rate is None else [Bandwidth(rate, reactor)]
    for a, b in shared:
        up.append(a)
        down.append(b)
    return Limits(up, reactor), Limits(down, reactor)
