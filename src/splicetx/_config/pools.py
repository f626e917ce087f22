# -*- test-case-name: tests.test_poolconfig -*-
"""
The written forms of upstream pools -- the C{--connect} and C{--route-sni}
arguments and the TOML configuration file -- parsed into plain value
classes, and the builders that turn those into L{UpstreamPool}s,
L{HealthChecker}s and an L{SNIRouter}.

An upstream is written as a Twisted client endpoint string followed, after
whitespace, by nginx-style C{name=value} options::

    tcp:10.0.0.1:80
    tcp:10.0.0.2:80 weight=3
    tcp:host=app.internal:port=80 weight=2 max-fails=3 fail-timeout=30s

Endpoint strings separate their fields with C{:} and never contain an
unescaped blank, so the options cannot be confused with endpoint fields;
only trailing words of the form C{weight=}, C{max-fails=} or
C{fail-timeout=} are options (anything else stays part of the endpoint).
C{--route-sni} takes C{NAME=UPSTREAM}, the same upstream syntax after the
first C{=}; the same name given several times makes a pool for that name.

The TOML file (C{tomllib}, Python 3.11+, or C{tomli} on 3.10) has one
C{[[forward]]} table per forward; see C{docs/pools.md} for the format.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from typing import Any

import attr

from splicetx._pool.balance import BALANCERS, makeBalancer
from splicetx._pool.health import DEFAULT_FALL, DEFAULT_RISE, HealthChecker
from splicetx._pool.pool import (
    DEFAULT_FAIL_TIMEOUT,
    DEFAULT_MAX_FAILS,
    Upstream,
    UpstreamPool,
)
from splicetx._pool.sni import DEFAULT_MAX_SIZE, SNIRouter, normaliseServerName

__all__ = [
    "PoolSyntaxError",
    "UpstreamSpec",
    "HealthCheckSpec",
    "PoolSpec",
    "ForwardSpec",
    "parseUpstream",
    "parseRouteSNI",
    "groupRoutes",
    "parseSeconds",
    "decodeEscapes",
    "parsePoolToml",
    "POOL_OPTIONS",
    "poolSpecFromOptions",
    "buildPool",
    "buildHealthChecker",
    "buildRouter",
    "DEFAULT_SNI_TIMEOUT",
]

#: Seconds a client may take to send its ClientHello.
DEFAULT_SNI_TIMEOUT = 5.0


class PoolSyntaxError(ValueError):
    """
    A pool argument or file cannot be used; C{str()} is one line.
    """


@attr.s(frozen=True, auto_attribs=True)
class UpstreamSpec:
    """
    One upstream as written.

    @ivar endpoint: the client endpoint string.
    @ivar weight: see L{Upstream.weight}.
    @ivar maxFails: see L{Upstream.maxFails}; C{None}: the pool's default.
    @ivar failTimeout: see L{Upstream.failTimeout}; C{None}: the pool's
        default.
    """

    endpoint: str
    weight: int = 1
    maxFails: int | None = None
    failTimeout: float | None = None


@attr.s(frozen=True, auto_attribs=True)
class HealthCheckSpec:
    """
    Active health checking as written (see L{HealthChecker}).

    @ivar interval: seconds between probes.
    @ivar timeout: seconds per probe; C{None}: C{min(interval, 10)}.
    @ivar rise: good probes that bring an upstream up.
    @ivar fall: failed probes that take it down.
    @ivar send: bytes sent once connected.
    @ivar expect: the reply's expected prefix.
    """

    interval: float
    timeout: float | None = None
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    send: bytes = b""
    expect: bytes = b""


@attr.s(frozen=True, auto_attribs=True)
class PoolSpec:
    """
    A pool as written.

    @ivar upstreams: its members.
    @ivar balance: a balancer name (L{BALANCERS}).
    @ivar maxFails: the members' default C{max-fails}.
    @ivar failTimeout: the members' default C{fail-timeout}.
    @ivar maxTries: see L{UpstreamPool.maxTries}.
    @ivar failoverTimeout: see L{UpstreamPool.totalTimeout}.
    @ivar healthCheck: active checks, or C{None}.
    """

    upstreams: tuple[UpstreamSpec, ...]
    balance: str = "roundrobin"
    maxFails: int = DEFAULT_MAX_FAILS
    failTimeout: float = DEFAULT_FAIL_TIMEOUT
    maxTries: int | None = None
    failoverTimeout: float | None = None
    healthCheck: HealthCheckSpec | None = None


@attr.s(frozen=True, auto_attribs=True)
class ForwardSpec:
    """
    One C{[[forward]]} of a TOML file.

    @ivar name: its name in logs and metrics (default C{forward-N}).
    @ivar listen: server endpoint strings.
    @ivar pool: the C{connect} pool, or C{None} (only SNI routes).
    @ivar routes: C{(pattern, pool)} per C{route-sni} entry, in file order.
    @ivar sniTimeout: seconds to wait for the ClientHello.
    @ivar sniMaxSize: the longest ClientHello accepted.
    @ivar allow: allow rules (strings for L{splicetx._proxy.access.parseRule}).
    @ivar deny: deny rules.
    @ivar options: the other keys, for the caller's own per-forward options
        (only the names it passed as C{extraKeys}).
    """

    name: str
    listen: tuple[str, ...]
    pool: PoolSpec | None
    routes: tuple[tuple[str, PoolSpec], ...] = ()
    sniTimeout: float = DEFAULT_SNI_TIMEOUT
    sniMaxSize: int = DEFAULT_MAX_SIZE
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    options: dict[str, Any] = attr.Factory(dict)


# -- the argument syntax ------------------------------------------------------

_OPTION_NAMES = ("weight", "max-fails", "fail-timeout")
_OPTION_WORD = "|".join(re.escape(n) for n in _OPTION_NAMES)
_TRAILING_OPTIONS = re.compile(
    r"^(?P<endpoint>.*?)(?P<options>(?:(?:^|\s+)(?:" + _OPTION_WORD + r")=\S*)*)\s*$",
    re.DOTALL,
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


def parseSeconds(text: Any, what: str, allowZero: bool = False) -> float:
    """
    Parse a duration: a number of seconds, with an optional C{ms}, C{s} or
    C{m} suffix (C{10}, C{1.5}, C{500ms}, C{30s}, C{2m}).

    @param text: the text (or an C{int}/C{float} from TOML).
    @param what: the option's name, for the error.
    @param allowZero: whether C{0} is accepted.
    @return: seconds.
    @raise PoolSyntaxError: when it is not a duration, or not positive.
    """
    if isinstance(text, bool):
        raise PoolSyntaxError(f"{what}: expected seconds, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise PoolSyntaxError(
                f"{what}: expected seconds (e.g. 10, 500ms), got {text!r}"
            )
        value = (
            float(match.group(1))
            * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "s"]
        )
    if value < 0 or (value == 0 and not allowZero) or value != value:
        raise PoolSyntaxError(
            f"{what}: must be {'>= 0' if allowZero else '> 0'}, got {text!r}"
        )
    return value


def _integer(text: Any, what: str, minimum: int) -> int:
    if isinstance(text, bool):
        raise PoolSyntaxError(f"{what}: expected an integer, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        if not str(text).strip().isdigit():
            raise PoolSyntaxError(f"{what}: expected an integer, got {text!r}")
        value = int(str(text))
    if value < minimum:
        raise PoolSyntaxError(f"{what}: must be >= {minimum}, got {value}")
    return value


def decodeEscapes(text: str) -> bytes:
    """
    The bytes of a C{--health-check-send}/C{--health-check-expect}
    argument: UTF-8, with C{\\r}, C{\\n}, C{\\t}, C{\\\\} and C{\\xHH} escapes.

    @raise PoolSyntaxError: for a bad escape.
    """
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as e:
        raise PoolSyntaxError(f"bad escape in {text!r}: {e}") from None


def parseUpstream(text: str) -> UpstreamSpec:
    """
    Parse one C{--connect} argument: an endpoint string and trailing
    options (see the module docstring).

    @param text: e.g. C{"tcp:10.0.0.2:80 weight=3 max-fails=2"}.
    @return: the L{UpstreamSpec} (the endpoint string is not checked here).
    @raise PoolSyntaxError: for a missing endpoint, an option given twice
        or a value out of range.
    """
    match = _TRAILING_OPTIONS.match(text)
    assert match is not None  # the pattern matches any text
    endpoint = match.group("endpoint").strip()
    if not endpoint:
        raise PoolSyntaxError(f"no endpoint in {text!r}")
    values: dict[str, str] = {}
    for word in match.group("options").split():
        key, _, value = word.partition("=")
        if key in values:
            raise PoolSyntaxError(f"{key}= given twice in {text!r}")
        values[key] = value
    return _upstreamSpec(endpoint, values, f"upstream {endpoint!r}")


def _upstreamSpec(endpoint: str, values: dict[str, Any], where: str) -> UpstreamSpec:
    weight = 1
    maxFails = failTimeout = None
    if "weight" in values:
        weight = _integer(values["weight"], f"{where}: weight", 1)
    if "max-fails" in values:
        maxFails = _integer(values["max-fails"], f"{where}: max-fails", 0)
    if "fail-timeout" in values:
        failTimeout = parseSeconds(values["fail-timeout"], f"{where}: fail-timeout")
    return UpstreamSpec(endpoint, weight, maxFails, failTimeout)


def parseRouteSNI(text: str) -> tuple[str, UpstreamSpec]:
    """
    Parse one C{--route-sni} argument, C{NAME=UPSTREAM}.

    @param text: e.g. C{"*.example.com=tcp:10.0.0.5:443 weight=2"}.
    @return: C{(pattern, upstream)}, the pattern as written.
    @raise PoolSyntaxError: without C{=}, for a bad name pattern or upstream.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise PoolSyntaxError(f"expected NAME=ENDPOINT, got {text!r}")
    try:
        SNIRouter({name: None})
    except ValueError as e:
        raise PoolSyntaxError(str(e)) from None
    return name, parseUpstream(rest)


def groupRoutes(
    routes: Iterable[tuple[str, UpstreamSpec]],
) -> list[tuple[str, tuple[UpstreamSpec, ...]]]:
    """
    Group C{--route-sni} arguments by name (compared as the router does),
    keeping the order in which names first appear.

    @param routes: C{(pattern, upstream)} pairs from L{parseRouteSNI}.
    @return: C{(pattern, upstreams)} per distinct name.
    """
    grouped: dict[str, tuple[str, list[UpstreamSpec]]] = {}
    for pattern, upstream in routes:
        wildcard = pattern.startswith("*.")
        key = ("*." if wildcard else "") + normaliseServerName(
            pattern[2:] if wildcard else pattern
        )
        grouped.setdefault(key, (pattern, []))[1].append(upstream)
    return [(pattern, tuple(ups)) for pattern, ups in grouped.values()]


# -- options given as strings (the command line, rinetd brackets) --------------

#: The pool options of the command line (and of a rinetd forward's
#: brackets), by their long names.
POOL_OPTIONS = (
    "balance",
    "max-fails",
    "fail-timeout",
    "connect-tries",
    "failover-timeout",
    "health-check-interval",
    "health-check-timeout",
    "health-check-rise",
    "health-check-fall",
    "health-check-send",
    "health-check-expect",
)


def poolSpecFromOptions(
    upstreams: Iterable[UpstreamSpec], options: Any, where: str = ""
) -> PoolSpec:
    """
    Make a L{PoolSpec} from string-valued options named as on the command
    line (L{POOL_OPTIONS}); missing or C{None} values take the defaults.
    C{health-check-interval} absent, C{None} or C{0} means no active checks.

    @param upstreams: the members (from L{parseUpstream}).
    @param options: a mapping (a C{usage.Options}, a dict from rinetd
        brackets) with C{get}.
    @param where: prefixed to error messages (e.g. C{"--"} for the command
        line, so errors name C{--balance}).
    @return: the spec.
    @raise PoolSyntaxError: for a bad value.
    """
    members = tuple(upstreams)
    if not members:
        raise PoolSyntaxError(f"{where}connect: no upstream")

    def get(name: str) -> Any:
        value = options.get(name)
        return None if value is None or value == "" else value

    balance = get("balance") or "roundrobin"
    if balance not in BALANCERS:
        raise PoolSyntaxError(
            f"{where}balance: unknown {balance!r} (use one of: {', '.join(BALANCERS)})"
        )
    health = None
    interval = get("health-check-interval")
    if interval is not None and parseSeconds(
        interval, f"{where}health-check-interval", allowZero=True
    ):
        timeout = get("health-check-timeout")
        health = HealthCheckSpec(
            interval=parseSeconds(interval, f"{where}health-check-interval"),
            timeout=(
                None
                if timeout is None
                else parseSeconds(timeout, f"{where}health-check-timeout")
            ),
            rise=_integer(
                get("health-check-rise") or DEFAULT_RISE, f"{where}health-check-rise", 1
            ),
            fall=_integer(
                get("health-check-fall") or DEFAULT_FALL, f"{where}health-check-fall", 1
            ),
            send=decodeEscapes(get("health-check-send") or ""),
            expect=decodeEscapes(get("health-check-expect") or ""),
        )
    else:
        for name in POOL_OPTIONS:
            if name.startswith("health-check-") and get(name) is not None:
                if name != "health-check-interval":
                    raise PoolSyntaxError(
                        f"{where}{name} needs {where}health-check-interval"
                    )
    tries = get("connect-tries")
    failover = get("failover-timeout")
    maxFails = get("max-fails")
    failTimeout = get("fail-timeout")
    return PoolSpec(
        upstreams=members,
        balance=balance,
        maxFails=(
            DEFAULT_MAX_FAILS
            if maxFails is None
            else _integer(maxFails, f"{where}max-fails", 0)
        ),
        failTimeout=(
            DEFAULT_FAIL_TIMEOUT
            if failTimeout is None
            else parseSeconds(failTimeout, f"{where}fail-timeout")
        ),
        maxTries=None if tries is None else _integer(tries, f"{where}connect-tries", 1),
        failoverTimeout=(
            None
            if failover is None
            else parseSeconds(failover, f"{where}failover-timeout", allowZero=True)
            or None
        ),
        healthCheck=health,
    )


# -- the TOML file -------------------------------------------------------------

_POOL_KEYS = {
    "connect",
    "balance",
    "max-fails",
    "fail-timeout",
    "connect-tries",
    "failover-timeout",
    "health-check",
}
_FORWARD_KEYS = _POOL_KEYS | {
    "name",
    "listen",
    "route-sni",
    "sni-timeout",
    "sni-max-size",
    "allow",
    "deny",
}
_HEALTH_KEYS = {"interval", "timeout", "rise", "fall", "send", "expect"}
_UPSTREAM_KEYS = {"endpoint", "weight", "max-fails", "fail-timeout"}


def _loadToml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # pragma: no cover (Python 3.10)
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PoolSyntaxError(f"not TOML: {e}") from None
    return data


def _unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise PoolSyntaxError(
            f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})"
        )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PoolSyntaxError(f"{where}: expected a string or a list of strings")


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise PoolSyntaxError(f"{where}: expected a string")
    return value.encode("utf-8")


def _tomlUpstreams(value: Any, where: str) -> tuple[UpstreamSpec, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PoolSyntaxError(f"{where}: no upstream")
    out = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]" if isinstance(value, list) else where
        if isinstance(item, str):
            try:
                out.append(parseUpstream(item))
            except PoolSyntaxError as e:
                raise PoolSyntaxError(f"{here}: {e}") from None
        elif isinstance(item, dict):
            _unknown(item, _UPSTREAM_KEYS, here)
            endpoint = item.get("endpoint")
            if not isinstance(endpoint, str) or not endpoint.strip():
                raise PoolSyntaxError(f"{here}: 'endpoint' (a string) is required")
            out.append(_upstreamSpec(endpoint.strip(), item, here))
        else:
            raise PoolSyntaxError(f"{here}: expected an endpoint string or a table")
    return tuple(out)


def _tomlHealth(value: Any, where: str) -> HealthCheckSpec:
    if not isinstance(value, dict):
        raise PoolSyntaxError(f"{where}: expected a table")
    _unknown(value, _HEALTH_KEYS, where)
    if "interval" not in value:
        raise PoolSyntaxError(f"{where}: 'interval' is required")
    return HealthCheckSpec(
        interval=parseSeconds(value["interval"], f"{where}.interval"),
        timeout=(
            parseSeconds(value["timeout"], f"{where}.timeout")
            if "timeout" in value
            else None
        ),
        rise=_integer(value.get("rise", DEFAULT_RISE), f"{where}.rise", 1),
        fall=_integer(value.get("fall", DEFAULT_FALL), f"{where}.fall", 1),
        send=_bytes(value.get("send", ""), f"{where}.send"),
        expect=_bytes(value.get("expect", ""), f"{where}.expect"),
    )


def _tomlPool(
    table: dict[str, Any], upstreams: tuple[UpstreamSpec, ...], where: str
) -> PoolSpec:
    balance = table.get("balance", "roundrobin")
    if balance not in BALANCERS:
        raise PoolSyntaxError(
            f"{where}.balance: unknown {balance!r} (use one of: {', '.join(BALANCERS)})"
        )
    return PoolSpec(
        upstreams=upstreams,
        balance=balance,
        maxFails=_integer(
            table.get("max-fails", DEFAULT_MAX_FAILS), f"{where}.max-fails", 0
        ),
        failTimeout=parseSeconds(
            table.get("fail-timeout", DEFAULT_FAIL_TIMEOUT), f"{where}.fail-timeout"
        ),
        maxTries=(
            _integer(table["connect-tries"], f"{where}.connect-tries", 1)
            if "connect-tries" in table
            else None
        ),
        failoverTimeout=(
            parseSeconds(table["failover-timeout"], f"{where}.failover-timeout")
            if "failover-timeout" in table
            else None
        ),
        healthCheck=(
            _tomlHealth(table["health-check"], f"{where}.health-check")
            if "health-check" in table
            else None
        ),
    )


def parsePoolToml(text: str, extraKeys: Iterable[str] = ()) -> list[ForwardSpec]:
    """
    Parse a TOML configuration file of forwards with pools (the format is in
    C{docs/pools.md}).

    A C{[defaults]} table gives any forward key (but C{name}, C{listen},
    C{connect} and C{route-sni}) for every forward that does not set it.

    @param text: the file's text.
    @param extraKeys: further per-forward keys the caller handles itself
        (its own per-forward options); they end up in
        L{ForwardSpec.options}.
    @return: the forwards, in file order.
    @raise PoolSyntaxError: for invalid TOML or any invalid value, naming
        where (C{forward[1].connect[0]: weight: ...}).
    """
    data = _loadToml(text)
    extra = set(extraKeys)
    _unknown(data, {"defaults", "forward"}, "top level")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise PoolSyntaxError("defaults: expected a table")
    _unknown(
        defaults,
        (_FORWARD_KEYS | extra) - {"name", "listen", "connect", "route-sni"},
        "defaults",
    )
    forwards = data.get("forward", [])
    if not isinstance(forwards, list) or not forwards:
        raise PoolSyntaxError("no [[forward]] table")
    out = []
    names: set[str] = set()
    for n, raw in enumerate(forwards):
        where = f"forward[{n}]"
        if not isinstance(raw, dict):
            raise PoolSyntaxError(f"{where}: expected a table")
        _unknown(raw, _FORWARD_KEYS | extra, where)
        table = {**defaults, **raw}
        name = table.get("name", f"forward-{n}")
        if not isinstance(name, str) or not name:
            raise PoolSyntaxError(f"{where}.name: expected a string")
        if name in names:
            raise PoolSyntaxError(f"{where}.name: {name!r} is used twice")
        names.add(name)
        if "listen" not in table:
            raise PoolSyntaxError(f"{where}: 'listen' is required")
        listen = _strings(table["listen"], f"{where}.listen")
        pool = None
        if "connect" in table:
            pool = _tomlPool(
                table, _tomlUpstreams(table["connect"], f"{where}.connect"), where
            )
        routes = []
        routeTable = table.get("route-sni", {})
        if not isinstance(routeTable, dict):
            raise PoolSyntaxError(f"{where}.route-sni: expected a table")
        seen = SNIRouter()
        for pattern, value in routeTable.items():
            here = f"{where}.route-sni.{pattern!r}"
            try:
                seen.add(pattern, None)
            except ValueError as e:
                raise PoolSyntaxError(f"{here}: {e}") from None
            if isinstance(value, dict) and "connect" in value:
                _unknown(value, _POOL_KEYS, here)
                merged = {
                    **{k: v for k, v in table.items() if k in _POOL_KEYS},
                    **value,
                }
                ups = _tomlUpstreams(value["connect"], f"{here}.connect")
                routes.append((pattern, _tomlPool(merged, ups, here)))
            else:
                routes.append(
                    (pattern, _tomlPool(table, _tomlUpstreams(value, here), here))
                )
        if pool is None and not routes:
            raise PoolSyntaxError(f"{where}: needs 'connect' or 'route-sni'")
        out.append(
            ForwardSpec(
                name=name,
                listen=listen,
                pool=pool,
                routes=tuple(routes),
                sniTimeout=parseSeconds(
                    table.get("sni-timeout", DEFAULT_SNI_TIMEOUT),
                    f"{where}.sni-timeout",
                ),
                sniMaxSize=_integer(
                    table.get("sni-max-size", DEFAULT_MAX_SIZE),
                    f"{where}.sni-max-size",
                    512,
                ),
                allow=_strings(table.get("allow", []), f"{where}.allow"),
                deny=_strings(table.get("deny", []), f"{where}.deny"),
                options={k: v for k, v in table.items() if k in extra},
            )
        )
    return out


# -- builders ---------------------------------------------------------------------


def buildPool(
    spec: PoolSpec,
    makeEndpoint: Callable[[str], Any],
    name: str = "default",
    tryTimeout: float | None = None,
    reactor: Any = None,
) -> UpstreamPool:
    """
    Make the L{UpstreamPool} a L{PoolSpec} describes.

    @param spec: the pool as written.
    @param makeEndpoint: turns an endpoint string into an
        C{IStreamClientEndpoint} (e.g. C{lambda s: clientFromString(reactor,
        s)}); its exceptions propagate.
    @param name: the pool's (forward's) name.
    @param tryTimeout: seconds per connect (the C{--connect-timeout}).
    @param reactor: for the pool's timeouts and the members' clocks.
    @return: the pool; members are described by their endpoint strings.
    """
    members = [
        Upstream(
            makeEndpoint(u.endpoint),
            description=u.endpoint,
            weight=u.weight,
            maxFails=spec.maxFails if u.maxFails is None else u.maxFails,
            failTimeout=spec.failTimeout if u.failTimeout is None else u.failTimeout,
            clock=reactor,
        )
        for u in spec.upstreams
    ]
    return UpstreamPool(
        members,
        makeBalancer(spec.balance),
        name=name,
        maxTries=spec.maxTries,
        tryTimeout=tryTimeout,
        totalTimeout=spec.failoverTimeout,
        reactor=reactor,
    )


def buildHealthChecker(
    pool: UpstreamPool,
    spec: HealthCheckSpec,
    reactor: Any = None,
    stateChanged: Callable[[Upstream, bool, str | None], None] | None = None,
) -> HealthChecker:
    """
    Make the (not yet started) L{HealthChecker} of a pool.

    @param pool: the pool whose members it probes.
    @param spec: the checks as written.
    @param reactor: see L{HealthChecker}.
    @param stateChanged: see L{HealthChecker}.
    @return: the checker; call C{start()} when the service starts.
    """
    return HealthChecker(
        pool.members,
        interval=spec.interval,
        timeout=spec.timeout,
        rise=spec.rise,
        fall=spec.fall,
        send=spec.send,
        expect=spec.expect,
        reactor=reactor,
        poolName=pool.name,
        stateChanged=stateChanged,
    )


def buildRouter(
    routes: Iterable[tuple[str, UpstreamPool]], default: UpstreamPool | None
) -> SNIRouter:
    """
    Make an L{SNIRouter} whose targets are pools.

    @param routes: C{(pattern, pool)} pairs.
    @param default: the pool for unmatched names (the C{connect} pool), or
        C{None} to refuse them.
    @return: the router.
    @raise ValueError: for a bad or repeated pattern.
    """
    return SNIRouter(list(routes), default=default)
