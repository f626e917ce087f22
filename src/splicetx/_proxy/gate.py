# -*- test-case-name: tests.test_proxy -*-
"""
The live connections of a L{SpliceProxyFactory
<splicetx.proxy.SpliceProxyFactory>} and what is built on them: a limit on
how many may be live at once (enforced by pausing the listening ports, so
waiting clients stay in the kernel's listen queue) and a graceful drain.

The factory owns one L{PortGate} and hands it its ports
(C{addListeningPort}) and its connections as they start and end.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from splicetx._relay.relay import CANCELLED
from splicetx._relay.runtime import LOG_PROXY


class GatedConnection(TypingProtocol):
    """
    What the gate needs of a live connection
    (L{splicetx.proxy.SpliceProxyProtocol}): a way to end it.  Described
    here, below the proxy, so that this module needs nothing from it.
    """

    def abort(self, reason: str = ..., detail: str = ...) -> None:
        """
        End the connection now, with C{reason} and C{detail} for its log.
        """

    def drainStarted(self) -> None:
        """
        The drain started: end as soon as nothing is left in flight.
        """


__all__ = ["PortGate"]

_log = Logger(namespace=LOG_PROXY)


_C = TypeVar("_C", bound=GatedConnection)


def _acceptBacklog(port: Any) -> None:
    """
    Accept the connections the kernel has already completed on a listening
    port (its accept loop, once, as the reactor would call it), so that
    closing the port does not reset clients that are connected and may
    have sent their request; they are served like the other live
    connections of the drain.  Within the connection limit only.
    """
    accept = getattr(port, "doRead", None)
    if accept is None or not getattr(port, "connected", False):
        return
    try:
        accept()
    except Exception:
        _log.failure("accepting the backlog of {port!r} failed", port=port)


class PortGate(Generic[_C]):
    """
    Live connections, the connection limit and the drain of one factory.

    @ivar maxConnections: how many connections may be live at once
        (C{None}: no limit).
    @ivar live: the connections that started and have not ended yet.
    @ivar draining: C{True} once L{drain} was called.
    """

    def __init__(self, maxConnections: int | None = None) -> None:
        """
        @param maxConnections: see L{maxConnections}.
        """
        self.maxConnections = maxConnections
        self.live: set[_C] = set()
        self.draining = False
        self._ports: list[IListeningPort] = []
        self._paused = False
        self._whenEmpty: list[Deferred[None]] = []

    def addListeningPort(self, port: IListeningPort) -> None:
        """
        Pause and resume C{port} for L{maxConnections} and stop it in
        L{drain}.

        The port must have C{startReading}/C{stopReading} (every Twisted
        TCP, UNIX, SSL and adopted port does) for the limit to hold; its
        accept loop is capped so that one burst cannot overshoot the limit.

        @param port: a listening port of the factory.
        """
        self._ports.append(port)
        original = getattr(port, "doRead", None)
        if original is None or not hasattr(port, "numberAccepts"):
            return
        # One closure per listening port (not per connection).
        anyPort: Any = port

        def doRead() -> Any:
            room = self._room()
            if room is not None:
                if room <= 0:
                    self._pausePorts()
                    return None
                if anyPort.numberAccepts > room:
                    anyPort.numberAccepts = room
            return original()

        anyPort.doRead = doRead
        if self._paused and hasattr(port, "stopReading"):
            anyPort.stopReading()

    def removeListeningPort(self, port: IListeningPort) -> None:
        """
        Forget a port given to L{addListeningPort} before it is closed (a
        reload removed it): accept the connections the kernel already
        completed on it, as L{drain} does, so closing it resets nobody; it
        is then no longer resumed nor stopped by L{drain}.

        @param port: the port.
        """
        if port in self._ports:
            _acceptBacklog(port)
            self._ports.remove(port)

    def _room(self) -> int | None:
        if self.maxConnections is None:
            return None
        return self.maxConnections - len(self.live)

    def _pausePorts(self) -> None:
        if self._paused:
            return
        self._paused = True
        for port in self._ports:
            if hasattr(port, "stopReading"):
                port.stopReading()

    def _resumePorts(self) -> None:
        if not self._paused:
            return
        self._paused = False
        for port in self._ports:
            if hasattr(port, "startReading") and getattr(port, "connected", True):
                port.startReading()

    def connectionStarted(self, proto: _C) -> None:
        """
        A connection is live; pause the ports when the limit is reached.

        @param proto: its protocol.
        """
        self.live.add(proto)
        room = self._room()
        if room is not None and room <= 0:
            self._pausePorts()

    def connectionEnded(self, proto: _C) -> None:
        """
        A connection ended; resume the ports, or, draining, fire the drain
        once the last one ended.

        @param proto: its protocol.
        """
        self.live.discard(proto)
        if self.draining:
            if not self.live:
                waiters, self._whenEmpty = self._whenEmpty, []
                for d in waiters:
                    d.callback(None)
            return
        room = self._room()
        if room is None or room > 0:
            self._resumePorts()

    def drain(self, timeout: float, reactor: Any) -> Deferred[int]:
        """
        Stop listening on the ports at once (after accepting the
        connections the kernel already completed on them), let the live
        connections finish for up to C{timeout} seconds, then abort the
        rest.  Each live connection's C{drainStarted} is called first.

        @param timeout: seconds to wait before aborting (0: abort at once).
        @param reactor: the reactor for the timers.
        @return: a C{Deferred} firing with the number of connections that
            had to be aborted, once every connection has ended.
        """
        self.draining = True
        ports, self._ports = self._ports, []
        for port in ports:
            _acceptBacklog(port)
        stopped = [maybeDeferred(p.stopListening) for p in ports]
        aborted = [0]
        empty: Deferred[None] = Deferred()
        if self.live:
            self._whenEmpty.append(empty)
            for proto in list(self.live):
                try:
                    proto.drainStarted()
                except Exception:
                    _log.failure("drainStarted() of {proto!r} failed", proto=proto)
            if not self.live and not empty.called:
                empty.callback(None)
        else:
            empty.callback(None)
        timers: list[Any] = []

        def expire() -> None:
            live = list(self.live)
            aborted[0] = len(live)
            _log.info(
                "drain timeout ({timeout:g} s): aborting {count} connection(s)",
                timeout=timeout,
                count=len(live),
            )
            for proto in live:
                proto.abort(CANCELLED, f"drain timeout ({timeout:g} s)")
            # Never hang a shutdown on a connection that does not close.
            if not empty.called:
                timers.append(reactor.callLater(5.0, giveUp))

        def giveUp() -> None:
            if not empty.called:
                empty.callback(None)

        if not empty.called:
            timers.append(reactor.callLater(timeout, expire))

        def finished(_: Any) -> Deferred[int]:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            return gatherResults(stopped, consumeErrors=True).addBoth(
                lambda _: aborted[0]
            )

        return empty.addCallback(finished)
