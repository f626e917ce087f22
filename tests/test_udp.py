# -*- test-case-name: tests.test_udp -*-
"""
UDP forwarding (L{splicetx._udp}) with real sockets on 127.0.0.1, on every
reactor: sessions, replies to the right client, idle expiry, the session
cap, datagram boundaries, an ICMP-refused upstream, access rules, drain
and pools.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.access import AccessControl
from splicetx._udp.endpoints import UDPClientEndpoint
from splicetx._udp.upstreams import UDPUpstream, UDPUpstreams
from splicetx.testing import ReactorTestMixin, makeReactorTests

from ._udp_support import (
    LOOPBACK,
    Client,
    Echo,
    Records,
    forwarderTo,
    listen,
    proxyPort,
    waitFor,
)


def _closedPort() -> int:
    """
    A loopback UDP port nothing listens on (bound, then closed).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class UDPForwardMixin(ReactorTestMixin):
    """
    A UDP forward relays datagrams between clients and upstreams.
    """

    def forward(self, body: Any, upstreams: int = 1, **keywords: Any) -> Any:
        """
        Run C{body(reactor, forwarder, proxyPortNumber, echoes, records)}
        with echo upstreams, then drain and close everything.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            tagged = keywords.pop("tagged", True)
            echoes = [Echo(b"%d:" % i if tagged else b"") for i in range(upstreams)]
            echoPorts = [listen(reactor, e) for e in echoes]
            records = Records()
            members = keywords.pop("members", upstreams)
            ports = keywords.pop("ports", None) or [
                p.getHost().port for p in echoPorts[:members]
            ]
            forwarder = forwarderTo(reactor, ports, accessLog=records, **keywords)
            port = proxyPort(reactor, forwarder)
            clients: list[Any] = []
            try:
                result = yield body(
                    reactor, forwarder, port.getHost().port, echoes, records, clients
                )
            finally:
                yield forwarder.drain(0)
                yield gatherResults(
                    [p.stopListening() for p in echoPorts]
                    + [c.transport.stopListening() for c in clients]
                )
            return (result, forwarder, records)

        return self.runScenario(scenario)

    def client(self, reactor: Any, clients: list[Any]) -> Client:
        c = Client()
        listen(reactor, c)
        clients.append(c)
        return c

    def test_twoClientsEachGetTheirReplies(self) -> None:
        """
        Two clients at once: each client's datagrams go out through a
        session (an upstream socket) of its own, and each gets the replies
        to its own datagrams only.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            a, b = self.client(reactor, clients), self.client(reactor, clients)
            for i in range(3):
                a.send(b"a%d" % i, port)
                b.send(b"b%d" % i, port)
            yield waitFor(reactor, lambda: len(a.received) + len(b.received) == 6)
            return (a.received, b.received, set(echoes[0].sources))

        (a, b, sources), forwarder, _ = self.forward(body)
        self.assertEqual(sorted(a), [b"0:a0", b"0:a1", b"0:a2"])
        self.assertEqual(sorted(b), [b"0:b0", b"0:b1", b"0:b2"])
        self.assertEqual(len(sources), 2)
        self.assertEqual(forwarder.sessionsTotal, 2)
        self.assertEqual(forwarder.totals()["datagramsUp"], 6)
        self.assertEqual(forwarder.totals()["datagramsDown"], 6)

    def test_boundariesKept(self) -> None:
        """
        Datagrams of 1 B, 1,200 B and 65,507 B (the largest over IPv4) arrive
        whole and one for one, both ways.
        """
        sizes = [1, 1200, 65507, 1]

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            c = self.client(reactor, clients)
            for i, n in enumerate(sizes, 1):
                c.send(bytes([n % 251]) * n, port)
                # One at a time: loopback keeps order, but a burst of 64 KiB
                # datagrams could overflow a small receive buffer.
                yield waitFor(reactor, lambda i=i: len(c.received) == i)
            return c.received

        received, forwarder, _ = self.forward(body, tagged=False)
        self.assertEqual([len(d) for d in received], sizes)
        self.assertEqual(received[2], bytes([65507 % 251]) * 65507)
        self.assertEqual(forwarder.totals()["bytesUp"], sum(sizes))
        self.assertEqual(forwarder.totals()["bytesDown"], sum(sizes))

    def test_idleSessionEnds(self) -> None:
        """
        A session with no datagram for the idle timeout ends (reason
        C{idle}, in its record), and the client's next datagram opens a new
        one through a new upstream socket.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            c = self.client(reactor, clients)
            c.send(b"one", port)
            yield waitFor(reactor, lambda: len(records.records) == 1)
            live = len(forwarder.liveProtocols)
            c.send(b"two", port)
            yield waitFor(reactor, lambda: len(c.received) == 2)
            return live, list(echoes[0].sources)

        (live, sources), forwarder, records = self.forward(body, idleTimeout=0.05)
        self.assertEqual(live, 0)
        self.assertEqual(forwarder.sessionsTotal, 2)
        self.assertNotEqual(sources[0], sources[1])
        first = records.records[0]
        self.assertEqual(first["reason"], "idle")
        self.assertFalse(first["warn"])
        self.assertEqual((first["up"], first["down"]), (3, 5))
        self.assertEqual(first["datagramsClientToUpstream"], 1)
        self.assertEqual(first["protocol"], "udp")

    def test_sessionCap(self) -> None:
        """
        Past the cap, a new client's datagrams are dropped and counted
        (C{session_limit}), while the live sessions carry on.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            a, b, c = (self.client(reactor, clients) for _ in range(3))
            a.send(b"a", port)
            b.send(b"b", port)
            yield waitFor(reactor, lambda: a.received and b.received)
            c.send(b"c", port)
            c.send(b"c", port)
            yield waitFor(reactor, lambda: forwarder.drops.get("session_limit") == 2)
            a.send(b"a", port)
            yield waitFor(reactor, lambda: len(a.received) == 2)
            return c.received

        cReceived, forwarder, _ = self.forward(body, maxSessions=2)
        self.assertEqual(cReceived, [])
        self.assertEqual(forwarder.sessionsTotal, 2)
        self.assertEqual(forwarder.drops, {"session_limit": 2})

    def test_refusedUpstreamEndsSession(self) -> None:
        """
        An upstream port nothing listens on answers ICMP port unreachable:
        the session ends at once with reason C{refused} (a warning record)
        and frees its socket.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            c = self.client(reactor, clients)
            c.send(b"hello", port)
            yield waitFor(reactor, lambda: records.records)
            c.send(b"again", port)
            yield waitFor(reactor, lambda: len(records.records) == 2)
            return len(forwarder.liveProtocols)

        live, forwarder, records = self.forward(
            body, upstreams=0, ports=[_closedPort()], idleTimeout=3600
        )
        self.assertEqual(live, 0)
        self.assertEqual([r["reason"] for r in records.records], ["refused"] * 2)
        self.assertTrue(records.records[0]["warn"])
        self.assertEqual(forwarder.sessionsTotal, 2)

    def test_accessRules(self) -> None:
        """
        A client the access rules refuse opens no session; its datagrams
        are dropped and counted (C{acl}).
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            c = self.client(reactor, clients)
            c.send(b"x", port)
            c.send(b"y", port)
            yield waitFor(reactor, lambda: forwarder.drops.get("acl") == 2)
            forwarder.acl = AccessControl(allow=["127.0.0.0/8"])
            c.send(b"z", port)
            yield waitFor(reactor, lambda: c.received)
            return c.received

        received, forwarder, _ = self.forward(
            body, acl=AccessControl(deny=["127.0.0.1"])
        )
        self.assertEqual(received, [b"0:z"])
        self.assertEqual(forwarder.sessionsTotal, 1)

    def test_drainLetsLiveSessionsIdleOut(self) -> None:
        """
        Draining, a new client is refused (C{draining}) while a live
        session still gets its replies; once it idles out the drain ends,
        nothing aborted, and the listening port is closed.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            a, b = self.client(reactor, clients), self.client(reactor, clients)
            a.send(b"a", port)
            yield waitFor(reactor, lambda: a.received)
            drained = forwarder.drain(3600)
            b.send(b"b", port)
            a.send(b"a", port)
            yield waitFor(reactor, lambda: len(a.received) == 2)
            forwarder.idleTimeout = 0.05
            aborted = yield drained
            return aborted, b.received, forwarder.ports

        (aborted, bReceived, ports), forwarder, records = self.forward(
            body, idleTimeout=3600
        )
        self.assertEqual(aborted, 0)
        self.assertEqual(bReceived, [])
        self.assertEqual(ports, [])
        self.assertEqual(forwarder.drops, {"draining": 1})
        self.assertEqual(records.records[0]["reason"], "idle")

    def test_drainTimeoutAborts(self) -> None:
        """
        A session still live at the drain timeout is aborted (C{cancelled}).
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            c = self.client(reactor, clients)
            c.send(b"a", port)
            yield waitFor(reactor, lambda: c.received)
            aborted = yield forwarder.drain(0.01)
            return aborted

        aborted, forwarder, records = self.forward(body, idleTimeout=3600)
        self.assertEqual(aborted, 1)
        self.assertEqual(records.records[0]["reason"], "cancelled")
        self.assertTrue(records.records[0]["warn"])

    def test_sourceHashKeepsUpstream(self) -> None:
        """
        A pool balanced by source hash (the default) gives every session of
        one client address the same upstream.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            cs = [self.client(reactor, clients) for _ in range(4)]
            for c in cs:
                c.send(b"x", port)
            yield waitFor(reactor, lambda: all(c.received for c in cs))
            return {c.received[0] for c in cs}

        tags, _, _ = self.forward(body, upstreams=3)
        self.assertEqual(len(tags), 1)

    def test_roundRobinSpreadsSessions(self) -> None:
        """
        With C{roundrobin}, successive sessions go to successive upstreams.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            cs = [self.client(reactor, clients) for _ in range(3)]
            for c in cs:
                c.send(b"x", port)
                yield waitFor(reactor, lambda c=c: c.received)
            return sorted(c.received[0] for c in cs)

        tags, forwarder, _ = self.forward(body, upstreams=3, balance="roundrobin")
        self.assertEqual(tags, [b"0:x", b"1:x", b"2:x"])
        self.assertEqual([m.total for m in forwarder.upstreams.members], [1, 1, 1])

    def test_replacedUpstreamsForNewSessions(self) -> None:
        """
        New upstreams (a reload) serve new sessions; a live session keeps
        the upstream it has.
        """

        @inlineCallbacks
        def body(reactor, forwarder, port, echoes, records, clients):
            a, b = self.client(reactor, clients), self.client(reactor, clients)
            a.send(b"a", port)
            yield waitFor(reactor, lambda: a.received)
            other = echoes[1].transport.getHost().port
            forwarder.replaceUpstreams(
                UDPUpstreams([UDPUpstream(UDPClientEndpoint(reactor, LOOPBACK, other))])
            )
            a.send(b"a", port)
            b.send(b"b", port)
            yield waitFor(reactor, lambda: len(a.received) == 2 and b.received)
            return a.received, b.received

        (a, b), _, _ = self.forward(body, upstreams=2, members=1)
        self.assertEqual(a, [b"0:a", b"0:a"])
        self.assertEqual(b, [b"1:b"])


class UDPSessionIPv6Tests(SynchronousTestCase):
    """
    The upstream endpoint names itself for logs.
    """

    def test_names(self) -> None:
        """
        An IPv6 upstream is written in brackets.
        """
        self.assertEqual(str(UDPClientEndpoint(None, "::1", 53)), "udp:[::1]:53")
        self.assertEqual(str(UDPClientEndpoint(None, LOOPBACK, 53)), "udp:127.0.0.1:53")


globals().update(makeReactorTests(UDPForwardMixin))
