"""
Upstream pools for splicetx proxies: balancing over several upstreams,
passive and active health, failover on connect, and routing TLS by server
name without terminating it.  See C{docs/pools.md}.

The names here are the public face of L{splicetx._pool},
L{splicetx._balance}, L{splicetx._health}, L{splicetx._sni} and
L{splicetx._poolproxy}.
"""

from splicetx._balance import (
    BALANCERS,
    IBalancer,
    LeastConnections,
    RoundRobin,
    SourceHash,
    WeightedRandom,
    clientKeyFor,
    makeBalancer,
)
from splicetx._health import HealthChecker, IHealthChecker
from splicetx._pool import (
    IUpstreamPool,
    NoUpstreamAvailable,
    Upstream,
    UpstreamPool,
)
from splicetx._poolproxy import (
    PoolEndpoint,
    PoolProxyFactory,
    PoolProxyProtocol,
    SNIProxyProtocol,
    UpstreamEndpoint,
    asEndpoint,
)
from splicetx._sni import (
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    SNIRouter,
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
