"""
splicetx: a Twisted-native, zero-copy TCP relay.

L{relay} pairs two connected transports; when both are plain sockets on Linux
the kernel moves the bytes with C{splice(2)}, otherwise a userspace copy with
the same guarantees runs.

L{SpliceProxyFactory} and L{SpliceProxyProtocol} build a proxy on it; the
factory takes an L{AccessControl} (C{acl=}) and a C{ProxyMetrics}
(C{metrics=}), and its protocol keeps the L{ProxyHeader} a load balancer
sent (C{proxyHeader}).  C{splicetx.ProxyMetrics} (documented in
L{splicetx._ops.metrics.ProxyMetrics}) needs the optional C{prometheus-client}
package (the C{metrics} extra: C{pip install '.[metrics]'} in the checkout,
C{pip install 'splicetx[metrics]'} after a release), so it is imported only when
first used and is left out of C{__all__}: C{from splicetx import *} works
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from splicetx._proxy.access import AccessControl
from splicetx._proxy.proxyheader import ProxyHeader
from splicetx._relay.contract import (
    CANCELLED,
    CLOSED,
    DONE,
    ERROR,
    RESET,
    RelayResult,
    RelayUsageError,
)
from splicetx._relay.pipes import DEFAULT_PIPE_SIZE, PipePool
from splicetx._relay.relay import Relay, relay
from splicetx._relay.runtime import __version__
from splicetx._relay.sendfile import (
    ZeroCopyFileSender,
    sendFile,
    sendFileUnavailableReason,
)
from splicetx._relay.tcpoptions import TCPKeepalive
from splicetx._relay.transports import spliceUnavailableReason
from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol

if TYPE_CHECKING:
    from splicetx._ops.metrics import ProxyMetrics as ProxyMetrics


__all__ = [
    "relay",
    "Relay",
    "RelayResult",
    "RelayUsageError",
    "PipePool",
    "DEFAULT_PIPE_SIZE",
    "spliceUnavailableReason",
    "sendFile",
    "sendFileUnavailableReason",
    "ZeroCopyFileSender",
    "SpliceProxyFactory",
    "SpliceProxyProtocol",
    "AccessControl",
    "ProxyHeader",
    "TCPKeepalive",
    "DONE",
    "RESET",
    "ERROR",
    "CANCELLED",
    "CLOSED",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """
    Import C{ProxyMetrics} (which needs C{prometheus-client}) when it is
    first asked for.

    @raise AttributeError: for any other unknown name.
    """
    if name == "ProxyMetrics":
        from splicetx._ops.metrics import ProxyMetrics

        globals()["ProxyMetrics"] = ProxyMetrics
        return ProxyMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
