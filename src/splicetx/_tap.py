# -*- test-case-name: tests.test_cli -*-
"""
C{twist splice-proxy}: command-line options and the service they build, in
the spirit of C{twisted/web/tap.py}.

    twist splice-proxy --listen tcp:8989 --connect tcp:127.0.0.1:8080

The plugin (C{twisted/plugins/splicetx_plugin.py}) names this module by
string, so nothing here is imported (and no reactor installed) until
C{twist} runs the sub-command.

Bad input ends the process with one line on standard error and exit status
64 (C{EX_USAGE}); a listening endpoint that cannot be opened at start-up ends
it with one line and status 1.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    TCP6ClientEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx import _tls, _worker
from splicetx._acl import AccessControl
from splicetx._config import ConfigError, parseConfigFile
from splicetx._pipes import DEFAULT_PIPE_SIZE, PipePool
from splicetx._relay import ENGINES
from splicetx.proxy import SpliceProxyFactory, describeAddress, describeEndpoint

__all__ = [
    "Forward",
    "Options",
    "makeService",
    "SpliceProxyService",
    "SpliceProxySupervisorService",
]

_log = Logger(namespace="splicetx.proxy")

#: Exit status for bad command-line input (C{EX_USAGE}, as C{twist} uses).
EXIT_USAGE = 64
#: Exit status when the service cannot start (a port in use, ...).
EXIT_START = 1

#: File descriptors a spliced connection may hold: two sockets, two pipes.
FDS_PER_SPLICED_CONNECTION = 6

#: The default listen backlog.  Twisted's default of 50 overflows under a
#: burst of a few hundred connects; the kernel caps it at
#: C{net.core.somaxconn} (4096 on current Linux).
DEFAULT_BACKLOG = 1024

#: Endpoint types whose string accepts C{backlog=}.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl"})

#: select() cannot watch descriptors at or above this number.
_FD_SETSIZE = 1024


class _Exit(usage.UsageError):
    """
    A usage error that already names the option at fault.
    """


# -- endpoint strings ---------------------------------------------------------


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


def withBacklog(description: str, backlog: int) -> str:
    """
    Add C{backlog=N} to a C{tcp}, C{tcp6}, C{unix} or C{ssl} server endpoint
    string that does not set one.

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
    C{tcp6} client endpoint string): a L{TCP6ClientEndpoint}, which resolves
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
    return TCP6ClientEndpoint(
        reactor,
        kwargs["host"],
        port,
        timeout=timeout,
        bindAddress=(bind, 0) if bind else None,
    )


def clientEndpoint(reactor: Any, description: str) -> Any:
    """
    Build the upstream endpoint: C{clientFromString}, plus C{tcp6:} and
    bracketed IPv6 literals.

    @raise ValueError: (or another exception) for a malformed string.
    """
    description = _escapeBrackets(description)
    if endpointType(description) == "tcp6":
        return _tcp6Client(reactor, description)
    endpoint = clientFromString(reactor, description)
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return endpoint


def serverEndpoint(reactor: Any, description: str) -> Any:
    """
    Build a listening endpoint: C{serverFromString}, plus bracketed IPv6
    literals.
    """
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
        return None


def _explain(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    if isinstance(e, TypeError):
        return f"missing or unexpected arguments ({e})"
    if isinstance(e, KeyError):
        return f"missing argument {e}"
    text = str(e) or type(e).__name__
    text = text.splitlines()[0]
    if text.startswith("invalid literal for int()"):
        return "expected a number, got " + text.rpartition(": ")[2]
    return text


_SYSTEMD_HINT = (
    "no such socket inherited from systemd (this process needs LISTEN_PID, "
    "LISTEN_FDS and LISTEN_FDNAMES, as systemd 227+ sets them)"
)


def _badRule(rules: list[str]) -> bool:
    try:
        AccessControl(rules)
    except ValueError:
        return True
    return False


def _checkListen(description: str, option: str = "--listen") -> None:
    try:
        serverEndpoint(_ParseOnlyReactor(), description)
    except (IndexError, KeyError) as e:
        if endpointType(description) == "systemd":
            raise _Exit(f"{option} {description}: {_SYSTEMD_HINT}")
        raise _Exit(f"{option} {description}: {_explain(e)}")
    except Exception as e:
        hint = ""
        if type(e).__module__.startswith("OpenSSL"):
            raise _Exit(
                f"{option} {description}: cannot load the TLS key or "
                f"certificate ({_explain(e)})"
            )
        if description.strip().isdigit():
            hint = f" (did you mean tcp:{description.strip()}?)"
        raise _Exit(f"{option} {description}: {_explain(e)}{hint}")


def _checkConnect(description: str) -> None:
    try:
        clientEndpoint(_ParseOnlyReactor(), description)
    except Exception as e:
        raise _Exit(f"--connect {description}: {_explain(e)}")


# -- numbers ------------------------------------------------------------------

_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(option: str, text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = 1
    if t and t[-1] in _SIZE_SUFFIXES:
        scale = _SIZE_SUFFIXES[t[-1]]
        t = t[:-1]
    try:
        value = int(t) * scale
    except ValueError:
        raise _Exit(
            f"--{option}: expected a size in bytes (e.g. 1048576 or 1M), got {text!r}"
        )
    if value <= 0:
        raise _Exit(f"--{option}: must be positive, got {text!r}")
    return value


def _count(option: str, text: str, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _Exit(f"--{option}: expected a whole number, got {text!r}")
    if value < minimum:
        raise _Exit(f"--{option}: must be at least {minimum}, got {text!r}")
    return value


def _seconds(option: str, text: str, positive: bool = False) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _Exit(f"--{option}: expected a number of seconds, got {text!r}")
    if not math.isfinite(value):
        raise _Exit(f"--{option}: must be a finite number of seconds, got {text!r}")
    if value < 0 or (positive and value == 0):
        need = "positive" if positive else "zero or more"
        raise _Exit(f"--{option}: must be {need}, got {text!r}")
    return value


def _proxyProtocolVersion(text: str) -> int:
    v = text.strip().lower()
    if v in ("v1", "1"):
        return 1
    if v in ("v2", "2"):
        return 2
    raise _Exit(f"--proxy-protocol: expected v1 or v2, got {text!r}")


def _workerCount(text: str) -> int:
    if text.strip().lower() == "auto":
        from splicetx._workers import defaultWorkerCount

        return defaultWorkerCount()
    return _count("workers", text, 1)


_METRICS_MISSING = (
    "--metrics needs the prometheus-client package: pip install 'splicetx[metrics]'"
)


@attr.s(auto_attribs=True)
class Forward:
    """
    One listen/connect pair the service serves with its own factory.

    @ivar name: the C{forward} label of its metrics: the first C{--listen}
        string as given, or the listen string of a C{--config} forward.
    @ivar listen: server endpoint strings (with C{backlog=} added).
    @ivar listenGiven: the same as the user wrote them, for messages.
    @ivar connect: the upstream client endpoint string.
    @ivar acl: its access rules, or C{None} for none.
    """

    name: str
    listen: list[str]
    listenGiven: list[str]
    connect: str
    acl: AccessControl | None = None


# -- options ------------------------------------------------------------------


class Options(usage.Options):
    """
    Options of C{twist splice-proxy}.

    After parsing, the numeric options hold numbers (C{int} or C{float});
    C{"listen"} is a list of server endpoint strings (with C{backlog=}
    added) and C{"max-connections"} is an C{int}, C{None} (no limit) or
    C{"auto"}.

    @cvar exitOnUsageError: when C{True} (the default, for C{twist}), a
        L{usage.UsageError} prints one line on standard error and exits with
        status 64 instead of propagating (so C{twist} prints no full usage
        text); set it to C{False} to get the exception.
    """

    synopsis = "--listen ENDPOINT [--listen ENDPOINT ...] --connect ENDPOINT [options]"
    longdesc = (
        "Relay every connection accepted on the --listen endpoints to the "
        "--connect endpoint, with splice(2) when both sides are plain "
        "sockets (zero copy) and a userspace copy otherwise (TLS, ...). "
        "Example: twist splice-proxy --listen tcp:8989 --connect "
        "tcp:127.0.0.1:8080.  SIGTERM/SIGINT stop accepting at once and let "
        "live connections finish for up to --drain-timeout seconds."
    )
    exitOnUsageError = True

    optParameters = [
        [
            "connect",
            "c",
            None,
            "Upstream client endpoint (required), e.g. tcp:10.0.0.2:80, "
            "tcp6:[2001:db8::2]:80, unix:/run/app.sock, "
            "tls:example.com:443.  Host names are resolved without blocking.",
        ],
        [
            "engine",
            "e",
            "auto",
            "auto (splice when both sides are plain sockets), splice or copy.",
        ],
        [
            "pipe-size",
            None,
            str(DEFAULT_PIPE_SIZE),
            "Kernel pipe size per direction in bytes (suffixes K, M allowed).",
        ],
        [
            "max-pipes",
            None,
            None,
            "Cap on pipes held by spliced relays (default: a quarter of the "
            "file descriptor limit); past it relays copy.",
        ],
        [
            "connect-timeout",
            None,
            "30",
            "Seconds to wait for the upstream connection.",
        ],
        [
            "idle-timeout",
            None,
            "0",
            "Close a connection after this many seconds without a byte "
            "either way (0: never).",
        ],
        [
            "max-connections",
            None,
            "auto",
            "Connections served at once; beyond it the listening ports stop "
            "accepting (clients wait in the listen queue).  auto: derived "
            "from the file descriptor limit; 0: no limit.",
        ],
        [
            "backlog",
            None,
            str(DEFAULT_BACKLOG),
            "Listen queue length, added to tcp/tcp6/unix/ssl --listen "
            "strings that do not set backlog= themselves.",
        ],
        [
            "drain-timeout",
            None,
            "30",
            "On SIGTERM/SIGINT, seconds to let live connections finish "
            "before aborting them.",
        ],
        [
            "proxy-protocol",
            None,
            None,
            "Send a PROXY protocol header (v1 or v2) with the client's "
            "address to the upstream before the relayed bytes.",
        ],
        [
            "proxy-protocol-timeout",
            None,
            "5",
            "With --accept-proxy-protocol, seconds a client has to send its "
            "whole header.",
        ],
        [
            "config",
            None,
            None,
            "A rinetd configuration file: one forward per 'bindaddress "
            "bindport connectaddress connectport' line, with allow/deny rules.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics on this server endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 (GET /metrics).",
        ],
        [
            "workers",
            None,
            None,
            "Run N worker processes (or auto: one per CPU) under a "
            "supervisor, each serving every listening port.",
        ],
        [
            "alpn",
            None,
            None,
            "ALPN protocols the ssl: listeners offer, in preference order, "
            "e.g. h2,http/1.1; a client offering none of them is refused "
            "(default: negotiate none, serve every client).",
        ],
        [
            "connect-alpn",
            None,
            None,
            "ALPN protocols to offer a tls: upstream, in preference order, "
            "e.g. http/1.1.",
        ],
    ]

    optFlags = [
        [
            "accept-proxy-protocol",
            None,
            "Read a PROXY protocol header (v1 or v2) from every client first "
            "and use its address for logs and --allow/--deny.",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["allow"] = []
        self["deny"] = []
        self.rawArgs: list[str] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on this server endpoint (repeatable), e.g. tcp:8989,
        tcp6:8989:interface=[::1], unix:/run/proxy.sock,
        systemd:domain=INET:index=0, ssl:8443:privateKey=key.pem.
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_allow(self, rule: str) -> None:
        """
        Serve only clients matching this CIDR network, address or rinetd
        pattern (repeatable; deny rules win).
        """
        self["allow"].append(rule)

    def opt_deny(self, rule: str) -> None:
        """
        Refuse clients matching this CIDR network, address or rinetd
        pattern (repeatable; wins over --allow).
        """
        self["deny"].append(rule)

    def parseArgs(self, *args: str) -> None:
        """
        Refuse positional arguments: every setting is an option.
        """
        if args:
            raise _Exit(
                f"unexpected argument(s): {' '.join(args)} (use --listen and "
                "--connect; see --help)"
            )

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the options; see L{exitOnUsageError}.
        """
        self.rawArgs = list(sys.argv[1:] if options is None else options)
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            if not self.exitOnUsageError:
                raise
            sys.stderr.write(f"splice-proxy: error: {e}\n")
            sys.stderr.flush()
            raise SystemExit(EXIT_USAGE)

    def postOptions(self) -> None:
        """
        Check every option and convert the numbers.

        @raise usage.UsageError: for bad input, with a message naming the
            option.
        """
        if not self["config"] or self["listen"]:
            if not self["connect"]:
                raise _Exit(
                    "--connect is required (the upstream, e.g. --connect "
                    "tcp:127.0.0.1:8080)"
                )
        if not self["listen"] and (self["connect"] or not self["config"]):
            raise _Exit("--listen is required (e.g. --listen tcp:8989)")
        engine = self["engine"].strip().lower()
        if engine not in ENGINES:
            raise _Exit(
                f"--engine: unknown engine {self['engine']!r} "
                f"(use {', '.join(ENGINES)})"
            )
        self["engine"] = engine
        self["pipe-size"] = _size("pipe-size", self["pipe-size"])
        if self["max-pipes"] is not None:
            self["max-pipes"] = _count("max-pipes", self["max-pipes"], 0)
        self["connect-timeout"] = _seconds(
            "connect-timeout", self["connect-timeout"], positive=True
        )
        self["idle-timeout"] = _seconds("idle-timeout", self["idle-timeout"])
        self["drain-timeout"] = _seconds("drain-timeout", self["drain-timeout"])
        self["backlog"] = _count("backlog", self["backlog"], 1)
        mc = self["max-connections"]
        if isinstance(mc, str) and mc.strip().lower() == "auto":
            self["max-connections"] = "auto"
        else:
            n = _count("max-connections", mc, 0)
            self["max-connections"] = n or None
        self["proxy-protocol-timeout"] = _seconds(
            "proxy-protocol-timeout", self["proxy-protocol-timeout"], positive=True
        )
        if self["proxy-protocol"] is not None:
            self["proxy-protocol"] = _proxyProtocolVersion(self["proxy-protocol"])
        if self["workers"] is not None:
            self["workers"] = _workerCount(self["workers"])
        if self["metrics"] is not None:
            _checkListen(self["metrics"], "--metrics")
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise _Exit(_METRICS_MISSING)
        try:
            acl = AccessControl(self["allow"], self["deny"])
        except ValueError as e:
            which = "--allow" if _badRule(self["allow"]) else "--deny"
            raise _Exit(f"{which}: {e}")
        forwards: list[Forward] = []
        listen = []
        if self["listen"]:
            _checkConnect(self["connect"])
            for description in self["listen"]:
                _checkListen(description)
                listen.append(withBacklog(description, self["backlog"]))
            forwards.append(
                Forward(
                    self["listen"][0],
                    listen,
                    list(self["listen"]),
                    self["connect"],
                    None if acl.empty else acl,
                )
            )
        if self["config"]:
            try:
                config = parseConfigFile(self["config"])
            except ConfigError as e:
                raise _Exit(str(e))
            self["config-warnings"] = list(config.warnings)
            for f in config.forwards:
                rules = f.acl
                if not acl.empty:
                    # The command line's rules apply to every forward, first.
                    outer = AccessControl(
                        config.globalACL.allow, config.globalACL.deny, outer=acl
                    )
                    rules = AccessControl(rules.allow, rules.deny, outer=outer)
                forwards.append(
                    Forward(
                        f.listen,
                        [withBacklog(f.listen, self["backlog"])],
                        [f.listen],
                        f.connect,
                        None if rules.empty else rules,
                    )
                )
        try:
            self["alpn"], self["connect-alpn"] = _tls.checkALPNOptions(
                self["alpn"],
                self["connect-alpn"],
                self["listen"],
                [f.connect for f in forwards],
            )
        except ValueError as e:
            raise _Exit(str(e))
        self["forwards"] = forwards
        self["listen-given"] = self["listen"]
        self["listen"] = listen


# -- the service --------------------------------------------------------------


def raiseFileLimit() -> tuple[int, int]:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit.

    @return: the soft limit before and after.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return before, soft


class _DrainOnSignal:
    """
    Take over SIGTERM/SIGINT once the reactor runs (when it installed its
    own handlers): the first stops the reactor, which stops the services
    (a drain), so the process exits with status 0; the second calls
    L{_signalledAgain}.
    """

    reactor: Any
    handleSignals: bool
    _stopping: bool

    def _installSignalHandlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.SIG_IGN, None):
                continue
            if current is signal.default_int_handler:
                # The reactor runs without its own handlers: leave it be.
                continue
            signal.signal(sig, self._onSignal)

    def _onSignal(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._signalled, signum)

    def _signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._signalledFirst(name)
            self._stopReactor()
        else:
            self._signalledAgain(name)

    def _signalledFirst(self, name: str) -> None:
        raise NotImplementedError

    def _signalledAgain(self, name: str) -> None:
        raise NotImplementedError

    def _stopReactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


def _exitAfterShutdown(reactor: Any, status: int) -> None:
    def exitNow() -> None:
        os._exit(status)

    reactor.addSystemEventTrigger("after", "shutdown", exitNow)


class SpliceProxyService(_DrainOnSignal, Service):
    """
    Listens on the configured endpoints with one L{SpliceProxyFactory} per
    forward, and drains on stop.

    Listening happens in L{privilegedStartService} (C{twistd} calls it before
    dropping privileges; L{startService} calls it when nobody did), so a
    port in use ends start-up with one line on standard error.  In a worker
    process of C{--workers} (see L{splicetx._worker}) the listening sockets
    are inherited from the supervisor instead.

    @ivar factory: the first forward's L{SpliceProxyFactory}, once started.
    @ivar factories: every forward's factory, once started.
    @ivar ports: the listening ports, once started.
    @ivar metrics: the L{ProxyMetrics <splicetx._metrics.ProxyMetrics>}
        with C{metricsEndpoint}, once started.
    """

    name = "splice-proxy"

    def __init__(
        self,
        reactor: Any,
        listen: list[str],
        connect: str | None,
        *,
        engine: str = "auto",
        pipeSize: int = DEFAULT_PIPE_SIZE,
        maxPipes: int | None = None,
        connectTimeout: float = 30.0,
        idleTimeout: float = 0.0,
        maxConnections: int | str | None = "auto",
        drainTimeout: float = 30.0,
        handleSignals: bool = True,
        listenGiven: list[str] | None = None,
        forwards: list[Forward] | None = None,
        acl: AccessControl | None = None,
        acceptProxyProtocol: bool = False,
        proxyProtocolTimeout: float = 5.0,
        sendProxyProtocol: int | None = None,
        metricsEndpoint: str | None = None,
        configWarnings: list[str] | None = None,
        logNormalConnections: bool = True,
        alpn: tuple[bytes, ...] = (),
        connectALPN: tuple[bytes, ...] = (),
    ) -> None:
        """
        @param reactor: the reactor.
        @param listen: server endpoint strings (of the command-line forward).
        @param connect: the upstream client endpoint string (idem).
        @param maxConnections: a number, C{None} (no limit) or C{"auto"};
            it applies to each forward (C{auto} is shared out among them).
        @param listenGiven: the C{listen} strings as the user wrote them
            (before C{backlog=} was added), for messages.
        @param handleSignals: take over SIGTERM/SIGINT once the reactor runs
            (when the reactor installed its own handlers), so that they drain
            instead of stopping at once and the process exits with status 0.
        @param forwards: every forward to serve (default: one made of
            C{listen}, C{connect} and C{acl}).
        @param acl: the command-line forward's access rules.
        @param acceptProxyProtocol: read a PROXY header from every client.
        @param proxyProtocolTimeout: seconds to wait for that header.
        @param sendProxyProtocol: C{1} or C{2}: send a PROXY header upstream.
        @param metricsEndpoint: serve Prometheus metrics on this server
            endpoint (not in a worker: the supervisor serves them).
        @param configWarnings: lines to log at start (C{--config}).
        @param logNormalConnections: log connections that ended normally
            (see L{SpliceProxyFactory.logNormalConnections}).
        @param alpn: the ALPN protocols C{ssl:} listeners offer (see
            L{splicetx._tls}); empty: negotiate none.
        @param connectALPN: the ALPN protocols offered to a C{tls:}
            upstream.
        """
        self.alpn = tuple(alpn)
        self.connectALPN = tuple(connectALPN)
        self.reactor = reactor
        self.listen = listen
        self.listenGiven = listenGiven or listen
        self.connect = connect
        if forwards is None:
            forwards = []
            if listen and connect:
                forwards.append(
                    Forward(self.listenGiven[0], listen, self.listenGiven, connect, acl)
                )
        self.forwards = forwards
        self.engine = engine
        self.pipeSize = pipeSize
        self.maxPipes = maxPipes
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.drainTimeout = drainTimeout
        self.handleSignals = handleSignals
        self.acceptProxyProtocol = acceptProxyProtocol
        self.proxyProtocolTimeout = proxyProtocolTimeout
        self.sendProxyProtocol = sendProxyProtocol
        self.metricsEndpoint = metricsEndpoint
        self.configWarnings = configWarnings or []
        self.logNormalConnections = logNormalConnections
        self.factory: SpliceProxyFactory | None = None
        self.factories: list[SpliceProxyFactory] = []
        self.ports: list[Any] = []
        self.metrics: Any = None
        self.metricsPort: Any = None
        self._worker = _worker.isWorker()
        self._supervisorWatch: Any = None
        self._started = False
        self._stopping = False

    # -- start ----------------------------------------------------------------

    def _capacity(self) -> tuple[int, int | None, int | None]:
        before, fds = raiseFileLimit()
        usable = fds
        if type(self.reactor).__name__ == "SelectReactor":
            usable = min(usable, _FD_SETSIZE)
        maxPipes = self.maxPipes
        if maxPipes is None and usable != fds:
            maxPipes = max(2, usable // 4)
        maxConnections = self.maxConnections
        if maxConnections == "auto":
            # Pipes may take half the descriptors (see PipePool); the other
            # half is two sockets per connection, less some for the process.
            maxConnections = max(1, usable // 4 - 32)
            maxConnections = max(1, maxConnections // max(1, len(self.forwards)))
        _log.info(
            "file descriptor limit {fds} (was {before}): room for about "
            "{spliced} spliced connections ({per} fds each); accepting up to "
            "{maxConnections} at once",
            splicetxEvent="capacity",
            fds=fds,
            before=before,
            usable=usable,
            spliced=usable // FDS_PER_SPLICED_CONNECTION,
            per=FDS_PER_SPLICED_CONNECTION,
            maxConnections=maxConnections if maxConnections else "unlimited",
        )
        return usable, maxPipes, maxConnections  # type: ignore[return-value]

    def _startMetrics(self, pool: PipePool) -> None:
        try:
            from splicetx import _metrics
        except ImportError:
            raise SystemExit(f"splice-proxy: error: {_METRICS_MISSING}")
        metrics = _metrics.ProxyMetrics()
        metrics.watchPipePool(pool, self.reactor)
        self.metrics = metrics
        if self._worker:
            # The supervisor serves the figures of every worker.
            return
        description = self.metricsEndpoint
        assert description is not None
        port = _listenNow(
            lambda: _metrics.startMetricsEndpoint(
                description, metrics.registry, self.reactor
            ),
            description,
        )
        self.metricsPort = port
        _logMetricsPort(port, description)

    def privilegedStartService(self) -> None:
        """
        Raise the file descriptor limit, build a factory per forward and
        open every listening endpoint (or adopt the sockets inherited from
        the supervisor).

        @raise SystemExit: with a one-line message when an endpoint cannot
            be opened.
        """
        if self._started:
            return
        self._started = True
        reactor = self.reactor
        for warning in self.configWarnings:
            _log.warn("{warning}", warning=warning, splicetxEvent="config")
        _, maxPipes, maxConnections = self._capacity()
        pool = PipePool(pipeSize=self.pipeSize, maxPipes=maxPipes)
        if self.metricsEndpoint is not None:
            self._startMetrics(pool)
        logFields = None
        if self._worker:
            logFields = {"pid": os.getpid(), "worker": _worker.workerIndex()}
        listens: list[tuple[str, str, SpliceProxyFactory]] = []
        for forward in self.forwards:
            upstream = _tls.withClientALPN(
                clientEndpoint(reactor, forward.connect), self.connectALPN
            )
            factory = self.buildFactory(upstream, pool)
            factory.maxConnections = maxConnections
            factory.acl = forward.acl if forward.acl and not forward.acl.empty else None
            factory.acceptProxyProtocol = self.acceptProxyProtocol
            factory.proxyProtocolTimeout = self.proxyProtocolTimeout
            factory.sendProxyProtocol = self.sendProxyProtocol
            factory.metrics = self.metrics
            factory.forwardName = forward.name
            factory.logFields = logFields
            factory.logNormalConnections = self.logNormalConnections
            self.factories.append(factory)
            for description, given in zip(
                forward.listen, forward.listenGiven, strict=True
            ):
                listens.append((description, given, factory))
        self.factory = self.factories[0] if self.factories else None
        if self._worker:
            try:
                ports = _worker.adoptListeners([f for _, _, f in listens], reactor)
            except Exception as e:
                raise SystemExit(
                    f"splice-proxy: error: cannot adopt the listening sockets "
                    f"of the supervisor: {_explain(e)}"
                )
            for port, (description, _, factory) in zip(ports, listens, strict=True):
                self._listening(port, description, factory)
        else:
            self._listenAll(listens)
        for forward, factory in zip(self.forwards, self.factories, strict=True):
            _log.info(
                "splice-proxy relaying {listen} to {upstream} (engine {engine}, "
                "pipe size {pipeSize}, connect timeout {connectTimeout:g} s, "
                "idle timeout {idleTimeout:g} s, drain timeout {drainTimeout:g} s)",
                splicetxEvent="started",
                listen=", ".join(forward.listenGiven),
                upstream=describeEndpoint(factory.upstream),
                engine=self.engine,
                pipeSize=self.pipeSize,
                connectTimeout=self.connectTimeout,
                idleTimeout=self.idleTimeout,
                drainTimeout=self.drainTimeout,
                acl=repr(factory.acl) if factory.acl is not None else None,
            )

    def _listenAll(self, listens: list[tuple[str, str, SpliceProxyFactory]]) -> None:
        reactor = self.reactor
        for description, given, factory in listens:
            try:
                endpoint = _tls.withServerALPN(
                    serverEndpoint(reactor, description), self.alpn
                )
                d = endpoint.listen(factory)
            except Exception:
                d = Deferred()
                d.errback()
            outcome: list[Any] = []
            d.addBoth(outcome.append)
            if not outcome:
                d.addCallback(self._listening, description, factory)
                d.addErrback(self._lateListenFailure, given)
                continue
            if isinstance(outcome[0], Failure):
                for port in self.ports:
                    port.stopListening()
                self.ports = []
                if self.metricsPort is not None:
                    self.metricsPort.stopListening()
                raise SystemExit(
                    f"splice-proxy: error: cannot listen on {given}: "
                    f"{_explain(outcome[0].value)}"
                )
            self._listening(outcome[0], description, factory)

    def buildFactory(self, upstream: Any, pipePool: PipePool) -> SpliceProxyFactory:
        """
        Make the factory of one forward.  Override to use a
        L{SpliceProxyFactory} subclass or another protocol.  The forward's
        access rules, PROXY protocol and metrics settings are set on it
        afterwards.

        @param upstream: the forward's C{--connect} endpoint.
        @param pipePool: the pipe pool built from C{--pipe-size} and
            C{--max-pipes}, shared by every forward.
        """
        return SpliceProxyFactory(
            upstream,
            reactor=self.reactor,
            engine=self.engine,
            pipePool=pipePool,
            connectTimeout=self.connectTimeout,
            idleTimeout=self.idleTimeout,
        )

    def _listening(
        self, port: Any, description: str, factory: SpliceProxyFactory | None = None
    ) -> Any:
        factory = factory or self.factory
        assert factory is not None
        self.ports.append(port)
        factory.addListeningPort(port)
        address = port.getHost()
        _log.info(
            "listening on {address} ({description})",
            splicetxEvent="listening",
            address=describeAddress(address),
            port=getattr(address, "port", None),
            description=description,
            forward=factory.forwardName,
        )
        return port

    def _lateListenFailure(self, failure: Failure, description: str) -> None:
        message = (
            f"splice-proxy: error: cannot listen on {description}: "
            f"{_explain(failure.value)}"
        )
        _log.critical("{message}", message=message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        _exitAfterShutdown(self.reactor, EXIT_START)
        self._stopReactor()

    def startService(self) -> None:
        """
        Listen (unless L{privilegedStartService} already did) and, once the
        reactor runs, take over SIGTERM/SIGINT for a graceful drain.
        """
        self.privilegedStartService()
        Service.startService(self)
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        if self.handleSignals:
            self._installSignalHandlers()
        if self._worker:
            self._supervisorWatch = _worker.watchSupervisor(self.reactor)
        _log.info(
            "splice-proxy ready (pid {pid})",
            splicetxEvent="ready",
            pid=os.getpid(),
            worker=_worker.workerIndex(),
        )

    # -- stop -----------------------------------------------------------------

    def _live(self) -> int:
        return sum(len(f.liveProtocols) for f in self.factories)

    def _signalledFirst(self, name: str) -> None:
        _log.info(
            "received {signal}: no longer accepting; letting {count} "
            "connection(s) finish for up to {timeout:g} s",
            signal=name,
            count=self._live(),
            timeout=self.drainTimeout,
        )

    def _signalledAgain(self, name: str) -> None:
        _log.info(
            "received {signal} again: aborting {count} connection(s)",
            signal=name,
            count=self._live(),
        )
        for factory in self.factories:
            for proto in list(factory.liveProtocols):
                proto.abort(detail=f"{name} during drain")

    def stopService(self) -> Deferred[Any] | None:
        """
        Stop listening at once and let live connections finish for up to
        the drain timeout, then abort the rest.

        @return: a L{Deferred} that fires once every connection has ended.
        """
        Service.stopService(self)
        self._stopping = True
        watch, self._supervisorWatch = self._supervisorWatch, None
        if watch is not None and watch.running:
            watch.stop()
        if self.metrics is not None:
            self.metrics.stopWatching()
        if not self.factories:
            return None
        self.ports = []
        drains = [f.drain(self.drainTimeout) for f in self.factories]

        def drained(counts: list[int]) -> None:
            _log.info(
                "drained: {aborted} connection(s) aborted at the drain timeout",
                splicetxEvent="drained",
                aborted=sum(counts),
            )
            port, self.metricsPort = self.metricsPort, None
            if port is not None:
                port.stopListening()

        return gatherResults(drains).addCallback(drained)


def _listenNow(start: Any, description: str) -> Any:
    """
    Call C{start()} (returning a L{Deferred} of a port) and return the port
    if it fired at once.

    @raise SystemExit: with one line when it failed.
    """
    try:
        d = start()
    except Exception:
        d = Deferred()
        d.errback()
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    if outcome and isinstance(outcome[0], Failure):
        raise SystemExit(
            f"splice-proxy: error: cannot listen on {description}: "
            f"{_explain(outcome[0].value)}"
        )
    return outcome[0] if outcome else None


def _logMetricsPort(port: Any, description: str) -> None:
    if port is None:
        return
    address = port.getHost()
    _log.info(
        "metrics on {address} ({description})",
        splicetxEvent="metrics",
        address=describeAddress(address),
        port=getattr(address, "port", None),
        description=description,
    )


def workerArguments(rawArgs: list[str]) -> list[str]:
    """
    The C{splice-proxy} arguments of a worker: the supervisor's, less
    C{--workers}.

    @param rawArgs: the supervisor's C{splice-proxy} arguments.
    """
    out: list[str] = []
    skip = False
    for arg in rawArgs:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def twistArguments(argv: list[str]) -> list[str]:
    """
    The C{twist} options (reactor, logging) the supervisor was started with,
    to start the workers alike; empty unless it runs under C{twist} or
    C{python -m twisted}.

    @param argv: the supervisor's C{sys.argv}.
    """
    if not argv:
        return []
    program = os.path.basename(argv[0])
    isTwist = program == "twist" or argv[0].replace("\\", "/").endswith(
        "twisted/__main__.py"
    )
    if not isTwist or "splice-proxy" not in argv:
        return []
    return argv[1 : argv.index("splice-proxy")]


class SpliceProxySupervisorService(_DrainOnSignal, Service):
    """
    C{--workers N}: prepare the listening sockets, run N workers (this
    command again, without C{--workers}) under a
    L{WorkerSupervisorService <splicetx._workers.WorkerSupervisorService>},
    and with C{--metrics} serve the combined figures of every worker.

    SIGTERM/SIGINT drain the workers (they get SIGTERM); a second one passes
    SIGTERM on again, which makes the workers abort their connections.
    """

    name = "splice-proxy-supervisor"

    def __init__(
        self,
        reactor: Any,
        listen: list[str],
        workerArgv: list[str],
        count: int,
        *,
        drainTimeout: float = 30.0,
        metricsEndpoint: str | None = None,
        handleSignals: bool = True,
    ) -> None:
        """
        @param reactor: the reactor.
        @param listen: every listening endpoint string, in the order the
            workers build their factories.
        @param workerArgv: the workers' command line.
        @param count: how many workers.
        @param drainTimeout: the workers' drain timeout; they are killed
            5 s after it.
        @param metricsEndpoint: serve the combined metrics there.
        @param handleSignals: see L{SpliceProxyService}.
        """
        self.reactor = reactor
        self.listen = listen
        self.workerArgv = workerArgv
        self.count = count
        self.drainTimeout = drainTimeout
        self.metricsEndpoint = metricsEndpoint
        self.handleSignals = handleSignals
        self.metricsDirectory: str | None = None
        self.metricsPort: Any = None
        self.workers: Any = None
        self._stopping = False

    def startService(self) -> None:
        """
        Start the metrics endpoint, the listeners and the workers.
        """
        from splicetx._workers import WorkerSupervisor, prepareListener

        Service.startService(self)
        reactor = self.reactor
        raiseFileLimit()
        options: dict[str, Any] = {"drainTimeout": self.drainTimeout + 5.0}
        if self.metricsEndpoint is not None:
            import shutil
            import tempfile

            try:
                from splicetx import _metrics
            except ImportError:
                raise SystemExit(f"splice-proxy: error: {_METRICS_MISSING}")
            path = tempfile.mkdtemp(prefix="splicetx-metrics-")
            self.metricsDirectory = path
            reactor.addSystemEventTrigger(
                "after", "shutdown", shutil.rmtree, path, True
            )
            description = self.metricsEndpoint
            port = _listenNow(
                lambda: _metrics.startMetricsEndpoint(
                    description, _metrics.multiprocessRegistry(path), reactor
                ),
                description,
            )
            self.metricsPort = port
            _logMetricsPort(port, description)
            options["env"] = _metrics.setMultiprocessEnvironment(dict(os.environ), path)
            options["onWorkerExit"] = lambda i, pid, r: _metrics.markWorkerDead(
                pid, path
            )
        listeners = []
        for description in self.listen:
            listener = _listenNow(
                lambda d=description: prepareListener(d, None, reactor),
                description,
            )
            if listener is None:
                raise SystemExit(
                    f"splice-proxy: error: cannot listen on {description} for "
                    "workers: use a tcp:, tcp6:, unix: or systemd: endpoint"
                )
            listeners.append(listener)
        supervisor = WorkerSupervisor(
            self.workerArgv, self.count, listeners, reactor, **options
        )
        self.workers = supervisor
        supervisor.start()
        self._started(supervisor)
        reactor.callWhenRunning(self._running)

    def _started(self, supervisor: Any) -> None:
        for listener in supervisor.listeners:
            _log.info(
                "listening on port {port} ({description}) with {count} workers "
                "({mode})",
                splicetxEvent="listening",
                port=listener.port,
                description=listener.description,
                count=self.count,
                mode=listener.mode,
            )

    def _running(self) -> None:
        if self.handleSignals:
            self._installSignalHandlers()
        supervisor = self.workers
        _log.info(
            "splice-proxy supervisor ready (pid {pid}, workers {workers})",
            splicetxEvent="supervisor-ready",
            pid=os.getpid(),
            workers=sorted(supervisor.pids.values()) if supervisor else [],
        )

    def _signalledFirst(self, name: str) -> None:
        _log.info(
            "received {signal}: draining the workers for up to {timeout:g} s",
            signal=name,
            timeout=self.drainTimeout,
        )

    def _signalledAgain(self, name: str) -> None:
        supervisor = self.workers
        if supervisor is None:
            return
        for pid in supervisor.pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def stopService(self) -> Deferred[Any] | None:
        """
        Drain and stop the workers, then stop serving metrics.
        """
        Service.stopService(self)
        self._stopping = True
        workers = self.workers
        d = workers.stop() if workers is not None else None
        if d is None:
            d = Deferred()
            d.callback(None)

        def stopped(_: Any) -> Any:
            port, self.metricsPort = self.metricsPort, None
            _log.info("workers stopped", splicetxEvent="drained", aborted=None)
            if port is not None:
                return port.stopListening()
            return None

        return d.addCallback(stopped)


def _infoObserved(options: Options) -> bool:
    """
    Whether C{info} events can reach the log: C{False} only under C{twist}
    with C{--log-level} C{warn} or above (C{twist}'s log file observer
    filters by that level; C{twistd} has no such option and logs all).

    @param options: our parsed options; C{twist} gives them a C{parent}.
    """
    parent = getattr(options, "parent", None)
    level = parent.get("logLevel") if isinstance(parent, usage.Options) else None
    if level not in LogLevel.iterconstants():
        return True
    return bool(level <= LogLevel.info)


def makeService(options: Options) -> Service:
    """
    Build the C{splice-proxy} service from parsed L{Options}, on the
    installed reactor: a L{SpliceProxyService}, or with C{--workers} (and
    not inside a worker) a L{SpliceProxySupervisorService}.

    @param options: parsed options.
    """
    from twisted.internet import reactor

    forwards = list(options.get("forwards") or [])
    workers = options.get("workers")
    if workers and not _worker.isWorker():
        listen = [d for f in forwards for d in f.listen]
        argv = [
            sys.executable,
            "-m",
            "twisted",
            *twistArguments(sys.argv),
            "splice-proxy",
            *workerArguments(options.rawArgs),
        ]
        return SpliceProxySupervisorService(
            reactor,
            listen,
            argv,
            workers,
            drainTimeout=options["drain-timeout"],
            metricsEndpoint=options.get("metrics"),
        )
    return SpliceProxyService(
        reactor,
        list(options["listen"]),
        options["connect"],
        engine=options["engine"],
        pipeSize=options["pipe-size"],
        maxPipes=options["max-pipes"],
        connectTimeout=options["connect-timeout"],
        idleTimeout=options["idle-timeout"],
        maxConnections=options["max-connections"],
        drainTimeout=options["drain-timeout"],
        listenGiven=list(options.get("listen-given", options["listen"])),
        forwards=forwards or None,
        acceptProxyProtocol=bool(options.get("accept-proxy-protocol")),
        proxyProtocolTimeout=options.get("proxy-protocol-timeout", 5.0),
        sendProxyProtocol=options.get("proxy-protocol"),
        metricsEndpoint=options.get("metrics"),
        configWarnings=list(options.get("config-warnings") or []),
        logNormalConnections=_infoObserved(options),
        alpn=options.get("alpn") or (),
        connectALPN=options.get("connect-alpn") or (),
    )
