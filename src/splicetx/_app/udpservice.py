# -*- test-case-name: tests.test_udp_cli -*-
"""
The UDP forwards of C{twist splice-proxy}: what the service builds for a
forward that listens on C{udp:} endpoints, from its configuration.

L{SpliceProxyService <splicetx._app.service.SpliceProxyService>} asks
L{udpUpstreams} for a UDP forward's upstreams where it would build a client
endpoint or pools, and L{buildUDPForwarder} where it would build a factory;
the rest (listening, reload, drain, signals, the status page) treats the
L{UDPForwarder} as another forward.
"""

from __future__ import annotations

from typing import Any

from splicetx._config.endpoints import clientEndpoint
from splicetx._config.model import Forward, ProxyConfig
from splicetx._udp.forwarder import UDPForwarder
from splicetx._udp.upstreams import UDPUpstream, UDPUpstreams

__all__ = ["udpUpstreams", "buildUDPForwarder", "UDPForwarder", "UDPUpstreams"]


def udpUpstreams(forward: Forward, reactor: Any) -> UDPUpstreams:
    """
    The upstreams of a UDP forward: its one C{--connect}, or its pool's
    members with their weights and the pool's balancer (C{source} unless
    another was written).

    @raise ValueError: for an endpoint string that does not parse.
    """
    if forward.pool is None:
        return UDPUpstreams(
            [UDPUpstream(clientEndpoint(reactor, forward.connectStrings()[0]))]
        )
    return UDPUpstreams(
        [
            UDPUpstream(clientEndpoint(reactor, u.endpoint), u.weight)
            for u in forward.pool.upstreams
        ],
        forward.pool.balance,
    )


def buildUDPForwarder(
    config: ProxyConfig,
    forward: Forward,
    upstreams: UDPUpstreams,
    reactor: Any,
    **keywords: Any,
) -> UDPForwarder:
    """
    The forwarder of a UDP forward.

    @param config: the service's configuration (the UDP options).
    @param forward: the forward (its name, rules and own idle timeout).
    @param upstreams: from L{udpUpstreams}.
    @param reactor: the reactor.
    @param keywords: passed on (C{accessLog}, C{logFields},
        C{logNormalConnections}).
    """
    acl = forward.acl
    idle = forward.udpIdleTimeout
    return UDPForwarder(
        upstreams,
        reactor=reactor,
        idleTimeout=config.udpIdleTimeout if idle is None else idle,
        maxSessions=config.udpMaxSessions,
        acl=acl if acl is not None and not acl.empty else None,
        forwardName=forward.name or forward.listen,
        **keywords,
    )
