"""
Tests for L{splicetx._pool.balance}: the four balancers and the client key.
"""

from __future__ import annotations

import collections
import random

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx._pool.balance import (
    BALANCERS,
    IBalancer,
    LeastConnections,
    RoundRobin,
    SourceHash,
    WeightedRandom,
    clientKeyFor,
    makeBalancer,
)


class Member:
    """
    A stand-in for an L{Upstream <splicetx._pool.pool.Upstream>}: what a balancer
    reads.
    """

    def __init__(self, name: str, weight: int = 1, active: int = 0) -> None:
        self.name = name
        self.weight = weight
        self.active = active
        self.hashKey = name.encode()

    def __repr__(self) -> str:
        return self.name


def keys(n: int) -> list[bytes]:
    """
    C{n} distinct IPv4 client keys.
    """
    return [
        clientKeyFor(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") for i in range(n)
    ]  # type: ignore[misc]


class InterfaceTests(SynchronousTestCase):
    """
    Every balancer provides L{IBalancer}.
    """

    def test_verify(self) -> None:
        """
        L{makeBalancer} builds each named balancer, and each provides the
        interface with its CLI name.
        """
        for name in BALANCERS:
            balancer = makeBalancer(name)
            self.assertTrue(verifyObject(IBalancer, balancer))
            self.assertEqual(balancer.name, name)

    def test_unknown(self) -> None:
        """
        An unknown name is a L{ValueError} naming the known ones.
        """
        with self.assertRaises(ValueError) as caught:
            makeBalancer("fastest")
        self.assertIn("roundrobin, leastconn, source, random", str(caught.exception))


class ClientKeyTests(SynchronousTestCase):
    """
    L{clientKeyFor} keys a client by its IP address only.
    """

    def test_portIgnored(self) -> None:
        """
        Two connections of one client have one key; IPv4-mapped IPv6 is IPv4.
        """
        a = clientKeyFor(IPv4Address("TCP", "192.0.2.7", 1000))
        b = clientKeyFor(IPv4Address("TCP", "192.0.2.7", 2000))
        c = clientKeyFor(IPv6Address("TCP", "::ffff:192.0.2.7", 3000))
        self.assertEqual(a, b)
        self.assertEqual(a, c)
        self.assertNotEqual(a, clientKeyFor("192.0.2.8"))

    def test_unix(self) -> None:
        """
        A UNIX socket client has no key.
        """
        self.assertIsNone(clientKeyFor(UNIXAddress(b"/tmp/x")))


class RoundRobinTests(SynchronousTestCase):
    """
    L{RoundRobin} is nginx's smooth weighted round robin.
    """

    def test_equal(self) -> None:
        """
        Equal weights take turns in order.
        """
        a, b, c = Member("a"), Member("b"), Member("c")
        rr = RoundRobin()
        picks = [rr.choose([a, b, c], None).name for _ in range(6)]
        self.assertEqual(picks, list("abcabc"))

    def test_smooth(self) -> None:
        """
        Weights 5, 1, 1 give nginx's documented sequence C{a a b a c a a}.
        """
        a, b, c = Member("a", 5), Member("b"), Member("c")
        rr = RoundRobin()
        picks = "".join(rr.choose([a, b, c], None).name for _ in range(7))
        self.assertEqual(picks, "aabacaa")

    def test_proportions(self) -> None:
        """
        Over a run of M{sum(weights)} choices each member gets its weight.
        """
        members = [Member("a", 3), Member("b", 2), Member("c", 1)]
        rr = RoundRobin()
        counts = collections.Counter(rr.choose(members, None).name for _ in range(60))
        self.assertEqual(counts, {"a": 30, "b": 20, "c": 10})

    def test_subset(self) -> None:
        """
        Leaving a member out (it was tried) still returns one of the rest.
        """
        a, b = Member("a"), Member("b")
        rr = RoundRobin()
        self.assertIs(rr.choose([b], None), b)
        self.assertIs(rr.choose([a, b], None), a)


class LeastConnectionsTests(SynchronousTestCase):
    """
    L{LeastConnections} picks the fewest open connections per weight.
    """

    def test_fewest(self) -> None:
        """
        The member with the fewest open connections wins.
        """
        a, b, c = Member("a", active=4), Member("b", active=1), Member("c", active=2)
        self.assertIs(LeastConnections().choose([a, b, c], None), b)

    def test_weighted(self) -> None:
        """
        Open connections count relative to weight: 5 on weight 3 beats 2 on
        weight 1.
        """
        a, b = Member("a", weight=3, active=5), Member("b", weight=1, active=2)
        self.assertIs(LeastConnections().choose([a, b], None), a)

    def test_ties(self) -> None:
        """
        Equals take turns.
        """
        a, b = Member("a", active=1), Member("b", active=1)
        lc = LeastConnections()
        picks = [lc.choose([a, b], None).name for _ in range(4)]
        self.assertEqual(sorted(picks), ["a", "a", "b", "b"])

    def test_followsLoad(self) -> None:
        """
        Acquiring on each pick spreads connections evenly by weight.
        """
        members = [Member("a", 2), Member("b", 1)]
        lc = LeastConnections()
        for _ in range(30):
            lc.choose(members, None).active += 1
        self.assertEqual([m.active for m in members], [20, 10])


class SourceHashTests(SynchronousTestCase):
    """
    L{SourceHash} is weighted rendezvous hashing of the client address.
    """

    def test_sticky(self) -> None:
        """
        A client gets the same member every time, with any balancer instance.
        """
        members = [Member(f"m{i}") for i in range(5)]
        for key in keys(50):
            first = SourceHash().choose(members, key)
            self.assertIs(SourceHash().choose(members, key), first)
            self.assertIs(SourceHash().choose(list(reversed(members)), key), first)

    def test_spread(self) -> None:
        """
        Clients spread over members in proportion to weight.
        """
        members = [Member("a", 1), Member("b", 1), Member("c", 2)]
        sh = SourceHash()
        counts = collections.Counter(sh.choose(members, k).name for k in keys(8000))
        self.assertTrue(1600 < counts["a"] < 2400, counts)
        self.assertTrue(1600 < counts["b"] < 2400, counts)
        self.assertTrue(3500 < counts["c"] < 4500, counts)

    def test_removeMovesFew(self) -> None:
        """
        Removing one of N members moves only the clients that were on it
        (about 1/N); every other client keeps its member.
        """
        n = 8
        members = [Member(f"10.0.0.{i}:80") for i in range(n)]
        removed = members[3]
        rest = [m for m in members if m is not removed]
        sh = SourceHash()
        moved = 0
        clients = keys(8000)
        for key in clients:
            before = sh.choose(members, key)
            after = sh.choose(rest, key)
            if before is removed:
                moved += 1
            else:
                self.assertIs(after, before)
        self.assertTrue(0.6 / n < moved / len(clients) < 1.4 / n, moved)

    def test_addMovesFew(self) -> None:
        """
        Adding a member moves only the clients it now wins.
        """
        members = [Member(f"m{i}") for i in range(4)]
        added = Member("m4")
        sh = SourceHash()
        for key in keys(2000):
            after = sh.choose([*members, added], key)
            if after is not added:
                self.assertIs(after, sh.choose(members, key))

    def test_failoverStable(self) -> None:
        """
        With its first choice left out, a client always lands on the same
        second choice.
        """
        members = [Member(f"m{i}") for i in range(5)]
        sh = SourceHash()
        for key in keys(100):
            first = sh.choose(members, key)
            rest = [m for m in members if m is not first]
            self.assertIs(sh.choose(rest, key), sh.choose(rest, key))

    def test_noKey(self) -> None:
        """
        Clients without a key are spread round robin.
        """
        a, b = Member("a"), Member("b")
        sh = SourceHash()
        self.assertEqual([sh.choose([a, b], None).name for _ in range(4)], list("abab"))


class WeightedRandomTests(SynchronousTestCase):
    """
    L{WeightedRandom} picks at random in proportion to weight.
    """

    def test_proportions(self) -> None:
        """
        A member of weight 3 gets about three quarters.
        """
        a, b = Member("a", 3), Member("b", 1)
        wr = WeightedRandom(random.Random(4))
        counts = collections.Counter(wr.choose([a, b], None).name for _ in range(4000))
        self.assertTrue(2800 < counts["a"] < 3200, counts)

    def test_single(self) -> None:
        """
        One candidate is always chosen.
        """
        a = Member("a")
        self.assertIs(WeightedRandom().choose([a], None), a)
