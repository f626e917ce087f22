"""
Tests for L{splicetx._ops.poolmetrics}: the per-upstream metrics at a scrape.
"""

from __future__ import annotations

import unittest

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from splicetx._pool.pool import Upstream, UpstreamPool

try:
    from prometheus_client import CollectorRegistry, generate_latest
except ImportError:  # pragma: no cover
    CollectorRegistry = None


class PoolCollectorTests(SynchronousTestCase):
    """
    L{PoolCollector} reports each member's state and counters.
    """

    def setUp(self) -> None:
        if CollectorRegistry is None:
            raise unittest.SkipTest("prometheus_client is not installed")

    def test_scrape(self) -> None:
        """
        A scrape shows up/healthy, active, connections, failures by reason
        and bytes by direction for every member, and follows later changes.
        """
        from splicetx._ops.poolmetrics import PoolCollector

        clock = Clock()
        a = Upstream(object(), "10.0.0.1:80", weight=2, clock=clock)
        b = Upstream(object(), "10.0.0.2:80", clock=clock)
        pool = UpstreamPool([a, b], name="web", reactor=clock)
        registry = CollectorRegistry()
        registry.register(PoolCollector([pool]))
        a.connectSucceeded()
        a.acquire()
        b.connectFailed("refused")
        b.healthy = False
        a.relayed(300, 7)
        text = generate_latest(registry).decode()
        for line in [
            'splicetx_upstream_up{forward="web",upstream="10.0.0.1:80"} 1.0',
            'splicetx_upstream_up{forward="web",upstream="10.0.0.2:80"} 0.0',
            'splicetx_upstream_healthy{forward="web",upstream="10.0.0.2:80"} 0.0',
            'splicetx_upstream_active{forward="web",upstream="10.0.0.1:80"} 1.0',
            'splicetx_upstream_weight{forward="web",upstream="10.0.0.1:80"} 2.0',
            'splicetx_upstream_connections_total{forward="web",'
            'upstream="10.0.0.1:80"} 1.0',
            'splicetx_upstream_failures_total{forward="web",reason="refused",'
            'upstream="10.0.0.2:80"} 1.0',
            'splicetx_upstream_bytes_total{direction="client_to_upstream",'
            'forward="web",upstream="10.0.0.1:80"} 300.0',
            'splicetx_upstream_bytes_total{direction="upstream_to_client",'
            'forward="web",upstream="10.0.0.1:80"} 7.0',
        ]:
            self.assertIn(line, text)
        b.healthy = True
        clock.advance(10)
        text = generate_latest(registry).decode()
        self.assertIn(
            'splicetx_upstream_up{forward="web",upstream="10.0.0.2:80"} 1.0', text
        )
