# -*- test-case-name: tests.test_pool_cli -*-
"""
The running pools of one forward of C{twist splice-proxy}: built from the
forward's L{PoolSpec}s when the service starts, with their health checkers
(started and stopped with the service) and SNI router.

L{SpliceProxyService <splicetx._app.service.SpliceProxyService>} makes one
L{ForwardPools} per forward that has a pool or SNI routes and hands it to
L{buildFactory <splicetx._app.service.SpliceProxyService.buildFactory>} as the
forward's upstream, which makes a L{PoolProxyFactory} from it
(L{PoolProxyFactory.forPools}).  The builders (L{buildPool},
L{buildHealthChecker}, L{buildRouter}) make the running objects from the
configuration's values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from splicetx._config.model import Forward, HealthCheckSpec, PoolSpec
from splicetx._pool.balance import makeBalancer
from splicetx._pool.health import HealthChecker
from splicetx._pool.pool import Upstream, UpstreamPool
from splicetx._pool.sni import SNIRouter

__all__ = ["ForwardPools", "hasPools", "buildPool", "buildHealthChecker", "buildRouter"]


def buildPool(
    spec: PoolSpec,
    makeEndpoint: Callable[[str], Any],
    name: str = "default",
    tryTimeout: float | None = None,
    reactor: Any = None,
) -> UpstreamPool:
    """
    Make the L{UpstreamPool} a L{PoolSpec} describes.

    @param spec: the pool as written.
    @param makeEndpoint: turns an endpoint string into an
        C{IStreamClientEndpoint} (e.g. C{lambda s: clientFromString(reactor,
        s)}); its exceptions propagate.
    @param name: the pool's (forward's) name.
    @param tryTimeout: seconds per connect (the C{--connect-timeout}).
    @param reactor: for the pool's timeouts and the members' clocks.
    @return: the pool; members are described by their endpoint strings.
    """
    members = [
        Upstream(
            makeEndpoint(u.endpoint),
            description=u.endpoint,
            weight=u.weight,
            maxFails=spec.maxFails if u.maxFails is None else u.maxFails,
            failTimeout=spec.failTimeout if u.failTimeout is None else u.failTimeout,
            clock=reactor,
        )
        for u in spec.upstreams
    ]
    return UpstreamPool(
        members,
        makeBalancer(spec.balance),
        name=name,
        maxTries=spec.maxTries,
        tryTimeout=tryTimeout,
        totalTimeout=spec.failoverTimeout,
        reactor=reactor,
    )


def buildHealthChecker(
    pool: UpstreamPool,
    spec: HealthCheckSpec,
    reactor: Any = None,
    stateChanged: Callable[[Upstream, bool, str | None], None] | None = None,
) -> HealthChecker:
    """
    Make the (not yet started) L{HealthChecker} of a pool.

    @param pool: the pool whose members it probes.
    @param spec: the checks as written.
    @param reactor: see L{HealthChecker}.
    @param stateChanged: see L{HealthChecker}.
    @return: the checker; call C{start()} when the service starts.
    """
    return HealthChecker(
        pool.members,
        interval=spec.interval,
        timeout=spec.timeout,
        rise=spec.rise,
        fall=spec.fall,
        send=spec.send,
        expect=spec.expect,
        reactor=reactor,
        poolName=pool.name,
        stateChanged=stateChanged,
    )


def buildRouter(
    routes: Iterable[tuple[str, UpstreamPool]], default: UpstreamPool | None
) -> SNIRouter:
    """
    Make an L{SNIRouter} whose targets are pools.

    @param routes: C{(pattern, pool)} pairs.
    @param default: the pool for unmatched names (the C{connect} pool), or
        C{None} to refuse them.
    @return: the router.
    @raise ValueError: for a bad or repeated pattern.
    """
    return SNIRouter(list(routes), default=default)


def hasPools(forward: Forward) -> bool:
    """
    Whether a forward needs L{ForwardPools} (a pool or SNI routes); a
    forward with one plain upstream does not.
    """
    return forward.pool is not None or bool(forward.routes)


class ForwardPools:
    """
    The pools of one forward.

    @ivar name: the forward's name (the pools' names start with it).
    @ivar pool: the C{--connect} pool, or C{None} (only SNI routes).
    @ivar routes: C{(pattern, pool)} per SNI route.
    @ivar router: the L{SNIRouter}, or C{None} without routes.
    @ivar checkers: the health checkers (not started by L{__init__}).
    @ivar sniTimeout: see L{Forward.sniTimeout}.
    @ivar sniMaxSize: see L{Forward.sniMaxSize}.
    """

    def __init__(
        self,
        forward: Forward,
        name: str,
        makeEndpoint: Callable[[str], Any],
        connectTimeout: float,
        reactor: Any,
    ) -> None:
        """
        @param forward: a forward with a pool or routes.
        @param name: its name in logs and metrics.
        @param makeEndpoint: turns an endpoint string into a client endpoint.
        @param connectTimeout: seconds per connect (C{--connect-timeout}).
        @param reactor: the reactor.
        """
        self.name = name
        self.sniTimeout = forward.sniTimeout
        self.sniMaxSize = forward.sniMaxSize
        self.checkers: list[HealthChecker] = []
        self._running = False

        def build(spec: Any, poolName: str) -> UpstreamPool:
            pool = buildPool(
                spec,
                makeEndpoint,
                name=poolName,
                tryTimeout=connectTimeout or None,
                reactor=reactor,
            )
            if spec.healthCheck is not None:
                self.checkers.append(
                    buildHealthChecker(pool, spec.healthCheck, reactor=reactor)
                )
            return pool

        self.pool = build(forward.pool, name) if forward.pool is not None else None
        self.routes = [
            (pattern, build(spec, f"{name} {pattern}"))
            for pattern, spec in forward.routes
        ]
        self.router: SNIRouter | None = (
            buildRouter(self.routes, self.pool) if self.routes else None
        )

    @property
    def pools(self) -> list[UpstreamPool]:
        """
        Every pool: the C{--connect} pool first, then the routes'.
        """
        head = [self.pool] if self.pool is not None else []
        return head + [p for _, p in self.routes]

    def start(self) -> None:
        """
        Start the health checkers (once).
        """
        if self._running:
            return
        self._running = True
        for checker in self.checkers:
            checker.start()

    def stop(self) -> None:
        """
        Stop the health checkers.
        """
        self._running = False
        for checker in self.checkers:
            checker.stop()
