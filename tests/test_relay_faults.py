# -*- test-case-name: tests.test_relay_faults -*-
"""
Misuse, fallbacks that need special transports or limits, descriptor and
memory hygiene, and fairness of L{splicetx.relay}.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import weakref
from types import SimpleNamespace
from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    inlineCallbacks,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IPullProducer,
    IPushProducer,
    IReadWriteDescriptor,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from splicetx import (
    DONE,
    PipePool,
    Relay,
    RelayUsageError,
    relay,
)
from splicetx._relay import copy as _copy
from splicetx._relay import direction as _direction
from splicetx._relay import relay as _relay
from splicetx._relay import splice as _splice
from splicetx._relay import turns as _turns
from splicetx._relay.contract import IEngineHost, IRelayEngine, IRelaySide
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from ._cores import makeCoreTests
from ._directionfakes import RecordedEndpoint
from ._harness import Peer, _clientFactory, _factory, _Holder, makePair

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def _fakePair() -> tuple[Any, Any, Any, Any, Any]:
    """
    Two in-memory connections: client <-> A and B <-> server (iosim).
    """
    client, holderA = Peer(None, "client"), _Holder()
    holderB, server = _Holder(), Peer(None, "server")
    pumpA = iosim.connect(
        holderA, iosim.makeFakeServer(holderA), client, iosim.makeFakeClient(client)
    )
    pumpB = iosim.connect(
        server, iosim.makeFakeServer(server), holderB, iosim.makeFakeClient(holderB)
    )
    return client, holderA, holderB, server, (pumpA, pumpB)


class UsageTests(SynchronousTestCase):
    """
    Misuse is an errback with L{RelayUsageError} that says what was wrong.
    """

    def _usage(self, *args: Any, **kw: Any) -> str:
        d = relay(*args, reactor=MemoryReactorClock(), **kw)
        f = self.failureResultOf(d, RelayUsageError)
        return str(f.value)

    def test_sameTransportTwice(self) -> None:
        """Relaying a transport to itself is refused."""
        client, a, b, server, pumps = _fakePair()
        self.assertIn("to itself", self._usage(a.transport, a.transport))

    def test_notConnected(self) -> None:
        """A disconnecting transport is refused."""
        client, a, b, server, pumps = _fakePair()
        a.transport.loseConnection()
        self.assertIn("transport A", self._usage(a.transport, b.transport))
        self.assertIn("not connected", self._usage(a.transport, b.transport))

    def test_alreadyRelayed(self) -> None:
        """A transport already being relayed is refused."""
        client, a, b, server, pumps = _fakePair()
        first = relay(a.transport, b.transport, reactor=MemoryReactorClock())
        self.assertNoResult(first)
        client2, a2, b2, server2, pumps2 = _fakePair()
        msg = self._usage(a2.transport, b.transport)
        self.assertIn("transport B", msg)
        self.assertIn("already being relayed", msg)

    def test_unknownEngine(self) -> None:
        """An unknown engine name is refused and the valid ones are listed."""
        client, a, b, server, pumps = _fakePair()
        msg = self._usage(a.transport, b.transport, engine="zerocopy")
        self.assertIn("'zerocopy'", msg)
        self.assertIn("splice", msg)

    def test_forcedSpliceOnFake(self) -> None:
        """engine='splice' on a fake transport is refused with the reason."""
        client, a, b, server, pumps = _fakePair()
        msg = self._usage(a.transport, b.transport, engine="splice")
        self.assertIn("not a socket transport", msg)

    def test_noProtocol(self) -> None:
        """A transport with no protocol to take events from is refused."""

        class Bare:
            connected = True

        client, a, b, server, pumps = _fakePair()
        self.assertIn("no protocol", self._usage(Bare(), b.transport))


class FakeTransportTests(SynchronousTestCase):
    """
    Fake transports (no kernel) take the copy engine with the same contract.
    """

    def test_fakeRelay(self) -> None:
        """Bytes, half-close and the result through iosim fake transports."""
        client, a, b, server, (pumpA, pumpB) = _fakePair()
        d = relay(a.transport, b.transport, reactor=MemoryReactorClock(), toB=b"hs:")
        client.transport.write(b"hello")
        server.transport.write(b"world")
        for _ in range(3):
            pumpA.flush()
            pumpB.flush()
        self.assertEqual(server.received, len(b"hs:hello"))
        self.assertEqual(client.received, len(b"world"))
        client.transport.loseConnection()
        server.transport.loseConnection()
        for _ in range(3):
            pumpA.flush()
            pumpB.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.engine, "copy")
        self.assertIn("not a socket transport", result.fallbackReason)
        self.assertEqual((result.bytesAToB, result.bytesBToA), (8, 5))
        self.assertIsNotNone(a.lostReason)
        self.assertIsNotNone(b.lostReason)


class InterfaceTests(SynchronousTestCase):
    """
    The engine objects provide the interfaces they are registered as.
    """

    def test_interfaces(self) -> None:
        """Sides, producers and the splice descriptor verify."""
        client, a, b, server, pumps = _fakePair()
        r = Relay(a.transport, b.transport, reactor=MemoryReactorClock())
        side = _relay._Side(r, "A", a.transport)
        verifyObject(IProtocol, side)
        verifyObject(IHalfCloseableProtocol, side)
        verifyObject(IPushProducer, _copy._Pauser(side))
        verifyObject(IPullProducer, _splice._Drained(None, side))  # type: ignore[arg-type]
        self.assertTrue(IReadWriteDescriptor.implementedBy(_splice._SpliceSocket))
        for name in ("fileno", "doRead", "doWrite", "connectionLost", "logPrefix"):
            self.assertTrue(callable(getattr(_splice._SpliceSocket, name)))

    def _sides(self) -> tuple[Relay, Any, Any]:
        """
        A relay that was not started, and its two sides.
        """
        client, a, b, server, pumps = _fakePair()
        r = Relay(a.transport, b.transport, reactor=MemoryReactorClock())
        sideA = _relay._Side(r, "A", a.transport)
        sideB = _relay._Side(r, "B", b.transport)
        sideA.peer, sideB.peer = sideB, sideA
        return r, sideA, sideB

    def _spliceEngine(self) -> _splice.SpliceEngine:
        """
        A splice engine for a relay that was not started.
        """
        r, sideA, sideB = self._sides()
        return _splice.SpliceEngine(
            _relay._EngineHost(r),
            MemoryReactorClock(),
            PipePool(),
            sideA,
            sideB,
            b"",
            b"",
        )

    def test_relaySide(self) -> None:
        """A relay's side verifies as an L{IRelaySide}."""
        r, sideA, sideB = self._sides()
        self.assertTrue(verifyObject(IRelaySide, sideA))

    def test_engineHost(self) -> None:
        """What a relay gives its engines verifies as an L{IEngineHost}."""
        r, sideA, sideB = self._sides()
        self.assertTrue(verifyObject(IEngineHost, _relay._EngineHost(r)))

    def test_copyEngine(self) -> None:
        """The copy engine verifies as an L{IRelayEngine}."""
        r, sideA, sideB = self._sides()
        engine = _copy.CopyEngine(_relay._EngineHost(r), sideA, sideB, b"", b"")
        self.assertTrue(verifyObject(IRelayEngine, engine))

    def test_spliceEngine(self) -> None:
        """The splice engine verifies as an L{IRelayEngine}."""
        engine = self._spliceEngine()
        self.assertTrue(verifyObject(IRelayEngine, engine))

    def test_spliceSocket(self) -> None:
        """A splice engine's socket verifies as an L{IReadWriteDescriptor}."""
        engine = self._spliceEngine()
        here, there = socket.socketpair()
        self.addCleanup(here.close)
        self.addCleanup(there.close)
        side = SimpleNamespace(name="A", transport=SimpleNamespace(socket=here))
        spliceSocket = _splice._SpliceSocket(engine, side)  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IReadWriteDescriptor, spliceSocket))


_PEM = os.path.join(
    os.path.dirname(__import__("twisted.test").test.__file__), "server.pem"
)


class TLSMixin(ReactorTestMixin):
    """
    A TLS transport on one side: the copy engine relays it, nothing lost.
    """

    @inlineCallbacks
    def _tls(self, reactor: Any) -> Any:
        with open(_PEM, "rb") as f:
            cert = ssl.PrivateCertificate.loadPEM(f.read())
        client, holderA = Peer(reactor, "client"), _Holder()
        holderB, server = _Holder(), Peer(reactor, "server")
        # TLS wrappers get this reactor as their clock (listenSSL would use
        # the global reactor, which is not running in these tests).
        serverTLS = TLSMemoryBIOFactory(
            cert.options(), False, _factory(holderA), clock=reactor
        )
        clientTLS = TLSMemoryBIOFactory(
            ssl.CertificateOptions(), True, _clientFactory(client), clock=reactor
        )
        portA = reactor.listenTCP(0, serverTLS, interface="127.0.0.1")
        portB = reactor.listenTCP(0, _factory(server), interface="127.0.0.1")
        reactor.connectTCP("127.0.0.1", portA.getHost().port, clientTLS)
        reactor.connectTCP("127.0.0.1", portB.getHost().port, _clientFactory(holderB))
        yield gatherResults([holderA.made, holderB.made, client.made, server.made])
        yield DeferredList([portA.stopListening(), portB.stopListening()])
        d = relay(holderA.transport, holderB.transport, reactor=reactor)
        up, down = payload(1 << 20, 1), payload(1 << 20, 2)
        server.send(down, halfClose=False)
        client.send(up, halfClose=False)
        # TLS cannot half-close: the client closes once it has the reply.
        received: Deferred[None] = Deferred()
        client.onData = lambda data: (
            client.received >= len(down)
            and not received.called
            and received.callback(None)
        )
        yield received
        yield deferLater(reactor, 0.1, lambda: None)
        client.transport.loseConnection()
        result = yield d
        yield server.eof
        server.transport.loseConnection()
        yield gatherResults([client.lost, server.lost])
        self.assertEqual(server.digest(), digest(up))
        self.assertEqual(client.digest(), digest(down))
        self.assertEqual(result.engine, "copy")
        self.assertIn("TLS", result.fallbackReason)

    def test_tls(self) -> None:
        """TLS on side A falls back to copying with integrity both ways."""
        self.runScenario(self._tls)


class FileDescriptorHygieneMixin(ReactorTestMixin):
    """
    Relays that end in every way leave no descriptor and no registration.
    """

    count = 1000

    @inlineCallbacks
    def _many(self, reactor: Any) -> Any:
        pool = PipePool(maxIdle=4)
        # Twisted keeps one descriptor in reserve (for EMFILE on accept),
        # opened at the first listenTCP of the process and kept for good:
        # when this test is the process's first, a port opened and closed
        # takes it before the count (it is Twisted's, not a relay's).
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        yield port.stopListening()
        fds0 = len(os.listdir("/proc/self/fd"))
        endings = [
            "done",
            "clientReset",
            "serverReset",
            "cancel",
            "appClose",
            "copy",
            "limit",
        ]
        outcomes: dict[str, int] = {}
        batch = 25
        for start in range(0, self.count, batch):
            ds = []
            for i in range(start, min(start + batch, self.count)):
                ds.append(self._one(reactor, endings[i % len(endings)], pool, outcomes))
            yield gatherResults(ds)
        pool.close()
        yield deferLater(reactor, 0.05, lambda: None)
        fds1 = len(os.listdir("/proc/self/fd"))
        self.assertEqual(fds1, fds0, f"fd count {fds0} -> {fds1}")
        self.assertEqual(pool.reserved, 0)
        self.assertEqual(pool.inUse, 0)
        self.assertEqual(sum(outcomes.values()), self.count)
        return outcomes

    @inlineCallbacks
    def _one(
        self, reactor: Any, ending: str, pool: PipePool, outcomes: dict[str, int]
    ) -> Any:
        kw: dict[str, Any] = {"pipePool": pool}
        if ending == "copy":
            kw["engine"] = "copy"
        if ending == "limit":
            kw["pipePool"] = PipePool(maxPipes=0)
        pair = yield makePair(reactor, **kw)
        pair.client.send(
            payload(3000, 1), halfClose=ending in ("done", "copy", "limit")
        )
        pair.server.send(
            payload(5000, 2), halfClose=ending in ("done", "copy", "limit")
        )
        if ending == "clientReset":
            pair.client.transport.abortConnection()
        elif ending == "serverReset":
            pair.server.transport.abortConnection()
        elif ending == "cancel":
            pair.result.cancel()
        elif ending == "appClose":
            yield deferLater(reactor, 0, lambda: None)
            pair.relay.close()
        result = yield pair.result
        for peer in (pair.client, pair.server):
            if not peer.lost.called:
                yield peer.eof
                if peer.transport is not None and not peer.lost.called:
                    peer.transport.loseConnection()
        yield gatherResults([pair.client.lost, pair.server.lost])
        outcomes[result.reason] = outcomes.get(result.reason, 0) + 1

    def test_noLeaks(self) -> None:
        """1,000 relays ending every way: fd count back to baseline, reactor clean."""
        outcomes = self.runScenario(self._many, timeout=240)
        self.assertIn(DONE, outcomes)
        self.assertGreater(len(outcomes), 2)


class CycleMixin(ReactorTestMixin):
    """
    A finished relay is freed by reference counting alone
    (docs/design-decisions.md rule 13).
    """

    @inlineCallbacks
    def _cycle(self, reactor: Any) -> Any:
        pair = yield makePair(reactor, engine="splice")
        pair.client.send(payload(100_000, 1))
        pair.server.send(payload(100_000, 2))
        yield pair.result
        yield gatherResults([pair.client.lost, pair.server.lost])
        engine = pair.relay._engine
        refs = [weakref.ref(pair.relay), weakref.ref(engine)]
        refs += [weakref.ref(s) for s in pair.relay._sides]
        return refs

    def test_noCycles(self) -> None:
        """Relay, engine and sides die without the cycle collector."""
        gc.collect()
        gc.disable()
        try:
            refs = self.runScenario(self._cycle)
            alive = [r() for r in refs if r() is not None]
            self.assertEqual(alive, [])
        finally:
            gc.enable()


@inlineCallbacks
def _closeBulkAndPing(bulk: Any, rr: Any) -> Any:
    """
    End a bulk upload pair (once its server has the whole upload) and a
    ping-pong pair; wait for both relays' results and the ping peers.
    """
    yield bulk.server.eof
    bulk.server.transport.loseConnection()
    rr.client.transport.loseConnection()
    yield rr.server.eof
    rr.server.transport.loseConnection()
    yield gatherResults([bulk.result, rr.result, rr.client.lost, rr.server.lost])


class FairnessMixin(ReactorTestMixin):
    """
    A bulk relay does not stall a small request/response relay.
    """

    @inlineCallbacks
    def _fair(self, reactor: Any) -> Any:
        bulk = yield makePair(reactor, engine="splice")
        rr = yield makePair(reactor, engine="splice")
        rr.server.onData = lambda data: rr.server.transport.write(data)

        @inlineCallbacks
        def pingpong(n: int) -> Any:
            rtts = []
            for _ in range(n):
                got: Deferred[None] = Deferred()
                want = rr.client.received + 1024

                def onData(data: bytes, got: Any = got, want: int = want) -> None:
                    if rr.client.received >= want and not got.called:
                        got.callback(None)

                rr.client.onData = onData
                t0 = reactor.seconds()
                rr.client.transport.write(b"x" * 1024)
                yield got
                rtts.append(reactor.seconds() - t0)
            return sorted(rtts)

        idle = yield pingpong(100)
        data = payload(256 << 20, 1)
        bulk.client.send(data, halfClose=True, maxChunk=1 << 20)
        bulk.server.onData = None
        yield deferLater(reactor, 0.1, lambda: None)
        before = bulk.relay.bytesAToB
        busy = yield pingpong(200)
        during = bulk.relay.bytesAToB - before
        yield _closeBulkAndPing(bulk, rr)
        return idle, busy, during, bulk.relay.bytesAToB

    def test_fairness(self) -> None:
        """Ping-pong round trips stay within a few ms while 256 MiB is spliced."""
        idle, busy, during, total = self.runScenario(self._fair, timeout=120)
        print(
            f"\n{self.reactorName}: RTT p50 idle {idle[len(idle) // 2] * 1e6:.0f} us, "
            f"under bulk p50 {busy[len(busy) // 2] * 1e6:.0f} us "
            f"p99 {busy[int(len(busy) * 0.99)] * 1e6:.0f} us, "
            f"{during / 2**20:.0f} MiB spliced meanwhile"
        )
        # The bulk transfer was really running during the ping-pong.
        self.assertGreater(during, 8 << 20)
        p50 = busy[len(busy) // 2]
        self.assertLess(p50, 0.010, f"median RTT under bulk {p50 * 1e3:.2f} ms")
        self.assertEqual(total, 256 << 20)


class TurnBudgetMixin(ReactorTestMixin):
    """
    Bulk directions held back by a spent turn budget (rule 10) resume and
    deliver every byte, in order.
    """

    @inlineCallbacks
    def _bulkUnderTinyBudget(self, reactor: Any) -> Any:
        pairs = []
        for _ in range(3):
            pair = yield makePair(reactor, engine="splice")
            pairs.append(pair)
        sent = []
        for i, pair in enumerate(pairs):
            data = payload(8 << 20, 10 + i)
            sent.append(digest(data))
            pair.client.send(data, halfClose=True, maxChunk=1 << 20)
        for pair in pairs:
            yield pair.server.eof
            pair.server.transport.loseConnection()
        yield gatherResults([p.result for p in pairs])
        yield gatherResults([p.client.lost for p in pairs])
        return sent, [p.server.digest() for p in pairs]

    def _countWaits(self) -> list[Any]:
        waits: list[Any] = []
        realWait = _turns._Turns.wait

        def wait(turns: Any, d: Any, reading: bool) -> None:
            waits.append(d)
            realWait(turns, d, reading)

        self.patch(_turns._Turns, "wait", wait)
        self.patch(_turns, "TURN_BUDGET", 64 << 10)
        return waits

    def test_heldBackDirectionsDeliverEverything(self) -> None:
        """Three bulk relays under a 64 KiB turn budget wait turns, lose nothing."""
        waits = self._countWaits()
        self.patch(_direction, "BULK_READ", 16 << 10)
        # As if a small read had just happened, all the time: bulk is held.
        self.patch(_direction, "monotonicNow", lambda: -1.0)
        sent, got = self.runScenario(self._bulkUnderTinyBudget, timeout=120)
        self.assertEqual(got, sent)
        self.assertTrue(waits, "no direction ever waited for a turn")

    def test_bulkAloneIsNotHeldBack(self) -> None:
        """With no small read in the window, a spent budget holds nothing back."""
        waits = self._countWaits()
        self.patch(_direction, "BULK_READ", 1)  # every read is a bulk read
        sent, got = self.runScenario(self._bulkUnderTinyBudget, timeout=120)
        self.assertEqual(got, sent)
        self.assertEqual(waits, [])


@implementer(IPushProducer)
class _Endless:
    """
    Writes one block to a transport again and again, with its
    backpressure, until L{stop}: then half-closes.  A bulk flow that lasts
    exactly as long as the test needs it, however fast the machine.
    """

    def __init__(self, peer: Peer, block: bytes) -> None:
        self.peer = peer
        self.block = block
        self.blocks = 0
        self.paused = False
        self.stopped = False

    def start(self) -> None:
        self.peer.transport.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        t = self.peer.transport
        while not self.paused and not self.stopped:
            t.write(self.block)
            self.blocks += 1

    def stop(self) -> int:
        """Half-close after what was written; return the bytes sent."""
        self.stopped = True
        t = self.peer.transport
        t.unregisterProducer()
        t.loseWriteConnection()
        self.peer.sentEOF = True
        return self.blocks * len(self.block)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if not self.stopped:
            self.peer.reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.stopped = True


class ServeSmallMixin(ReactorTestMixin):
    """
    While a bulk relay pumps in pieces, a ping-pong relay on the same reactor
    is served between two of them (rule 10), and neither loses a byte.

    Whether a ping's bytes happen to be waiting while a piece is written
    depends on the order in which the reactor hands out one turn's events
    (the select reactor can read every ping before any bulk write, every
    time); so once the small flow is busy, a ping is sent from inside the
    bulk pump, straight into the kernel, just before the proxy looks for
    waiting small flows.  What is tested is the proxy's side: bytes that
    are waiting then are read then.
    """

    #: Pings sent the usual way first, so that the ping flow is a busy small
    #: flow (two small reads in a row) and bulk writes in pieces.
    WARM_PINGS = 20
    #: Pings in all; the test stops early once one was served inline.
    MAX_PINGS = 500
    #: Seconds a ping waits for a piece to be sent from before it is written
    #: the usual way (bulk may be between two reads just then).
    ARMED_FOR = 0.02

    @inlineCallbacks
    def _pingUnderBulk(self, reactor: Any, ping: SimpleNamespace) -> Any:
        bulk = yield makePair(reactor, engine="splice")
        rr = yield makePair(reactor, engine="splice")
        rr.server.onData = lambda data: rr.server.transport.write(data)
        ping.socket = rr.client.transport.socket
        block = payload(1 << 20, 3)
        sender = _Endless(bulk.client, block)
        sender.start()
        echoed = []
        pings = []
        i = 0
        while i < self.WARM_PINGS or (not ping.inline and i < self.MAX_PINGS):
            got: Deferred[None] = Deferred()
            want = rr.client.received + 1024

            def onData(data: bytes, got: Any = got, want: int = want) -> None:
                echoed.append(data)
                if rr.client.received >= want and not got.called:
                    got.callback(None)

            rr.client.onData = onData
            data = bytes([i % 256]) * 1024
            pings.append(data)
            if i < self.WARM_PINGS:
                rr.client.transport.write(data)
            else:
                # The last echo is in: nothing is buffered in the client's
                # transport, so a raw send keeps the bytes in order.
                ping.armed = data

                def writeAsUsual(data: bytes = data) -> None:
                    if ping.armed is data:
                        ping.armed = None
                        rr.client.transport.write(data)

                reactor.callLater(self.ARMED_FOR, writeAsUsual)
            yield got
            i += 1
        sent = sender.stop()
        yield _closeBulkAndPing(bulk, rr)
        want = hashlib.sha256()
        for _ in range(sent // len(block)):
            want.update(block)
        return (
            want.hexdigest(),
            bulk.server.digest(),
            b"".join(echoed),
            b"".join(pings),
        )

    def test_smallServedBetweenPieces(self) -> None:
        """
        A small flow's bytes that wait while a bulk direction writes a piece
        are read before the next piece; every byte of both flows arrives.
        """
        self.patch(_direction, "PIECE", 32 << 10)
        # A ping that waits for a piece (up to ARMED_FOR) leaves the flow
        # quiet for longer than BUSY allows: it stays busy here.
        self.patch(_turns, "BUSY", 1.0)
        ping = SimpleNamespace(armed=None, socket=None, sent=0, inline=[])
        serving = []
        realServe = _turns._Turns.serveSmall
        realReadable = _direction.Direction.readable

        def serveSmall(turns: Any, d: Any) -> None:
            if ping.armed is not None:
                data, ping.armed = ping.armed, None
                self.assertEqual(ping.socket.send(data), len(data))
                ping.sent += 1
            serving.append(d)
            try:
                realServe(turns, d)
            finally:
                serving.pop()

        def readable(d: Any, *got: Any) -> None:
            # got: what the compiled loop's turn left to Python, if any.
            if serving:
                ping.inline.append(d)
            realReadable(d, *got)

        self.patch(_turns._Turns, "serveSmall", serveSmall)
        self.patch(_direction.Direction, "readable", readable)
        sent, got, echoed, pings = self.runScenario(
            lambda reactor: self._pingUnderBulk(reactor, ping), timeout=120
        )
        self.assertEqual(got, sent)
        self.assertEqual(echoed, pings)
        self.assertTrue(
            ping.inline,
            f"{ping.sent} pings waited while a piece was written; none was read"
            " before the next piece",
        )


class _Calls:
    """
    A reactor that only queues C{callLater} calls, run one turn at a time
    by L{turn} (calls queued during a turn wait for the next one).
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))

    def callLater(self, delay: float, f: Any) -> object:
        self.calls.append(f)
        return f

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f in calls:
            f()


class _Clocked:
    """
    A stand-in for a L{_direction.Direction} as L{_turns._Turns} sees it.
    """

    def __init__(self, turns: Any, name: str, log: list[str], size: int) -> None:
        self.turns = turns
        self.name = name
        self.log = log
        self.size = size
        self.done = False
        self.src = self
        self.engine = object()
        self.reading = True

    #: The real direction's rule for the end of a wait.
    resume = _direction.Direction.resume

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def readable(self) -> None:
        self.log.append(self.name)
        self.turns.left -= self.size
        if self.turns.left <= 0:
            self.turns.spent()


class TurnsTests(SynchronousTestCase):
    """
    L{_turns._Turns}: the per-turn byte budget and its queue.
    """

    def test_queueGoesFirstInOrderUntilSpent(self) -> None:
        """Waiting directions resume oldest first next turn, while budget lasts."""
        clock = _Calls()
        self.patch(_turns, "TURN_BUDGET", 100)
        turns = _turns._Turns(clock)
        log: list[str] = []
        ds = [_Clocked(turns, n, log, 60) for n in "abc"]
        turns.left = 0
        for d in ds:
            turns.wait(d, True)  # type: ignore[arg-type]
        self.assertEqual([d.reading for d in ds], [False, False, False])
        self.assertEqual(len(clock.calls), 1)
        clock.turn()
        # 100 bytes: a (60) then b (60, crossing it); c waits for the next turn.
        self.assertEqual(log, ["a", "b"])
        self.assertEqual(list(turns.queue), [ds[2]])
        clock.turn()
        self.assertEqual(log, ["a", "b", "c"])
        self.assertEqual(turns.left, 40)
        self.assertEqual(clock.calls, [])

    def test_endedRelaysAreDropped(self) -> None:
        """A direction whose relay ended while it waited is not resumed."""
        clock = _Calls()
        turns = _turns._Turns(clock)
        log: list[str] = []
        d = _Clocked(turns, "a", log, 10)
        turns.wait(d, True)  # type: ignore[arg-type]
        d.engine = None
        clock.turn()
        self.assertEqual(log, [])
        self.assertFalse(d.reading)
        self.assertEqual(list(turns.queue), [])

    def test_budgetDoesNotKeepReactorAlive(self) -> None:
        """A reactor with a refill pending is freed with its budget (rule 13)."""
        reactor = MemoryReactorClock()
        ref = weakref.ref(reactor)
        _turns.turnsFor(reactor).spent()
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        del reactor
        gc.collect()
        self.assertIsNone(ref())

    def test_shutdownPutsWaitingBack(self) -> None:
        """Before shutdown, waiting directions read again: they hear connectionLost."""
        clock = _Calls()
        turns = _turns._Turns(clock)
        d = _Clocked(turns, "a", [], 10)
        turns.wait(d, True)  # type: ignore[arg-type]
        self.assertFalse(d.reading)
        [(phase, event, release)] = clock.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
        release()
        self.assertTrue(d.reading)
        self.assertEqual(list(turns.queue), [])

    def test_oneBudgetPerReactor(self) -> None:
        """The relays of one reactor share one budget; another reactor has its own."""
        r1, r2 = MemoryReactorClock(), MemoryReactorClock()
        self.assertIs(_turns.turnsFor(r1), _turns.turnsFor(r1))
        self.assertIsNot(_turns.turnsFor(r1), _turns.turnsFor(r2))


class _Watched:
    """
    A small direction as L{_turns._Turns.serveSmall} sees it: its source is
    one end of a real socket pair, and C{readable} drains it.
    """

    def __init__(self, log: list[str], name: str) -> None:
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.srcfd = self.sock.fileno()
        self.src = SimpleNamespace(fd=self.srcfd)
        self.name = name
        self.log = log
        self.done = False
        self.pipe: Any = None
        self.bulk = False
        self.also: Any = None

    def readable(self) -> None:
        self.log.append(self.name)
        self.sock.recv(65536)
        if self.also is not None:
            self.also()

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


class ServeSmallTests(SynchronousTestCase):
    """
    L{_turns._Turns.noteSmall}, C{forget} and C{serveSmall}: the small
    flows that a bulk direction lets go between two pieces of its work.
    """

    def _watched(self, turns: Any, log: list[str], name: str) -> _Watched:
        d = _Watched(log, name)
        self.addCleanup(d.close)
        turns.noteSmall(d, _turns.monotonicNow() + 60)
        return d

    def test_servesOnlyThoseWithBytesWaiting(self) -> None:
        """A watched small flow with bytes waiting reads at once; a quiet one not."""
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        a = self._watched(turns, log, "a")
        self._watched(turns, log, "b")
        turns.serveSmall(object())
        self.assertEqual(log, [])
        a.peer.send(b"x" * 1024)
        turns.serveSmall(object())
        self.assertEqual(log, ["a"])
        turns.serveSmall(object())
        self.assertEqual(log, ["a"])

    def test_busyOrBulkOrAskingNotServed(self) -> None:
        """One whose pipe holds bytes, one turned bulk, and the asker wait."""
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        busy, big, asker = (self._watched(turns, log, n) for n in "pqr")
        busy.pipe = object()
        big.bulk = True
        for d in (busy, big, asker):
            d.peer.send(b"x")
        turns.serveSmall(asker)
        self.assertEqual(log, [])
        self.assertEqual(len(turns.smalls), 3)

    def test_endedQuietOrReusedUnwatched(self) -> None:
        """Ended, quiet-too-long and fd-reused flows are dropped, not served."""
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        ended, reused, quiet, live = (self._watched(turns, log, n) for n in "erql")
        ended.done = True
        reused.src = SimpleNamespace(fd=-1)
        turns.noteSmall(quiet, _turns.monotonicNow() - 1)
        for d in (ended, reused, quiet, live):
            d.peer.send(b"x")
        turns.serveSmall(object())
        self.assertEqual(log, ["l"])
        self.assertEqual(list(turns.smalls), [live.srcfd])

    def test_busyOnlyWhileTheLatestReadIsRecent(self) -> None:
        """Bulk goes in pieces only while a watched small flow read lately."""
        turns = _turns._Turns(_Calls())
        self.assertFalse(turns.busy())
        d = _Watched([], "a")
        self.addCleanup(d.close)
        # Read 1 s ago: still watched (a long window), but not busy.
        turns.noteSmall(d, _turns.monotonicNow() - 1 + 1000)
        self.patch(_turns, "SMALL_WINDOW", 1000)
        self.assertFalse(turns.busy())
        turns.noteSmall(d, _turns.monotonicNow() + 1000)
        self.assertTrue(turns.busy())

    def test_forget(self) -> None:
        """A small flow that turned bulk is no longer watched."""
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        d = self._watched(turns, log, "a")
        turns.forget(d)
        d.peer.send(b"x")
        turns.serveSmall(object())
        self.assertEqual((log, dict(turns.smalls)), ([], {}))

    def test_onlyTheMostRecent(self) -> None:
        """At most WATCHED small flows are watched: the oldest goes first."""
        self.patch(_turns, "WATCHED", 2)
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        a, b, c = (self._watched(turns, log, n) for n in "abc")
        self.assertEqual(list(turns.smalls), [b.srcfd, c.srcfd])
        turns.noteSmall(b, _turns.monotonicNow() + 60)  # b is the most recent now
        self._watched(turns, log, "d")
        self.assertNotIn(c.srcfd, turns.smalls)
        self.assertIn(b.srcfd, turns.smalls)

    def test_watchedWeakly(self) -> None:
        """Being watched does not keep a direction (its relay) alive."""
        turns = _turns._Turns(_Calls())
        d = _Watched([], "a")
        sock, peer, fd = d.sock, d.peer, d.srcfd
        self.addCleanup(sock.close)
        self.addCleanup(peer.close)
        turns.noteSmall(d, _turns.monotonicNow() + 60)
        ref = weakref.ref(d)
        del d
        gc.collect()
        self.assertIsNone(ref())
        peer.send(b"x")
        turns.serveSmall(object())
        self.assertNotIn(fd, turns.smalls)

    def test_notReentered(self) -> None:
        """A small flow served serves no other small flow itself."""
        turns = _turns._Turns(_Calls())
        log: list[str] = []
        a, b = (self._watched(turns, log, n) for n in "ab")
        a.also = b.also = lambda: turns.serveSmall(object())
        a.peer.send(b"x")
        b.peer.send(b"x")
        turns.serveSmall(object())
        # Both served by the outer call, once each: not from inside a or b.
        self.assertEqual(sorted(log), ["a", "b"])


class PiecesTests(SynchronousTestCase):
    """
    L{_direction.Direction.pump} in pieces while a small flow is about, with
    the interface the direction needs from an engine and its sockets only.
    """

    def _bulk(self, size: int) -> tuple[Any, Any, socket.socket]:
        pool = PipePool(1 << 20)
        self.addCleanup(pool.close)
        engine = SimpleNamespace(
            pool=pool,
            reactor=_Calls(),
            pipeFailed=lambda d, e: self.fail(f"pipeFailed {e}"),
            spliceFailed=lambda d, e, reading: self.fail(f"spliceFailed {e}"),
            fail=lambda reason, detail: self.fail(detail),
            directionDone=lambda: None,
        )
        a, peerA = socket.socketpair()
        b, peerB = socket.socketpair()
        for s in (a, peerA, b, peerB):
            self.addCleanup(s.close)
        for s in (b, peerB):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        src, dst = RecordedEndpoint(a, "A"), RecordedEndpoint(b, "B")
        d = _direction.Direction(engine, src, dst)  # type: ignore[arg-type]
        src.source = d
        dst.source = SimpleNamespace(done=False)
        peerA.sendall(b"x" * size)
        return d, engine, peerB

    def _recordWrites(self, d: Any, afterSecond: Any = None) -> list[int]:
        """
        Record the size of each splice of C{d} into its destination; call
        C{afterSecond} once the second is written.
        """
        sizes: list[int] = []
        realSplice = _direction._splice

        def splice(*args: Any) -> int:
            n = realSplice(*args)
            if args[1] == d.dstfd:
                sizes.append(n)
                if len(sizes) == 2 and afterSecond is not None:
                    afterSecond()
            return n

        self.patch(_direction, "_splice", splice)
        return sizes

    def test_servesSmallFlowsBetweenPieces(self) -> None:
        """A bulk pump writes pieces and serves a waiting small flow between two."""
        self.patch(_direction, "PIECE", 16 << 10)
        d, engine, peerB = self._bulk(128 << 10)
        d.bulk = True
        turns = d.turns
        log: list[str] = []
        small = _Watched(log, "s")
        self.addCleanup(small.close)
        turns.noteSmall(small, _turns.monotonicNow() + 60)
        turns.smallUntil = _turns.monotonicNow() + 60
        sizes = self._recordWrites(d, lambda: small.peer.send(b"ping"))
        d.readable()
        self.assertEqual(log, ["s"])
        self.assertEqual(sum(sizes), d.moved)
        self.assertTrue(sizes and max(sizes) <= 16 << 10, sizes)
        self.assertGreater(len(sizes), 2)

    def test_noPiecesWithoutSmallFlow(self) -> None:
        """With no small flow about, the pipe goes out in one splice."""
        self.patch(_direction, "PIECE", 16 << 10)
        d, engine, peerB = self._bulk(128 << 10)
        d.bulk = True
        sizes = self._recordWrites(d)
        d.readable()
        self.assertEqual(len(sizes), 1)
        self.assertGreater(sizes[0], 16 << 10)

    def test_relayEndedWhileServing(self) -> None:
        """If serving small flows ended the relay, the pump stops writing at once."""
        self.patch(_direction, "PIECE", 16 << 10)
        d, engine, peerB = self._bulk(128 << 10)
        d.bulk = True
        turns = d.turns
        small = _Watched([], "s")
        self.addCleanup(small.close)
        turns.noteSmall(small, _turns.monotonicNow() + 60)
        turns.smallUntil = _turns.monotonicNow() + 60
        small.peer.send(b"ping")

        def stop() -> None:
            # What an engine's stop does: take (and here give back) the pipe.
            engine.pool.discard(d.pipe)
            d.pipe = None

        small.also = stop
        d.readable()
        self.assertEqual(d.moved, 16 << 10)
        self.assertIsNone(d.pipe)
        self.assertNotIn("startWriting", d.dst.calls)


_RLIMIT_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, resource, sys
    sys.path[:0] = [{src!r}, {root!r}]
    from twisted.internet.defer import gatherResults, inlineCallbacks
    from splicetx import PipePool
    from splicetx.testing import buildReactor, payload, runScenario
    from tests._harness import makePair

    @inlineCallbacks
    def scenario(reactor):
        holder = {{}}
        def before(pair):
            # Every fd number from here on is refused: pipes cannot be made.
            top = max(int(x) for x in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, top + 1))
        pair = yield makePair(reactor, beforeRelay=before, pipePool=PipePool())
        up, down = payload(1 << 20, 1), payload(1 << 20, 2)
        pair.client.send(up); pair.server.send(down)
        result = yield pair.result
        yield gatherResults([pair.client.lost, pair.server.lost])
        return dict(engine=result.engine, why=result.fallbackReason,
                    up=pair.server.digest() == hashlib.sha256(up).hexdigest(),
                    down=pair.client.digest() == hashlib.sha256(down).hexdigest())
    print(json.dumps(runScenario(buildReactor(sys.argv[1]), scenario, timeout=30)))
    """
)


class RlimitMixin(ReactorTestMixin):
    """
    Pipe creation refused by RLIMIT_NOFILE: the copy engine takes over.
    """

    def test_emfile(self) -> None:
        """With no fd left for pipes, the relay copies and loses nothing."""
        script = _RLIMIT_SCRIPT.format(src=SRC, root=os.path.dirname(HERE))
        out = subprocess.run(
            [sys.executable, "-c", script, self.reactorName],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(got["engine"], "copy")
        self.assertIn("EMFILE", got["why"])
        self.assertTrue(got["up"] and got["down"], got)


globals().update(makeReactorTests(TLSMixin))
globals().update(makeCoreTests(FileDescriptorHygieneMixin))
globals().update(makeCoreTests(CycleMixin))
globals().update(makeCoreTests(FairnessMixin))
globals().update(makeCoreTests(TurnBudgetMixin))
globals().update(makeCoreTests(ServeSmallMixin))
globals().update(makeCoreTests(RlimitMixin))
