"""
Tests for one turn of L{SocketLoop.doRead
<splicetx._relay.socketloop.SocketLoop.doRead>}, under both relay cores: it
handles what became ready while it ran without waiting for another reactor
wake, and never more than L{MAX_EVENTS <splicetx._relay.socketloop.MAX_EVENTS>}
events.  Real socket pairs in a real C{epoll} set; the reactor is a
stand-in (only C{addReader}/C{removeReader} are asked of it).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from splicetx._relay import core, socketloop
from splicetx._relay.socketloop import LoopMember, SocketLoop

from ._cores import usingCore


class _Reactor:
    """
    The part of C{IReactorFDSet} a loop uses.
    """

    def __init__(self) -> None:
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)


class _Member(LoopMember):
    """
    One end of a socket pair as a member that reads: each event reads one
    byte (so a socket with more stays ready) and calls C{then}.
    """

    __slots__ = ("sock", "events", "then")

    def __init__(self, loop: SocketLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.reading = self.writing = False
        self.source = self.sink = self
        self.events = 0
        self.then: Any = None

    def readable(self, *ignored: Any) -> None:
        self.events += 1
        self.sock.recv(1)
        if self.then is not None:
            then, self.then = self.then, None
            then()

    def connectionLost(self, reason: Any) -> None:
        self.reading = False


class _LoopCase:
    """
    A loop on a stand-in reactor, for the scenarios run under each core
    (C{compiled}).
    """

    compiled: bool

    def setUp(self) -> None:
        if self.compiled and not core.available():
            self.skipTest(f"the compiled core is not built: {core.describe()}")
        # The loop holds its reactor weakly.
        self.reactor = _Reactor()
        self.loop = SocketLoop(self.reactor)
        self.addCleanup(self.loop.connectionLost, None)


class _TurnMixin(_LoopCase):
    """
    The scenarios; the two classes below run them under each core.
    """

    def members(self, count: int) -> list[tuple[_Member, socket.socket]]:
        """
        C{count} members, each with the other end of its pair.
        """
        out = []
        for _ in range(count):
            a, b = socket.socketpair()
            self.addCleanup(a.close)
            self.addCleanup(b.close)
            a.setblocking(False)
            m = _Member(self.loop, a)
            m.startReading()
            out.append((m, b))
        return out

    def turn(self) -> None:
        with usingCore(self.compiled):
            self.loop.doRead()

    def test_readyDuringTheTurn(self) -> None:
        """
        A member made ready by another member's event in the same turn (a
        relay's echo coming back) is handled in that turn.
        """
        (first, firstPeer), (second, secondPeer) = self.members(2)
        first.then = lambda: secondPeer.send(b"y")
        firstPeer.send(b"x")
        self.turn()
        self.assertEqual((first.events, second.events), (1, 1))

    def test_atMostMaxEvents(self) -> None:
        """
        A turn handles at most L{MAX_EVENTS} events, however many sockets
        stay ready; the rest are reported again at the next turn.
        """
        self.patch(socketloop, "MAX_EVENTS", 3)
        pairs = self.members(2)
        for _, peer in pairs:
            peer.send(b"z" * 10)
        self.turn()
        self.assertEqual(sum(m.events for m, _ in pairs), 3)
        self.turn()
        self.assertEqual(sum(m.events for m, _ in pairs), 6)

    def test_nothingReady(self) -> None:
        """
        A turn with nothing ready handles nothing.
        """
        pairs = self.members(2)
        self.turn()
        self.assertEqual([m.events for m, _ in pairs], [0, 0])

    def test_lastMemberLeaves(self) -> None:
        """
        A turn whose event makes the last member leave and closes the set
        ends there.
        """
        [(m, peer)] = self.members(1)

        def leave() -> None:
            m.stopReading()
            self.loop.closeIfIdle()

        m.then = leave
        peer.send(b"ab")
        self.turn()
        self.assertEqual(m.events, 1)
        self.assertEqual(self.loop.fileno(), -1)

    def test_membersOfEveryKind(self) -> None:
        """
        In one turn, members whose C{reading} is a slot, an instance
        attribute, or a property of their class are each asked as Python
        would ask them (the compiled core reads slots directly and must
        fall back for the others): the first two read, the third, whose
        property says it does not read, is left alone.
        """
        [(slotted, a)] = self.members(1)
        x, b = socket.socketpair()
        y, c = socket.socketpair()
        for sock in (x, b, y, c):
            self.addCleanup(sock.close)
        x.setblocking(False)
        y.setblocking(False)
        plain = _PlainMember(self.loop, x)
        plain.startReading()
        notReading = _Shadowed(self.loop, y)
        notReading.startReading()
        notReading.wants = False
        for peer in (a, b, c):
            peer.send(b"x")
        self.turn()
        self.assertEqual((slotted.events, plain.events, notReading.events), (1, 1, 0))

    def test_foreignSlot(self) -> None:
        """
        A member whose class holds another class's slot descriptor fails
        as in Python (C{TypeError}: the member is told it crashed), and is
        never read at the other class's offset.
        """
        [(m, peer)] = self.members(1)
        peer.send(b"x")
        self.turn()  # the call site has seen the slotted class
        foreign = _Foreign(self.loop, m.fd)
        self.loop.members[m.fd] = foreign
        peer.send(b"y")
        self.turn()
        self.assertEqual(foreign.crashes, 1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_classChangedBetweenTurns(self) -> None:
        """
        A change to a member's class between two turns holds at the next
        turn (the compiled core's cached slot offset is dropped when the
        class changes): with C{reading} patched to a property that says
        no, the ready member is left alone; restored, it reads.
        """
        [(m, peer)] = self.members(1)
        peer.send(b"x")
        self.turn()
        self.assertEqual(m.events, 1)
        peer.send(b"y")
        patched = property(lambda self: False, lambda self, v: None)
        original = _Member.__dict__.get("reading")
        _Member.reading = patched
        try:
            self.turn()
            self.assertEqual(m.events, 1)
        finally:
            if original is None:
                delattr(_Member, "reading")
            else:
                _Member.reading = original
        self.turn()
        self.assertEqual(m.events, 2)


class _Foreign:
    """
    A member of no loop class whose C{reading} is C{LoopMember}'s slot
    descriptor, copied: reading it raises C{TypeError} in Python, and the
    compiled core must not read it at C{LoopMember}'s offset either.
    """

    reading = LoopMember.__dict__["reading"]

    def __init__(self, loop: SocketLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.writing = False
        self.source = self.sink = self
        self.crashes = 0

    def readable(self, *ignored: Any) -> None:
        raise AssertionError("read through a foreign slot")

    def crashed(self) -> None:
        # As a connection does: it ends, and leaves the set.
        self.crashes += 1
        self.loop.forget(self)


class _PlainMember:
    """
    A member without slots (its attributes are in its C{__dict__}) that
    behaves as L{_Member}.
    """

    __init__ = _Member.__init__
    readable = _Member.readable
    connectionLost = _Member.connectionLost
    startReading = LoopMember.startReading


class _Shadowed(_Member):
    """
    A member whose class shadows the C{reading} slot it inherits with a
    property (that says C{wants}), the slot itself holding C{True}.
    """

    __slots__ = ("wants",)

    @property  # type: ignore[override]
    def reading(self) -> bool:
        return self.wants

    @reading.setter
    def reading(self, value: bool) -> None:
        self.wants = value

    def __init__(self, loop: SocketLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        LoopMember.__dict__["reading"].__set__(self, True)


class CompiledTurnTests(_TurnMixin, SynchronousTestCase):
    compiled = True


class PureTurnTests(_TurnMixin, SynchronousTestCase):
    compiled = False


class _InterestMixin(_LoopCase):
    """
    A member's interest changes (L{LoopMember}'s start/stop methods): the
    set, the members and the reactor's readers as L{SocketLoop.update}
    leaves them, under each core (the compiled one does the common cases
    in C, C{interest}).
    """

    def setUp(self) -> None:
        super().setUp()
        cm = usingCore(self.compiled)
        cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)
        self.pairs = [socket.socketpair() for _ in range(2)]
        for a, b in self.pairs:
            self.addCleanup(a.close)
            self.addCleanup(b.close)
        self.members = [_Member(self.loop, a) for a, _b in self.pairs]

    def test_firstAndNext(self) -> None:
        """
        The first member makes the set and hands it to the reactor; the
        next joins it; both are reported when ready.
        """
        first, second = self.members
        first.startReading()
        self.assertEqual(self.reactor.readers, {self.loop})
        second.startReading()
        self.assertEqual(set(self.loop.members.values()), {first, second})
        for _a, b in self.pairs:
            b.send(b"x")
        self.loop.doRead()
        self.assertEqual((first.events, second.events), (1, 1))

    def test_modify(self) -> None:
        """
        A member that also writes is watched for output too (its sink hears
        C{writable}); one that stops reading is no longer told of input.
        """
        first, second = self.members
        first.startReading()
        second.startReading()
        writable: list[tuple[bool, bool]] = []

        class Sink:
            def writable(self) -> None:
                writable.append((second.reading, second.writing))
                # Level-triggered: a socket that can take bytes stays ready.
                second.stopWriting()

        second.sink = Sink()
        second.startWriting()
        second.stopReading()
        self.assertIn(second.fd, self.loop.members)
        self.pairs[1][1].send(b"x")
        self.loop.doRead()
        self.assertEqual((second.events, writable), (0, [(False, True)]))
        self.assertNotIn(second.fd, self.loop.members)

    def test_leaveAndLast(self) -> None:
        """
        A member that wants nothing leaves the set (its events are no longer
        reported); the last one to leave takes the loop off the reactor.
        """
        first, second = self.members
        first.startReading()
        second.startReading()
        second.stopReading()
        self.assertNotIn(second.fd, self.loop.members)
        self.pairs[1][1].send(b"x")
        self.loop.doRead()
        self.assertEqual(second.events, 0)
        self.assertEqual(self.reactor.readers, {self.loop})
        # It left the epoll set too: it can join again (no EEXIST).
        second.startReading()
        self.loop.doRead()
        self.assertEqual(second.events, 1)
        second.stopReading()
        first.stopReading()
        self.assertEqual((self.loop.members, self.reactor.readers), ({}, set()))
        # And back: the kept set is handed to the reactor again.
        first.startReading()
        self.assertEqual(self.reactor.readers, {self.loop})

    def test_addFails(self) -> None:
        """
        A descriptor the set cannot take (closed) raises C{OSError}, as
        C{epoll.register} does, and is not kept as a member.
        """
        first, second = self.members
        first.startReading()
        a, _b = self.pairs[1]
        fd = second.fd
        a.close()
        with self.assertRaises(OSError):
            second.startReading()
        self.assertNotIn(fd, self.loop.members)


class CompiledInterestTests(_InterestMixin, SynchronousTestCase):
    compiled = True


class PureInterestTests(_InterestMixin, SynchronousTestCase):
    compiled = False
