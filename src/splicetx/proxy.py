# -*- test-case-name: tests.test_proxy -*-
"""
A TCP proxy built on L{splicetx.Relay}: a factory that accepts clients and a
protocol that connects each one to an upstream endpoint and relays between
them, with hooks for subclasses that read a handshake first (HTTP CONNECT,
SOCKS, the PROXY protocol) or choose the upstream per connection.

The life of one connection, and the hook called at each step::

    client connects         -> clientAccepted()       False: close at once
    readsHandshake = False  -> pause the client, chooseUpstream()
    readsHandshake = True   -> handshakeReceived(data) ... until the subclass
                               calls connectUpstream(endpoint, leftover)
    connectUpstream()       -> upstreamConnected(upstream)  default: startRelay()
                            -> upstreamFailed(failure)      default: close client
    startRelay()            -> Relay(client, upstream).start()
    the end                 -> relayFinished(result)        default: the
                               factory logs one event for the connection

A plain forwarder needs no subclass::

    factory = SpliceProxyFactory(clientFromString(reactor, "tcp:10.0.0.2:80"))
    serverFromString(reactor, "tcp:8080").listen(factory)

This module is the public face of L{splicetx._proxy}: the factory, the
protocol with its hooks, the reasons a connection can end with before a relay
runs, and the describers of the log lines.
"""

from __future__ import annotations

from splicetx._pool.addresses import describeAddress, describeEndpoint
from splicetx._proxy.factory import SpliceProxyFactory
from splicetx._proxy.protocol import (
    HALF_CLOSE_TIMEOUT,
    IDLE_TIMEOUT,
    REJECTED,
    UPSTREAM_FAILED,
    SpliceProxyProtocol,
)

__all__ = [
    "SpliceProxyFactory",
    "SpliceProxyProtocol",
    "IDLE_TIMEOUT",
    "HALF_CLOSE_TIMEOUT",
    "REJECTED",
    "UPSTREAM_FAILED",
    "describeAddress",
    "describeEndpoint",
]
