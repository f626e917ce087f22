# -*- test-case-name: tests.test_pool_cli -*-
"""
The running pools of one forward of C{twist splice-proxy}: built from the
forward's L{PoolSpec}s when the service starts, with their health checkers
(started and stopped with the service) and SNI router.

L{SpliceProxyService <splicetx._app.service.SpliceProxyService>} makes one
L{ForwardPools} per forward that has a pool or SNI routes and hands it to
L{buildFactory <splicetx._app.service.SpliceProxyService.buildFactory>} as the
forward's upstream, which makes a L{PoolProxyFactory} from it
(L{PoolProxyFactory.forPools}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splicetx._config.model import Forward
from splicetx._config.pools import buildHealthChecker, buildPool, buildRouter
from splicetx._pool.health import HealthChecker
from splicetx._pool.pool import UpstreamPool
from splicetx._pool.sni import SNIRouter

__all__ = ["ForwardPools", "hasPools"]


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
