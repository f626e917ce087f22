# -*- test-case-name: tests.test_leanhooks -*-
"""
Protocols with hooks on the lean path (L{splicetx._proxy.leantransport},
L{splicetx._proxy.leanrelay}): the CONNECT and SOCKS5 examples relay over
lean transports and a lean relay on the socket loop, with no Twisted
transport made; a subclass that asks its transport for more than the lean
one has gets a real one (adopted) and still relays; an upstream the lean
path cannot connect raw (a host name) goes through its endpoint and the
relay becomes Twisted's.  On every reactor, over real loopback sockets.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import AccumulatingProtocol
from twisted.trial.unittest import SynchronousTestCase

from splicetx import DONE, Relay
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._proxy.leanrelay import LeanRelay
from splicetx._proxy.leantransport import LeanTransport
from splicetx._proxy.poolproxy import PoolProxyFactory, PoolProxyProtocol
from splicetx._relay.socketloop import loopFor
from splicetx.proxy import SpliceProxyFactory
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from .test_proxy import LOOPBACK, EchoFactory, capturedEvents, connectClient, stopAll

_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


def _example(name: str) -> Any:
    """
    Import C{examples/<name>.py} (the examples are not a package).
    """
    spec = importlib.util.spec_from_file_location(
        f"_lean_{name}", os.path.join(_EXAMPLES, name + ".py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_connect = _example("http_connect_proxy")
_socks = _example("socks5_proxy")


def _observed(base: type) -> type:
    """
    C{base} with a record of what each connection's transport, relay and
    socket-loop membership were once the relay started.
    """

    class Observed(base):  # type: ignore[misc,valid-type]
        seen: list[dict[str, Any]] = []

        def startRelay(self, *args: Any, **kwargs: Any) -> Any:
            d = super().startRelay(*args, **kwargs)
            members = loopFor(self.factory.reactor).members
            transport = self.transport
            self.seen.append(
                {
                    "transport": type(transport),
                    "upstream": type(self.upstream.transport),
                    "relay": type(self.relay),
                    "member": getattr(transport, "fd", -1) in members,
                }
            )
            return d

    Observed.seen = []
    return Observed


def _servers(reactor: Any) -> list[Any]:
    """
    The Twisted server transports the reactor reads from now.
    """
    return [r for r in reactor.getReaders() if isinstance(r, tcp.Server)]


class LeanHookScenarios(ReactorTestMixin):
    """
    Handshake subclasses run lean; a transport-hungry one still works.
    """

    scenarioTimeout = 20.0

    @inlineCallbacks
    def relayThrough(
        self, reactor: Any, protocolClass: type, request: Any, data: bytes
    ) -> Any:
        """
        Serve C{protocolClass} on the loopback in front of an echo server;
        a client sends C{request(upstreamPort)} then C{data} and half-closes.

        @return: C{(what the client received, servers seen while relaying,
            the factory)}.
        """
        echo = EchoFactory()
        up = reactor.listenTCP(0, echo, interface=LOOPBACK)
        factory = SpliceProxyFactory(None, reactor=reactor)
        factory.protocol = protocolClass
        port = reactor.listenTCP(0, factory, interface=LOOPBACK)
        factory.addListeningPort(port)
        client = connectClient(reactor, port)
        client.keep = True
        servers: list[Any] = []
        yield client.made
        # Twisted's own server transports before the proxy's client arrives.
        before = set(_servers(reactor))

        def onData(_: bytes) -> None:
            for s in _servers(reactor):
                owner = getattr(getattr(s, "protocol", None), "factory", None)
                if s not in before and owner is not echo and s not in servers:
                    servers.append(s)

        client.onData = onData
        yield client.send(request(up.getHost().port) + data)
        yield client.lost
        while factory.liveProtocols:
            yield deferLater(reactor, 0.01, lambda: None)
        yield stopAll([up, port])
        return b"".join(client.chunks), servers, factory

    def test_connectExampleRunsLean(self) -> None:
        """
        The CONNECT example to an IP literal: the reply, then the tunnel
        byte-exact; its transport is lean and a socket-loop member, the
        relay is the lean one, no Twisted server transport was made, and
        the record says done with both counts.
        """
        data = payload(400_000, seed=3)
        events, stop = capturedEvents()
        self.addCleanup(stop)
        proto = _observed(_connect.ConnectProtocol)

        def request(port: int) -> bytes:
            return f"CONNECT {LOOPBACK}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

        received, servers, _ = self.runScenario(
            lambda reactor: self.relayThrough(reactor, proto, request, data)
        )
        head = _connect.answer(200)
        self.assertEqual(received[: len(head)], head)
        self.assertEqual(digest(received[len(head) :]), digest(data))
        self.assertEqual(
            proto.seen,
            [
                {
                    "transport": LeanTransport,
                    "upstream": LeanTransport,
                    "relay": LeanRelay,
                    "member": True,
                }
            ],
        )
        self.assertEqual(servers, [])
        [event] = events
        self.assertEqual(
            (event["reason"], event["engine"], event["bytesClientToUpstream"]),
            (DONE, "splice", len(data)),
        )
        self.assertEqual(event["bytesUpstreamToClient"], len(data))

    @inlineCallbacks
    def silentClient(self, reactor: Any, drain: bool) -> Any:
        """
        Serve the CONNECT example with an idle timeout of 0.4 s to a client
        that never sends its request; with C{drain}, drain the factory
        (30 s) once the client is in.

        @return: C{(the protocol's own idle call while live, the checker,
            seconds until the client saw the close, the record's reason)}.
        """
        events, stop = capturedEvents()
        self.addCleanup(stop)
        factory = SpliceProxyFactory(None, reactor=reactor, idleTimeout=0.4)
        factory.protocol = _connect.ConnectProtocol
        port = reactor.listenTCP(0, factory, interface=LOOPBACK)
        factory.addListeningPort(port)
        client = connectClient(reactor, port)
        yield client.made
        while not factory.liveProtocols:
            yield deferLater(reactor, 0.01, lambda: None)
        [proto] = factory.liveProtocols
        own, checker = proto._idleCall, proto._checker
        started = reactor.seconds()
        drained = factory.drain(30.0) if drain else None
        yield client.lost
        took = reactor.seconds() - started
        if drained is not None:
            # The drain stopped listening; it ends with the last client.
            yield drained
        else:
            yield stopAll([port])
        [event] = events
        return own, checker, took, event["reason"]

    def assertClosedByTheForwardersTimer(self, drain: bool) -> float:
        """
        The silent client of L{silentClient} was closed by the idle timeout,
        checked by the forwarder's timer with no call of the protocol's own.

        @return: the seconds until the client saw the close.
        """
        own, checker, took, reason = self.runScenario(
            lambda reactor: self.silentClient(reactor, drain)
        )
        self.assertIsNone(own)
        self.assertIsNotNone(checker)
        self.assertEqual(reason, "idle timeout")
        self.assertLess(took, 5.0)
        return took

    def test_idleTimeoutOnTheForwardersTimer(self) -> None:
        """
        A protocol the lean accept took has no idle C{callLater} of its own:
        its forwarder's one timer checks it, and the idle timeout closes a
        client that never spoke within the timeout and a quarter.
        """
        took = self.assertClosedByTheForwardersTimer(drain=False)
        self.assertGreaterEqual(took, 0.35)

    def test_drainOnTheForwardersTimer(self) -> None:
        """
        Draining checks such a protocol at once and then on the drain's
        schedule: a client stuck in its handshake is closed by the idle
        timeout, not kept for the drain's 30 s.
        """
        self.assertClosedByTheForwardersTimer(drain=True)

    def test_socksExampleRunsLean(self) -> None:
        """
        The SOCKS5 example, greeting and request pipelined with the first
        bytes: both replies (the second names the upstream socket's bound
        address), then the stream byte-exact, all lean.
        """
        data = payload(200_000, seed=4)
        proto = _observed(_socks.Socks5Protocol)

        def request(port: int) -> bytes:
            return (
                b"\x05\x01\x00"
                + b"\x05\x01\x00\x01"
                + bytes([127, 0, 0, 1])
                + struct.pack("!H", port)
            )

        received, servers, _ = self.runScenario(
            lambda reactor: self.relayThrough(reactor, proto, request, data)
        )
        self.assertEqual(received[:2], b"\x05\x00")
        reply = received[2:12]
        self.assertEqual(reply[:4], b"\x05\x00\x00\x01")
        self.assertEqual(reply[4:8], bytes([127, 0, 0, 1]))
        self.assertNotEqual(struct.unpack("!H", reply[8:10])[0], 0)
        self.assertEqual(digest(received[12:]), digest(data))
        self.assertEqual(
            [(s["transport"], s["relay"], s["member"]) for s in proto.seen],
            [(LeanTransport, LeanRelay, True)],
        )
        self.assertEqual(servers, [])

    def assertTunnelsAdopted(self, base: type, data: bytes) -> None:
        """
        A CONNECT through C{base} (a subclass of the example) tunnels
        C{data} byte-exact after its reply, with an adopted Twisted
        transport and Twisted's relay.
        """
        proto = _observed(base)

        def request(port: int) -> bytes:
            return f"CONNECT {LOOPBACK}:{port} HTTP/1.1\r\n\r\n".encode()

        received, _, _ = self.runScenario(
            lambda reactor: self.relayThrough(reactor, proto, request, data)
        )
        head = _connect.answer(200)
        self.assertEqual(received[: len(head)], head)
        self.assertEqual(digest(received[len(head) :]), digest(data))
        [seen] = proto.seen
        self.assertTrue(issubclass(seen["transport"], tcp.Server))
        self.assertEqual(seen["relay"], Relay)

    def test_transportHungrySubclassAdopts(self) -> None:
        """
        A subclass that asks its transport for what a lean one lacks
        (C{setTcpNoDelay}) gets a Twisted transport made from its socket,
        then relays on the general path, byte-exact, after its reply.
        """
        data = payload(100_000, seed=5)

        class NoDelay(_connect.ConnectProtocol):
            def clientAccepted(self) -> bool:
                self.transport.setTcpNoDelay(True)
                return True

        self.assertTunnelsAdopted(NoDelay, data)

    def test_hostnameUpstreamGoesThroughEndpoint(self) -> None:
        """
        An upstream that is a host name is connected through its endpoint;
        the client's lean transport is adopted for Twisted's relay, and the
        reply and stream arrive byte-exact.
        """
        data = payload(100_000, seed=6)

        class ByName(_connect.ConnectProtocol):
            def connectUpstream(self, endpoint: Any, toUpstream: bytes = b"") -> Any:
                port = endpoint._port
                named = HostnameEndpoint(self.factory.reactor, b"localhost", port)
                return super().connectUpstream(named, toUpstream)

        self.assertTunnelsAdopted(ByName, data)

    def test_bigReplyBeforeRelayIsByteExact(self) -> None:
        """
        A reply larger than the socket takes at once (4 MB, written before
        the relay starts, into a 4 KiB send buffer) is sent as the socket
        drains, then the tunnel follows it byte-exact: the relay splices
        only once what was written has gone.
        """
        data = payload(300_000, seed=7)
        big = payload(4_000_000, seed=8)

        class BigReply(_connect.ConnectProtocol):
            def upstreamConnected(self, upstream: Any) -> None:
                # A small send buffer: the reply cannot go in one send.
                handle = self.transport.getHandle()
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                self.reply(big)
                self.startRelay()

        proto = _observed(BigReply)

        def request(port: int) -> bytes:
            return f"CONNECT {LOOPBACK}:{port} HTTP/1.1\r\n\r\n".encode()

        received, servers, _ = self.runScenario(
            lambda reactor: self.relayThrough(reactor, proto, request, data)
        )
        self.assertEqual(digest(received[: len(big)]), digest(big))
        self.assertEqual(digest(received[len(big) :]), digest(data))
        self.assertEqual(
            [(s["transport"], s["relay"]) for s in proto.seen],
            [(LeanTransport, LeanRelay)],
        )
        self.assertEqual(servers, [])

    def test_poolFailsOverLean(self) -> None:
        """
        A protocol subclass over a pool whose first member refuses: the
        pool's own failover tries the members, each connected raw, and the
        relay is lean; the record names the live member and the pool, and
        the members' books say so.
        """
        events, stop = capturedEvents()
        self.addCleanup(stop)
        dead = socket.socket()
        dead.bind((LOOPBACK, 0))
        deadPort = dead.getsockname()[1]
        dead.close()
        proto = _observed(PoolProxyProtocol)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            live = up.getHost().port
            members = [
                Upstream(TCP4ClientEndpoint(reactor, LOOPBACK, p), clock=reactor)
                for p in (deadPort, live)
            ]
            pool = UpstreamPool(members, name="p", reactor=reactor)
            factory = PoolProxyFactory(pool, reactor=reactor)
            factory.protocol = proto
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            factory.addListeningPort(port)
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"hello")
            yield client.lost
            while factory.liveProtocols:
                yield deferLater(reactor, 0.01, lambda: None)
            yield stopAll([up, port])
            return client.digest(), live, members

        received, live, members = self.runScenario(scenario)
        self.assertEqual(received, digest(b"hello"))
        self.assertEqual(
            [(s["transport"], s["upstream"], s["relay"]) for s in proto.seen],
            [(LeanTransport, LeanTransport, LeanRelay)],
        )
        [event] = events
        self.assertEqual(
            (event["reason"], event["upstream"], event["pool"]),
            (DONE, f"{LOOPBACK}:{live}", "p"),
        )
        self.assertEqual((members[0].connections, members[1].connections), (0, 1))
        self.assertGreaterEqual(members[0].failures["refused"], 1)
        self.assertEqual((members[0].active, members[1].active), (0, 0))

    def test_refusalOnLeanTransport(self) -> None:
        """
        A request the CONNECT example refuses gets its 405 over the lean
        transport, then a clean close; the record says rejected.
        """
        events, stop = capturedEvents()
        self.addCleanup(stop)
        proto = _observed(_connect.ConnectProtocol)

        def request(port: int) -> bytes:
            return b"GET / HTTP/1.1\r\n\r\n"

        received, servers, _ = self.runScenario(
            lambda reactor: self.relayThrough(reactor, proto, request, b"")
        )
        self.assertTrue(received.startswith(b"HTTP/1.1 405 "), received)
        self.assertEqual(proto.seen, [])
        self.assertEqual(servers, [])
        [event] = events
        self.assertEqual((event["reason"], event["engine"]), ("rejected", "none"))


globals().update(makeReactorTests(LeanHookScenarios))


class FirstReadTests(SynchronousTestCase):
    """
    L{LeanTransport.begin} reads the client's first bytes at once (before
    the socket joins the loop), over a real socket pair.
    """

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.addCleanup(self.theirs.close)
        self.reactor = Clock()
        self.loop = loopFor(self.reactor)
        self.reactor.addReader = lambda reader: None  # type: ignore[attr-defined]
        self.reactor.removeReader = lambda reader: None  # type: ignore[attr-defined]

    def transport(self, protocol: Any) -> LeanTransport:
        t = LeanTransport(self.ours, self.loop, self.reactor, ("127.0.0.1", 1), "A")
        t.protocol = protocol
        protocol.makeConnection(t)
        return t

    def test_bytesThereAreRead(self) -> None:
        """
        Bytes the client sent before the accept reach the protocol in
        C{begin()}; it then watches the socket for more.
        """
        protocol = AccumulatingProtocol()
        self.theirs.sendall(b"CONNECT x:1 HTTP/1.1\r\n\r\n")
        t = self.transport(protocol)
        t.begin()
        self.assertEqual(protocol.data, b"CONNECT x:1 HTTP/1.1\r\n\r\n")
        self.assertTrue(t.reading)
        self.assertIn(t.fd, self.loop.members)
        t.abortConnection()

    def test_nothingThere(self) -> None:
        """
        With nothing sent yet, C{begin()} only starts watching.
        """
        protocol = AccumulatingProtocol()
        t = self.transport(protocol)
        t.begin()
        self.assertEqual(protocol.data, b"")
        self.assertIn(t.fd, self.loop.members)
        t.abortConnection()

    def test_raisingProtocolIsCutOff(self) -> None:
        """
        A protocol that raises on the first bytes is treated as on any later
        read: the error is logged, the connection aborted, the protocol
        told, and the socket is not left in the loop.
        """
        lost: list[Any] = []

        class Raising(Protocol):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError("first read")

            def connectionLost(self, reason: Any) -> None:
                lost.append(reason)

        self.theirs.sendall(b"hello")
        t = self.transport(Raising())
        fd = t.fd
        t.begin()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(lost), 1)
        self.assertFalse(t.connected)
        self.assertNotIn(fd, self.loop.members)
        self.theirs.settimeout(5)
        try:
            self.assertEqual(self.theirs.recv(10), b"")
        except ConnectionResetError:
            pass  # aborted: a reset is the expected end as well

    def test_pausedByWhatItRead(self) -> None:
        """
        A protocol that pauses its transport on the first bytes (to connect
        its upstream) stays paused.
        """

        class Pausing(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.pauseProducing()  # type: ignore[union-attr]

        self.theirs.sendall(b"hello")
        t = self.transport(Pausing())
        t.begin()
        self.assertTrue(t.paused)
        self.assertFalse(t.reading)
        self.assertNotIn(t.fd, self.loop.members)
        t.abortConnection()
