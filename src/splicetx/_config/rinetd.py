# -*- test-case-name: tests.test_config -*-
"""
Read rinetd's configuration format, so a rinetd user can point splicetx at
an existing file.

The format, one statement per line (C{#} starts a comment, blank lines are
ignored, keywords are case-insensitive)::

    # global rules: before any forward, they apply to every forward
    allow 127.0.0.*
    deny 10.0.0.0/8

    # bindaddress bindport connectaddress connectport [options]
    0.0.0.0     8080   127.0.0.1   80
    ::1         https  localhost   8443   [src=127.0.0.2]
    # rules after a forward apply to that forward only
    allow 127.0.0.1

    logfile /var/log/rinetd.log      # accepted, ignored (warning)
    pidlogfile /run/rinetd.pid       # accepted, ignored (warning)
    logcommon                        # accepted, ignored (warning)

  - Ports are numbers (1-65535) or service names (C{socket.getservbyname}).
    A C{/tcp} suffix is accepted; C{/udp} on both ports makes a UDP
    forward (C{0.0.0.0 5353/udp 127.0.0.1 53/udp}, rinetd 0.70's syntax;
    see C{docs/udp.md}).
  - Addresses are IPv4 or IPv6 literals or host names.  A bind host name is
    resolved once, while reading the file (Twisted listens on an address);
    a connect host name is left to the client endpoint.
  - Options in brackets after a forward: C{src=ADDRESS} (rinetd's source
    address for the upstream connection) becomes the client endpoint's
    C{bindAddress}; C{timeout=N} is a UDP forward's session idle timeout
    (as in rinetd; on a TCP forward it is ignored with a warning); the
    pool options (C{balance=}, C{max-fails=},
    C{health-check-interval=} ..., see C{docs/pools.md}) and C{weight=}
    make the forward a pool; C{client-max-connections=N},
    C{client-connection-rate=N/s[:BURST]} and C{client-prefix=V4,V6} are
    the forward's own limits per client (the command line's options are
    the default); anything else is an error.
  - C{upstream connectaddress connectport [weight=N,max-fails=N,
    fail-timeout=S,src=ADDRESS]} after a forward adds one more upstream to
    its pool.
  - Rules: see L{splicetx._proxy.access} (rinetd precedence: a client must match an
    allow rule if there are any, and must match no deny rule; a forward's
    own rules apply on top of the global ones).

Every problem raises L{ConfigError}, whose C{str()} is one line C{FILE:LINE:
problem}; the whole file is checked before anything would listen.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from splicetx._config.limits import CLIENT_LIMIT_KEYS, clientLimitFields
from splicetx._config.model import ConfigFile, Forward, PoolSpec
from splicetx._config.pools import POOL_OPTIONS, parseUpstream, poolSpecFromOptions
from splicetx._config.values import ConfigError, parseDuration
from splicetx._proxy.access import AccessControl, AccessRule, parseRule

__all__ = [
    "parseConfig",
    "parseConfigFile",
    "escapeEndpointValue",
]


#: Options of one upstream (rinetd brackets of an C{upstream} line).
_UPSTREAM_OPTIONS = ("weight", "max-fails", "fail-timeout")


def escapeEndpointValue(value: str) -> str:
    """
    Escape a value for a Twisted endpoint description string: C{\\}, C{:}
    and C{=} get a backslash (so C{::1} becomes C{\\:\\:1}).
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _defaultResolve(host: str) -> str:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


class _Parser:
    def __init__(
        self,
        filename: str,
        resolve: Callable[[str], str],
        outer: AccessControl | None,
    ) -> None:
        self.filename = filename
        self.resolve = resolve
        self.outer = outer
        self.forwards: list[dict] = []
        self.globalAllow: list[AccessRule] = []
        self.globalDeny: list[AccessRule] = []
        self.warnings: list[str] = []
        self.logFile: str | None = None
        self.pidFile: str | None = None
        self.logCommon = False
        self.binds: dict[tuple[str, int], int] = {}
        self.lineNumber = 0

    def error(self, problem: str) -> ConfigError:
        return ConfigError(problem, self.filename, self.lineNumber)

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.filename}:{self.lineNumber}: {message}")

    def port(self, text: str, what: str, proto: str | None = None) -> int:
        return self.portAndProtocol(text, what, proto)[0]

    def portAndProtocol(
        self, text: str, what: str, proto: str | None = None
    ) -> tuple[int, str]:
        # "53", "53/udp", "domain/udp": the number and "tcp" or "udp"
        # (C{proto} when no suffix is written, else "tcp").
        name = text
        if "/" in text:
            name, suffix = text.rsplit("/", 1)
            suffix = suffix.lower()
            if suffix not in ("tcp", "udp"):
                raise self.error(f"{what} {text!r}: unknown protocol {suffix!r}")
            if proto is not None and suffix != proto:
                raise self.error(
                    f"{what} {text!r}: the forward is {proto.upper()}; "
                    "TCP and UDP cannot be mixed"
                )
            proto = suffix
        proto = proto or "tcp"
        if name.isdigit() and name.isascii():
            port = int(name)
            if not 1 <= port <= 65535:
                raise self.error(f"{what} {port} out of range 1-65535")
            return port, proto
        if (
            not name
            or not name[0].isalpha()
            or not all(c.isalnum() or c in "-_." for c in name)
        ):
            raise self.error(f"bad {what} {text!r}")
        try:
            return socket.getservbyname(name, proto), proto
        except OSError:
            raise self.error(f"unknown service name {name!r} for {what}") from None

    def host(self, text: str, what: str) -> str:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        labels = text.rstrip(".").split(".")
        if not text or not all(
            label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label)
            for label in labels
        ):
            raise self.error(f"bad {what} {text!r}: not an IP address or host name")
        return text

    def rule(self, keyword: str, args: list[str]) -> AccessRule:
        if len(args) != 1:
            raise self.error(f"{keyword} takes one address pattern, got {len(args)}")
        try:
            return parseRule(args[0])
        except ValueError as e:
            raise self.error(f"{keyword}: {e}") from None

    def options(self, text: str) -> dict[str, str]:
        result: dict[str, str] = {}
        inner = text[1:-1].strip()
        if not inner:
            return result
        items: list[str] = []
        for item in inner.split(","):
            if items and item.strip().isdigit() and items[-1].count(",") == 0:
                if items[-1].strip().lower().startswith("client-prefix"):
                    # client-prefix=24,64: its comma is not a separator.
                    items[-1] += "," + item
                    continue
            items.append(item)
        for item in items:
            key, sep, value = item.strip().partition("=")
            key = key.strip().lower()
            value = value.strip()
            if not sep or not value:
                raise self.error(f"bad option {item.strip()!r}: expected name=value")
            if key == "src":
                result["bindAddress"] = self.host(value, "src address")
            elif key == "timeout":
                try:
                    result["timeout"] = str(parseDuration(value, "timeout", True))
                except ConfigError as e:
                    raise self.error(e.problem) from None
            elif key in CLIENT_LIMIT_KEYS:
                try:
                    clientLimitFields({key: value})
                except ConfigError as e:
                    raise self.error(e.problem) from None
                result[key] = value
            elif key in _UPSTREAM_OPTIONS or key in POOL_OPTIONS:
                result[key] = value
            else:
                raise self.error(
                    f"unknown option {key!r} (known: src, timeout, weight, "
                    f"{', '.join((*POOL_OPTIONS, *CLIENT_LIMIT_KEYS))})"
                )
        return result

    def upstream(self, words: list[str], optionText: str | None) -> None:
        # "upstream HOST PORT [weight=N,max-fails=N,fail-timeout=S,src=A]":
        # one more member of the pool of the forward above.
        if not self.forwards:
            raise self.error("upstream must follow a forward line")
        if len(words) != 3:
            raise self.error(
                f"expected 'upstream connectaddress connectport', got "
                f"{len(words) - 1} fields"
            )
        host = self.host(words[1], "upstream address")
        proto = self.forwards[-1]["protocol"]
        port = self.port(words[2], "upstream port", proto)
        options = self.options(optionText) if optionText is not None else {}
        extra = sorted(set(options) - {"bindAddress", *_UPSTREAM_OPTIONS})
        if extra:
            raise self.error(f"{extra[0]} belongs on the forward's line")
        endpoint = f"{proto}:host={escapeEndpointValue(host)}:port={port}"
        if "bindAddress" in options:
            endpoint += f":bindAddress={escapeEndpointValue(options['bindAddress'])}"
        self.forwards[-1]["upstreams"].append(
            (
                self.lineNumber,
                endpoint,
                {k: options[k] for k in _UPSTREAM_OPTIONS if k in options},
            )
        )

    def forward(self, words: list[str], optionText: str | None) -> None:
        if len(words) != 4:
            raise self.error(
                f"expected 'bindaddress bindport connectaddress connectport', "
                f"got {len(words)} fields"
            )
        bindHost = self.host(words[0], "bind address")
        bindPort, proto = self.portAndProtocol(words[1], "bind port")
        connectHost = self.host(words[2], "connect address")
        if "/" not in words[3] and proto == "udp":
            raise self.error(
                f"connect port {words[3]!r}: the forward is UDP; write {words[3]}/udp"
            )
        connectPort = self.port(words[3], "connect port", proto)
        try:
            interface = str(ipaddress.ip_address(bindHost))
        except ValueError:
            try:
                interface = str(ipaddress.ip_address(self.resolve(bindHost)))
            except (OSError, ValueError) as e:
                raise self.error(f"cannot resolve bind address {bindHost!r}: {e}")
        for (otherProto, otherInterface, otherPort), otherLine in self.binds.items():
            if (
                otherPort == bindPort
                and otherProto == proto
                and (
                    otherInterface == interface
                    or ipaddress.ip_address(otherInterface).is_unspecified
                    or ipaddress.ip_address(interface).is_unspecified
                )
            ):
                raise self.error(
                    f"{words[0]} {bindPort} overlaps the forward on line {otherLine}"
                )
        self.binds[(proto, interface, bindPort)] = self.lineNumber
        options = self.options(optionText) if optionText is not None else {}
        timeout = options.pop("timeout", None)
        limits = clientLimitFields(
            {k: options.pop(k) for k in CLIENT_LIMIT_KEYS if k in options}
        )
        if limits and proto == "udp":
            raise self.error("client limits apply to TCP forwards, not UDP")
        if timeout is not None and proto == "tcp":
            self.warn("option timeout= applies to UDP forwards; ignored")
            timeout = None
        listen = f"{proto}:{bindPort}:interface={escapeEndpointValue(interface)}"
        connect = f"{proto}:host={escapeEndpointValue(connectHost)}:port={connectPort}"
        if "bindAddress" in options:
            connect += f":bindAddress={escapeEndpointValue(options['bindAddress'])}"
        self.forwards.append(
            dict(
                listen=listen,
                connect=connect,
                lineNumber=self.lineNumber,
                protocol=proto,
                udpIdleTimeout=None if timeout is None else float(timeout),
                limits=limits,
                bindAddress=words[0],
                bindPort=bindPort,
                connectAddress=words[2],
                connectPort=connectPort,
                allow=[],
                deny=[],
                upstreams=[
                    (
                        self.lineNumber,
                        connect,
                        {k: options[k] for k in ("weight",) if k in options},
                    )
                ],
                poolOptions={k: v for k, v in options.items() if k in POOL_OPTIONS},
            )
        )

    def line(self, raw: str) -> None:
        text = raw.split("#", 1)[0].strip()
        if not text:
            return
        optionText = None
        if "[" in text:
            start = text.index("[")
            if start == 0:
                raise self.error("IPv6 addresses are written without brackets")
            if not text.endswith("]") or text.count("[") != 1 or text.count("]") != 1:
                raise self.error(
                    "options must be one [name=value,...] group at the end"
                )
            optionText = text[start:]
            text = text[:start].strip()
        words = text.split()
        keyword = words[0].lower()
        if keyword in ("allow", "deny"):
            if optionText is not None:
                raise self.error(f"{keyword} takes no [options]")
            rule = self.rule(keyword, words[1:])
            if self.forwards:
                self.forwards[-1][keyword].append(rule)
            elif keyword == "allow":
                self.globalAllow.append(rule)
            else:
                self.globalDeny.append(rule)
        elif keyword in ("logfile", "pidlogfile"):
            if len(words) != 2 or optionText is not None:
                raise self.error(f"{keyword} takes one path")
            if keyword == "logfile":
                self.logFile = words[1]
                self.warn("logfile ignored: splicetx logs through twist's log options")
            else:
                self.pidFile = words[1]
                self.warn(
                    "pidlogfile ignored: use twist's --pidfile or a service manager"
                )
        elif keyword == "logcommon":
            if len(words) != 1 or optionText is not None:
                raise self.error("logcommon takes no argument")
            self.logCommon = True
            self.warn("logcommon ignored: splicetx has its own log line format")
        elif keyword == "include":
            raise self.error("include is not supported")
        elif keyword == "upstream":
            self.upstream(words, optionText)
        else:
            self.forward(words, optionText)

    def pool(self, forward: dict) -> PoolSpec | None:
        # A pool when the forward has upstream lines or pool options.
        upstreams, options = forward["upstreams"], forward["poolOptions"]
        if len(upstreams) == 1 and not upstreams[0][2] and not options:
            return None
        if forward["protocol"] == "udp" and "balance" not in options:
            # A UDP client keeps its upstream from session to session.
            options = {**options, "balance": "source"}
        specs = []
        for self.lineNumber, endpoint, values in upstreams:
            words = " ".join(f"{k}={v}" for k, v in values.items())
            try:
                specs.append(parseUpstream(f"{endpoint} {words}"))
            except ConfigError as e:
                raise self.error(e.problem) from None
        self.lineNumber = forward["lineNumber"]
        try:
            return poolSpecFromOptions(specs, options)
        except ConfigError as e:
            raise self.error(e.problem) from None

    def parse(self, text: str) -> ConfigFile:
        for self.lineNumber, raw in enumerate(text.splitlines(), 1):
            self.line(raw)
        self.lineNumber = 0
        if not self.forwards:
            raise self.error(
                "no forwards (bindaddress bindport connectaddress connectport)"
            )
        globalACL = AccessControl(self.globalAllow, self.globalDeny, outer=self.outer)
        forwards = [
            Forward(
                listens=(f["listen"],),
                connect=f["connect"],
                acl=AccessControl(f["allow"], f["deny"], outer=globalACL),
                lineNumber=f["lineNumber"],
                bindAddress=f["bindAddress"],
                bindPort=f["bindPort"],
                connectAddress=f["connectAddress"],
                connectPort=f["connectPort"],
                pool=self.pool(f),
                udpIdleTimeout=f["udpIdleTimeout"],
                **f["limits"],
            )
            for f in self.forwards
        ]
        return ConfigFile(
            forwards,
            self.warnings,
            globalACL,
            self.logFile,
            self.pidFile,
            self.logCommon,
        )


def parseConfig(
    text: str,
    filename: str = "<config>",
    resolve: Callable[[str], str] = _defaultResolve,
    outer: AccessControl | None = None,
) -> ConfigFile:
    """
    Parse the text of a rinetd-format configuration.

    @param text: the file's contents.
    @param filename: the name to put in error messages.
    @param resolve: turns a bind host name into an address (default: the
        first answer of C{getaddrinfo}); may raise C{OSError}.
    @param outer: access rules around the file's global ones (the command
        line's C{--allow}/C{--deny}), or C{None}.
    @return: the forwards, rules and warnings.
    @raise ConfigError: on the first problem, naming file and line.
    """
    return _Parser(filename, resolve, outer).parse(text)


def parseConfigFile(
    path: str, resolve: Callable[[str], str] = _defaultResolve
) -> ConfigFile:
    """
    Read and parse a rinetd-format configuration file.

    @param path: the file.
    @param resolve: see L{parseConfig}.
    @raise ConfigError: when the file cannot be read or decoded, or on the
        first problem in it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason}", path) from None
    return parseConfig(text, path, resolve)
