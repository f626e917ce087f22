# -*- test-case-name: tests.test_pool_cli -*-
"""
The pool options of C{twist splice-proxy} -- repeatable C{--connect}, the
L{POOL_OPTIONS <splicetx._config.pools.POOL_OPTIONS>}, C{--route-sni},
C{--sni-timeout}, C{--sni-max-size} -- and a TOML C{--config} file, read
into L{Forward}s carrying their L{PoolSpec}s.

L{PoolOptions} is a mixin of C{splicetx._app.tap.Options}: C{usage.Options}
gathers its C{optParameters} and C{opt_} methods with the class's own.  One
plain C{--connect} without pool options gives a L{Forward} without a pool,
so such a forward runs exactly as before pools existed.
"""

from __future__ import annotations

from typing import Any

from splicetx._app.worker import isWorker
from splicetx._config.endpoints import checkConnect, checkListen
from splicetx._config.model import Forward
from splicetx._config.pools import (
    DEFAULT_SNI_TIMEOUT,
    POOL_OPTIONS,
    PoolSpec,
    PoolSyntaxError,
    UpstreamSpec,
    groupRoutes,
    parsePoolToml,
    parseRouteSNI,
    parseSeconds,
    parseUpstream,
    poolSpecFromOptions,
)
from splicetx._config.values import _Exit, _size
from splicetx._pool.sni import DEFAULT_MAX_SIZE

__all__ = [
    "PoolOptions",
    "commandLineForward",
    "connectStrings",
    "isTomlConfig",
    "tomlForwards",
]

#: The smallest C{--sni-max-size} accepted (a ClientHello's usual size is
#: 0.2 to 2 KiB).
MIN_SNI_MAX_SIZE = 512

_HELP = {
    "balance": "How a pool picks an upstream: roundrobin (default), "
    "leastconn, source (client IP hash) or random.",
    "max-fails": "Failed connects within --fail-timeout that make a pool "
    "upstream skipped (default 1; 0: never).",
    "fail-timeout": "Seconds for counting failures, and how long a failed "
    "upstream is skipped (default 10).",
    "connect-tries": "Upstreams tried for one client (default: every "
    "available one once).",
    "failover-timeout": "Seconds all connect tries of one client may take "
    "together (default: no limit beyond the tries).",
    "health-check-interval": "Probe every pool upstream every S seconds "
    "(default: no active checks).",
    "health-check-timeout": "Seconds one probe may take (default min(interval, 10)).",
    "health-check-rise": "Good probes in a row that bring an upstream back "
    "(default 2).",
    "health-check-fall": "Failed probes in a row that take an upstream out "
    "(default 3).",
    "health-check-send": "Bytes a probe sends once connected (\\r, \\n, "
    "\\t, \\\\ and \\xHH escapes).",
    "health-check-expect": "The prefix a probe's reply must start with.",
}


class PoolOptions:
    """
    The pool options, mixed into C{splicetx._app.tap.Options} (which must set
    C{self["connect"]} and C{self["route-sni"]} to empty lists).
    """

    optParameters = [[name, None, None, _HELP[name]] for name in POOL_OPTIONS] + [
        [
            "sni-timeout",
            None,
            f"{DEFAULT_SNI_TIMEOUT:g}",
            "With --route-sni, seconds a client has to send its TLS ClientHello.",
        ],
        [
            "sni-max-size",
            None,
            str(DEFAULT_MAX_SIZE),
            "With --route-sni, the longest ClientHello accepted, in bytes.",
        ],
    ]

    def opt_connect(self, description: str) -> None:
        """
        Upstream client endpoint (repeatable: a pool), e.g. tcp:10.0.0.2:80,
        tcp6:[2001:db8::2]:80, unix:/run/app.sock, tls:example.com:443,
        optionally followed by weight=N max-fails=N fail-timeout=S.  Host
        names are resolved without blocking.
        """
        self["connect"].append(description)  # type: ignore[index]

    opt_c = opt_connect

    def opt_route_sni(self, route: str) -> None:
        """
        NAME=ENDPOINT: send TLS clients whose server name is NAME (or
        matches *.DOMAIN) to ENDPOINT (--connect syntax; repeatable, the
        same NAME again makes a pool).
        """
        self["route-sni"].append(route)  # type: ignore[index]


def _given(options: Any) -> bool:
    return any(options.get(name) not in (None, "") for name in POOL_OPTIONS)


def _pool(upstreams: tuple[UpstreamSpec, ...], options: Any) -> PoolSpec:
    try:
        return poolSpecFromOptions(upstreams, options, where="--")
    except PoolSyntaxError as e:
        raise _Exit(str(e))


def commandLineForward(options: Any, acl: Any) -> Forward:
    """
    The command line's forward: its C{--listen} endpoints (checked), its
    upstreams and, when there are several or pool options, its pool and
    SNI routes.

    @param options: the parsed C{Options}.
    @param acl: the forward's access rules, or C{None}.
    @raise _Exit: with one line for any bad value.
    """
    try:
        upstreams = tuple(parseUpstream(c) for c in options["connect"])
    except PoolSyntaxError as e:
        raise _Exit(f"--connect: {e}")
    try:
        routeArgs = [parseRouteSNI(r) for r in options["route-sni"]]
    except PoolSyntaxError as e:
        raise _Exit(f"--route-sni: {e}")
    for spec in upstreams:
        checkConnect(spec.endpoint)
    for _, spec in routeArgs:
        checkConnect(spec.endpoint)
    if not isWorker():
        # A worker adopts the supervisor's sockets: a systemd: string names
        # sockets of the supervisor's environment, not its own.
        for description in options["listen"]:
            checkListen(description)
    routes = tuple(
        (pattern, _pool(members, options))
        for pattern, members in groupRoutes(routeArgs)
    )
    pool = None
    plain = len(upstreams) == 1 and upstreams[0] == UpstreamSpec(upstreams[0].endpoint)
    if upstreams and (routes or not plain or _given(options)):
        pool = _pool(upstreams, options)
    try:
        sniTimeout = parseSeconds(options["sni-timeout"], "--sni-timeout")
    except PoolSyntaxError as e:
        raise _Exit(str(e))
    sniMaxSize = _size("sni-max-size", options["sni-max-size"])
    if sniMaxSize < MIN_SNI_MAX_SIZE:
        raise _Exit(
            f"--sni-max-size: must be at least {MIN_SNI_MAX_SIZE}, "
            f"got {options['sni-max-size']!r}"
        )
    first = upstreams[0] if upstreams else routes[0][1].upstreams[0]
    return Forward(
        listens=options["listen"],
        connect=first.endpoint,
        acl=acl,
        pool=pool,
        routes=routes,
        sniTimeout=sniTimeout,
        sniMaxSize=sniMaxSize,
    )


def isTomlConfig(path: str) -> bool:
    """
    Whether a C{--config} file is TOML: a C{.toml} suffix, or content whose
    first statement opens a table (C{[defaults]}, C{[[forward]]}).

    @param path: the file (an unreadable one is left to the rinetd reader,
        which reports it).
    """
    if path.lower().endswith(".toml"):
        return True
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = line.split("#", 1)[0].strip()
                if text:
                    return text.startswith("[")
    except (OSError, UnicodeDecodeError):
        return False
    return False


def connectStrings(forwards: list[Forward]) -> list[str]:
    """
    Every upstream endpoint string of some forwards: their pools' and SNI
    routes' members, or their one C{connect}.
    """
    out = []
    for forward in forwards:
        pools = ([forward.pool] if forward.pool is not None else []) + [
            p for _, p in forward.routes
        ]
        if not pools:
            out.append(forward.connect)
        out.extend(u.endpoint for p in pools for u in p.upstreams)
    return out


def tomlForwards(
    path: str, outer: Any = None, text: str | None = None
) -> list[Forward]:
    """
    Read a TOML C{--config} file into L{Forward}s (see C{docs/pools.md}).

    @param path: the file.
    @param outer: the command line's access rules (an L{AccessControl
        <splicetx._proxy.access.AccessControl>}, applied to every forward first), or
        C{None}.
    @param text: the file's text, when already read (a worker gets the
        copy its supervisor checked).
    @return: its forwards, in file order; each has a pool (or only routes).
    @raise _Exit: with one line C{FILE: problem} for any problem.
    """
    from splicetx._proxy.access import AccessControl

    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise _Exit(f"{path}: cannot read: {e.strerror or e}")
        except UnicodeDecodeError as e:
            raise _Exit(f"{path}: not UTF-8 text: {e.reason}")
    try:
        specs = parsePoolToml(text)
    except PoolSyntaxError as e:
        raise _Exit(f"{path}: {e}")
    forwards = []
    for n, spec in enumerate(specs):
        where = f"{path}: forward[{n}]"
        for description in spec.listen if not isWorker() else ():
            try:
                checkListen(description)
            except _Exit as e:
                raise _Exit(f"{where}: {e}")
        pools = ([spec.pool] if spec.pool is not None else []) + [
            p for _, p in spec.routes
        ]
        for pool in pools:
            for upstream in pool.upstreams:
                try:
                    checkConnect(upstream.endpoint)
                except _Exit as e:
                    raise _Exit(f"{where}: {e}")
        try:
            acl = AccessControl(list(spec.allow), list(spec.deny), outer=outer)
        except ValueError as e:
            raise _Exit(f"{where}: allow/deny: {e}")
        forwards.append(
            Forward(
                listens=spec.listen,
                connect=pools[0].upstreams[0].endpoint,
                acl=None if acl.empty else acl,
                # Not 0, which marks the command line's forward (a reload
                # keeps that one): the forward's place in the file.
                lineNumber=n + 1,
                name=spec.name,
                pool=spec.pool,
                routes=spec.routes,
                sniTimeout=spec.sniTimeout,
                sniMaxSize=spec.sniMaxSize,
            )
        )
    return forwards
