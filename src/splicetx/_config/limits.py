# -*- test-case-name: tests.test_clientlimits_cli -*-
"""
The command-line options of the limits per client and of who may read the
metrics endpoint (C{--client-max-connections}, C{--client-connection-rate},
C{--client-prefix}, C{--client-limit-action}, C{--metrics-allow}) and of
the bandwidth limits (C{--connection-bandwidth}, C{--client-bandwidth},
C{--listener-bandwidth}), kept here so C{twist
splice-proxy}'s option parser adds them in one block, and read into
L{ProxyConfig <splicetx._config.model.ProxyConfig>} keywords with the one
value grammar (L{splicetx._config.values}).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from splicetx._config.endpoints import endpointType
from splicetx._config.values import (
    ConfigError,
    parseBandwidth,
    parseClientPrefix,
    parseCount,
    parseRate,
    parseTrustedSources,
)
from splicetx._proxy.access import AccessControl
from splicetx._proxy.clientlimits import ClientLimits, ConnectionRate

__all__ = [
    "LIMIT_OPTIONS",
    "limitSettings",
    "CLIENT_LIMIT_KEYS",
    "clientLimitFields",
    "clientLimitsFor",
    "forwardLimits",
    "forwardBandwidths",
    "reconfigureClientLimits",
    "metricsAccess",
    "beyondLoopback",
]

_INTERFACE = re.compile(r"(?:^|:)interface=(\[[^\]]*\]|(?:\\.|[^:])*)")

#: The keys of a forward's own limits per client in a configuration file.
CLIENT_LIMIT_KEYS = (
    "client-max-connections",
    "client-connection-rate",
    "client-prefix",
    "client-limit-action",
    "connection-bandwidth",
    "client-bandwidth",
    "listener-bandwidth",
)

#: The values of C{--client-limit-action}: C{True} to reset.
_ACTIONS = {"reset": True, "close": False}

#: C{optParameters} rows of C{twist splice-proxy}.
LIMIT_OPTIONS: list[list[Any]] = [
    [
        "client-max-connections",
        None,
        None,
        "Live connections per client (its address, or its network with "
        "--client-prefix) at most; more are refused (reset).",
    ],
    [
        "client-connection-rate",
        None,
        None,
        "New connections per client: N/s (or N/m, N/h), with an optional "
        "burst, e.g. 5/s:20; faster ones are refused (reset).",
    ],
    [
        "client-prefix",
        None,
        "32,128",
        "The network a client counts as for the client limits: IPv4,IPv6 "
        "prefix lengths (24,64: every address of a /24 or a /64 is one client).",
    ],
    [
        "client-limit-action",
        None,
        "reset",
        "What a client over a limit per client gets: reset (RST) or close "
        "(FIN at once).",
    ],
    [
        "connection-bandwidth",
        None,
        None,
        "Bytes per second each direction of each connection may move at "
        "most, e.g. 10MB/s or 500KiB/s (bursts of one second, 256 KiB at "
        "least); still spliced.",
    ],
    [
        "client-bandwidth",
        None,
        None,
        "Bytes per second each direction of all connections of one client "
        "(as for --client-prefix) together may move at most; they take "
        "turns; still spliced.",
    ],
    [
        "listener-bandwidth",
        None,
        None,
        "Bytes per second each direction of all connections of one "
        "listening port (or forward) together may move at most; they take "
        "turns; still spliced.",
    ],
]


def limitSettings(options: Any, warnings: list[str]) -> dict[str, Any]:
    """
    Read those options (and C{--metrics-allow}).

    @param options: the parsed C{Options} (a mapping of option names).
    @param warnings: the start-up warnings, to add to: C{--metrics} on more
        than the loopback without C{--metrics-allow}.
    @return: L{ProxyConfig <splicetx._config.model.ProxyConfig>} keywords.
    @raise ConfigError: for a bad value, naming the option.
    """
    most = options["client-max-connections"]
    if most is not None:
        most = parseCount(most, "--client-max-connections", 0) or None
    rate = options["client-connection-rate"]
    if rate is not None:
        rate = parseRate(rate, "--client-connection-rate")
    bandwidths = {}
    for name in ("connection", "client", "listener"):
        value = options[f"{name}-bandwidth"]
        if value is not None:
            value = parseBandwidth(value, f"--{name}-bandwidth")
        bandwidths[f"{name}Bandwidth"] = value
    allow = list(options["metrics-allow"])
    parseTrustedSources(allow, "--metrics-allow")
    if allow and options["metrics"] is None:
        raise ConfigError("--metrics-allow needs --metrics")
    metrics = options["metrics"]
    if metrics is not None and not allow and beyondLoopback(metrics):
        warnings.append(
            f"--metrics {metrics} listens beyond the loopback with no "
            "--metrics-allow rule: anyone who reaches it reads the metrics "
            "and the status page (client addresses, upstreams)"
        )
    return {
        "clientMaxConnections": most,
        "clientConnectionRate": rate,
        "clientPrefix": parseClientPrefix(options["client-prefix"]),
        "metricsAllow": allow,
        "clientLimitAction": _parseAction(options["client-limit-action"]),
        **bandwidths,
    }


def _parseAction(value: Any, what: str = "--client-limit-action") -> str:
    if value not in _ACTIONS:
        raise ConfigError(f"{what}: expected reset or close, got {value!r}")
    return str(value)


def _forwardBandwidth(value: Any, what: str) -> int:
    # A forward's own bandwidth: 0 for no limit (over the command line's).
    if value == 0 or (isinstance(value, str) and value.strip() == "0"):
        return 0
    return parseBandwidth(value, what)


def beyondLoopback(description: str) -> bool:
    """
    Whether a server endpoint string listens on a network address other
    than the loopback: a C{tcp}, C{tcp6}, C{ssl} or C{mptcp} one with no
    C{interface=} (every address) or a non-loopback one.
    """
    if endpointType(description) not in ("tcp", "tcp6", "ssl", "mptcp"):
        return False
    match = _INTERFACE.search(description)
    if match is None:
        return True
    host = match.group(1).strip("[]").replace("\\", "")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def clientLimitFields(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """
    Read a forward's own limits per client from a configuration file: the
    keys of L{CLIENT_LIMIT_KEYS} that C{values} has (a TOML table, or the
    options in brackets of a rinetd line), with the command line's grammar.

    @param values: key to the value as written (text, or a TOML integer).
    @param where: put before each key in messages (C{"forward[0]."}).
    @return: L{Forward <splicetx._config.model.Forward>} keywords
        (C{clientMaxConnections}, the bandwidths: C{0} for no limit).
    @raise ConfigError: for a bad value, naming C{where} and the key.
    """
    out: dict[str, Any] = {}
    key = "client-max-connections"
    if key in values:
        out["clientMaxConnections"] = parseCount(values[key], where + key, 0)
    key = "client-connection-rate"
    if key in values:
        out["clientConnectionRate"] = parseRate(values[key], where + key)
    key = "client-prefix"
    if key in values:
        out["clientPrefix"] = parseClientPrefix(values[key], where + key)
    key = "client-limit-action"
    if key in values:
        out["clientLimitAction"] = _parseAction(values[key], where + key)
    for name in ("connection", "client", "listener"):
        key = f"{name}-bandwidth"
        if key in values:
            out[f"{name}Bandwidth"] = _forwardBandwidth(values[key], where + key)
    return out


def forwardLimits(
    config: Any, forward: Any = None
) -> tuple[int | None, ConnectionRate | None, tuple[int, int]]:
    """
    The limits per client of one forward: its own (a file's
    C{client-max-connections} ...), else the command line's.

    @param config: the L{ProxyConfig <splicetx._config.model.ProxyConfig>}.
    @param forward: the L{Forward <splicetx._config.model.Forward>}, or
        C{None} for the command line's values alone.
    @return: C{(maxConnections, rate, prefix)}; C{None} for no limit.
    """
    most = config.clientMaxConnections
    rate = config.clientConnectionRate
    prefix = config.clientPrefix
    if forward is not None:
        if forward.clientMaxConnections is not None:
            most = forward.clientMaxConnections or None
        if forward.clientConnectionRate is not None:
            rate = forward.clientConnectionRate
        if forward.clientPrefix is not None:
            prefix = forward.clientPrefix
    return most, rate, prefix


def forwardBandwidths(
    config: Any, forward: Any = None
) -> tuple[int | None, int | None, int | None]:
    """
    The bandwidth limits of one forward: its own, else the command line's.

    @return: C{(connection, client, listener)} bytes per second; C{None}
        for no limit.
    """
    out = []
    for name in ("connectionBandwidth", "clientBandwidth", "listenerBandwidth"):
        value = getattr(config, name)
        own = None if forward is None else getattr(forward, name)
        if own is not None:
            value = own or None
        out.append(value)
    connection, client, listener = out
    return connection, client, listener


def _action(config: Any, forward: Any) -> bool:
    action = config.clientLimitAction
    if forward is not None and forward.clientLimitAction is not None:
        action = forward.clientLimitAction
    return _ACTIONS[action]


def clientLimitsFor(config: Any, forward: Any = None) -> ClientLimits | None:
    """
    The L{ClientLimits} of one forward of C{config} (a L{ProxyConfig
    <splicetx._config.model.ProxyConfig>}), or C{None} when it sets none.

    @param forward: the forward (see L{forwardLimits}), or C{None}.
    """
    most, rate, prefix = forwardLimits(config, forward)
    bandwidth = forwardBandwidths(config, forward)[1]
    if most is None and rate is None and bandwidth is None:
        return None
    return ClientLimits(
        most, rate, prefix, bandwidth=bandwidth, reset=_action(config, forward)
    )


def reconfigureClientLimits(factory: Any, config: Any, forward: Any) -> None:
    """
    Give a running factory the limits per client and the bandwidth limits
    of C{forward} (a reload): its L{ClientLimits} takes them for the
    connections admitted from now on, and keeps counting the live ones;
    the live connections keep the bandwidth buckets they have.

    @param factory: the forward's factory (its C{clientLimits} is set).
    @param config: the L{ProxyConfig <splicetx._config.model.ProxyConfig>}.
    @param forward: the forward as the reloaded file gives it.
    """
    most, rate, prefix = forwardLimits(config, forward)
    connection, client, listener = forwardBandwidths(config, forward)
    factory.connectionBandwidth = connection
    factory.listenerBandwidth = listener
    limits = factory.clientLimits
    if limits is None:
        factory.clientLimits = clientLimitsFor(config, forward)
    elif most is None and rate is None and client is None:
        # Connections admitted before still give their place back to the
        # table they hold; new ones are not counted.
        factory.clientLimits = None
    else:
        limits.configure(most, rate, prefix, client, _action(config, forward))


def metricsAccess(config: Any) -> AccessControl | None:
    """
    The rules of who may read the metrics endpoint of C{config}, or C{None}
    for everyone.
    """
    if not config.metricsAllow:
        return None
    return AccessControl(config.metricsAllow)
