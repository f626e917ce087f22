# -*- test-case-name: tests.test_ops_cli -*-
"""
What a start opens, for one process and for the C{--workers} supervisor
alike: a listening endpoint that must open at once or end the start with
one line (L{listenNow}), and the C{--metrics} endpoint with its process
series, status page and access rules (L{serveMetrics}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._config.endpoints import explainEndpointError
from splicetx._config.limits import metricsAccess
from splicetx._config.model import ProxyConfig
from splicetx._pool.addresses import describeAddress
from splicetx._relay.runtime import LOG_PROXY

__all__ = ["listenNow", "logMetricsPort", "serveMetrics"]

_log = Logger(namespace=LOG_PROXY)


def listenNow(start: Any, description: str, option: str | None = None) -> Any:
    """
    Call C{start()} (returning a C{Deferred} of a port) and return the port
    if it fired at once.

    @param description: the endpoint string, for the message.
    @param option: the option that named it when it is not a C{--listen}
        (C{"--metrics"}), so the message says which endpoint failed.
    @raise SystemExit: with one line when it failed.
    """
    try:
        d = start()
    except Exception:
        d = Deferred()
        d.errback()
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    if outcome and isinstance(outcome[0], Failure):
        why = explainEndpointError(outcome[0].value)
        if option is not None:
            raise SystemExit(
                f"splice-proxy: error: {option} {description}: cannot listen: {why}"
            )
        raise SystemExit(f"splice-proxy: error: cannot listen on {description}: {why}")
    return outcome[0] if outcome else None


def logMetricsPort(port: Any, description: str) -> None:
    """
    Log where the metrics are served (nothing for C{None}: not yet).
    """
    if port is None:
        return
    address = port.getHost()
    _log.info(
        "metrics on {address} ({description})",
        splicetxEvent="metrics",
        address=describeAddress(address),
        port=getattr(address, "port", None),
        description=description,
    )


def serveMetrics(
    description: str, registry: Any, status: Any, reactor: Any, config: ProxyConfig
) -> Any:
    """
    Serve C{--metrics}: C{registry}'s series with the process series, the
    status page of C{status}, C{/healthz}, behind C{--metrics-allow}; log
    where.  One process and the C{--workers} supervisor both serve it so.

    @return: the listening port.
    @raise SystemExit: with one line when it cannot listen.
    """
    from splicetx._ops import metrics as _metrics
    from splicetx._ops import status as _status
    from splicetx._ops.processmetrics import registerProcessMetrics

    registerProcessMetrics(registry, status)
    port = listenNow(
        lambda: _metrics.startMetricsEndpoint(
            description,
            registry,
            reactor,
            children=_status.statusResources(status),
            access=metricsAccess(config),
        ),
        description,
        "--metrics",
    )
    logMetricsPort(port, description)
    return port
