"""
The seams between a proxied connection and what records it: the metrics a
L{SpliceProxyFactory <splicetx.proxy.SpliceProxyFactory>} counts into
(L{IProxyMetrics}) and the access log it writes each finished connection to
(L{IAccessLog}).

The proxy layer names only these interfaces; the implementations
(C{prometheus-client} metrics, the access-log file) live above it, in
L{splicetx._ops}, and a test double provides the same methods.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Interface

__all__ = ["IProxyMetrics", "IAccessLog"]


class IProxyMetrics(Interface):
    """
    Counters of a proxy's connections, labelled by forward.
    """

    def connectionOpened(forward: str = "default") -> None:
        """
        Count an accepted client connection and mark it active.
        """

    def connectionClosed(forward: str = "default") -> None:
        """
        Mark a client connection counted by L{connectionOpened} as gone.
        """

    def connectionRefused(reason: str, forward: str = "default") -> None:
        """
        Count a client closed before any upstream connection, by a short
        bounded C{reason} label.
        """

    def connectFailed(failure: Any, forward: str = "default") -> str:
        """
        Count a failed upstream connection and return the reason label used.
        """

    def relayFinished(
        result: Any, forward: str = "default", clientIsA: bool = True
    ) -> None:
        """
        Record a finished relay (its L{splicetx.RelayResult}); C{clientIsA}
        says whether the client was the relay's side A.
        """


class IAccessLog(Interface):
    """
    Where a proxy's per-connection records go, one per finished connection.
    """

    def connection(
        warn: bool,
        client: str,
        upstream: str,
        engine: str,
        bytesClientToUpstream: int,
        bytesUpstreamToClient: int,
        duration: float,
        reason: str,
        detail: str,
        fallbackReason: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """
        Record one finished connection: who, to where, by which engine, how
        many bytes each way, for how long, and how it ended (C{warn} for a
        connection that did not end normally); C{extra} holds more fields
        for the JSON form.
        """
