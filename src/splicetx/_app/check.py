# -*- test-case-name: tests.test_check -*-
"""
C{twist splice-proxy --check}: validate the whole configuration and exit,
as C{haproxy -c} and C{nginx -t} do, so a service manager can refuse a bad
configuration before it starts the proxy (C{ExecStartPre=}).

The options, the C{--config} file, every endpoint string and certificate
are checked the way a start checks them (L{Options <splicetx._app.tap.Options>}
parses them first; the first problem there ends the check with its one line
and status 64).  Then every listening endpoint and the C{--metrics}
endpoint is bound for a moment, without listening, so that an address in use
or a port the user may not bind is found too; each such problem is one line,
and all of them are listed.  C{systemd:} listeners are left out: the
service manager holds those sockets.
"""

from __future__ import annotations

import errno
import os
import socket

from splicetx._config.endpoints import checkListen, endpointFields, endpointType
from splicetx._config.model import ProxyConfig
from splicetx._config.values import ConfigError

__all__ = ["bindProblems", "checkReport"]

_INET = {
    "tcp": socket.AF_INET,
    "ssl": socket.AF_INET,
    "mptcp": socket.AF_INET,
    "tcp6": socket.AF_INET6,
    "mptcp6": socket.AF_INET6,
}


def _bindProblem(option: str, description: str) -> str | None:
    """
    Bind the address of one listening endpoint string for a moment.

    @return: one line when it cannot be bound, else C{None}.
    """
    kind = endpointType(description)
    positional, named = endpointFields(description)
    if kind in _INET:
        family = _INET[kind]
        port = named.get("port", positional[0] if positional else "0")
        interface = named.get("interface", "" if family == socket.AF_INET else "::")
        address: object = (interface.strip("[]"), int(port))
        sock = socket.socket(family, socket.SOCK_STREAM)
    elif kind == "unix":
        path = named.get("address", positional[0] if positional else "")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{option} {description}: cannot create a socket in {directory}"
        return None
    else:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        reason = {
            errno.EADDRINUSE: "the address is already in use",
            errno.EACCES: "permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE)",
            errno.EADDRNOTAVAIL: f"{interface} is not an address of this machine",
        }.get(e.errno, e.strerror or str(e))
        return f"{option} {description}: cannot listen: {reason}"
    finally:
        sock.close()
    return None


def bindProblems(config: ProxyConfig) -> list[str]:
    """
    Check every listening endpoint string of a configuration, and its
    metrics endpoint, and bind each for a moment; C{systemd:} ones are left
    to the service manager.

    @return: one line per endpoint that cannot be bound.
    """
    endpoints = [
        ("--listen" if f.lineNumber == 0 else f"--config forward {f.listen}", d)
        for f in config.forwards
        for d in f.listens
    ]
    if config.metricsEndpoint is not None:
        endpoints.append(("--metrics", config.metricsEndpoint))
    problems = []
    for option, description in endpoints:
        if endpointType(description) == "systemd":
            continue
        try:
            checkListen(description, option)
        except ConfigError as e:
            problems.append(str(e))
            continue
        problem = _bindProblem(option, description)
        if problem is not None:
            problems.append(problem)
    return problems


def checkReport(config: ProxyConfig) -> tuple[int, list[str]]:
    """
    The outcome of C{--check} for a configuration that parsed.

    @return: the exit status (0, or 64 when there are problems) and the
        lines to print.
    """
    problems = bindProblems(config)
    if problems:
        return 64, [f"splice-proxy: error: {p}" for p in problems] + [
            f"splice-proxy: configuration has {len(problems)} problem(s)"
        ]
    listeners = sum(len(f.listens) for f in config.forwards)
    forwards = len(config.forwards)
    return 0, [
        f"splice-proxy: configuration OK ({forwards} forward(s), "
        f"{listeners} listener(s))"
    ]
