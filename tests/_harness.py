"""
In-process peers for relay tests: a client and a server, each a real Twisted
TCP (or UNIX) connection on loopback, joined through a relay under test.

    client peer --tcp--> [A] relay [B] --tcp--> server peer

Only what the public L{splicetx.testing} helpers do not offer lives here: a
L{Relay} built directly on two accepted transports (L{makePair}, including
UNIX sockets and writes made before the relay starts) and a L{Peer} that
sends in randomly sized chunks and paces its reading.  Payloads come from
L{splicetx.testing.payload}.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx import Relay


@implementer(IPushProducer)
class _Sender:
    """
    Writes C{data} to a transport in random-sized chunks, respecting the
    transport's backpressure, then half-closes (or not).
    """

    def __init__(
        self, peer: Peer, data: bytes, seed: int, maxChunk: int, halfClose: bool
    ):
        self.peer = peer
        self.data = data
        self.pos = 0
        self.rnd = random.Random(seed)
        self.maxChunk = maxChunk
        self.halfClose = halfClose
        self.paused = False
        self.done: Deferred[None] = Deferred()

    def start(self) -> None:
        self.peer.transport.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        t = self.peer.transport
        while not self.paused and self.pos < len(self.data):
            n = self.rnd.randint(1, self.maxChunk)
            t.write(self.data[self.pos : self.pos + n])
            self.pos += n
        if self.pos >= len(self.data) and not self.done.called:
            t.unregisterProducer()
            if self.halfClose:
                t.loseWriteConnection()
                self.peer.sentEOF = True
                if self.peer.eof.called:
                    t.loseConnection()
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.peer.reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.paused = True


@implementer(IHalfCloseableProtocol)
class Peer(protocol.Protocol):
    """
    One end of a test conversation: hashes what it receives, can send
    random-chunked data and pace its reading.
    """

    def __init__(self, reactor: Any, name: str = "peer") -> None:
        self.reactor = reactor
        self.name = name
        self.hash = hashlib.sha256()
        self.received = 0
        self.chunks: list[bytes] = []
        self.keep = False
        self.made: Deferred[Peer] = Deferred()
        self.eof: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.lostReason: Failure | None = None
        self.onData: Any | None = None
        self.sentEOF = False

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.received += len(data)
        if self.keep:
            self.chunks.append(data)
        if self.onData is not None:
            self.onData(data)

    def readConnectionLost(self) -> None:
        if not self.eof.called:
            self.eof.callback(None)
        if self.sentEOF and self.transport is not None:
            # Both ways finished: an IHalfCloseableProtocol closes itself.
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lostReason = reason
        if not self.eof.called:
            self.eof.callback(None)
        self.lost.callback(None)

    def digest(self) -> str:
        return self.hash.hexdigest()

    def send(
        self, data: bytes, seed: int = 1, maxChunk: int = 65536, halfClose: bool = True
    ) -> Deferred[None]:
        s = _Sender(self, data, seed, maxChunk, halfClose)
        s.start()
        return s.done

    def paceReading(self, seed: int = 2, pauseChance: float = 0.2) -> None:
        """
        Randomly pause reading for a few milliseconds now and then.
        """
        rnd = random.Random(seed)
        orig = self.dataReceived

        def paced(data: bytes) -> None:
            orig(data)
            if rnd.random() < pauseChance and self.transport is not None:
                self.transport.pauseProducing()
                self.reactor.callLater(rnd.uniform(0, 0.003), self._resume)

        self.dataReceived = paced  # type: ignore[method-assign]

    def _resume(self) -> None:
        t = self.transport
        if t is not None and getattr(t, "connected", False) and not self.eof.called:
            t.resumeProducing()


class _Holder(protocol.Protocol):
    """
    The protocol attached to the relayed transports before the relay.
    """

    def __init__(self) -> None:
        self.made: Deferred[_Holder] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.early = b""
        self.lostReason: Failure | None = None

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.early += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lostReason = reason
        self.lost.callback(None)


class Pair:
    """
    A running relay with its two peers.

    @ivar client: the L{Peer} connected to transport A.
    @ivar server: the L{Peer} connected to transport B.
    @ivar relay: the L{Relay}.
    @ivar result: the relay's L{Deferred}.
    @ivar holders: the original protocols of A and B.
    """

    client: Peer
    server: Peer
    relay: Relay
    result: Deferred[Any]
    holders: tuple[_Holder, _Holder]

    def allClosed(self) -> Deferred[Any]:
        """
        Fires when the relay result is in and both peers saw connectionLost.
        """
        return gatherResults(
            [self.result, self.client.lost, self.server.lost], consumeErrors=True
        )


def _factory(proto: Any) -> protocol.Factory:
    """
    A factory that gives C{proto} to the first connection it accepts and
    refuses (closes) any other: a stray connect from another process on the
    machine to this ephemeral port (one probing for a port nobody listens
    on, say) must not become a second connection of the same protocol.
    """
    f = protocol.Factory()
    given = [proto]
    f.buildProtocol = lambda addr: given.pop() if given else None  # type: ignore[method-assign]
    return f


def makePair(
    reactor: Any,
    kind: str = "tcp",
    start: bool = True,
    beforeRelay: Any | None = None,
    **relayKwargs: Any,
) -> Deferred[Pair]:
    """
    Connect a client peer and a server peer through a relay.

    @param kind: C{"tcp"}, C{"tcp6"} or C{"unix"}.
    @param beforeRelay: called with the L{Pair} (holders set) before the
        relay starts: write to the transports there to test the hand-over.
    @param relayKwargs: passed to L{Relay}.
    """
    pair = Pair()
    pair.client = Peer(reactor, "client")
    pair.server = Peer(reactor, "server")
    holderA, holderB = _Holder(), _Holder()
    pair.holders = (holderA, holderB)
    tmp = tempfile.mkdtemp(prefix="splicetx-test-")
    if kind == "unix":
        pa, pb = os.path.join(tmp, "a.sock"), os.path.join(tmp, "b.sock")
        portA = reactor.listenUNIX(pa, _factory(holderA))
        portB = reactor.listenUNIX(pb, _factory(pair.server))
        reactor.connectUNIX(pa, _clientFactory(pair.client))
        reactor.connectUNIX(pb, _clientFactory(holderB))
    else:
        iface = "::1" if kind == "tcp6" else "127.0.0.1"
        portA = reactor.listenTCP(0, _factory(holderA), interface=iface)
        portB = reactor.listenTCP(0, _factory(pair.server), interface=iface)
        reactor.connectTCP(iface, portA.getHost().port, _clientFactory(pair.client))
        reactor.connectTCP(iface, portB.getHost().port, _clientFactory(holderB))

    def connected(_: Any) -> Deferred[Any]:
        d1 = portA.stopListening()
        d2 = portB.stopListening()
        return DeferredList([d1, d2])

    def go(_: Any) -> Pair:
        if beforeRelay is not None:
            beforeRelay(pair)
        pair.relay = Relay(
            holderA.transport, holderB.transport, reactor=reactor, **relayKwargs
        )
        if start:
            pair.result = pair.relay.start()
        return pair

    d = gatherResults([holderA.made, holderB.made, pair.client.made, pair.server.made])
    d.addCallback(connected)
    d.addCallback(go)
    return d


class _clientFactory(protocol.ClientFactory):
    """
    Connects the one protocol it is given; a failed connection errbacks its
    C{made}.
    """

    noisy = False

    def __init__(self, proto: Any) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> Any:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        d = getattr(self.proto, "made", None)
        if d is not None and not d.called:
            d.errback(reason)
