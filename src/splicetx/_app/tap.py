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

from splicetx._app import protocolclass as _classes
from splicetx._app import worker as _worker
from splicetx._app.check import checkReport
from splicetx._app.service import METRICS_MISSING, SpliceProxyService
from splicetx._app.supervisor import (
    SpliceProxySupervisorService,
    twistArguments,
    workerArguments,
)
from splicetx._config.commandline import commandLineForward
from splicetx._config.endpoints import (
    DEFAULT_BACKLOG,
    checkListen,
    endpointType,
    withBacklog,
)
from splicetx._config.files import connectStrings, readConfigFile
from splicetx._config.limits import LIMIT_OPTIONS, limitSettings
from splicetx._config.model import DEFAULT_SNI_TIMEOUT, Forward, ProxyConfig
from splicetx._config.pools import POOL_OPTIONS
from splicetx._config.udpforward import checkUDPOptions
from splicetx._config.values import (
    EXIT_USAGE,
    ConfigError,
    parseAccessControl,
    parseCount,
    parseDuration,
    parseKeepalive,
    parseProxyProtocolVersion,
    parseResolveTTL,
    parseSize,
    parseTrustedSources,
    parseWorkerCount,
)
from splicetx._ops.accesslog import ACCESS_LOG_FORMATS
from splicetx._pool.resolver import DEFAULT_VALIDITY, MAX_VALIDITY
from splicetx._pool.sni import DEFAULT_MAX_SIZE
from splicetx._proxy import tls as _tls
from splicetx._relay.pipes import DEFAULT_PIPE_SIZE
from splicetx._relay.relay import ENGINES
from splicetx._udp.forwarder import DEFAULT_UDP_IDLE_TIMEOUT, DEFAULT_UDP_MAX_SESSIONS

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


_POOL_HELP = {
    "balance": "How a pool picks an upstream: roundrobin (default), "
    "leastconn, source (client IP hash) or random.",
    "max-fails": "Failed connects within --fail-timeout that make a pool "
    "upstream skipped (default 1; 0: never).",
    "fail-timeout": "Seconds for counting failures, and how long a failed "
    "upstream is skipped (default 10).",
    "connect-tries": "Upstreams tried for one client (default: every "
    "available one once).",
    "failover-timeout": "Seconds all connect tries of one client may take "
    "together (default: no limit beyond the tries).",
    "health-check-interval": "Probe every pool upstream every S seconds "
    "(default: no active checks).",
    "health-check-timeout": "Seconds one probe may take (default min(interval, 10)).",
    "health-check-rise": "Good probes in a row that bring an upstream back "
    "(default 2).",
    "health-check-fall": "Failed probes in a row that take an upstream out "
    "(default 3).",
    "health-check-send": "Bytes a probe sends once connected (\\r, \\n, "
    "\\t, \\\\ and \\xHH escapes).",
    "health-check-expect": "The prefix a probe's reply must start with.",
}


#: The duration options, and whether each must be more than zero (for the
#: others, 0 means "never" or "no limit").
_DURATION_OPTIONS = (
    ("connect-timeout", True),
    ("idle-timeout", False),
    ("half-close-timeout", False),
    ("drain-timeout", False),
    ("proxy-protocol-timeout", True),
)


def _installDefaultReactor() -> None:
    """
    Install L{splicetx.reactor} unless a reactor was chosen already; where
    there is no epoll (not Linux), leave C{twist} its default.
    """
    try:
        from splicetx.reactor import installDefault
    except ImportError:
        return
    installDefault()


class Options(usage.Options):
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
    @cvar installsReactor: when C{True} (the default, for C{twist} and
        C{twistd}), parsing installs L{splicetx.reactor} unless a reactor is
        installed already; L{splicetx.service.proxyService} turns it off (an
        application picks its own reactor).
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
    installsReactor = True

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
            "resolve-ttl",
            None,
            f"{DEFAULT_VALIDITY:g}",
            "Seconds an upstream host name's addresses are used before the "
            "next connect resolves it again (0: every connect; at most "
            f"{MAX_VALIDITY:g}).",
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

    optParameters += [[name, None, None, _POOL_HELP[name]] for name in POOL_OPTIONS]
    optParameters += [
        [
            "sni-timeout",
            None,
            f"{DEFAULT_SNI_TIMEOUT:g}",
            "With --route-sni, seconds a client has to send its TLS ClientHello.",
        ],
        [
            "sni-max-size",
            None,
            str(DEFAULT_MAX_SIZE),
            "With --route-sni, the longest ClientHello accepted, in bytes.",
        ],
    ]

    # UDP forwards (docs/udp.md).
    optParameters += [
        [
            "udp-idle-timeout",
            None,
            f"{DEFAULT_UDP_IDLE_TIMEOUT:g}",
            "End a UDP session after this many seconds without a datagram "
            "either way (default 60).",
        ],
        [
            "udp-max-sessions",
            None,
            str(DEFAULT_UDP_MAX_SESSIONS),
            "Live sessions per UDP forward (one socket each); past it new "
            "clients' datagrams are dropped and counted.",
        ],
    ]

    # Limits per client (docs/operations.md, "Limits per client").
    optParameters += LIMIT_OPTIONS

    optFlags = [
        [
            "check",
            None,
            "Check the whole configuration (options, --config file, endpoint "
            "strings, certificates, that the listening ports can be bound) "
            "and exit: 0 when it is good, 64 with every problem listed.",
        ],
        [
            "accept-proxy-protocol",
            None,
            "Read a PROXY protocol header (v1 or v2) from every client first "
            "and use its address for logs and --allow/--deny.",
        ],
        [
            "no-fast-path",
            None,
            "Give every connection a Twisted transport from the accept (the "
            "general path), for plain forwards and --protocol hooks alike, "
            "instead of raw sockets; to compare or debug.",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        # The help of an opt_ method is its docstring, whose line breaks and
        # indentation usage.Options would keep as runs of blanks.
        self.docs = {name: " ".join(doc.split()) for name, doc in self.docs.items()}
        self["listen"] = []
        self["allow"] = []
        self["deny"] = []
        self["proxy-protocol-from"] = []
        self["metrics-allow"] = []
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

    def opt_connect(self, description: str) -> None:
        """
        Upstream client endpoint (repeatable: a pool), e.g. tcp:10.0.0.2:80,
        tcp6:[2001:db8::2]:80, unix:/run/app.sock, tls:example.com:443,
        optionally followed by weight=N max-fails=N fail-timeout=S.  Host
        names are resolved without blocking.
        """
        self["connect"].append(description)

    opt_c = opt_connect

    def opt_route_sni(self, route: str) -> None:
        """
        NAME=ENDPOINT: send TLS clients whose server name is NAME (or
        matches *.DOMAIN) to ENDPOINT (--connect syntax; repeatable, the
        same NAME again makes a pool).
        """
        self["route-sni"].append(route)

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

    def opt_metrics_allow(self, rule: str) -> None:
        """
        Serve --metrics (and the status page) only to this CIDR network or
        address (repeatable); others are refused.
        """
        self["metrics-allow"].append(rule)

    def parseArgs(self, *args: str) -> None:
        """
        Refuse positional arguments: every setting is an option.
        """
        if args:
            raise ConfigError(
                f"unexpected argument(s): {' '.join(args)} (use --listen and "
                "--connect; see --help)"
            )

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the options; see L{exitOnUsageError}.
        """
        self.rawArgs = list(sys.argv[1:] if options is None else options)
        if self.installsReactor:
            # Before the --protocol and --factory modules are imported (one
            # may import the global reactor), and before twist installs its
            # default: the socket loop's wake costs less on this one.
            _installDefaultReactor()
        try:
            self._loadClasses(self.rawArgs)
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
        if not self["listen"] and (self["connect"] or self["route-sni"]):
            raise ConfigError("--listen is required (e.g. --listen tcp:8989)")
        if not self["listen"] and not self["config"]:
            raise ConfigError(
                "nothing to serve: give --listen ENDPOINT and --connect ENDPOINT "
                "(e.g. --listen tcp:8989 --connect tcp:127.0.0.1:8080), or "
                "--config FILE"
            )
        self._checkClasses()
        if (
            self["listen"]
            and not self["connect"]
            and not self["route-sni"]
            and not _classes.choosesUpstream(self.protocolClass)
        ):
            raise ConfigError(
                "--connect is required (the upstream, e.g. --connect "
                "tcp:127.0.0.1:8080)"
            )
        engine = self["engine"].strip().lower()
        if engine not in ENGINES:
            raise ConfigError(
                f"--engine: unknown engine {self['engine']!r} "
                f"(use {', '.join(ENGINES)})"
            )
        self["engine"] = engine
        self["pipe-size"] = parseSize(self["pipe-size"], "--pipe-size")
        if self["max-pipes"] is not None:
            self["max-pipes"] = parseCount(self["max-pipes"], "--max-pipes", 0)
        for name, positive in _DURATION_OPTIONS:
            self[name] = parseDuration(self[name], f"--{name}", positive)
        self["tcp-keepalive"] = parseKeepalive(self["tcp-keepalive"])
        self["resolve-ttl"] = parseResolveTTL(self["resolve-ttl"])
        trusted = self["proxy-protocol-from"]
        if trusted:
            if not self["accept-proxy-protocol"]:
                raise ConfigError("--proxy-protocol-from needs --accept-proxy-protocol")
            parseTrustedSources(trusted)
        self["backlog"] = parseCount(self["backlog"], "--backlog", 1)
        mc = self["max-connections"]
        if isinstance(mc, str) and mc.strip().lower() == "auto":
            self["max-connections"] = "auto"
        else:
            self["max-connections"] = parseCount(mc, "--max-connections", 0) or None
        if self["proxy-protocol"] is not None:
            self["proxy-protocol"] = parseProxyProtocolVersion(self["proxy-protocol"])
        if self["workers"] is not None:
            self["workers"] = parseWorkerCount(self["workers"])
        if self["metrics"] is not None:
            checkListen(self["metrics"], "--metrics")
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise ConfigError(METRICS_MISSING)
        self._checkAccessLog()
        self["udp-idle-timeout"] = parseDuration(
            self["udp-idle-timeout"], "--udp-idle-timeout", positive=True
        )
        self["udp-max-sessions"] = parseCount(
            self["udp-max-sessions"], "--udp-max-sessions", 1
        )
        acl = parseAccessControl(self["allow"], self["deny"])
        commandACL = None if acl.empty else acl
        # A worker adopts its supervisor's sockets: it does not check the
        # listening strings again (a systemd: string names sockets of the
        # supervisor's environment, not its own).
        # --check checks them itself (leaving systemd: ones to systemd).
        checkListens = not _worker.isWorker() and not self["check"]
        forwards: list[Forward] = []
        warnings: list[str] = []
        if self["listen"]:
            forwards.append(commandLineForward(self, commandACL, checkListens))
        if self["config"]:
            # A worker reads the copy its supervisor checked.
            try:
                text = _worker.configText()
            except OSError as e:
                raise ConfigError(
                    f"{self['config']}: cannot read the supervisor's copy: {e}"
                ) from None
            fromFile = readConfigFile(self["config"], commandACL, text, checkListens)
            forwards.extend(fromFile.forwards)
            warnings.extend(fromFile.warnings)
        checkUDPOptions(
            forwards,
            self["workers"],
            self["proxy-protocol"],
            bool(self["accept-proxy-protocol"]),
        )
        try:
            alpn, connectALPN = _tls.checkALPNOptions(
                self["alpn"],
                self["connect-alpn"],
                self["listen"],
                connectStrings(forwards),
            )
        except ValueError as e:
            raise ConfigError(str(e))
        if self["engine"] == "splice":
            encrypted = [
                d for f in forwards for d in f.listens if endpointType(d) == "ssl"
            ] + [d for d in connectStrings(forwards) if endpointType(d) == "tls"]
            if encrypted:
                raise ConfigError(
                    f"--engine splice: {encrypted[0]} is TLS, whose bytes are "
                    "encrypted in this process and cannot be spliced; use "
                    "--engine auto (splice where it can, copy for TLS)"
                )
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
            resolveTTL=self["resolve-ttl"],
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
            commandACL=commandACL,
            alpn=alpn,
            connectALPN=connectALPN,
            protocolClass=self.protocolClass,
            factoryClass=self.factoryClass,
            classOptions=self.classOptions,
            udpIdleTimeout=self["udp-idle-timeout"],
            udpMaxSessions=self["udp-max-sessions"],
            **limitSettings(self, warnings),
        )
        if self.protocolClass or self.factoryClass:
            for forward in forwards:
                if forward.routes:
                    raise ConfigError(
                        "--route-sni routes with splice-proxy's own SNI "
                        "protocol: it cannot be used with --protocol or --factory"
                    )
        self["listen"] = [withBacklog(d, self["backlog"]) for d in self["listen"]]
        if self["check"]:
            status, lines = checkReport(self.proxyConfig)
            print("\n".join(lines), file=sys.stderr if status else sys.stdout)
            raise SystemExit(status)

    # -- --protocol and --factory (splicetx._app.protocolclass) ---------------

    #: The C{--protocol} class, or C{None}.
    protocolClass: type | None = None
    #: The C{--factory} class, or C{None}.
    factoryClass: type | None = None
    #: The parsed C{commandLineOptions} of those classes, or C{None}.
    classOptions: usage.Options | None = None

    def opt_protocol(self, name: str) -> None:
        """
        PACKAGE.MODULE.CLASS: serve every client with this
        SpliceProxyProtocol subclass (importable from PYTHONPATH); its own
        options, if any, are listed here when it is given.  --connect is
        its default upstream, and may be left out when the class reads a
        handshake or overrides chooseUpstream().
        """
        self.protocolClass = _classes.loadClass(name, "protocol")

    def opt_factory(self, name: str) -> None:
        """
        PACKAGE.MODULE.CLASS: build every forward's factory with this
        SpliceProxyFactory subclass (it takes SpliceProxyFactory's
        keywords).
        """
        self.factoryClass = _classes.loadClass(name, "factory")

    def _loadClasses(self, arguments: list[str]) -> None:
        """
        Import the C{--protocol} and C{--factory} classes before parsing,
        and add their own options to this parser (and its C{--help}).
        """
        for option, name in _classes.scanClassNames(arguments).items():
            getattr(self, f"opt_{option}")(name)
        extra = _classes.classOptionsOf(self.protocolClass, self.factoryClass)
        if extra is not None:
            self.classOptions = extra()
            _classes.addClassOptions(self, self.classOptions)

    def _checkClasses(self) -> None:
        """
        Let the classes' options check themselves (their C{postOptions}).
        """
        if self.classOptions is not None:
            self.classOptions.postOptions()

    def _checkAccessLog(self) -> None:
        """
        Check C{--access-log-format} and that the C{--access-log} file can
        be opened for appending (the service opens it again when it starts).
        """
        form = self["access-log-format"]
        if form is not None:
            form = form.strip().lower()
            if form not in ACCESS_LOG_FORMATS:
                raise ConfigError(
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
            raise ConfigError(f"--access-log: cannot open {path!r}: {e.strerror or e}")


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
        return SpliceProxySupervisorService(
            config, argv, logFile=_twistLogFile(options)[0]
        )
    logFile, logFormat = _twistLogFile(options)
    return SpliceProxyService(config, logFile=logFile, logFormat=logFormat)
