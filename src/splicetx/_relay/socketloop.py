# -*- test-case-name: tests.test_fastforward -*-
"""
Many relayed sockets behind one reactor reader: an C{epoll} set of our own
whose file descriptor is the one thing the reactor watches
(docs/design-decisions.md rule 15).

The fast path of a plain forward (L{splicetx._proxy.fastpath}) owns its
sockets outright, with no Twisted transport around them.  Registering each
of them with the reactor would make every readiness event pay the
reactor's dispatch (a logging context per call, its own bookkeeping per
C{addReader}); instead they go into an C{epoll} instance of this module,
and the reactor watches that instance's descriptor, which is readable
whenever one of ours is ready.  The reactor then calls L{SocketLoop.doRead},
which takes up to L{MAX_EVENTS} ready sockets from our set without waiting
and hands each to its member.  Any reactor with C{IReactorFDSet} can carry
it (epoll, poll, select, asyncio): an epoll descriptor is pollable like a
socket.  Level-triggered: what is not handled in this turn is reported
again in the next.

A member is an object with C{fd}, C{reading}, C{writing}, C{source} and
C{sink} (see L{splicetx._proxy.fastconn._FastSocket}): on an input event of a
member that reads, C{source.readable()} is called, on an output event of a
member that writes, C{sink.writable()}.  Errors and hang-ups count as both,
so the next system call on the socket reports them.  A member with no
interest left is removed from the set (an C{epoll} set reports errors and
hang-ups even for an empty interest mask, which would spin).

The loop is registered with the reactor while it has members; at reactor
shutdown the reactor tells it C{connectionLost}, which it passes to every
member (docs/design-decisions.md rule 11).
"""

from __future__ import annotations

import select
import weakref
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay import core as _core
from splicetx._relay.runtime import LOG_RELAY

__all__ = ["SocketLoop", "LoopMember", "loopFor", "MAX_EVENTS"]

_log = Logger(namespace=LOG_RELAY)

#: Ready sockets handled per reactor turn at most; the rest wait for the
#: next turn, so one busy loop cannot starve the reactor's other work.
#: Within that bound a turn polls the set again as long as the last poll
#: found something: events that came in while the turn ran are handled
#: without another reactor wake (each costs a few microseconds of Twisted's
#: dispatch), and a poll that finds nothing costs one C{epoll_wait}.
MAX_EVENTS = 256

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
#: Events that make a reading member read, and a writing member write.
_READ_EVENTS = _IN | _ERR | getattr(select, "EPOLLRDHUP", 0)
_WRITE_EVENTS = _OUT | _ERR


@implementer(IReadDescriptor)
class SocketLoop:
    """
    An C{epoll} set of relayed sockets, carried by one reactor reader.  See
    the module docstring.

    @ivar reactor: the C{IReactorFDSet} that watches the set.
    @ivar members: the registered members by file descriptor.
    """

    __slots__ = ("_reactor", "members", "_ep", "_fd", "_added", "__weakref__")

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: an C{IReactorFDSet}.
        """
        # Weakly: the registry below is keyed weakly on the reactor, and a
        # strong path from the value to the key would keep both alive.
        self._reactor = weakref.ref(reactor)
        self.members: dict[int, Any] = {}
        self._ep: Any = None
        self._fd = -1
        self._added = False

    @property
    def reactor(self) -> Any:
        """
        The reactor that watches the set.
        """
        return self._reactor()

    # IReadDescriptor
    def fileno(self) -> int:
        """
        The C{epoll} set's descriptor (-1 while it has no members).
        """
        return self._fd

    def logPrefix(self) -> str:
        return "splicetx"

    def doRead(self) -> None:
        """
        Some member is ready: hand each ready member its event, and poll the
        set again while the last poll found some, up to L{MAX_EVENTS} events
        in all (see L{MAX_EVENTS}).
        """
        ep = self._ep
        if ep is None:
            return
        dispatch = _core.dispatch
        if dispatch is not None:
            failed: list[Any] = []
            try:
                # Given the loop, the compiled dispatch runs the whole turn:
                # it polls again while events come, reading self._fd before
                # each poll (a member's call may close the set).
                dispatch(
                    self,
                    self.members,
                    MAX_EVENTS,
                    _READ_EVENTS,
                    _WRITE_EVENTS,
                    failed,
                    _core.turn,
                )
            except Exception:
                # The events after the failed one come back at the next
                # turn (level-triggered).
                if not failed:
                    raise
                m = failed[0]
                _log.failure("relayed socket {member!r} failed", member=m)
                m.crashed()
            return
        members = self.members
        left = MAX_EVENTS
        while left > 0:
            ep = self._ep
            if ep is None:
                # The last member left and the set was closed.
                return
            try:
                events = ep.poll(0, left)
            except InterruptedError:
                return
            if not events:
                return
            left -= len(events)
            for fd, ev in events:
                m = members.get(fd)
                if m is None:
                    continue
                try:
                    if ev & _READ_EVENTS and m.reading:
                        m.source.readable()
                    if ev & _WRITE_EVENTS and m.writing:
                        m.sink.writable()
                except Exception:
                    _log.failure("relayed socket {member!r} failed", member=m)
                    m.crashed()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor shuts down (or dropped us): every member's connection
        ends.
        """
        self._added = False
        for m in list(self.members.values()):
            try:
                m.connectionLost(reason)
            except Exception:
                _log.failure("relayed socket {member!r} failed", member=m)
        self.members.clear()
        self._close()

    # registration
    def update(self, m: Any) -> None:
        """
        Make the set watch C{m} for what it wants now (C{m.reading},
        C{m.writing}); a member that wants nothing leaves the set.

        @param m: the member.
        """
        mask = (_IN if m.reading else 0) | (_OUT if m.writing else 0)
        fd = m.fd
        members = self.members
        if mask:
            if fd in members:
                self._ep.modify(fd, mask)
                return
            if self._ep is None:
                self._ep = select.epoll()
                self._fd = self._ep.fileno()
            self._ep.register(fd, mask)
            members[fd] = m
            if not self._added:
                self._added = True
                self.reactor.addReader(self)
        else:
            self.forget(m)

    def forget(self, m: Any) -> None:
        """
        Take C{m} out of the set (before its socket is closed).

        @param m: the member.
        """
        if self.members.pop(m.fd, None) is not None:
            try:
                self._ep.unregister(m.fd)
            except OSError:
                pass
            if not self.members:
                self._idle()

    def _idle(self) -> None:
        # No member: leave the reactor (a test's clean reactor sees nothing
        # of ours), keep the epoll set for the next member.
        if self._added:
            self._added = False
            self.reactor.removeReader(self)

    def closeIfIdle(self) -> None:
        """
        Close the C{epoll} set if no member is left (the next member makes a
        new one), so that a process whose relays have all ended holds no
        descriptor of ours: L{splicetx._relay.splice} calls it at the end of
        each relay started by L{relay() <splicetx.relay>}.
        """
        if not self.members:
            self._idle()
            self._close()

    def _close(self) -> None:
        ep, self._ep = self._ep, None
        self._fd = -1
        if ep is not None:
            ep.close()

    def __repr__(self) -> str:
        return f"<splicetx socket loop fd={self._fd} members={len(self.members)}>"


class LoopMember:
    """
    The registration bookkeeping of a L{SocketLoop} member: C{start}/C{stop}
    C{Reading}/C{Writing} change its interest and tell the loop, one
    C{epoll_ctl} only when the interest changes (L{SocketLoop.update}, or
    the compiled core's C{interest}, which does the same in C).  Subclasses
    set C{loop}, C{fd}, C{source} and C{sink}.
    """

    __slots__ = ("loop", "fd", "reading", "writing", "source", "sink")

    loop: SocketLoop
    fd: int
    reading: bool
    writing: bool

    def startReading(self) -> None:
        if not self.reading:
            interest = _core.interest
            if interest is not None:
                interest(self, True, self.writing)
                return
            self.reading = True
            self.loop.update(self)

    def stopReading(self) -> None:
        if self.reading:
            interest = _core.interest
            if interest is not None:
                interest(self, False, self.writing)
                return
            self.reading = False
            self.loop.update(self)

    def startWriting(self) -> None:
        if not self.writing:
            interest = _core.interest
            if interest is not None:
                interest(self, self.reading, True)
                return
            self.writing = True
            self.loop.update(self)

    def stopWriting(self) -> None:
        if self.writing:
            interest = _core.interest
            if interest is not None:
                interest(self, self.reading, False)
                return
            self.writing = False
            self.loop.update(self)


_loops: weakref.WeakKeyDictionary[Any, SocketLoop] = weakref.WeakKeyDictionary()


def loopFor(reactor: Any) -> SocketLoop:
    """
    The L{SocketLoop} of C{reactor}, made when first asked for.

    @param reactor: an C{IReactorFDSet}.
    """
    loop = _loops.get(reactor)
    if loop is None:
        loop = _loops[reactor] = SocketLoop(reactor)
    return loop
