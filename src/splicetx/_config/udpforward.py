# -*- test-case-name: tests.test_udp_config -*-
"""
What a UDP forward may be: its listening and upstream endpoints all
C{udp:}, no SNI routes, no active health checks, and the options that do
not apply to datagrams refused.

Every reader of a forward (the command line, rinetd and TOML files) calls
L{checkForwardKind}; L{checkUDPOptions} checks the options around the
forwards (C{twist splice-proxy} and a reload).
"""

from __future__ import annotations

from collections.abc import Iterable

from splicetx._config.endpoints import isUDP
from splicetx._config.model import Forward
from splicetx._config.values import ConfigError

__all__ = ["checkForwardKind", "checkUDPOptions"]


def checkForwardKind(forward: Forward) -> None:
    """
    Refuse a forward that mixes UDP and stream endpoints, or gives a UDP
    forward what only streams have.

    @raise ConfigError: naming the problem (the caller adds where).
    """
    udpListens = [isUDP(d) for d in forward.listens]
    udpConnects = [isUDP(d) for d in forward.connectStrings()]
    if not any(udpListens) and not any(udpConnects):
        if forward.udpIdleTimeout is not None:
            raise ConfigError("a UDP idle timeout is for udp: forwards only")
        return
    if not all(udpListens):
        raise ConfigError(
            "a forward listens on udp: endpoints only or on none "
            f"(got {', '.join(forward.listens)})"
        )
    if not all(udpConnects):
        raise ConfigError(
            "a udp: forward sends to udp: upstreams only (e.g. udp:127.0.0.1:53)"
        )
    if forward.routes:
        raise ConfigError("SNI routes are for TLS over TCP, not udp: forwards")
    if forward.pool is not None and forward.pool.healthCheck is not None:
        raise ConfigError(
            "active health checks connect over TCP; a udp: forward has none"
        )


def checkUDPOptions(
    forwards: Iterable[Forward],
    workers: int | None = None,
    sendProxyProtocol: int | None = None,
    acceptProxyProtocol: bool = False,
) -> None:
    """
    Refuse options that UDP forwards cannot honour: C{--workers} with any
    UDP forward (a client's datagrams must all reach the one process that
    holds its session), and C{--proxy-protocol} or
    C{--accept-proxy-protocol} when every forward is UDP (with stream
    forwards beside, they apply to those).

    @param forwards: the forwards.
    @param workers: C{--workers}.
    @param sendProxyProtocol: C{--proxy-protocol}.
    @param acceptProxyProtocol: C{--accept-proxy-protocol}.
    @raise ConfigError: naming the option.
    """
    kinds = [f.isUDP for f in forwards]
    if not any(kinds):
        return
    if workers:
        raise ConfigError(
            "--workers: udp: forwards run in one process (a client's datagrams "
            "must all reach the process that holds its session)"
        )
    if all(kinds) and sendProxyProtocol is not None:
        raise ConfigError("--proxy-protocol: a udp: forward sends no PROXY header")
    if all(kinds) and acceptProxyProtocol:
        raise ConfigError(
            "--accept-proxy-protocol: a udp: forward reads no PROXY header"
        )
