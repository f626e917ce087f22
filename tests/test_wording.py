# -*- test-case-name: tests.test_wording -*-
"""
What a proxy's records and start-up line say, in its user's words: the
relay's transports A and B become the client and the upstream
(L{splicetx._proxy.wording}), and pools, SNI routes and access rules are
described as the command line writes them, not as Python reprs.
"""

from __future__ import annotations

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from splicetx import AccessControl, SpliceProxyFactory
from splicetx._pool.balance import LeastConnections
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._pool.sni import SNIRouter
from splicetx._proxy.poolproxy import PoolProxyFactory
from splicetx._proxy.wording import inProxyWords


class RelayPhrasesTests(SynchronousTestCase):
    """
    L{inProxyWords} rewrites the phrases the relay makes about its sides.
    """

    def test_phrases(self) -> None:
        """
        Each phrase the relay core writes with A or B comes out naming the
        client (A) and the upstream (B).
        """
        cases = {
            "B finished sending and A cannot be half-closed (TLS)": (
                "the upstream finished sending and the client's TLS connection "
                "cannot be half-closed"
            ),
            "A finished sending and B cannot be half-closed (TLS)": (
                "the client finished sending and the upstream's TLS connection "
                "cannot be half-closed"
            ),
            "A->B: write to B failed: EPIPE (Broken pipe)": (
                "client to upstream: writing to the upstream failed: EPIPE "
                "(Broken pipe)"
            ),
            "B->A: read from B failed: ECONNRESET (Connection reset by peer)": (
                "upstream to client: reading from the upstream failed: "
                "ECONNRESET (Connection reset by peer)"
            ),
            "B->A: splice into A wrote 0 bytes": (
                "upstream to client: splice into the client wrote 0 bytes"
            ),
            "A->B: cannot create a pipe: EMFILE (Too many open files)": (
                "client to upstream: cannot create a pipe: EMFILE (Too many open files)"
            ),
            "transport A closed the connection": "the client closed the connection",
            "transport B lost: Connection was closed cleanly.": (
                "the upstream connection was lost: Connection was closed cleanly."
            ),
            "transport A: ECONNRESET (Connection reset by peer)": (
                "the client connection: ECONNRESET (Connection reset by peer)"
            ),
            "loseConnection() called on transport B": (
                "the proxy closed the upstream connection"
            ),
            "abortConnection() called on transport A": (
                "the proxy aborted the client connection"
            ),
            "transport A: TLS transport": "the client uses TLS",
            "transport B: TLS transport": "the upstream uses TLS",
            "transport B: not a socket transport (FakeTransport)": (
                "the upstream cannot be spliced: not a socket transport (FakeTransport)"
            ),
            "engine='copy' requested": "the copy engine was chosen",
        }
        self.assertEqual({k: inProxyWords(k) for k in cases}, cases)

    def test_othersUnchanged(self) -> None:
        """
        Text the relay did not phrase about A or B is left alone, even with
        a capital A or B in it; C{None} stays C{None}.
        """
        for text in [
            "both directions finished",
            "pipe limit reached (12 pipes)",
            "first splice failed: EINVAL (Invalid argument)",
            "cannot connect to A.example:80: connection refused",
            "127.0.0.1 denied by rule 127.0.0.1",
        ]:
            self.assertEqual(inProxyWords(text), text)
        self.assertIsNone(inProxyWords(None))


class DescriptionTests(SynchronousTestCase):
    """
    Pools, routes and rules as the start-up line describes them.
    """

    def upstream(self, port: int, weight: int = 1) -> Upstream:
        endpoint = TCP4ClientEndpoint(Clock(), "10.0.0.1", port)
        return Upstream(endpoint, weight=weight, clock=Clock())

    def test_pool(self) -> None:
        """
        A pool is its members (with any weight) and its balancing.
        """
        pool = UpstreamPool(
            [self.upstream(80), self.upstream(81, weight=3)],
            LeastConnections(),
            name="tcp:8080",
        )
        self.assertEqual(
            pool.description, "10.0.0.1:80, 10.0.0.1:81 weight=3 (leastconn)"
        )
        factory = PoolProxyFactory(pool, reactor=Clock())
        self.assertEqual(factory.describeUpstream(), pool.description)

    def test_sniRoutes(self) -> None:
        """
        With SNI routes, each route as C{--route-sni} writes it, then where
        other names go.
        """
        www = UpstreamPool([self.upstream(443)], name="www")
        other = UpstreamPool([self.upstream(8443)], name="other")
        router = SNIRouter([("www.example.com", www), ("*.example.com", other)])
        self.assertEqual(
            PoolProxyFactory(None, router, reactor=Clock()).describeUpstream(),
            "by server name: www.example.com=10.0.0.1:443 (roundrobin); "
            "*.example.com=10.0.0.1:8443 (roundrobin); other names: refused",
        )

    def test_singleUpstream(self) -> None:
        """
        A plain forward's upstream is its address.
        """
        factory = SpliceProxyFactory(
            TCP4ClientEndpoint(Clock(), "10.0.0.2", 80), reactor=Clock()
        )
        self.assertEqual(factory.describeUpstream(), "10.0.0.2:80")

    def test_accessRules(self) -> None:
        """
        Access rules read as written: allow, then deny, outer rules first.
        """
        outer = AccessControl(deny=["192.0.2.0/24"])
        acl = AccessControl(["10.0.0.0/8", "::1"], ["10.0.13.0/24"], outer=outer)
        self.assertEqual(
            acl.description,
            "deny 192.0.2.0/24; then allow 10.0.0.0/8, ::1; deny 10.0.13.0/24",
        )
        self.assertEqual(AccessControl().description, "none")
