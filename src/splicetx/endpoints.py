"""
Endpoints splicetx adds to Twisted: L{TCPTarget}, a TCP upstream by host and
port that connects an address literal at once and resolves a name through
the process's one name cache (what a proxy subclass passes to
C{connectUpstream}); and C{mptcp:} and C{mptcp6:}, Multipath TCP listeners
and upstreams.

They are Twisted endpoint plugins (C{twisted/plugins/splicetx_mptcp.py}), so
any Twisted application can use them by string once splicetx is installed::

    serverFromString(reactor, "mptcp:8080").listen(factory)
    clientFromString(reactor, "mptcp:10.0.0.2:80").connect(factory)

Server strings are C{mptcp:PORT[:interface=ADDR][:backlog=N][:fallback=tcp]}
(C{mptcp6:} listens on C{::} by default); client strings
C{mptcp:HOST:PORT[:timeout=S][:bindAddress=ADDR][:fallback=tcp]}
(C{mptcp6:} resolves host names to IPv6).  Where the kernel has no MPTCP
(or C{net.mptcp.enabled} is 0) they fail with a sentence saying so, unless
C{fallback=tcp} lets them use plain TCP (logged once, C{splicetxEvent}
C{"mptcp-fallback"}).  Their connections are Twisted's own TCP transports,
so L{splicetx.relay} splices them.

This module is the public face of L{splicetx._relay.mptcp} and
L{splicetx._pool.target}.
"""

from splicetx._pool.target import TCPTarget
from splicetx._relay.mptcp import (
    IPPROTO_MPTCP,
    MPTCPClientEndpoint,
    MPTCPConnectError,
    MPTCPServerEndpoint,
    MPTCPUnavailableError,
    isMPTCP,
    mptcpUnavailableReason,
    parseClientArguments,
    parseServerArguments,
)

__all__ = [
    "IPPROTO_MPTCP",
    "MPTCPClientEndpoint",
    "MPTCPConnectError",
    "MPTCPServerEndpoint",
    "MPTCPUnavailableError",
    "TCPTarget",
    "isMPTCP",
    "mptcpUnavailableReason",
    "parseClientArguments",
    "parseServerArguments",
]
