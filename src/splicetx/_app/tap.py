# -*- test-case-name: tests.test_cli -*-
"""
C{twist splice-proxy}: command-line options and the service they build, in
the spirit of C{twisted/web/tap.py}::

    twist splice-proxy --listen tcp:8989 --connect tcp:127.0.0.1:8080

The plugin (C{twisted/plugins/splicetx_plugin.py}) names this module by
string, so nothing here is imported (and no reactor installed) until
C{twist} runs the sub-command.

L{Options} checks every option and builds one frozen L{ProxyConfig};
L{makeService} hands it to a L{SpliceProxyService} (or, with C{--workers},
a L{SpliceProxySupervisorService}).

Bad input ends the process with one line on standard error and exit status
64 (C{EX_USAGE}); a listening endpoint that cannot be opened at start-up ends
it with one line and status 1.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import Service
from twisted.logger import LogLevel
from twisted.python import usage

from splicetx._app import worker as _worker
from splicetx._app.pooloptions import (
    PoolOptions,
    commandLineForward,
    connectStrings,
)
from splicetx._app.reload import fileForwards
from splicetx._app.service import METRICS_MISSING, SpliceProxyService
from splicetx._app.supervisor import (
    SpliceProxySupervisorService,
    twistArguments,
    workerArguments,
)
from splicetx._config.endpoints import (
    DEFAULT_BACKLOG,
    checkListen,
    withBacklog,
)
from splicetx._config.model import Forward, ProxyConfig
from splicetx._config.rinetd import ConfigError
from splicetx._config.values import (
    EXIT_USAGE,
    _accessControl,
    _count,
    _Exit,
    _proxyProtocolVersion,
    _seconds,
    _size,
    _tcpKeepalive,
    _trustedSources,
    _workerCount,
)
from splicetx._ops.accesslog import ACCESS_LOG_FORMATS
from splicetx._proxy import tls as _tls
from splicetx._relay.pipes import DEFAULT_PIPE_SIZE
from splicetx._relay.relay import ENGINES

__all__ = [
    "Forward",
    "Options",
    "makeService",
    "SpliceProxyService",
    "SpliceProxySupervisorService",
]


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


class Options(PoolOptions, usage.Options):
    """
    Options of C{twist splice-proxy}.

    After parsing, L{proxyConfig} holds the whole configuration.  The numeric
    options hold numbers (C{int} or C{float}); C{"listen"} is a list of
    server endpoint strings (with C{backlog=} added) and
    C{"max-connections"} is an C{int}, C{None} (no limit) or C{"auto"}.

    @ivar proxyConfig: the L{ProxyConfig} built by L{postOptions} (not to
        be confused with C{self["config"]}, the C{--config} file).
    @ivar rawArgs: the arguments as given (the workers get them again).

    @cvar exitOnUsageError: when C{True} (the default, for C{twist}), a
        C{usage.UsageError} prints one line on standard error and exits with
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
            "600",
            "Close a connection after this many seconds without a byte "
            "either way (0: never; default 10 minutes, nginx's proxy_timeout).",
        ],
        [
            "half-close-timeout",
            None,
            "60",
            "Once one direction has ended, close the connection after this "
            "many seconds without a byte in the other direction (0: never).",
        ],
        [
            "tcp-keepalive",
            None,
            "60:10:6",
            "TCP keepalive on the client and upstream sockets: "
            "IDLE[:INTERVAL[:COUNT]] (seconds, seconds, probes), 0: off.",
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
            "On SIGTERM/SIGINT, the most seconds to let live connections "
            "finish before aborting them (the process exits as soon as none "
            "is left).",
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
            "bindport connectaddress connectport' line, with allow/deny rules; "
            "or a TOML file (.toml) of forwards with pools (docs/pools.md); "
            "re-read on SIGHUP.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics on this server endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 (GET /metrics), with a status page "
            "(GET /status, /status.json) and GET /healthz.",
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
        [
            "access-log",
            None,
            None,
            "Write one record per connection to this file ('-': standard "
            "output) instead of twist's log file.",
        ],
        [
            "access-log-format",
            None,
            None,
            "text or json (one compact object per line); default: twist's "
            "own choice (--log-format) for its log file, else text on a "
            "terminal and json otherwise.",
        ],
    ]

    optFlags = [
        [
            "accept-proxy-protocol",
            None,
            "Read a PROXY protocol header (v1 or v2) from every client first "
            "and use its address for logs and --allow/--deny.",
        ],
        [
            "no-fast-path",
            None,
            "Serve plain forwards through the general path (a Twisted "
            "transport and protocol per connection) instead of the fast path; "
            "to compare or debug.",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["allow"] = []
        self["deny"] = []
        self["proxy-protocol-from"] = []
        self["connect"] = []
        self["route-sni"] = []
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

    def opt_proxy_protocol_from(self, rule: str) -> None:
        """
        With --accept-proxy-protocol, believe a PROXY header only from this
        CIDR network or address (repeatable); connections from anywhere
        else are refused.
        """
        self["proxy-protocol-from"].append(rule)

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
        Check every option, convert the numbers and build L{proxyConfig}.

        @raise usage.UsageError: for bad input, with a message naming the
            option.
        """
        if not self["config"] or self["listen"]:
            if not self["connect"] and not self["route-sni"]:
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
        self["half-close-timeout"] = _seconds(
            "half-close-timeout", self["half-close-timeout"]
        )
        self["tcp-keepalive"] = _tcpKeepalive(self["tcp-keepalive"])
        trusted = self["proxy-protocol-from"]
        if trusted:
            if not self["accept-proxy-protocol"]:
                raise _Exit("--proxy-protocol-from needs --accept-proxy-protocol")
            _trustedSources(trusted)
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
            checkListen(self["metrics"], "--metrics")
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise _Exit(METRICS_MISSING)
        self._checkAccessLog()
        acl = _accessControl(self["allow"], self["deny"])
        forwards: list[Forward] = []
        warnings: list[str] = []
        if self["listen"]:
            forwards.append(commandLineForward(self, None if acl.empty else acl))
        if self["config"]:
            try:
                # A worker reads the copy its supervisor checked.
                text = _worker.configText()
                fromFile, warnings = fileForwards(self["config"], acl, text)
            except OSError as e:
                raise _Exit(f"{self['config']}: cannot read the supervisor's copy: {e}")
            except ConfigError as e:
                raise _Exit(str(e))
            forwards.extend(fromFile)
        try:
            alpn, connectALPN = _tls.checkALPNOptions(
                self["alpn"],
                self["connect-alpn"],
                self["listen"],
                connectStrings(forwards),
            )
        except ValueError as e:
            raise _Exit(str(e))
        if self["accept-proxy-protocol"] and not trusted:
            warnings.append(
                "--accept-proxy-protocol without --proxy-protocol-from: any "
                "client can claim any address (and pass --allow/--deny); "
                "name your load balancers with --proxy-protocol-from CIDR"
            )
        self.proxyConfig = ProxyConfig(
            forwards=forwards,
            backlog=self["backlog"],
            engine=self["engine"],
            pipeSize=self["pipe-size"],
            maxPipes=self["max-pipes"],
            connectTimeout=self["connect-timeout"],
            idleTimeout=self["idle-timeout"],
            halfCloseTimeout=self["half-close-timeout"],
            tcpKeepalive=self["tcp-keepalive"],
            proxyProtocolFrom=trusted,
            maxConnections=self["max-connections"],
            drainTimeout=self["drain-timeout"],
            acceptProxyProtocol=bool(self["accept-proxy-protocol"]),
            fastPath=not self["no-fast-path"],
            proxyProtocolTimeout=self["proxy-protocol-timeout"],
            sendProxyProtocol=self["proxy-protocol"],
            metricsEndpoint=self["metrics"],
            workers=self["workers"],
            logNormalConnections=_infoObserved(self),
            accessLog=self["access-log"],
            accessLogFormat=self["access-log-format"],
            warnings=warnings,
            configFile=self["config"],
            commandACL=None if acl.empty else acl,
            alpn=alpn,
            connectALPN=connectALPN,
        )
        self["listen"] = [withBacklog(d, self["backlog"]) for d in self["listen"]]

    def _checkAccessLog(self) -> None:
        """
        Check C{--access-log-format} and that the C{--access-log} file can
        be opened for appending (the service opens it again when it starts).
        """
        form = self["access-log-format"]
        if form is not None:
            form = form.strip().lower()
            if form not in ACCESS_LOG_FORMATS:
                raise _Exit(
                    f"--access-log-format: unknown format "
                    f"{self['access-log-format']!r} (use "
                    f"{', '.join(ACCESS_LOG_FORMATS)})"
                )
            self["access-log-format"] = form
        path = self["access-log"]
        if path is None or path == "-":
            return
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise _Exit(f"--access-log: cannot open {path!r}: {e.strerror or e}")


def _twistLogFile(options: Options) -> tuple[Any, str | None]:
    """
    C{twist}'s log file and format (C{"text"} or C{"json"}), or
    C{(None, None)} when not run by C{twist}.

    @param options: our parsed options; C{twist} gives them a C{parent}.
    """
    parent = getattr(options, "parent", None)
    if not isinstance(parent, usage.Options):
        return None, None
    logFile = parent.get("logFile")
    logFormat = parent.get("logFormat")
    if logFile is None or logFormat not in ACCESS_LOG_FORMATS:
        return None, None
    return logFile, logFormat


def makeService(options: Options) -> Service:
    """
    Build the C{splice-proxy} service from parsed L{Options}, on the
    installed reactor: a L{SpliceProxyService}, or with C{--workers} (and
    not inside a worker) a L{SpliceProxySupervisorService}.

    @param options: parsed options.
    """
    config = options.proxyConfig
    if config.workers and not _worker.isWorker():
        argv = [
            sys.executable,
            "-m",
            "twisted",
            *twistArguments(sys.argv),
            "splice-proxy",
            *workerArguments(options.rawArgs),
        ]
        return SpliceProxySupervisorService(config, argv)
    logFile, logFormat = _twistLogFile(options)
    return SpliceProxyService(config, logFile=logFile, logFormat=logFormat)
