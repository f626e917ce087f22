# -*- test-case-name: tests.test_poolconfig -*-
"""
The written forms of upstream pools: a C{--connect} argument (an upstream
with its options), a C{--route-sni} argument, and the pool options given as
strings (the command line's C{--balance} ..., a rinetd forward's brackets),
read into L{PoolSpec}s and L{UpstreamSpec}s.

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

Values follow the one grammar of L{splicetx._config.values} (C{fail-timeout=500ms});
errors are L{ConfigError}s.  The TOML form of pools is read by
L{splicetx._config.toml}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from splicetx._config.model import HealthCheckSpec, PoolSpec, UpstreamSpec
from splicetx._config.values import (
    ConfigError,
    decodeEscapes,
    parseCount,
    parseDuration,
)
from splicetx._pool.balance import BALANCERS
from splicetx._pool.health import DEFAULT_FALL, DEFAULT_RISE
from splicetx._pool.pool import DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS
from splicetx._pool.sni import SNIRouter, normaliseServerName

__all__ = [
    "parseUpstream",
    "parseRouteSNI",
    "groupRoutes",
    "POOL_OPTIONS",
    "poolSpecFromOptions",
    "upstreamSpec",
]

# -- the argument syntax ------------------------------------------------------

_OPTION_NAMES = ("weight", "max-fails", "fail-timeout")
_OPTION_WORD = "|".join(re.escape(n) for n in _OPTION_NAMES)
_TRAILING_OPTIONS = re.compile(
    r"^(?P<endpoint>.*?)(?P<options>(?:(?:^|\s+)(?:" + _OPTION_WORD + r")=\S*)*)\s*$",
    re.DOTALL,
)


def parseUpstream(text: str) -> UpstreamSpec:
    """
    Parse one C{--connect} argument: an endpoint string and trailing
    options (see the module docstring).

    @param text: e.g. C{"tcp:10.0.0.2:80 weight=3 max-fails=2"}.
    @return: the L{UpstreamSpec} (the endpoint string is not checked here).
    @raise ConfigError: for a missing endpoint, an option given twice
        or a value out of range.
    """
    match = _TRAILING_OPTIONS.match(text)
    assert match is not None  # the pattern matches any text
    endpoint = match.group("endpoint").strip()
    if not endpoint:
        raise ConfigError(f"no endpoint in {text!r}")
    values: dict[str, str] = {}
    for word in match.group("options").split():
        key, _, value = word.partition("=")
        if key in values:
            raise ConfigError(f"{key}= given twice in {text!r}")
        values[key] = value
    return upstreamSpec(endpoint, values, f"upstream {endpoint!r}")


def upstreamSpec(endpoint: str, values: dict[str, Any], where: str) -> UpstreamSpec:
    weight = 1
    maxFails = failTimeout = None
    if "weight" in values:
        weight = parseCount(values["weight"], f"{where}: weight", 1)
    if "max-fails" in values:
        maxFails = parseCount(values["max-fails"], f"{where}: max-fails", 0)
    if "fail-timeout" in values:
        failTimeout = parseDuration(
            values["fail-timeout"], f"{where}: fail-timeout", positive=True
        )
    return UpstreamSpec(endpoint, weight, maxFails, failTimeout)


def parseRouteSNI(text: str) -> tuple[str, UpstreamSpec]:
    """
    Parse one C{--route-sni} argument, C{NAME=UPSTREAM}.

    @param text: e.g. C{"*.example.com=tcp:10.0.0.5:443 weight=2"}.
    @return: C{(pattern, upstream)}, the pattern as written.
    @raise ConfigError: without C{=}, for a bad name pattern or upstream.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ConfigError(f"expected NAME=ENDPOINT, got {text!r}")
    try:
        SNIRouter({name: None})
    except ValueError as e:
        raise ConfigError(str(e)) from None
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
    @raise ConfigError: for a bad value.
    """
    members = tuple(upstreams)
    if not members:
        raise ConfigError(f"{where}connect: no upstream")

    def get(name: str) -> Any:
        value = options.get(name)
        return None if value is None or value == "" else value

    balance = get("balance") or "roundrobin"
    if balance not in BALANCERS:
        raise ConfigError(
            f"{where}balance: unknown {balance!r} (use one of: {', '.join(BALANCERS)})"
        )
    health = None
    interval = get("health-check-interval")
    if interval is not None and parseDuration(
        interval, f"{where}health-check-interval"
    ):
        timeout = get("health-check-timeout")
        health = HealthCheckSpec(
            interval=parseDuration(
                interval, f"{where}health-check-interval", positive=True
            ),
            timeout=(
                None
                if timeout is None
                else parseDuration(
                    timeout, f"{where}health-check-timeout", positive=True
                )
            ),
            rise=parseCount(
                get("health-check-rise") or DEFAULT_RISE, f"{where}health-check-rise", 1
            ),
            fall=parseCount(
                get("health-check-fall") or DEFAULT_FALL, f"{where}health-check-fall", 1
            ),
            send=decodeEscapes(
                get("health-check-send") or "", f"{where}health-check-send"
            ),
            expect=decodeEscapes(
                get("health-check-expect") or "", f"{where}health-check-expect"
            ),
        )
    else:
        for name in POOL_OPTIONS:
            if name.startswith("health-check-") and get(name) is not None:
                if name != "health-check-interval":
                    raise ConfigError(
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
            else parseCount(maxFails, f"{where}max-fails", 0)
        ),
        failTimeout=(
            DEFAULT_FAIL_TIMEOUT
            if failTimeout is None
            else parseDuration(failTimeout, f"{where}fail-timeout", positive=True)
        ),
        maxTries=None
        if tries is None
        else parseCount(tries, f"{where}connect-tries", 1),
        failoverTimeout=(
            None
            if failover is None
            else parseDuration(failover, f"{where}failover-timeout") or None
        ),
        healthCheck=health,
    )
