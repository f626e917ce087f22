# -*- test-case-name: tests.test_poolmetrics -*-
"""
Prometheus metrics of upstream pools, read from the L{Upstream} objects at
each scrape (a custom collector: nothing is counted twice, and a pool costs
nothing between scrapes).

Per upstream, labelled C{forward} (the pool's name) and C{upstream} (its
description):

  - C{splicetx_upstream_up}: 1 when new connections may go to it (not
    marked down by the health checker nor skipped by passive health).
  - C{splicetx_upstream_healthy}: the active health state alone.
  - C{splicetx_upstream_active}: connections open now.
  - C{splicetx_upstream_connections_total}: connections made to it.
  - C{splicetx_upstream_failures_total}: failed connects, by
    C{reason} (C{refused}, C{timeout}, ...).
  - C{splicetx_upstream_weight}: its configured weight.
  - C{splicetx_upstream_bytes_total}: bytes relayed by finished
    connections to it, by C{direction} (C{client_to_upstream},
    C{upstream_to_client}), as C{splicetx_bytes_total} counts them.

Needs C{prometheus_client} (the C{metrics} extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from splicetx._pool.pool import IUpstreamPool

__all__ = ["PoolCollector"]


class PoolCollector:
    """
    A C{prometheus_client} collector of the members of some pools.
    """

    def __init__(
        self, pools: Iterable[IUpstreamPool] | Callable[[], Iterable[IUpstreamPool]]
    ) -> None:
        """
        @param pools: the pools, or a callable returning them at each scrape
            (when pools come and go with a configuration reload).
        """
        self._pools = pools

    def _current(self) -> list[IUpstreamPool]:
        pools = self._pools() if callable(self._pools) else self._pools
        return list(pools)

    def collect(self) -> Iterator[Any]:
        """
        The current values (called by the registry at each scrape).
        """
        labels = ["forward", "upstream"]
        up = GaugeMetricFamily(
            "splicetx_upstream_up",
            "1 when new connections may go to the upstream.",
            labels=labels,
        )
        healthy = GaugeMetricFamily(
            "splicetx_upstream_healthy",
            "The upstream's active health-check state (1 up, 0 down).",
            labels=labels,
        )
        active = GaugeMetricFamily(
            "splicetx_upstream_active",
            "Connections to the upstream open now.",
            labels=labels,
        )
        weight = GaugeMetricFamily(
            "splicetx_upstream_weight", "The upstream's weight.", labels=labels
        )
        connections = CounterMetricFamily(
            "splicetx_upstream_connections",
            "Connections made to the upstream.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "splicetx_upstream_failures",
            "Failed connects to the upstream, by reason.",
            labels=[*labels, "reason"],
        )
        bytesRelayed = CounterMetricFamily(
            "splicetx_upstream_bytes",
            "Bytes relayed by finished connections to the upstream.",
            labels=[*labels, "direction"],
        )
        for pool in self._current():
            passive = len(pool.members) > 1
            for member in pool.members:
                key = [pool.name, member.description]
                up.add_metric(key, 1.0 if member.available(passive) else 0.0)
                healthy.add_metric(key, 1.0 if member.healthy else 0.0)
                active.add_metric(key, float(member.active))
                weight.add_metric(key, float(member.weight))
                connections.add_metric(key, float(member.connections))
                for reason, count in sorted(member.failures.items()):
                    failures.add_metric([*key, reason], float(count))
                bytesRelayed.add_metric(
                    [*key, "client_to_upstream"], float(member.bytesToUpstream)
                )
                bytesRelayed.add_metric(
                    [*key, "upstream_to_client"], float(member.bytesFromUpstream)
                )
        yield from (up, healthy, active, weight, connections, failures, bytesRelayed)
