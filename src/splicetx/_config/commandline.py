# -*- test-case-name: tests.test_pool_cli -*-
"""
The command line's forward: C{--listen}, C{--connect} (once, or again for a
pool), the pool options, C{--route-sni} and its C{--sni-*} options, read
from the parsed options into one L{Forward}, the same value a configuration
file's forward is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splicetx._config.endpoints import checkConnect, checkListen, isUDP
from splicetx._config.model import MIN_SNI_MAX_SIZE, Forward, PoolSpec, UpstreamSpec
from splicetx._config.pools import (
    POOL_OPTIONS,
    groupRoutes,
    parseRouteSNI,
    parseUpstream,
    poolSpecFromOptions,
)
from splicetx._config.udpforward import checkForwardKind
from splicetx._config.values import ConfigError, parseDuration, parseSize
from splicetx._proxy.access import AccessControl

__all__ = ["commandLineForward"]


def _given(options: Mapping[str, Any]) -> bool:
    return any(options.get(name) not in (None, "") for name in POOL_OPTIONS)


def _pool(
    upstreams: tuple[UpstreamSpec, ...], options: Mapping[str, Any], udp: bool = False
) -> PoolSpec:
    if udp and options.get("balance") in (None, ""):
        # A UDP client keeps its upstream from session to session.
        options = {**options, "balance": "source"}
    return poolSpecFromOptions(upstreams, options, where="--")


def commandLineForward(
    options: Mapping[str, Any],
    acl: AccessControl | None,
    checkListens: bool = True,
) -> Forward:
    """
    The command line's forward: its C{--listen} endpoints (checked), its
    upstreams and, when there are several or pool options, its pool and
    SNI routes.  Without C{--connect} and C{--route-sni} (a C{--protocol}
    class that chooses its upstream) its C{connect} is C{None}.

    @param options: the parsed options, by their long names (C{"listen"},
        C{"connect"}, C{"route-sni"}, L{POOL_OPTIONS}, C{"sni-timeout"},
        C{"sni-max-size"}).
    @param acl: the forward's access rules, or C{None}.
    @param checkListens: check the C{--listen} strings too (a worker adopts
        its supervisor's sockets: a C{systemd:} string names sockets of the
        supervisor's environment, not its own).
    @raise ConfigError: with one line for any bad value.
    """
    try:
        upstreams = tuple(parseUpstream(c) for c in options["connect"])
    except ConfigError as e:
        raise ConfigError(f"--connect: {e.problem}") from None
    try:
        routeArgs = [parseRouteSNI(r) for r in options["route-sni"]]
    except ConfigError as e:
        raise ConfigError(f"--route-sni: {e.problem}") from None
    for spec in upstreams:
        checkConnect(spec.endpoint)
    for _, spec in routeArgs:
        checkConnect(spec.endpoint)
    if checkListens:
        for description in options["listen"]:
            checkListen(description)
    routes = tuple(
        (pattern, _pool(members, options))
        for pattern, members in groupRoutes(routeArgs)
    )
    pool = None
    plain = len(upstreams) == 1 and upstreams[0] == UpstreamSpec(upstreams[0].endpoint)
    udp = any(isUDP(d) for d in options["listen"])
    if upstreams and (routes or not plain or _given(options)):
        pool = _pool(upstreams, options, udp)
    sniTimeout = parseDuration(options["sni-timeout"], "--sni-timeout", positive=True)
    sniMaxSize = parseSize(options["sni-max-size"], "--sni-max-size", MIN_SNI_MAX_SIZE)
    first = upstreams[0] if upstreams else routes[0][1].upstreams[0] if routes else None
    forward = Forward(
        listens=options["listen"],
        connect=first.endpoint if first is not None else None,
        acl=acl,
        pool=pool,
        routes=routes,
        sniTimeout=sniTimeout,
        sniMaxSize=sniMaxSize,
    )
    checkForwardKind(forward)
    return forward
