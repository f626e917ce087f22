# -*- test-case-name: tests.test_metrics -*-
"""
The process's own Prometheus series, next to the traffic ones of
L{splicetx._ops.metrics}: what a dashboard and alerts need to tell a
restart, a drain or a crashing worker, read from the status source (a
L{ServiceStatus <splicetx._ops.status.ServiceStatus>} or the supervisor's)
at each scrape:

  - C{splicetx_info{version}}: always 1; joins C{process_*} series to
    splicetx targets in rules (C{... and on (instance, job) splicetx_info}).
  - C{splicetx_draining}: 1 from the moment a drain (SIGTERM/SIGINT)
    begins, as C{/healthz} turns 503; else 0.
  - C{splicetx_worker_starts_total{worker}}: with C{--workers}, how many
    times each worker slot was started (more than 1 after a restart).
  - C{prometheus_client}'s C{process_*} series of the serving process (the
    supervisor's with C{--workers}): C{process_start_time_seconds},
    C{process_open_fds}, C{process_max_fds}, CPU and memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from splicetx._relay.runtime import __version__

__all__ = ["StatusCollector", "registerProcessMetrics"]


class StatusCollector:
    """
    A C{prometheus_client} collector of a status source's process figures.

    @ivar status: what is read: its C{isServing()} and, when it has one,
        C{workerStarts()} (C{{slot: starts}}).
    """

    def __init__(self, status: Any) -> None:
        """
        @param status: see L{status}.
        """
        self.status = status

    def collect(self) -> Iterator[Any]:
        """
        The current values (called by the registry at each scrape).
        """
        info = GaugeMetricFamily(
            "splicetx_info", "splicetx is serving; its version.", labels=["version"]
        )
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily(
            "splicetx_draining",
            "1 once a drain has begun (/healthz answers 503), else 0.",
            value=0.0 if self.status.isServing() else 1.0,
        )
        workerStarts = getattr(self.status, "workerStarts", None)
        if callable(workerStarts):
            starts = CounterMetricFamily(
                "splicetx_worker_starts",
                "Times each worker slot was started (--workers).",
                labels=["worker"],
            )
            for slot, count in sorted(workerStarts().items()):
                starts.add_metric([str(slot)], float(count))
            yield starts


def registerProcessMetrics(registry: Any, status: Any) -> None:
    """
    Add the process's series (see the module docstring) to the registry an
    endpoint serves.

    @param registry: the C{CollectorRegistry} of C{/metrics}.
    @param status: the endpoint's status source.
    """
    registry.register(StatusCollector(status))
    ProcessCollector(registry=registry)
