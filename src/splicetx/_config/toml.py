# -*- test-case-name: tests.test_poolconfig -*-
"""
Read a TOML C{--config} file (C{tomllib}, Python 3.11+, or C{tomli} on
3.10): one C{[[forward]]} table per forward, with its pool, SNI routes and
access rules, into the same L{Forward}s the command line and rinetd files
produce.  The format is in C{docs/pools.md}; values follow the one grammar of
L{splicetx._config.values} (C{fail-timeout = "500ms"} or C{0.5}).
"""

from __future__ import annotations

from typing import Any

from splicetx._config.endpoints import isUDP
from splicetx._config.limits import CLIENT_LIMIT_KEYS, clientLimitFields
from splicetx._config.model import (
    DEFAULT_SNI_TIMEOUT,
    MIN_SNI_MAX_SIZE,
    ConfigFile,
    Forward,
    HealthCheckSpec,
    PoolSpec,
    UpstreamSpec,
)
from splicetx._config.pools import parseUpstream, upstreamSpec
from splicetx._config.values import (
    ConfigError,
    parseCount,
    parseDuration,
    parseResolveTTL,
    parseSize,
)
from splicetx._pool.balance import BALANCERS
from splicetx._pool.health import DEFAULT_FALL, DEFAULT_RISE
from splicetx._pool.pool import DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS
from splicetx._pool.sni import DEFAULT_MAX_SIZE, SNIRouter
from splicetx._proxy.access import AccessControl

__all__ = ["parseToml"]


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
    "udp-idle-timeout",
    "resolve-ttl",
    *CLIENT_LIMIT_KEYS,
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
        raise ConfigError(f"not TOML: {e}") from None
    return data


def _unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ConfigError(
            f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})"
        )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected a string or a list of strings")


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    return value.encode("utf-8")


def _tomlUpstreams(value: Any, where: str) -> tuple[UpstreamSpec, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where}: no upstream")
    out = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]" if isinstance(value, list) else where
        if isinstance(item, str):
            try:
                out.append(parseUpstream(item))
            except ConfigError as e:
                raise ConfigError(f"{here}: {e}") from None
        elif isinstance(item, dict):
            _unknown(item, _UPSTREAM_KEYS, here)
            endpoint = item.get("endpoint")
            if not isinstance(endpoint, str) or not endpoint.strip():
                raise ConfigError(f"{here}: 'endpoint' (a string) is required")
            out.append(upstreamSpec(endpoint.strip(), item, here))
        else:
            raise ConfigError(f"{here}: expected an endpoint string or a table")
    return tuple(out)


def _tomlHealth(value: Any, where: str) -> HealthCheckSpec:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table")
    _unknown(value, _HEALTH_KEYS, where)
    if "interval" not in value:
        raise ConfigError(f"{where}: 'interval' is required")
    return HealthCheckSpec(
        interval=parseDuration(value["interval"], f"{where}.interval", positive=True),
        timeout=(
            parseDuration(value["timeout"], f"{where}.timeout", positive=True)
            if "timeout" in value
            else None
        ),
        rise=parseCount(value.get("rise", DEFAULT_RISE), f"{where}.rise", 1),
        fall=parseCount(value.get("fall", DEFAULT_FALL), f"{where}.fall", 1),
        send=_bytes(value.get("send", ""), f"{where}.send"),
        expect=_bytes(value.get("expect", ""), f"{where}.expect"),
    )


def _tomlPool(
    table: dict[str, Any],
    upstreams: tuple[UpstreamSpec, ...],
    where: str,
    udp: bool = False,
) -> PoolSpec:
    # A UDP client keeps its upstream from session to session.
    balance = table.get("balance", "source" if udp else "roundrobin")
    if balance not in BALANCERS:
        raise ConfigError(
            f"{where}.balance: unknown {balance!r} (use one of: {', '.join(BALANCERS)})"
        )
    return PoolSpec(
        upstreams=upstreams,
        balance=balance,
        maxFails=parseCount(
            table.get("max-fails", DEFAULT_MAX_FAILS), f"{where}.max-fails", 0
        ),
        failTimeout=parseDuration(
            table.get("fail-timeout", DEFAULT_FAIL_TIMEOUT),
            f"{where}.fail-timeout",
            positive=True,
        ),
        maxTries=(
            parseCount(table["connect-tries"], f"{where}.connect-tries", 1)
            if "connect-tries" in table
            else None
        ),
        failoverTimeout=(
            parseDuration(
                table["failover-timeout"], f"{where}.failover-timeout", positive=True
            )
            if "failover-timeout" in table
            else None
        ),
        healthCheck=(
            _tomlHealth(table["health-check"], f"{where}.health-check")
            if "health-check" in table
            else None
        ),
    )


def parseToml(
    text: str, filename: str = "<config>", outer: AccessControl | None = None
) -> ConfigFile:
    """
    Parse a TOML configuration file of forwards (the format is in
    C{docs/pools.md}).

    A C{[defaults]} table gives any forward key (but C{name}, C{listen},
    C{connect} and C{route-sni}) for every forward that does not set it.

    @param text: the file's text.
    @param filename: the name to put in errors.
    @param outer: access rules applied to every forward first (the command
        line's C{--allow}/C{--deny}), or C{None}.
    @return: the forwards, in file order; each has a pool, or only routes.
        Endpoint strings are not checked here (see
        L{splicetx._config.files}).
    @raise ConfigError: for invalid TOML or any invalid value, naming
        where (C{FILE: forward[1].connect[0]: weight: ...}).
    """
    try:
        return ConfigFile(_forwards(_loadToml(text), outer))
    except ConfigError as e:
        raise ConfigError(e.problem, filename) from None


def _forwards(data: dict[str, Any], outer: AccessControl | None) -> list[Forward]:
    _unknown(data, {"defaults", "forward"}, "top level")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError("defaults: expected a table")
    _unknown(
        defaults,
        _FORWARD_KEYS - {"name", "listen", "connect", "route-sni"},
        "defaults",
    )
    forwards = data.get("forward", [])
    if not isinstance(forwards, list) or not forwards:
        raise ConfigError("no [[forward]] table")
    out = []
    names: set[str] = set()
    for n, raw in enumerate(forwards):
        where = f"forward[{n}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table")
        _unknown(raw, _FORWARD_KEYS, where)
        table = {**defaults, **raw}
        name = table.get("name", f"forward-{n}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a string")
        if name in names:
            raise ConfigError(f"{where}.name: {name!r} is used twice")
        names.add(name)
        if "listen" not in table:
            raise ConfigError(f"{where}: 'listen' is required")
        listen = _strings(table["listen"], f"{where}.listen")
        udp = any(isUDP(d) for d in listen)
        pool = None
        if "connect" in table:
            pool = _tomlPool(
                table, _tomlUpstreams(table["connect"], f"{where}.connect"), where, udp
            )
        udpIdle = table.get("udp-idle-timeout")
        if udpIdle is not None:
            udpIdle = parseDuration(udpIdle, f"{where}.udp-idle-timeout", True)
        own = [k for k in CLIENT_LIMIT_KEYS if k in raw]
        if udp and own:
            raise ConfigError(f"{where}.{own[0]}: applies to TCP forwards, not UDP")
        limits = {} if udp else clientLimitFields(table, f"{where}.")
        routes = []
        routeTable = table.get("route-sni", {})
        if not isinstance(routeTable, dict):
            raise ConfigError(f"{where}.route-sni: expected a table")
        seen = SNIRouter()
        for pattern, value in routeTable.items():
            here = f"{where}.route-sni.{pattern!r}"
            try:
                seen.add(pattern, None)
            except ValueError as e:
                raise ConfigError(f"{here}: {e}") from None
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
            raise ConfigError(f"{where}: needs 'connect' or 'route-sni'")
        allow = _strings(table.get("allow", []), f"{where}.allow")
        deny = _strings(table.get("deny", []), f"{where}.deny")
        try:
            acl = AccessControl(list(allow), list(deny), outer=outer)
        except ValueError as e:
            raise ConfigError(f"{where}: allow/deny: {e}") from None
        first = pool if pool is not None else routes[0][1]
        out.append(
            Forward(
                listens=listen,
                connect=first.upstreams[0].endpoint,
                acl=None if acl.empty else acl,
                # Not 0, which marks the command line's forward (a reload
                # keeps that one): the forward's place in the file.
                lineNumber=n + 1,
                name=name,
                pool=pool,
                routes=tuple(routes),
                sniTimeout=parseDuration(
                    table.get("sni-timeout", DEFAULT_SNI_TIMEOUT),
                    f"{where}.sni-timeout",
                    positive=True,
                ),
                sniMaxSize=parseSize(
                    table.get("sni-max-size", DEFAULT_MAX_SIZE),
                    f"{where}.sni-max-size",
                    MIN_SNI_MAX_SIZE,
                ),
                udpIdleTimeout=udpIdle,
                resolveTTL=(
                    parseResolveTTL(table["resolve-ttl"], f"{where}.resolve-ttl")
                    if "resolve-ttl" in table
                    else None
                ),
                **limits,
            )
        )
    return out
