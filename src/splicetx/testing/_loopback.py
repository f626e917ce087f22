# -*- test-case-name: tests.test_testing -*-
"""
L{Loopback}: one object per test that starts backends and the proxy under
test on ephemeral loopback ports, connects clients through it, checks bytes
exactly, and closes everything at the end, in an order that leaves the
reactor clean.

Use it on the global reactor (trial's
L{TestCase <twisted.trial.unittest.TestCase>}, pytest-twisted) or on a fresh
private reactor with L{runLoopback} / L{withLoopback} (any runner, including
plain pytest without pytest-twisted).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import (
    Deferred,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._relay.runtime import defaultReactor
from splicetx.testing._backends import (
    Backend,
    Listener,
    RefusingPort,
    Tally,
    Writer,
    payload,
)
from splicetx.testing._reactors import buildReactor, runScenario

__all__ = ["Loopback", "LoopbackClient", "runLoopback", "withLoopback"]


@implementer(IHalfCloseableProtocol)
class LoopbackClient(Protocol):
    """
    A client connection made by L{Loopback.connect}.

    @ivar received: a L{Tally} of everything received.
    @ivar sent: a L{Tally} of everything sent with L{send}.
    @ivar eofReceived: C{True} once the server half-closed or closed.
    @ivar isClosed: C{True} once the connection is closed.
    @ivar lostReason: the L{Failure} given to C{connectionLost}.
    @ivar closeOnEOF: close the connection when the server's end of stream
        arrives (default C{True}); set it to C{False} to keep sending after
        the server half-closed.
    """

    def __init__(self, keep: bool = True, closeOnEOF: bool = True) -> None:
        self.received = Tally(keep=keep)
        self.sent = Tally(keep=keep)
        self.closeOnEOF = closeOnEOF
        self.eofReceived = False
        self.isClosed = False
        self._writeClosed = False
        self.lostReason: Failure | None = None
        self._made: Deferred[LoopbackClient] = Deferred()
        self._eofWaiters: list[Deferred[LoopbackClient]] = []
        self._closedWaiters: list[Deferred[LoopbackClient]] = []
        self._dataWaiters: list[tuple[int, Deferred[LoopbackClient]]] = []

    def connectionMade(self) -> None:
        self._made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)
        ready = [w for w in self._dataWaiters if self.received.size >= w[0]]
        self._dataWaiters = [w for w in self._dataWaiters if w not in ready]
        for _, d in ready:
            d.callback(self)

    def readConnectionLost(self) -> None:
        self._eof()
        if self.closeOnEOF or self._writeClosed:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        # Both directions are finished: a half-closeable protocol closes.
        self._writeClosed = True
        if self.eofReceived:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason
        self.isClosed = True
        self._eof()
        for _, d in self._dataWaiters:
            d.callback(self)
        self._dataWaiters = []
        waiters, self._closedWaiters = self._closedWaiters, []
        for d in waiters:
            d.callback(self)

    def _eof(self) -> None:
        if not self.eofReceived:
            self.eofReceived = True
            waiters, self._eofWaiters = self._eofWaiters, []
            for d in waiters:
                d.callback(self)

    # -- for tests ----------------------------------------------------------

    def send(self, data: bytes, halfClose: bool = False) -> Deferred[int]:
        """
        Write C{data}, in chunks, as fast as the connection takes it.

        @param halfClose: half-close (C{shutdown(SHUT_WR)}) once it is all
            written.
        @return: a L{Deferred} firing with the number of bytes written once
            they are all in the transport.
        """
        d = Writer(self.transport, data, self.sent).start()
        if halfClose:
            d.addCallback(lambda n: (self.closeWrite(), n)[1])
        return d

    def closeWrite(self) -> None:
        """
        Half-close: tell the server there is nothing more to read.
        """
        self.transport.loseWriteConnection()

    def whenReceived(self, size: int) -> Deferred[LoopbackClient]:
        """
        @return: a L{Deferred} firing with this client once at least C{size}
            bytes have arrived (or the connection closed first).
        """
        if self.received.size >= size or self.isClosed:
            return succeed(self)
        d: Deferred[LoopbackClient] = Deferred()
        self._dataWaiters.append((size, d))
        return d

    def whenEOF(self) -> Deferred[LoopbackClient]:
        """
        @return: a L{Deferred} firing with this client once the server's end
            of stream (or the close) arrived.
        """
        if self.eofReceived:
            return succeed(self)
        d: Deferred[LoopbackClient] = Deferred()
        self._eofWaiters.append(d)
        return d

    def whenClosed(self) -> Deferred[LoopbackClient]:
        """
        @return: a L{Deferred} firing with this client once it is closed.
        """
        if self.isClosed:
            return succeed(self)
        d: Deferred[LoopbackClient] = Deferred()
        self._closedWaiters.append(d)
        return d

    def __repr__(self) -> str:
        return (
            f"<LoopbackClient sent={self.sent.size} received={self.received.size}"
            f"{' closed' if self.isClosed else ''}>"
        )


class _ClientFactory(ClientFactory):
    def __init__(self, proto: LoopbackClient) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> LoopbackClient:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.proto._made.called:
            self.proto._made.errback(reason)


class _TrackingFactory(Factory):
    """
    Stands in front of a user's server factory to remember the protocols it
    builds (so L{Loopback.close} can wait for them), without wrapping them:
    their transports stay plain sockets.
    """

    def __init__(self, factory: Any) -> None:
        self.wrapped = factory
        self.built: list[Any] = []

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        p = self.wrapped.buildProtocol(addr)
        if p is not None:
            self.built.append(p)
        return p

    def logPrefix(self) -> str:
        prefix = getattr(self.wrapped, "logPrefix", None)
        return prefix() if prefix else type(self.wrapped).__name__


def _connected(transport: Any) -> bool:
    return (
        transport is not None
        and bool(getattr(transport, "connected", False))
        and not getattr(transport, "disconnected", False)
    )


class Loopback:
    """
    Everything one test runs on loopback, on one reactor.  In an
    C{inlineCallbacks} test::

        lb = Loopback(reactor)
        echo = lb.echo()
        proxy = lb.listen(MyProxyFactory(upstream=echo.endpoint, reactor=reactor))
        client = yield lb.exchange(proxy, b"hello")
        assert client.received.data == b"hello"
        yield lb.close()

    @ivar reactor: the reactor everything runs on.
    @ivar graceTimeout: seconds L{close} waits for connections to end by
        themselves before it aborts them.
    """

    graceTimeout = 5.0

    def __init__(self, reactor: Any | None = None, host: str = "127.0.0.1") -> None:
        """
        @param reactor: the reactor (default: the global one, imported when
            the L{Loopback} is made).
        @param host: C{"127.0.0.1"} (default) or C{"::1"}.
        """
        self.reactor = defaultReactor(reactor)
        self.host = host
        self._backends: list[Backend] = []
        self._listeners: list[Listener] = []
        self._tracking: list[_TrackingFactory] = []
        self._clients: list[LoopbackClient] = []

    # -- backends -----------------------------------------------------------

    def echo(self, keep: bool = False) -> Backend:
        """
        Start an echo L{Backend}.
        """
        return self._backend("echo", keep=keep)

    def sink(self, keep: bool = False) -> Backend:
        """
        Start a sink L{Backend}: it reads and hashes everything.
        """
        return self._backend("sink", keep=keep)

    def source(
        self, size: int, seed: int = 0, halfClose: bool = False, keep: bool = False
    ) -> Backend:
        """
        Start a source L{Backend} that sends L{payload}C{(size, seed)} to each
        connection, then closes (or half-closes).
        """
        return self._backend(
            "source", size=size, seed=seed, halfClose=halfClose, keep=keep
        )

    def refusing(self) -> RefusingPort:
        """
        Reserve a port where connections are refused: an upstream that is
        down (C{ECONNREFUSED}).
        """
        refusing = RefusingPort(self.reactor, self.host)
        self._listeners.append(refusing)
        return refusing

    def silent(self) -> Backend:
        """
        Start a silent L{Backend}: it accepts and never answers (an upstream
        that hangs; the idle and drain timeouts are what end it).
        """
        return self._backend("silent")

    def resetting(self, size: int, seed: int = 0) -> Backend:
        """
        Start a reset L{Backend}: it sends L{payload}C{(size, seed)} to each
        connection, then resets it (an upstream that dies mid-transfer).
        """
        return self._backend("reset", size=size, seed=seed)

    def _backend(self, kind: str, **kw: Any) -> Backend:
        b = Backend(self.reactor, kind, host=self.host, **kw)
        self._backends.append(b)
        self._listeners.append(b)
        return b

    # -- the code under test --------------------------------------------------

    def listen(self, factory: Any) -> Listener:
        """
        Start a server factory (your proxy's) on an ephemeral loopback port.
        The factory's protocols get plain socket transports: nothing is
        wrapped, so the splice engine can serve them.

        @return: a L{Listener} (C{.port}, C{.endpoint}, C{.endpointString}).
        """
        tracking = _TrackingFactory(factory)
        listener = Listener(self.reactor, tracking, self.host)
        self._tracking.append(tracking)
        self._listeners.append(listener)
        return listener

    # -- clients --------------------------------------------------------------

    def connect(
        self, target: Listener | int, keep: bool = True, closeOnEOF: bool = True
    ) -> Deferred[LoopbackClient]:
        """
        Connect a L{LoopbackClient} to C{target}.

        @param target: a L{Listener} (or L{Backend}) or a port number on
            this loopback host.
        @param keep: keep the received bytes (not only their hash).
        @param closeOnEOF: see L{LoopbackClient.closeOnEOF}.
        @return: a L{Deferred} firing with the connected client.
        """
        port = target.port if isinstance(target, Listener) else int(target)
        client = LoopbackClient(keep=keep, closeOnEOF=closeOnEOF)
        self._clients.append(client)
        self.reactor.connectTCP(self.host, port, _ClientFactory(client), timeout=10)
        return client._made

    @inlineCallbacks
    def exchange(
        self,
        target: Listener | int,
        data: bytes | int = b"",
        halfClose: bool = True,
        keep: bool = True,
    ) -> Any:
        """
        Connect to C{target}, send C{data}, half-close and read until the
        server closes: the usual client conversation through a proxy.

        @param data: the bytes to send, or a size for L{payload}C{(size)}.
        @param halfClose: half-close after sending (default); otherwise the
            client only stops sending and waits for the server to close.
        @return: a L{Deferred} firing with the closed L{LoopbackClient}:
            compare C{client.received} with what the backend should have
            sent, C{client.sent} with what the backend received.
        """
        if isinstance(data, int):
            data = payload(data)
        client = yield self.connect(target, keep=keep)
        yield client.send(data, halfClose=halfClose)
        yield client.whenClosed()
        return client

    # -- the end --------------------------------------------------------------

    @inlineCallbacks
    def close(self) -> Any:
        """
        Close everything this L{Loopback} started: stop listening, close the
        clients, wait (up to L{graceTimeout} seconds) for the connections of
        the code under test and of the backends to end by themselves, then
        abort whatever is left.

        @return: a L{Deferred} that fires once all of it is closed.
        """
        yield gatherResults([lst.stop() for lst in self._listeners])
        started = [c for c in self._clients if c.transport is not None]
        for c in started:
            if not c.isClosed:
                c.transport.abortConnection()
        yield gatherResults([c.whenClosed() for c in started])
        served = [p for t in self._tracking for p in t.built]
        yield self._waitUntil(
            lambda: not any(_connected(getattr(p, "transport", None)) for p in served)
        )
        for p in served:
            t = getattr(p, "transport", None)
            if _connected(t):
                t.abortConnection()
        conns = [c for b in self._backends for c in b.openConnections()]
        yield self._waitUntil(lambda: all(c.isClosed for c in conns))
        for c in conns:
            if not c.isClosed:
                c.transport.abortConnection()
        yield gatherResults([c.whenClosed() for c in conns])
        # One more turn so closes started above complete.
        yield self._sleep(0)

    def _sleep(self, seconds: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        return d

    @inlineCallbacks
    def _waitUntil(self, condition: Callable[[], bool]) -> Any:
        waited = 0.0
        step = 0.002
        while not condition() and waited < self.graceTimeout:
            yield self._sleep(step)
            waited += step
            step = min(step * 2, 0.05)


def withLoopback(
    scenario: Callable[[Loopback], Any],
) -> Callable[[Any], Deferred[Any]]:
    """
    Turn C{scenario(loopback)} into C{scenario(reactor)} for
    L{splicetx.testing.runScenario} / L{ReactorTestMixin.runScenario}: it
    gets a fresh L{Loopback} on that reactor, which is closed afterwards
    whether the scenario succeeded or failed.

    @param scenario: takes a L{Loopback}; returns a value, a L{Deferred} or
        a coroutine (C{async def} is fine).
    """

    def run(reactor: Any) -> Deferred[Any]:
        lb = Loopback(reactor)

        def call() -> Any:
            result = scenario(lb)
            if inspect.iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result

        d = maybeDeferred(call)

        def cleanup(result: Any) -> Deferred[Any]:
            c = lb.close()
            c.addCallback(lambda _: result)
            return c

        d.addBoth(cleanup)
        return d

    return run


def runLoopback(
    scenario: Callable[[Loopback], Any],
    reactorName: str = "epoll",
    timeout: float = 60.0,
    requireClean: bool = True,
) -> Any:
    """
    Run C{scenario(loopback)} on a fresh private reactor and return its
    result: a synchronous call that works in any test runner (trial's
    L{SynchronousTestCase <twisted.trial.unittest.SynchronousTestCase>}, plain
    pytest functions) and leaves the global
    reactor alone.

    @param scenario: see L{withLoopback}.
    @param reactorName: a key of L{splicetx.testing.REACTORS}.
    @param timeout: seconds before the scenario is abandoned.
    @param requireClean: see L{splicetx.testing.runScenario}.
    @return: the scenario's result.
    @raise Exception: what the scenario raised, or
        L{splicetx.testing.ScenarioTimeout} /
        L{splicetx.testing.ReactorUnclean}.
    """
    return runScenario(
        buildReactor(reactorName),
        withLoopback(scenario),
        timeout=timeout,
        requireClean=requireClean,
    )
