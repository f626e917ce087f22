# -*- test-case-name: tests.test_clientlimits_cli -*-
"""
The command-line options of the limits per client and of who may read the
metrics endpoint (C{--client-max-connections}, C{--client-connection-rate},
C{--client-prefix}, C{--metrics-allow}) and of the bandwidth per connection
(C{--connection-bandwidth}), kept here so C{twist
splice-proxy}'s option parser adds them in one block, and read into
L{ProxyConfig <splicetx._config.model.ProxyConfig>} keywords with the one
value grammar (L{splicetx._config.values}).
"""

from __future__ import annotations

import ipaddress
import re
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
from splicetx._proxy.clientlimits import ClientLimits

__all__ = [
    "LIMIT_OPTIONS",
    "limitSettings",
    "clientLimitsFor",
    "metricsAccess",
    "beyondLoopback",
]

_INTERFACE = re.compile(r"(?:^|:)interface=(\[[^\]]*\]|(?:\\.|[^:])*)")

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
        "connection-bandwidth",
        None,
        None,
        "Bytes per second each direction of each connection may move at "
        "most, e.g. 10MB/s or 500KiB/s (bursts of one second, 256 KiB at "
        "least); still spliced.",
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
    bandwidth = options["connection-bandwidth"]
    if bandwidth is not None:
        bandwidth = parseBandwidth(bandwidth, "--connection-bandwidth")
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
        "connectionBandwidth": bandwidth,
    }


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


def clientLimitsFor(config: Any) -> ClientLimits | None:
    """
    The L{ClientLimits} of one forward of C{config} (a L{ProxyConfig
    <splicetx._config.model.ProxyConfig>}), or C{None} when it sets none.
    """
    if config.clientMaxConnections is None and config.clientConnectionRate is None:
        return None
    return ClientLimits(
        config.clientMaxConnections, config.clientConnectionRate, config.clientPrefix
    )


def metricsAccess(config: Any) -> AccessControl | None:
    """
    The rules of who may read the metrics endpoint of C{config}, or C{None}
    for everyone.
    """
    if not config.metricsAllow:
        return None
    return AccessControl(config.metricsAllow)
