# -*- test-case-name: tests.test_poolproxy -*-
"""
Pools and SNI routing on top of L{SpliceProxyProtocol}'s public hooks: a
proxy balances, fails over and routes by server name with these, and
C{twist splice-proxy} uses L{PoolProxyFactory} for every forward with a
pool or SNI routes (see L{splicetx._app.poolservice}).  A plain
L{SpliceProxyFactory} whose C{chooseUpstream()} returns a pool or a pool
member works too: the protocol turns it into an endpoint with
L{asEndpoint <splicetx._pool.endpoints.asEndpoint>}.

  - L{PoolProxyProtocol} connects each client to the factory's C{pool},
    keyed by the client's address (the PROXY header's, when accepted), and
    releases the member when the connection ends.
  - L{SNIProxyProtocol} reads the TLS ClientHello first (bounded in size and
    time), picks the pool by the factory's C{router}, and delivers the
    ClientHello bytes before splicing the rest.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from splicetx._pool.addresses import describeEndpoint
from splicetx._pool.balance import clientKeyFor
from splicetx._pool.endpoints import PoolEndpoint, UpstreamEndpoint, asEndpoint
from splicetx._pool.pool import UpstreamPool
from splicetx._pool.sni import (
    DEFAULT_MAX_SIZE,
    ClientHelloReader,
    SNIRouter,
)
from splicetx._proxy.factory import SpliceProxyFactory
from splicetx._proxy.preamble import (
    NO_ROUTE,
    REJECTED,
    Refusal,
    helloTimedOut,
    readHello,
)
from splicetx._proxy.protocol import SpliceProxyProtocol

__all__ = [
    "PoolEndpoint",
    "UpstreamEndpoint",
    "asEndpoint",
    "PoolProxyProtocol",
    "SNIProxyProtocol",
    "PoolProxyFactory",
    "NO_ROUTE",
]


class PoolProxyProtocol(SpliceProxyProtocol):
    """
    Connects each client to a member of the factory's C{pool}.

    @ivar poolEndpoint: the L{PoolEndpoint} used, once chosen.
    """

    factory: PoolProxyFactory
    poolEndpoint: PoolEndpoint | UpstreamEndpoint | None = None

    def clientKey(self) -> bytes | None:
        """
        What C{source} balancing hashes: the client's address (the PROXY
        header's source, when one was accepted).
        """
        return clientKeyFor(self.clientAddress())

    def endpointFor(self, target: Any) -> Any:
        """
        The endpoint for a pool, a pool member or an endpoint (see
        L{asEndpoint}), remembered so that a member is released when the
        connection ends.
        """
        endpoint = asEndpoint(target, self.clientKey())
        if isinstance(endpoint, (PoolEndpoint, UpstreamEndpoint)):
            self.poolEndpoint = self._poolEndpoint = endpoint
        return endpoint

    def choosePool(self) -> Any:
        """
        Choose where this client goes: a pool, a pool member or an
        endpoint.  Override to choose by anything else about the client;
        the default is the factory's C{pool}.
        """
        pool = self.factory.pool
        if pool is None:
            raise ValueError("the factory has no pool")
        return pool

    def chooseUpstream(self) -> Any:
        """
        L{choosePool}'s choice, as an endpoint.
        """
        return self.endpointFor(self.choosePool())

    def relayFinished(self, result: Any) -> None:
        """
        Release the member, then log as usual.
        """
        if self.poolEndpoint is not None:
            self.poolEndpoint.release()
        super().relayFinished(result)


class SNIProxyProtocol(PoolProxyProtocol):
    """
    Routes by the server name of the client's TLS ClientHello.

    The factory gives C{router} (an L{SNIRouter} whose targets are pools),
    C{sniTimeout} and C{sniMaxSize}.  A ClientHello that is not TLS,
    malformed, oversized or too slow, or a name without a route (and no
    default pool), closes the connection; its log event says why (reason
    C{rejected}).
    """

    readsHandshake = True

    serverName: str | None = None
    _reader: ClientHelloReader | None = None
    _helloTimer: Any = None

    def connectionMade(self) -> None:
        """
        Start the ClientHello's clock, then go on as usual.
        """
        factory = self.factory
        self._reader = ClientHelloReader(factory.sniMaxSize)
        self._helloTimer = factory.reactor.callLater(
            factory.sniTimeout, self._helloTimedOut
        )
        super().connectionMade()

    def _stopTimer(self) -> None:
        timer, self._helloTimer = self._helloTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _refuseHello(self, refusal: Refusal) -> None:
        self._stopTimer()
        self._reader = None
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connectionRefused(refusal.metric, factory.forwardName)
        # Every ClientHello refusal resets (refusal.abort).
        self.abort(REJECTED, refusal.detail)

    def _helloTimedOut(self) -> None:
        self._helloTimer = None
        reader = self._reader
        if reader is None:
            return
        self._refuseHello(helloTimedOut(self.factory.sniTimeout, len(reader.buffered)))

    def handshakeReceived(self, data: bytes) -> None:
        """
        Feed the ClientHello reader; once the name is known, connect to its
        pool with the ClientHello bytes to go first.
        """
        reader = self._reader
        if reader is None:
            return
        hello, pool, refusal = readHello(reader, data, self.factory.router)
        if hello is not None:
            self.serverName = hello.serverName
        if refusal is not None:
            self._refuseHello(refusal)
            return
        if hello is None:
            return
        self._stopTimer()
        self._reader = None
        self.connectUpstream(self.endpointFor(pool), toUpstream=reader.buffered)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the ClientHello's clock, then go on as usual.
        """
        self._stopTimer()
        self._reader = None
        super().connectionLost(reason)


#: The protocols a L{PoolProxyFactory} sets itself.
_OWN_PROTOCOLS = (SpliceProxyProtocol, PoolProxyProtocol, SNIProxyProtocol)


class PoolProxyFactory(SpliceProxyFactory):
    """
    A L{SpliceProxyFactory} whose clients go to a pool, or (with C{router})
    to the pool their TLS server name routes to.

    @ivar pool: the L{UpstreamPool} (with a router: the pool for unmatched
        names, or C{None} to refuse them).
    @ivar router: an L{SNIRouter} of pools, or C{None} (no SNI routing).
    @ivar sniTimeout: seconds a client has to send its ClientHello.
    @ivar sniMaxSize: the longest ClientHello accepted.
    """

    #: Clients may take the fast path to the pool, or to their SNI route's.
    _fastProtocol: type = PoolProxyProtocol

    def __init__(
        self,
        pool: UpstreamPool | None = None,
        router: SNIRouter | None = None,
        sniTimeout: float = 5.0,
        sniMaxSize: int = DEFAULT_MAX_SIZE,
        **kwargs: Any,
    ) -> None:
        """
        @param pool: see the instance variable.
        @param router: see the instance variable; its C{default} is set to
            C{pool} when it has none.
        @param sniTimeout: see the instance variable.
        @param sniMaxSize: see the instance variable.
        @param kwargs: passed to L{SpliceProxyFactory}.
        @raise ValueError: without a pool or a router.
        """
        if pool is None and router is None:
            raise ValueError("a PoolProxyFactory needs a pool or a router")
        super().__init__(None, **kwargs)
        self._usePools(pool, router, sniTimeout, sniMaxSize)

    def replacePools(self, pools: Any) -> None:
        """
        Serve new connections from another forward's L{ForwardPools
        <splicetx._app.poolservice.ForwardPools>} (a reload); live connections
        keep the member they have.

        @param pools: the new pools, SNI router and timeouts.
        """
        self._usePools(pools.pool, pools.router, pools.sniTimeout, pools.sniMaxSize)

    def _usePools(
        self, pool: Any, router: Any, sniTimeout: float, sniMaxSize: int
    ) -> None:
        if pool is None and router is None:
            raise ValueError("a PoolProxyFactory needs a pool or a router")
        self.pool = pool
        self.router = router
        if router is not None and router.default is None:
            router.default = pool
        self.sniTimeout = float(sniTimeout)
        self.sniMaxSize = sniMaxSize
        if self.protocol in _OWN_PROTOCOLS:
            # Unless given one of another kind (twist splice-proxy --protocol).
            own = SNIProxyProtocol if router is not None else PoolProxyProtocol
            self.protocol = own
            # The lean path reads the ClientHello itself: either is ours.
            self._fastProtocol = own
        if pool is not None:
            # What the service's "started" line and the status page name.
            self.upstream = pool
        pools: list[Any] = [pool] if pool is not None else []
        if router is not None:
            for target in router.targets():
                if target is not None and all(target is not p for p in pools):
                    pools.append(target)
        self.pools = pools

    def _fastPool(self) -> Any:
        """
        The pool the fast path connects to (with SNI routes: the pool of
        names no route matches, or C{None}).
        """
        return self.pool

    @classmethod
    def forPools(cls, pools: Any, *args: Any, **kwargs: Any) -> PoolProxyFactory:
        """
        The factory of a forward's L{ForwardPools
        <splicetx._app.poolservice.ForwardPools>}: its C{--connect} pool, its
        SNI router and timeouts; the other keywords as for
        L{SpliceProxyFactory}.
        """
        return cls(
            pools.pool,
            pools.router,
            sniTimeout=pools.sniTimeout,
            sniMaxSize=pools.sniMaxSize,
            **kwargs,
        )

    def describeUpstream(self) -> str:
        """
        Where clients go: the pool's members and balancing, and with SNI
        routes each route as C{--route-sni} writes it, e.g.
        C{"by server name: www.example.com=10.0.1.1:443 (roundrobin); other
        names: 10.0.0.1:443 (roundrobin)"}.
        """
        pool = describeEndpoint(self.pool) if self.pool is not None else None
        router = self.router
        if router is None:
            return pool or "(none)"
        routes = "; ".join(
            f"{pattern}={describeEndpoint(target)}"
            for pattern, target in router.routes()
        )
        return f"by server name: {routes}; other names: {pool or 'refused'}"

    def upstreamStatus(self) -> list[dict[str, Any]]:
        """
        Every member of every pool, for the status page: C{name}, C{pool},
        C{health} (C{"up"}; C{"degraded"} while passive health skips it;
        C{"down"} when a health check took it out), C{live}, C{total}
        (connections made), C{failures} (failed connects by reason) and
        C{bytes} (by finished connections, by direction).
        """
        rows = []
        for pool in self.pools:
            for member in pool.members:
                if not member.healthy:
                    health = "down"
                elif member.failedUntil is not None and len(pool.members) > 1:
                    health = "degraded"
                else:
                    health = "up"
                rows.append(
                    {
                        "name": member.description,
                        "pool": pool.name,
                        "health": health,
                        "live": member.active,
                        "total": member.connections,
                        "failures": dict(member.failures),
                        "bytes": {
                            "client_to_upstream": member.bytesToUpstream,
                            "upstream_to_client": member.bytesFromUpstream,
                        },
                    }
                )
        return rows
