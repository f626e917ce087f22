# -*- test-case-name: tests.test_relay_faults -*-
"""
The per-reactor-turn byte budget that keeps a small request from waiting
behind every bulk flow's pipe-full (docs/design-decisions.md rule 10).

The spliced relays of one reactor share one L{_Turns}: every read of a
splice direction (L{splicetx._relay.splice}) is charged to it; once
L{TURN_BUDGET} bytes are spent, and while a small flow is about, a bulk
direction stops reading and queues for the next reactor turn, while small
reads go at once.

Within a turn, while a small flow is busy (L{BUSY}), a bulk direction
writes its pipe out in L{PIECE}-sized splices and, between two of them,
lets the small flows that have bytes waiting read them at once
(L{_Turns.serveSmall}): a request waits behind about one piece of bulk
work per hop rather than behind the rest of the turn.
"""

from __future__ import annotations

import select
import time
import weakref
from collections import OrderedDict, deque
from typing import Any

__all__ = ["TURN_BUDGET", "BULK_READ", "SMALL_WINDOW", "PIECE", "WATCHED", "BUSY"]


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

#: While a small flow is busy (L{BUSY}), a bulk direction writes its pipe out in
#: splices of at most this many bytes, and between two of them serves the
#: small flows that have bytes waiting (L{_Turns.serveSmall}).
PIECE = 256 << 10

#: The most recent small flows that L{_Turns.serveSmall} looks at.
WATCHED = 8

#: Bulk writes in pieces only while a watched small flow has read in the
#: last this many seconds (L{_Turns.busy}): a request/response flow reads
#: every round trip, while a connection's one request header or a bulk
#: flow's lull (which stops being watched at its next bulk read) does not
#: keep pure bulk in pieces.
BUSY = 0.01

monotonicNow = time.monotonic


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
    @ivar bulkUntil: until when a bulk read is recent: small flows are
        watched (L{noteSmall}) only meanwhile, for none is served otherwise.
    """

    # Slots: the compiled core reads and writes left, smallUntil and
    # bulkUntil on every small read (splicetx._relay._ccore, SlotCache).
    __slots__ = (
        "_reactor",
        "left",
        "queue",
        "held",
        "pending",
        "smallUntil",
        "bulkUntil",
        "smalls",
        "serving",
        "_poll",
        "__weakref__",
    )

    def __init__(self, reactor: Any) -> None:
        # Weakly, and no DelayedCall kept (it refers to the reactor): the
        # registry below is keyed weakly on the reactor, and a strong path
        # from the value to the key would keep both alive forever.
        self._reactor = weakref.ref(reactor)
        self.left = TURN_BUDGET
        self.queue: deque[Any] = deque()
        #: Directions waiting for their bandwidth limit's timer.
        self.held: set[Any] = set()
        self.pending = False
        self.smallUntil = 0.0
        self.bulkUntil = 0.0
        self.smalls: OrderedDict[int, tuple[Any, float]] = OrderedDict()
        self.serving = False
        self._poll = select.poll()
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

    def wait(self, d: Any, reading: bool) -> None:
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
            queue.popleft().resume(read=False)
        held = self.held
        while held:
            d = held.pop()
            d.limit.cancel(d)
            d.resume(read=False)

    def noteSmall(self, d: Any, until: float) -> None:
        """
        Direction C{d} read small twice in a row: watch its source until
        C{until}, as one of the L{WATCHED} most recent small flows.
        """
        fd = d.srcfd
        smalls = self.smalls
        old = smalls.get(fd)
        if old is None:
            # Weakly: a relay that ends is not kept alive by being watched.
            smalls[fd] = (weakref.ref(d), until)
            self._poll.register(fd, select.POLLIN)
            if len(smalls) > WATCHED:
                self._unwatch(next(iter(smalls)))
        else:
            ref = old[0]
            smalls[fd] = (ref if ref() is d else weakref.ref(d), until)
            smalls.move_to_end(fd)

    def busy(self) -> bool:
        """
        Whether the most recent watched small flow read in the last L{BUSY}
        seconds: then a bulk direction writes in pieces.
        """
        smalls = self.smalls
        if not smalls:
            return False
        until = next(reversed(smalls.values()))[1]
        return until - SMALL_WINDOW + BUSY > monotonicNow()

    def forget(self, d: Any) -> None:
        """
        Direction C{d} turned bulk: stop watching it.
        """
        old = self.smalls.get(d.srcfd)
        if old is not None and old[0]() is d:
            self._unwatch(d.srcfd)

    def _unwatch(self, fd: int) -> None:
        del self.smalls[fd]
        self._poll.unregister(fd)

    def serveSmall(self, bulk: Any) -> None:
        """
        Between two pieces of bulk direction C{bulk}'s work: let every
        watched small flow that has bytes waiting (one C{poll(2)}, no
        timeout) read them now, instead of after this reactor turn.

        Only an idle small direction is served: its pipe empty, so it is
        reading and the invariant of C{_Direction.readable} holds (a later
        event of this turn for it finds its socket drained: C{EAGAIN}).  One
        that ended, or that has been quiet for L{SMALL_WINDOW}, is no longer
        watched (its fd may be another socket's by now).  Not re-entered: a
        small direction that turns bulk while served serves nobody.

        @param bulk: the bulk direction asking (never served itself).
        """
        if self.serving or not self.smalls:
            return
        self.serving = True
        try:
            now = monotonicNow()
            smalls = self.smalls
            for fd, _ in self._poll.poll(0):
                entry = smalls.get(fd)
                if entry is None:
                    continue
                d = entry[0]()
                if (
                    d is None
                    or d.done
                    or entry[1] < now
                    or d.src is None
                    or d.src.fd != fd
                ):
                    self._unwatch(fd)
                elif d is not bulk and d.pipe is None and not d.bulk:
                    d.readable()
        finally:
            self.serving = False

    def refill(self) -> None:
        self.pending = False
        self.left = TURN_BUDGET
        queue = self.queue
        while queue and self.left > 0:
            queue.popleft().resume()
        if queue or self.left <= 0:
            self.spent()


_turns: weakref.WeakKeyDictionary[Any, _Turns] = weakref.WeakKeyDictionary()


def turnsFor(reactor: Any) -> _Turns:
    turns = _turns.get(reactor)
    if turns is None:
        turns = _turns[reactor] = _Turns(reactor)
    return turns
