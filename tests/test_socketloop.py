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


class _TurnMixin:
    """
    The scenarios; the two classes below run them under each core.
    """

    compiled: bool

    def setUp(self) -> None:
        if self.compiled and not core.available():
            self.skipTest(f"the compiled core is not built: {core.describe()}")
        # The loop holds its reactor weakly.
        self.reactor = _Reactor()
        self.loop = SocketLoop(self.reactor)
        self.addCleanup(self.loop.connectionLost, None)

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


class CompiledTurnTests(_TurnMixin, SynchronousTestCase):
    compiled = True


class PureTurnTests(_TurnMixin, SynchronousTestCase):
    compiled = False
