# -*- test-case-name: tests.test_poolproxy -*-
"""
Pools as client endpoints: L{PoolEndpoint} is an C{IStreamClientEndpoint}
over an L{UpstreamPool}, whose C{connect} is L{UpstreamPool.connect} for one
client, so anything that takes an endpoint (a proxy's C{chooseUpstream},
C{connectUpstream}) can take a pool, and the connected transport is still the
member's own socket -- the relay still splices.  L{UpstreamEndpoint} does the
same for one member, and L{asEndpoint} turns whatever C{chooseUpstream()}
returned into an endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._pool.pool import (
    IUpstreamPool,
    Upstream,
    failureReason,
)

__all__ = ["PoolEndpoint", "UpstreamEndpoint", "asEndpoint"]


@implementer(IStreamClientEndpoint)
class PoolEndpoint:
    """
    One client's way into an L{UpstreamPool}, as an endpoint.

    @ivar pool: the pool.
    @ivar clientKey: what the balancer hashes (see L{clientKeyFor}).
    @ivar upstream: the member connected to, once connected, else C{None}.
    @ivar onTryFailed: called with the member and the failure of every
        failed try, also when a later try succeeds (see
        L{IUpstreamPool.connect}); the proxy sets it to count each try in
        its metrics.  C{None}: not called.
    """

    onTryFailed: Callable[[Upstream, Failure], None] | None = None

    def __init__(self, pool: IUpstreamPool, clientKey: bytes | None = None) -> None:
        self.pool = pool
        self.clientKey = clientKey
        self.upstream: Upstream | None = None

    @property
    def poolName(self) -> str:
        """
        The pool's name (the C{pool} field of the connection's log event).
        """
        return str(self.pool.name)

    @property
    def connectTimeout(self) -> float | None:
        """
        The proxy's own bound on the whole connect: C{0} (none) when the pool
        bounds its tries itself (a per-try timeout, the C{--connect-timeout},
        or a failover timeout), so that the factory's C{connectTimeout} does
        not cut a failover short; else C{None}: the factory's applies.
        """
        pool = self.pool
        if getattr(pool, "tryTimeout", None) or getattr(pool, "totalTimeout", None):
            return 0.0
        return None

    def __repr__(self) -> str:
        if self.upstream is not None:
            return f"{self.upstream.description} (pool {self.pool.name})"
        return f"pool {self.pool.name}"

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """
        Connect through the pool, failing over between its members.

        @param protocolFactory: the factory for the upstream protocol.
        @return: a L{Deferred} firing with the protocol, or failing with
            L{NoUpstreamAvailable <splicetx._pool.pool.NoUpstreamAvailable>}.
        """
        if self.onTryFailed is None:
            d = self.pool.connect(protocolFactory, self.clientKey)
        else:
            d = self.pool.connect(
                protocolFactory, self.clientKey, onTryFailed=self.onTryFailed
            )

        def connected(result: tuple[Upstream, Any]) -> Any:
            self.upstream, proto = result
            return proto

        return d.addCallback(connected)

    def release(self) -> None:
        """
        The connection through this endpoint has ended: count it closed on
        its member.
        """
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.release()


@implementer(IStreamClientEndpoint)
class UpstreamEndpoint:
    """
    One pool member, as an endpoint that keeps the member's books: its
    connects count for passive health and its connection as active.

    @ivar upstream: the member.
    @ivar connected: whether a connect through it succeeded (and not yet
        L{released<release>}).
    """

    #: The member does not know its pool.
    poolName = None
    #: The factory's C{connectTimeout} applies.
    connectTimeout = None

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.connected = False

    def __repr__(self) -> str:
        return self.upstream.description

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """
        Connect to the member's endpoint, recording the outcome on it.

        @param protocolFactory: the factory for the upstream protocol.
        @return: the endpoint's L{Deferred}.
        """
        upstream = self.upstream

        def succeeded(proto: Any) -> Any:
            upstream.connectSucceeded()
            upstream.acquire()
            self.connected = True
            return proto

        def failed(reason: Failure) -> Failure:
            upstream.connectFailed(failureReason(reason))
            return reason

        d: Deferred[Any] = upstream.endpoint.connect(protocolFactory)
        return d.addCallbacks(succeeded, failed)

    def release(self) -> None:
        """
        The connection has ended: count it closed on the member.
        """
        if self.connected:
            self.connected = False
            self.upstream.release()


def asEndpoint(target: Any, clientKey: bytes | None = None) -> Any:
    """
    What the proxy connects to for a C{chooseUpstream()} result: an
    L{IUpstreamPool} becomes its L{PoolEndpoint} for this client, an
    L{Upstream} its L{UpstreamEndpoint}, anything else (an endpoint) is
    returned as it is.

    @param target: an endpoint, a pool or a pool member.
    @param clientKey: see L{clientKeyFor}.
    @return: an C{IStreamClientEndpoint}; those made here have a
        C{release()} to call when the connection ends.
    """
    if IUpstreamPool.providedBy(target):
        return PoolEndpoint(target, clientKey)
    if isinstance(target, Upstream):
        return UpstreamEndpoint(target)
    return target
