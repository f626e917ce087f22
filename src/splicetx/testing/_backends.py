# -*- test-case-name: tests.test_testing -*-
"""
Loopback backends for testing relays and proxies: servers on an ephemeral
C{127.0.0.1} port that echo, swallow (and hash) or produce bytes, so a test
can check byte for byte what went through the code under test.

Every backend is a real Twisted TCP server on the reactor it is given, so it
works with the global reactor (trial's
L{TestCase <twisted.trial.unittest.TestCase>}, pytest-twisted) as well as with
the private reactors of L{splicetx.testing.runScenario}.  Most tests make them
through L{splicetx.testing.Loopback}, which also cleans them up.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IPullProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "RefusingPort",
    "Backend",
    "BackendConnection",
    "Listener",
    "Tally",
    "digest",
    "payload",
]


def payload(size: int, seed: int = 0) -> bytes:
    """
    Deterministic pseudo-random bytes: the same C{(size, seed)} always gives
    the same bytes, and no two 64 KiB windows of it are equal (a block
    counter is mixed in), so a reordering or a lost chunk changes the hash.

    @param size: how many bytes.
    @param seed: selects the byte stream.
    @return: C{size} bytes.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    block = random.Random(seed).randbytes(1 << 16)
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += counter.to_bytes(8, "big")
        out += block[: max(0, min(len(block), size - len(out)))]
        counter += 1
    return bytes(out[:size])


def digest(data: bytes) -> str:
    """
    The SHA-256 of C{data} as lower-case hex, the form L{Tally.sha256} uses.
    """
    return hashlib.sha256(data).hexdigest()


class Tally:
    """
    A running count and SHA-256 of the bytes a connection received (or
    sent), and optionally the bytes themselves.

    @ivar size: bytes counted so far.
    @ivar data: the bytes themselves when made with C{keep=True}, else
        C{None}.
    """

    def __init__(self, keep: bool = False) -> None:
        """
        @param keep: also keep the bytes (leave it off for large transfers).
        """
        self._hash = hashlib.sha256()
        self.size = 0
        self._chunks: list[bytes] | None = [] if keep else None

    def update(self, data: bytes) -> None:
        """
        Count C{data}.
        """
        self._hash.update(data)
        self.size += len(data)
        if self._chunks is not None:
            self._chunks.append(data)

    @property
    def data(self) -> bytes | None:
        """
        The bytes counted so far, when kept.
        """
        if self._chunks is None:
            return None
        joined = b"".join(self._chunks)
        self._chunks[:] = [joined]
        return joined

    @property
    def sha256(self) -> str:
        """
        The SHA-256 of the bytes counted so far, as lower-case hex.
        """
        return self._hash.hexdigest()

    def matches(self, expected: bytes) -> bool:
        """
        Whether exactly C{expected} was counted (same length and hash).
        """
        return self.size == len(expected) and self.sha256 == digest(expected)

    def __repr__(self) -> str:
        return f"<Tally {self.size} bytes sha256={self.sha256[:16]}...>"


@implementer(IPullProducer)
class Writer:
    """
    Writes bytes to a transport in chunks, as a pull producer, so a slow
    reader holds the writer back instead of filling memory.
    """

    chunkSize = 1 << 16

    def __init__(self, transport: Any, data: bytes, tally: Tally | None) -> None:
        self._transport = transport
        self._data = memoryview(data)
        self._pos = 0
        self._tally = tally
        self.done: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        if not self._data:
            self.done.callback(0)
            return self.done
        self._transport.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self.done.called:
            return
        chunk = bytes(self._data[self._pos : self._pos + self.chunkSize])
        self._pos += len(chunk)
        if self._tally is not None:
            self._tally.update(chunk)
        self._transport.write(chunk)
        if self._pos >= len(self._data):
            self._transport.unregisterProducer()
            self.done.callback(self._pos)

    def stopProducing(self) -> None:
        if not self.done.called:
            from twisted.internet.error import ConnectionLost

            self.done.errback(
                ConnectionLost(f"connection lost after {self._pos} bytes were written")
            )


@implementer(IHalfCloseableProtocol)
class BackendConnection(Protocol):
    """
    One connection accepted by a L{Backend}.

    @ivar received: a L{Tally} of what the peer sent.
    @ivar sent: a L{Tally} of what this connection wrote.
    @ivar isClosed: C{True} once the connection is closed.
    @ivar lostReason: the L{Failure} given to C{connectionLost}.
    @ivar eofReceived: C{True} once the peer half-closed (or closed).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.received = Tally(keep=backend.keep)
        self.sent = Tally(keep=backend.keep)
        self.isClosed = False
        self._closedWaiters: list[Deferred[BackendConnection]] = []
        self.lostReason: Failure | None = None
        self.eofReceived = False

    def connectionMade(self) -> None:
        self.backend._accepted(self)
        kind = self.backend.kind
        if kind == "echo":
            # Read no faster than the peer takes the echo.
            self.transport.registerProducer(self.transport, True)
        elif kind in ("source", "reset"):
            d = Writer(
                self.transport,
                payload(self.backend.size, self.backend.seed),
                self.sent,
            ).start()
            done = self._sourceDone if kind == "source" else self._reset
            d.addCallbacks(done, lambda f: None)

    def _reset(self, _: int) -> None:
        """
        Close with a reset (RST): no lingering, so the peer sees
        C{ECONNRESET} rather than an end of stream.
        """
        handle = self.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()

    def _sourceDone(self, _: int) -> None:
        if self.backend.halfClose and hasattr(self.transport, "loseWriteConnection"):
            self.transport.loseWriteConnection()
            if self.eofReceived:
                self.transport.loseConnection()
        else:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)
        if self.backend.kind == "echo":
            self.sent.update(data)
            self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.eofReceived = True
        if self.backend.kind == "silent":
            self.transport.loseConnection()
        elif self.backend.kind == "echo":
            self.transport.unregisterProducer()
            self.transport.loseConnection()
        elif self.backend.kind == "sink":
            self.transport.loseConnection()
        elif self.backend.kind == "source" and getattr(
            self.transport, "_writeDisconnected", False
        ):
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        # Both directions are finished: a half-closeable protocol closes.
        if self.eofReceived:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason
        self.eofReceived = True
        self.isClosed = True
        self.backend._lost(self)
        waiters, self._closedWaiters = self._closedWaiters, []
        for d in waiters:
            d.callback(self)

    def whenClosed(self) -> Deferred[BackendConnection]:
        """
        @return: a L{Deferred} firing with this connection once it is closed.
        """
        if self.isClosed:
            return succeed(self)
        d: Deferred[BackendConnection] = Deferred()
        self._closedWaiters.append(d)
        return d

    def __repr__(self) -> str:
        return (
            f"<BackendConnection {self.backend.kind} received={self.received.size}"
            f" sent={self.sent.size}>"
        )


class Listener:
    """
    A listening port on loopback, with what a test needs to reach it.

    @ivar reactor: the reactor it listens on.
    @ivar host: C{"127.0.0.1"} or C{"::1"}.
    @ivar port: the ephemeral port number.
    @ivar listeningPort: the L{twisted.internet.interfaces.IListeningPort}.
    """

    def __init__(self, reactor: Any, factory: Any, host: str = "127.0.0.1") -> None:
        """
        Start listening on an ephemeral port of C{host}.

        @param reactor: an L{twisted.internet.interfaces.IReactorTCP}.
        @param factory: the server factory (used as is: it is not wrapped,
            so its transports stay plain sockets that can be spliced).
        @param host: C{"127.0.0.1"} (default) or C{"::1"}.
        """
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"loopback only: {host!r}")
        self.reactor = reactor
        self.host = host
        self.factory = factory
        self.listeningPort = reactor.listenTCP(0, factory, interface=host)
        self.port: int = self.listeningPort.getHost().port
        self._stopped: Deferred[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """
        C{(host, port)}.
        """
        return (self.host, self.port)

    @property
    def endpointString(self) -> str:
        """
        A client endpoint string that connects here, e.g.
        C{"tcp:127.0.0.1:41234"} or C{"tcp6:[::1]:41234"}.
        """
        if self.host == "::1":
            return f"tcp6:[::1]:{self.port}"
        return f"tcp:{self.host}:{self.port}"

    @property
    def endpoint(self) -> Any:
        """
        A client endpoint (on the same reactor) that connects here.
        """
        if self.host == "::1":
            return TCP6ClientEndpoint(self.reactor, self.host, self.port, timeout=10)
        return TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=10)

    def stop(self) -> Deferred[None]:
        """
        Stop listening (connections already accepted stay up).

        @return: a L{Deferred} that fires once the port is closed.
        """
        if self._stopped is None:
            self._stopped = Deferred()
            d = self.listeningPort.stopListening()
            if d is None:
                d = succeed(None)
            d.addBoth(lambda _: self._stopped.callback(None))  # type: ignore[union-attr]
        stopped: Deferred[None] = Deferred()
        self._stopped.addBoth(lambda r: (stopped.callback(None), r)[1])
        return stopped

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}>"


class RefusingPort(Listener):
    """
    A loopback port where connections are refused (C{ECONNREFUSED}): a
    socket bound to it but not listening keeps the port taken until
    L{stop}, so no other server can pick it up meanwhile.
    """

    def __init__(self, reactor: Any, host: str = "127.0.0.1") -> None:
        """
        @param reactor: the reactor its L{endpoint} connects with.
        @param host: C{"127.0.0.1"} (default) or C{"::1"}.
        """
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"loopback only: {host!r}")
        self.reactor = reactor
        self.host = host
        self.factory = None
        family = socket.AF_INET6 if host == "::1" else socket.AF_INET
        self._socket: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        self._socket.bind((host, 0))
        self.listeningPort = None
        self.port = self._socket.getsockname()[1]
        self._stopped = None

    def stop(self) -> Deferred[None]:
        """
        Release the port.

        @return: a L{Deferred} that has fired.
        """
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
        return succeed(None)


class _BackendFactory(Factory):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def buildProtocol(self, addr: Any) -> BackendConnection:
        p = BackendConnection(self.backend)
        p.factory = self
        return p


class Backend(Listener):
    """
    A loopback server of one kind:

      - C{"echo"}: writes back what it reads (reading no faster than the
        peer takes it); on end of stream it closes once the echo is out.
      - C{"sink"}: reads and hashes everything; closes on end of stream.
      - C{"source"}: writes L{payload}C{(size, seed)} and then closes (or,
        with C{halfClose=True}, half-closes and waits for the peer's end of
        stream); what it reads is hashed too.
      - C{"silent"}: accepts and never answers: reads and hashes what it is
        sent, writes nothing, and closes only on the peer's end of stream
        (an upstream that hangs).
      - C{"reset"}: writes L{payload}C{(size, seed)}, then resets the
        connection (RST) instead of closing it (an upstream that dies
        mid-transfer; bytes still in its socket buffer are lost, so the
        peer receives at most C{size} bytes).

    @ivar kind: C{"echo"}, C{"sink"}, C{"source"}, C{"silent"} or
        C{"reset"}.
    @ivar connections: the L{BackendConnection}s in the order they were
        accepted.
    @ivar expected: for a source, the bytes it sends to each connection.
    """

    KINDS = ("echo", "sink", "source", "silent", "reset")

    def __init__(
        self,
        reactor: Any,
        kind: str,
        *,
        size: int = 0,
        seed: int = 0,
        halfClose: bool = False,
        keep: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        """
        @param reactor: an L{twisted.internet.interfaces.IReactorTCP}.
        @param kind: one of L{KINDS}.
        @param size: for a source or reset: how many bytes to send.
        @param seed: for a source or reset: which L{payload} to send.
        @param halfClose: for a source: half-close instead of closing.
        @param keep: keep the bytes in each connection's L{Tally}.
        @param host: C{"127.0.0.1"} or C{"::1"}.
        @raise ValueError: for an unknown kind.
        """
        if kind not in self.KINDS:
            raise ValueError(f"unknown backend kind {kind!r}; use one of {self.KINDS}")
        self.kind = kind
        self.size = size
        self.seed = seed
        self.halfClose = halfClose
        self.keep = keep
        self.connections: list[BackendConnection] = []
        self._waiting: dict[int, list[Deferred[BackendConnection]]] = {}
        self._open: set[BackendConnection] = set()
        super().__init__(reactor, _BackendFactory(self), host)

    @property
    def expected(self) -> bytes:
        """
        For a source: the bytes each connection is sent.
        """
        return payload(self.size, self.seed)

    def connection(self, index: int = 0) -> Deferred[BackendConnection]:
        """
        The C{index}th accepted connection (0 is the first).

        @return: a L{Deferred} firing with the L{BackendConnection} once it
            has been accepted.
        """
        d: Deferred[BackendConnection] = Deferred()
        if index < len(self.connections):
            d.callback(self.connections[index])
        else:
            self._waiting.setdefault(index, []).append(d)
        return d

    def received(self, index: int = 0) -> Deferred[Tally]:
        """
        What the C{index}th connection received, once it is closed.

        @return: a L{Deferred} firing with that connection's L{Tally}.
        """
        d = self.connection(index)
        d.addCallback(lambda c: c.whenClosed())
        d.addCallback(lambda c: c.received)
        return d

    def openConnections(self) -> list[BackendConnection]:
        """
        The connections that are not closed yet.
        """
        return [c for c in self.connections if c in self._open]

    def _accepted(self, conn: BackendConnection) -> None:
        self.connections.append(conn)
        self._open.add(conn)
        for d in self._waiting.pop(len(self.connections) - 1, []):
            d.callback(conn)

    def _lost(self, conn: BackendConnection) -> None:
        self._open.discard(conn)

    def __repr__(self) -> str:
        return f"<Backend {self.kind} {self.host}:{self.port}>"
