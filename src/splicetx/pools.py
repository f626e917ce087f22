"""
Upstream pools for splicetx proxies: balancing over several upstreams,
passive and active health, failover on connect, and routing TLS by server
name without terminating it.  See C{docs/pools.md}.

The names here are the public face of L{splicetx._pool.pool},
L{splicetx._pool.balance}, L{splicetx._pool.health}, L{splicetx._pool.sni} and
L{splicetx._pool.endpoints} and L{splicetx._proxy.poolproxy}.
"""

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
from splicetx._pool.endpoints import PoolEndpoint, UpstreamEndpoint, asEndpoint
from splicetx._pool.health import HealthChecker, IHealthChecker
from splicetx._pool.pool import (
    IUpstreamPool,
    NoUpstreamAvailable,
    Upstream,
    UpstreamPool,
)
from splicetx._pool.sni import (
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    SNIRouter,
)
from splicetx._proxy.poolproxy import (
    PoolProxyFactory,
    PoolProxyProtocol,
    SNIProxyProtocol,
)

__all__ = [
    "Upstream",
    "UpstreamPool",
    "IUpstreamPool",
    "NoUpstreamAvailable",
    "IBalancer",
    "BALANCERS",
    "makeBalancer",
    "clientKeyFor",
    "RoundRobin",
    "LeastConnections",
    "SourceHash",
    "WeightedRandom",
    "HealthChecker",
    "IHealthChecker",
    "ClientHello",
    "ClientHelloError",
    "ClientHelloReader",
    "SNIRouter",
    "PoolEndpoint",
    "UpstreamEndpoint",
    "asEndpoint",
    "PoolProxyFactory",
    "PoolProxyProtocol",
    "SNIProxyProtocol",
]
