# -*- test-case-name: tests.test_udp -*-
"""
The upstreams of a UDP forward and the choice of one for each new session.

A forward with one C{--connect} has one L{UDPUpstream}; a pool has several,
and its balancer (L{splicetx._pool.balance}) picks one per session, by
default C{source}: a hash of the client's IP address, so a client keeps its
upstream from session to session while the pool is unchanged (what a DNS
resolver's cache, a game server's state or a WireGuard peer wants).
Members are duck-typed as the balancers expect: C{weight}, C{active}
(live sessions) and C{hashKey}.

A member written with a host name is resolved once, without blocking, when
the forward starts (and again when a reload gives the forward new
upstreams); until its address is known it is not chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from splicetx._pool.balance import IBalancer, clientKeyFor, makeBalancer
from splicetx._relay.runtime import LOG_PROXY
from splicetx._udp.endpoints import UDPClientEndpoint, isIPLiteral

__all__ = ["UDPUpstream", "UDPUpstreams"]

_log = Logger(namespace=LOG_PROXY)


class UDPUpstream:
    """
    One upstream of a UDP forward.

    @ivar endpoint: its L{UDPClientEndpoint}.
    @ivar weight: its share for the balancer (an C{int} >= 1).
    @ivar name: how logs, metrics and the status page name it.
    @ivar address: its resolved C{(ip, port)}, or C{None} until known.
    @ivar active: its live sessions.
    @ivar total: the sessions it was given.
    @ivar hashKey: what L{SourceHash <splicetx.pools.SourceHash>} hashes it
        by.
    """

    def __init__(self, endpoint: UDPClientEndpoint, weight: int = 1) -> None:
        """
        @param endpoint: see L{endpoint}.
        @param weight: see L{weight}.
        """
        self.endpoint = endpoint
        self.weight = weight
        self.name = str(endpoint)
        self.hashKey = self.name.encode("utf-8")
        self.address: tuple[str, int] | None = None
        if isIPLiteral(endpoint.host):
            self.address = (endpoint.host, endpoint.port)
        self.active = 0
        self.total = 0

    def resolve(self) -> None:
        """
        Look the host name up (nothing to do for an address).
        """
        if self.address is not None:
            return

        def resolved(ip: str) -> None:
            self.address = (ip, self.endpoint.port)

        def failed(reason: Any) -> None:
            _log.warn(
                "cannot resolve the UDP upstream {upstream}: {error}",
                splicetxEvent="udp-resolve-failed",
                upstream=self.name,
                error=str(reason.value),
            )

        self.endpoint.resolve().addCallbacks(resolved, failed)


class UDPUpstreams:
    """
    The upstreams of one UDP forward and their balancer.

    @ivar members: the L{UDPUpstream}s, in the order written.
    @ivar balancer: the L{IBalancer} that picks one per session.
    """

    def __init__(self, members: Sequence[UDPUpstream], balance: str = "source") -> None:
        """
        @param members: one or more upstreams.
        @param balance: a balancer name (L{splicetx.pools.BALANCERS}).
        """
        if not members:
            raise ValueError("a UDP forward needs at least one upstream")
        self.members = list(members)
        self.balancer: IBalancer = makeBalancer(balance)

    def start(self) -> None:
        """
        Resolve the members written with host names.
        """
        for member in self.members:
            member.resolve()

    def choose(self, clientHost: str) -> UDPUpstream | None:
        """
        The upstream for a new session of this client.

        @param clientHost: the client's IP address.
        @return: a member whose address is known, or C{None} when none is.
        """
        members = self.members
        if len(members) == 1:
            only = members[0]
            return only if only.address is not None else None
        ready = [m for m in members if m.address is not None]
        if not ready:
            return None
        chosen: UDPUpstream = self.balancer.choose(ready, clientKeyFor(clientHost))
        return chosen

    def __repr__(self) -> str:
        return ", ".join(m.name for m in self.members)
