"""
TLS listeners and upstreams that answer ALPN correctly on every Twisted
splicetx supports (see C{docs/tls.md}): wrap a server endpoint so that it
offers your protocols and refuses a client that offers none of them
(L{withServerALPN}), wrap a client endpoint so that it offers protocols to a
TLS upstream (L{withClientALPN}), and read what a connection negotiated
(L{negotiatedProtocol}).

This module is the public face of L{splicetx._proxy.tls}.
"""

from splicetx._proxy.tls import (
    NoApplicationProtocol,
    negotiatedProtocol,
    parseProtocols,
    withClientALPN,
    withServerALPN,
)

__all__ = [
    "withServerALPN",
    "withClientALPN",
    "negotiatedProtocol",
    "parseProtocols",
    "NoApplicationProtocol",
]
