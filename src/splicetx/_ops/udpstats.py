# -*- test-case-name: tests.test_udp_ops -*-
"""
What operators see of UDP forwards: their Prometheus series and their row
on the status page.

L{UDPCollector} reads every UDP forward's figures when the registry is
scraped (the per-datagram path increments a session's own counters only,
see L{splicetx._udp.forwarder}); it is registered by the service when it
serves metrics.  Series (prefixed C{splicetx_udp_}, labelled by
C{forward}):

  - C{datagrams_total{forward,direction}} and
    C{bytes_total{forward,direction}}: relayed, C{direction}
    C{client_to_upstream} or C{upstream_to_client};
  - C{sessions_total{forward}}: sessions opened;
  - C{sessions_active{forward}}: live sessions, and
    C{sessions_max{forward}}: the cap;
  - C{drops_total{forward,reason}}: datagrams dropped, by reason (C{acl},
    C{session_limit}, C{draining}, C{no_upstream}, C{socket_error},
    C{send_error}).

L{udpListenerStatus} is the status page's listener row of one UDP forward:
the same fields as a TCP listener's (C{live} sessions, C{total},
C{refused} by drop reason, C{bytes} under the engine C{udp}) plus
C{protocol} and C{datagrams}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["UDPCollector", "udpListenerStatus", "isUDPForwarder"]

CLIENT_TO_UPSTREAM = "client_to_upstream"
UPSTREAM_TO_CLIENT = "upstream_to_client"


def isUDPForwarder(factory: Any) -> bool:
    """
    Whether a forward's factory is a UDP forwarder.
    """
    return getattr(factory, "protocolName", None) == "udp"


class UDPCollector:
    """
    The C{splicetx_udp_*} series of some UDP forwarders, read at scrape
    time.
    """

    def __init__(self, forwarders: Callable[[], Iterable[Any]]) -> None:
        """
        @param forwarders: returns the live
            L{UDPForwarder <splicetx._udp.forwarder.UDPForwarder>}s (read on
            each scrape, so a reload's forwards appear).
        """
        self.forwarders = forwarders

    def collect(self) -> Any:
        """
        Yield the metric families.
        """
        datagrams = CounterMetricFamily(
            "splicetx_udp_datagrams",
            "UDP datagrams relayed.",
            labels=["forward", "direction"],
        )
        octets = CounterMetricFamily(
            "splicetx_udp_bytes", "UDP bytes relayed.", labels=["forward", "direction"]
        )
        sessions = CounterMetricFamily(
            "splicetx_udp_sessions", "UDP sessions opened.", labels=["forward"]
        )
        active = GaugeMetricFamily(
            "splicetx_udp_sessions_active", "Live UDP sessions.", labels=["forward"]
        )
        cap = GaugeMetricFamily(
            "splicetx_udp_sessions_max",
            "The cap on live UDP sessions.",
            labels=["forward"],
        )
        drops = CounterMetricFamily(
            "splicetx_udp_drops",
            "UDP datagrams dropped, by reason.",
            labels=["forward", "reason"],
        )
        for f in [f for f in self.forwarders() if isUDPForwarder(f)]:
            name = f.forwardName
            t = f.totals()
            datagrams.add_metric([name, CLIENT_TO_UPSTREAM], t["datagramsUp"])
            datagrams.add_metric([name, UPSTREAM_TO_CLIENT], t["datagramsDown"])
            octets.add_metric([name, CLIENT_TO_UPSTREAM], t["bytesUp"])
            octets.add_metric([name, UPSTREAM_TO_CLIENT], t["bytesDown"])
            sessions.add_metric([name], f.sessionsTotal)
            active.add_metric([name], len(f.liveProtocols))
            cap.add_metric([name], f.maxSessions)
            for reason, count in sorted(f.drops.items()):
                drops.add_metric([name, reason], count)
        yield from (datagrams, octets, sessions, active, cap, drops)


def udpListenerStatus(
    forwarder: Any, listen: list[str], addresses: list[str]
) -> dict[str, Any]:
    """
    The status page's listener row of a UDP forward.

    @param forwarder: the forward's
        L{UDPForwarder <splicetx._udp.forwarder.UDPForwarder>}.
    @param listen: its listening strings as written.
    @param addresses: the addresses its ports are bound to.
    """
    t = forwarder.totals()
    upstreams = [
        {
            "name": m.name,
            "health": None,
            "live": m.active,
            "total": m.total,
            "failures": None,
            "bytes": None,
        }
        for m in forwarder.upstreams.members
    ]
    return {
        "forward": forwarder.forwardName,
        "protocol": "udp",
        "listen": list(listen),
        "addresses": list(addresses),
        "upstreams": upstreams,
        "live": len(forwarder.liveProtocols),
        "total": forwarder.sessionsTotal,
        "refused": dict(forwarder.drops),
        "connectFailures": {},
        "endings": {},
        "fallbacks": {},
        "bytes": {
            CLIENT_TO_UPSTREAM: {"udp": t["bytesUp"]},
            UPSTREAM_TO_CLIENT: {"udp": t["bytesDown"]},
        },
        "liveBytes": {CLIENT_TO_UPSTREAM: {}, UPSTREAM_TO_CLIENT: {}},
        "datagrams": {
            CLIENT_TO_UPSTREAM: t["datagramsUp"],
            UPSTREAM_TO_CLIENT: t["datagramsDown"],
        },
        "draining": forwarder.draining,
        "maxConnections": forwarder.maxSessions,
    }
