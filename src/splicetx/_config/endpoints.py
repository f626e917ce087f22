# -*- test-case-name: tests.test_cli -*-
"""
Endpoint strings as C{twist splice-proxy} accepts them: Twisted's
C{serverFromString}/C{clientFromString} syntax, plus a C{tcp6:} client
endpoint, bracketed IPv6 literals (C{tcp6:[::1]:8080}) and a default
C{backlog=}, and the C{udp:} endpoints of UDP forwards
(C{udp:PORT[:interface=ADDRESS]} to listen, C{udp:HOST:PORT[:bindAddress=ADDRESS]}
to send to; see L{splicetx._udp.endpoints}).

L{checkListen} and L{checkConnect} parse a string while the options are read (before
any reactor is installed) and turn every failure into one line naming the
option; L{explainEndpointError} words an exception for such a line.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import IReactorPluggableNameResolver
from zope.interface import implementer

from splicetx._config.endpointerrors import CLIENT, SERVER, explainEndpointError
from splicetx._config.values import ConfigError
from splicetx._pool.target import TCPTarget
from splicetx._udp.endpoints import UDPClientEndpoint, UDPServerEndpoint, isIPLiteral

__all__ = [
    "DEFAULT_BACKLOG",
    "clientEndpoint",
    "endpointType",
    "serverEndpoint",
    "withBacklog",
    "checkListen",
    "endpointFields",
    "checkConnect",
    "explainEndpointError",
    "isUDP",
]

#: The default listen backlog.  Twisted's default of 50 overflows under a
#: burst of a few hundred connects; the kernel caps it at
#: C{net.core.somaxconn} (4096 on current Linux).
DEFAULT_BACKLOG = 1024

#: Endpoint types whose string accepts C{backlog=}.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl", "mptcp", "mptcp6"})

_SYSTEMD_HINT = (
    "no such socket inherited from systemd (this process needs LISTEN_PID, "
    "LISTEN_FDS and LISTEN_FDNAMES, as systemd 227+ sets them)"
)


def _split(description: str) -> list[str]:
    """
    Split an endpoint string at its unescaped colons (backslash escapes are
    kept in the pieces).
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for c in chars:
        if c == "\\":
            current.append(c)
            current.append(next(chars, ""))
        elif c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def _unescape(piece: str) -> str:
    """
    Drop the backslash escapes of one piece of an endpoint string.
    """
    out: list[str] = []
    chars = iter(piece)
    for c in chars:
        out.append(next(chars, "") if c == "\\" else c)
    return "".join(out)


def _escapeBrackets(description: str) -> str:
    """
    Let users write IPv6 literals in brackets: C{tcp6:[::1]:8080} becomes
    C{tcp6:\\:\\:1:8080} and C{interface=[::1]} becomes
    C{interface=\\:\\:1}.
    """
    out: list[str] = []
    i = 0
    while i < len(description):
        c = description[i]
        if c == "\\":
            out.append(description[i : i + 2])
            i += 2
            continue
        if c == "[":
            end = description.find("]", i)
            if end > i:
                out.append(description[i + 1 : end].replace(":", "\\:"))
                i = end + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def endpointType(description: str) -> str:
    """
    The type of an endpoint string, lower-cased (C{"tcp"} for
    C{"tcp:8080"}).
    """
    return _split(description)[0].strip().lower()


def isUDP(description: str) -> bool:
    """
    Whether an endpoint string is a C{udp:} one (a UDP forward's).
    """
    return endpointType(description) == "udp"


def _fields(description: str, names: tuple[str, ...], keywords: set[str]) -> dict:
    """
    The fields of a C{udp:} string: positional ones named by C{names} in
    order, and C{name=value} ones of C{keywords}.
    """
    values: dict[str, str] = {}
    positional: list[str] = []
    for piece in _split(_escapeBrackets(description))[1:]:
        key, eq, value = piece.partition("=")
        if eq and "\\" not in key:
            if key not in keywords:
                known = ", ".join(sorted(keywords))
                raise ValueError(f"unknown udp argument {key!r} (known: {known})")
            values[key] = _unescape(value)
        else:
            positional.append(_unescape(piece))
    free = [n for n in names if n not in values]
    if len(positional) > len(free):
        raise ValueError("too many positional arguments")
    values.update(zip(free, positional, strict=False))
    return values


def _udpPort(text: str | None, least: int) -> int:
    if text is None or not text.strip().isdigit():
        raise ValueError(f"expected a port number, got {text!r}")
    port = int(text)
    if not least <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def _udpAddress(text: str | None, what: str) -> str:
    if text is None or text == "":
        return ""
    if not isIPLiteral(text):
        raise ValueError(f"{what} must be an IP address, got {text!r}")
    return text


def udpServerEndpoint(reactor: Any, description: str) -> UDPServerEndpoint:
    """
    Parse C{udp:PORT[:interface=ADDRESS]} (or C{udp:port=PORT...}).

    @raise ValueError: for a malformed string.
    """
    fields = _fields(description, ("port",), {"port", "interface"})
    return UDPServerEndpoint(
        reactor,
        _udpPort(fields.get("port"), 0),
        _udpAddress(fields.get("interface"), "interface"),
    )


def udpClientEndpoint(reactor: Any, description: str) -> UDPClientEndpoint:
    """
    Parse C{udp:HOST:PORT[:bindAddress=ADDRESS]} (or C{udp:host=...}).

    @raise ValueError: for a malformed string.
    """
    fields = _fields(description, ("host", "port"), {"host", "port", "bindAddress"})
    host = fields.get("host", "").strip()
    if not host:
        raise ValueError("udp needs a host and a port (udp:HOST:PORT)")
    bind = _udpAddress(fields.get("bindAddress"), "bindAddress") or None
    return UDPClientEndpoint(reactor, host, _udpPort(fields.get("port"), 1), bind)


def withBacklog(description: str, backlog: int) -> str:
    """
    Add C{backlog=N} to a C{tcp}, C{tcp6}, C{unix}, C{ssl} or C{mptcp[6]}
    server endpoint string that does not set one.

    @param description: a server endpoint string.
    @param backlog: the listen queue length.
    @return: the endpoint string to use.
    """
    parts = _split(description)
    if parts[0].strip().lower() not in _BACKLOG_TYPES:
        return description
    if any(p.startswith("backlog=") for p in parts[1:]):
        return description
    return f"{description}:backlog={backlog}"


def _tcp6Client(reactor: Any, description: str) -> Any:
    """
    Parse C{tcp6:HOST:PORT[:timeout=S][:bindAddress=ADDR]} (Twisted has no
    C{tcp6} client endpoint string): a C{TCP6ClientEndpoint}, which resolves
    host names to IPv6 addresses without blocking.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for piece in _split(description)[1:]:
        key, eq, value = piece.partition("=")
        if eq and "\\" not in key:
            kwargs[key] = _unescape(value)
        else:
            args.append(_unescape(piece))
    unknown = set(kwargs) - {"host", "port", "timeout", "bindAddress"}
    if unknown:
        raise ValueError(f"unknown tcp6 argument(s): {', '.join(sorted(unknown))}")
    names = [n for n in ("host", "port") if n not in kwargs]
    if len(args) > len(names):
        raise ValueError("too many positional arguments")
    kwargs.update(zip(names, args, strict=False))
    if "host" not in kwargs or "port" not in kwargs:
        raise ValueError("tcp6 needs a host and a port (tcp6:HOST:PORT)")
    port = int(kwargs["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    timeout = float(kwargs.get("timeout", 30))
    bind = kwargs.get("bindAddress")
    host = kwargs["host"]
    if not isIPv6Address(host):
        return TCPTarget(
            reactor, host, port, timeout, (bind, 0) if bind else None, socket.AF_INET6
        )
    return TCP6ClientEndpoint(
        reactor,
        host,
        port,
        timeout=timeout,
        bindAddress=(bind, 0) if bind else None,
    )


def clientEndpoint(reactor: Any, description: str) -> Any:
    """
    Build the upstream endpoint: C{clientFromString}, plus C{tcp6:} and
    bracketed IPv6 literals; a C{tcp:} or C{tcp6:} host name becomes a
    L{TCPTarget <splicetx._pool.target.TCPTarget>}, which resolves it
    through the process's one name cache.

    @param reactor: the reactor the endpoint connects with.
    @param description: a client endpoint string.
    @raise ValueError: (or another exception) for a malformed string.
    """
    if isUDP(description):
        return udpClientEndpoint(reactor, description)
    description = _escapeBrackets(description)
    if endpointType(description) == "tcp6":
        return _tcp6Client(reactor, description)
    endpoint = clientFromString(reactor, description)
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if type(endpoint) is TCP4ClientEndpoint and not (
        isIPAddress(endpoint._host) or isIPv6Address(endpoint._host)
    ):
        # A name: resolved through the process's one cache, not by a
        # thread per connect (splicetx._pool.resolver).
        e: Any = endpoint
        return TCPTarget(
            reactor, e._host, e._port, e._timeout, e._bindAddress, socket.AF_INET
        )
    return endpoint


def serverEndpoint(reactor: Any, description: str) -> Any:
    """
    Build a listening endpoint: C{serverFromString}, plus bracketed IPv6
    literals.

    @param reactor: the reactor the endpoint listens with.
    @param description: a server endpoint string.
    """
    if isUDP(description):
        return udpServerEndpoint(reactor, description)
    return serverFromString(reactor, _escapeBrackets(description))


@implementer(IReactorPluggableNameResolver)
class _ParseOnlyReactor:
    """
    Stands in for the reactor while endpoint strings are checked during
    option parsing (the real one may not be installed yet): endpoint
    constructors only store it.
    """

    nameResolver = None

    def installNameResolver(self, resolver: Any) -> Any:
        """
        Ignore the resolver: nothing is resolved while parsing.
        """
        return None


_KEYWORD = re.compile(r"^[A-Za-z]+=")


def _unixPathMissing(description: str) -> bool:
    """
    Whether a C{unix} endpoint string names no path (C{unix:},
    C{unix:path=}, C{unix:address=}), which Twisted's parsers accept and
    which would fail only at the first connection.
    """
    parts = _split(description)
    if parts[0].strip().lower() != "unix":
        return False
    for piece in parts[1:]:
        text = _unescape(piece)
        for key in ("path=", "address="):
            if text.startswith(key):
                return not text[len(key) :].strip()
        if not _KEYWORD.match(text):
            return not text.strip()
    return True


def endpointFields(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The fields of an endpoint string after its type, unescaped: the
    positional ones in order, and the C{name=value} ones by name.
    """
    fields = [_unescape(p) for p in _split(_escapeBrackets(description))[1:]]
    positional = [f for f in fields if not _KEYWORD.match(f)]
    named = dict(f.split("=", 1) for f in fields if _KEYWORD.match(f))
    return positional, named


def _serverProblem(description: str, kind: str) -> str | None:
    """
    What Twisted's parser lets through but the listen would refuse: a port
    out of range, a unix socket in a directory that does not exist.
    """
    positional, named = endpointFields(description)
    if kind in ("tcp", "tcp6", "ssl", "mptcp", "mptcp6"):
        port = named.get("port", positional[0] if positional else None)
        if port is not None and port.strip().isdigit() and int(port) > 65535:
            return f"port {int(port)} out of range (0-65535)"
    elif kind == "unix":
        path = named.get("address", positional[0] if positional else "")
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            return f"the directory {directory} does not exist"
    return None


def checkListen(description: str, option: str = "--listen") -> None:
    """
    Check a server endpoint string.

    @param description: the string as given.
    @param option: the option it came from, for the message.
    @raise ConfigError: with one line when it cannot be parsed.
    """
    if _unixPathMissing(description):
        raise ConfigError(f"{option} {description!r}: a unix endpoint needs a path")
    kind = endpointType(description)
    try:
        serverEndpoint(_ParseOnlyReactor(), description)
    except (IndexError, KeyError) as e:
        if kind == "systemd":
            raise ConfigError(f"{option} {description}: {_SYSTEMD_HINT}")
        raise ConfigError(
            f"{option} {description}: {explainEndpointError(e, SERVER, kind)}"
        )
    except Exception as e:
        hint = ""
        if type(e).__module__.startswith("OpenSSL"):
            raise ConfigError(
                f"{option} {description}: cannot load the TLS key or "
                f"certificate: {explainEndpointError(e, SERVER, kind)}"
            )
        if description.strip().isdigit():
            hint = f" (did you mean tcp:{description.strip()}?)"
        raise ConfigError(
            f"{option} {description}: {explainEndpointError(e, SERVER, kind)}{hint}"
        )
    problem = _serverProblem(description, kind)
    if problem is not None:
        raise ConfigError(f"{option} {description}: {problem}")


def checkConnect(description: str) -> None:
    """
    Check the C{--connect} client endpoint string.

    @raise ConfigError: with one line when it cannot be parsed.
    """
    if _unixPathMissing(description):
        raise ConfigError(f"--connect {description!r}: a unix endpoint needs a path")
    kind = endpointType(description)
    try:
        clientEndpoint(_ParseOnlyReactor(), description)
    except Exception as e:
        positional, _ = endpointFields(description)
        if kind in ("tcp", "tcp6", "tls", "mptcp", "mptcp6") and len(positional) > 2:
            raise ConfigError(
                f"--connect {description}: expected {kind}:HOST:PORT, got "
                f"{len(positional)} fields after {kind}: (an IPv6 address goes "
                f"in brackets: {kind}:[::1]:8080)"
            ) from None
        raise ConfigError(
            f"--connect {description}: {explainEndpointError(e, CLIENT, kind)}"
        ) from None
