# -*- test-case-name: tests.test_balance -*-
"""
Balancers: the rule that picks one upstream of a pool for a client.

A balancer (L{IBalancer}) is asked to C{choose} among the members of an
L{UpstreamPool <splicetx._pool.pool.UpstreamPool>} that are available right now;
when a connect fails, the pool asks again with the members already tried left
out, so the order of retries is the balancer's too.  Four are provided, the
same as HAProxy's and nginx's of the same names:

  - L{RoundRobin} (C{roundrobin}, the default): nginx's smooth weighted round
    robin, so a member of weight 3 gets three of every four connections
    beside a member of weight 1, interleaved (C{a a b a}) rather than in
    bursts.
  - L{LeastConnections} (C{leastconn}): the member with the fewest open
    connections relative to its weight; ties go round robin.
  - L{SourceHash} (C{source}): weighted rendezvous (highest random weight)
    hashing of the client's address, so a client keeps its upstream while the
    pool is unchanged, and removing one of M{N} members moves only the
    clients that were on it (about M{1/N}) -- the others keep theirs.
  - L{WeightedRandom} (C{random}): a random member, in proportion to weight.

Members are duck-typed: a balancer reads C{weight} (an C{int} >= 1),
C{active} (open connections) and C{hashKey} (C{bytes} naming the member
stably, for L{SourceHash}).
"""

from __future__ import annotations

import hashlib
import math
import random as _random
from collections.abc import Sequence
from typing import Any

from zope.interface import Attribute, Interface, implementer

from splicetx._pool.addresses import normaliseAddress

__all__ = [
    "IBalancer",
    "RoundRobin",
    "LeastConnections",
    "SourceHash",
    "WeightedRandom",
    "BALANCERS",
    "makeBalancer",
    "clientKeyFor",
]


class IBalancer(Interface):
    """
    Picks one upstream among candidates, for one client.
    """

    name = Attribute("The balancer's name in the CLI (C{roundrobin}, ...).")

    def choose(candidates: Sequence[Any], clientKey: bytes | None) -> Any:
        """
        Choose one of C{candidates}.

        @param candidates: a non-empty sequence of upstreams, in pool order,
            all available; upstreams already tried for this client are left
            out by the caller.
        @param clientKey: the client's identity for hashing (see
            L{clientKeyFor}), or C{None} when it has none.
        @return: one element of C{candidates}.
        """


def clientKeyFor(address: Any) -> bytes | None:
    """
    The key L{SourceHash} hashes for a client: its IP address without the
    port (so all connections of a client go to one upstream), with
    IPv4-mapped IPv6 addresses as IPv4.

    @param address: a Twisted address (C{IPv4Address}, C{IPv6Address}, the
        source address of a PROXY protocol header, ...), an C{ipaddress}
        object or a string.
    @return: the packed address, or C{None} for non-IP addresses (UNIX
        sockets).
    """
    ip = normaliseAddress(address)
    if ip is None:
        return None
    return ip.packed


@implementer(IBalancer)
class RoundRobin:
    """
    Smooth weighted round robin (nginx's C{ngx_http_upstream_get_peer}).

    Each choice adds every candidate's weight to its current weight, picks
    the candidate with the highest current weight, and subtracts the total
    weight from the winner's.  Over any run of M{sum(weights)} choices each
    member is picked exactly M{weight} times, spread out evenly.
    """

    name = "roundrobin"

    def __init__(self) -> None:
        # A plain dict: a balancer belongs to one pool and sees only its
        # members, which live as long as the pool (a weak dictionary made a
        # weak reference per member per choice, on every new connection).
        self._current: dict[Any, int] = {}

    def choose(self, candidates: Sequence[Any], clientKey: bytes | None) -> Any:
        """
        See L{IBalancer.choose}; C{clientKey} is not used.
        """
        total = 0
        best = None
        bestWeight = 0
        current = self._current
        for candidate in candidates:
            weight = candidate.weight
            total += weight
            value = current.get(candidate, 0) + weight
            current[candidate] = value
            if best is None or value > bestWeight:
                best, bestWeight = candidate, value
        current[best] = bestWeight - total
        return best


@implementer(IBalancer)
class LeastConnections:
    """
    The candidate with the fewest open connections per unit of weight
    (C{active / weight}); among equals, smooth weighted round robin.
    """

    name = "leastconn"

    def __init__(self) -> None:
        self._tie = RoundRobin()

    def choose(self, candidates: Sequence[Any], clientKey: bytes | None) -> Any:
        """
        See L{IBalancer.choose}; C{clientKey} is not used.
        """
        best: list[Any] = []
        # Compare active/weight by cross-multiplying: exact, no floats.
        bestActive, bestWeight = 0, 1
        for candidate in candidates:
            active, weight = candidate.active, candidate.weight
            if not best:
                best = [candidate]
                bestActive, bestWeight = active, weight
                continue
            left, right = active * bestWeight, bestActive * weight
            if left < right:
                best = [candidate]
                bestActive, bestWeight = active, weight
            elif left == right:
                best.append(candidate)
        if len(best) == 1:
            return best[0]
        return self._tie.choose(best, clientKey)


def _unitHash(clientKey: bytes, memberKey: bytes) -> float:
    """
    A hash of C{(clientKey, memberKey)} as a float in the open interval
    (0, 1), uniform enough for rendezvous hashing.
    """
    digest = hashlib.blake2b(
        memberKey, key=clientKey[:64], digest_size=8, person=b"splicetx-src"
    ).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)


@implementer(IBalancer)
class SourceHash:
    """
    Weighted rendezvous hashing of the client's address.

    Each candidate scores M{-weight / ln(h)}, where M{h} in (0, 1) hashes the
    client key with the candidate's C{hashKey}; the highest score wins.  The
    score of a pair does not depend on the other members, so adding or
    removing a member only moves the clients whose best score it has or had,
    and a failover (the best candidate left out) lands on the client's
    second-best member, the same one every time.  A member of weight M{w}
    gets M{w / sum(weights)} of the clients.

    Clients without a key (C{clientKey} C{None}: UNIX sockets) are spread
    round robin.
    """

    name = "source"

    def __init__(self) -> None:
        self._noKey = RoundRobin()

    def choose(self, candidates: Sequence[Any], clientKey: bytes | None) -> Any:
        """
        See L{IBalancer.choose}.
        """
        if clientKey is None:
            return self._noKey.choose(candidates, None)
        best = None
        bestScore = -1.0
        for candidate in candidates:
            score = -candidate.weight / math.log(
                _unitHash(clientKey, candidate.hashKey)
            )
            if score > bestScore:
                best, bestScore = candidate, score
        return best


@implementer(IBalancer)
class WeightedRandom:
    """
    A random candidate, each with probability M{weight / sum(weights)}.
    """

    name = "random"

    def __init__(self, rng: _random.Random | None = None) -> None:
        """
        @param rng: the random source (a seeded C{random.Random} in tests);
            default a new C{random.Random}.
        """
        self._rng = rng if rng is not None else _random.Random()

    def choose(self, candidates: Sequence[Any], clientKey: bytes | None) -> Any:
        """
        See L{IBalancer.choose}; C{clientKey} is not used.
        """
        return self._rng.choices(
            list(candidates), weights=[c.weight for c in candidates]
        )[0]


#: The balancers by their CLI name; the first is the default.
BALANCERS: dict[str, type] = {
    RoundRobin.name: RoundRobin,
    LeastConnections.name: LeastConnections,
    SourceHash.name: SourceHash,
    WeightedRandom.name: WeightedRandom,
}


def makeBalancer(name: str) -> IBalancer:
    """
    A new balancer by its CLI name.

    @param name: one of L{BALANCERS} (C{roundrobin}, C{leastconn},
        C{source}, C{random}).
    @return: a fresh L{IBalancer}.
    @raise ValueError: for an unknown name (the message lists the known
        ones).
    """
    try:
        cls = BALANCERS[name]
    except KeyError:
        raise ValueError(
            f"unknown balance {name!r} (use one of: {', '.join(BALANCERS)})"
        ) from None
    balancer: IBalancer = cls()
    return balancer
