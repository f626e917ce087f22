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
import resource
import signal
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP6ClientEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._pipes import DEFAULT_PIPE_SIZE, PipePool
from splicetx._relay import ENGINES
from splicetx.proxy import SpliceProxyFactory, describeAddress, describeEndpoint

__all__ = ["Options", "makeService", "SpliceProxyService"]

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


def _checkListen(description: str) -> None:
    try:
        serverEndpoint(_ParseOnlyReactor(), description)
    except (IndexError, KeyError) as e:
        if endpointType(description) == "systemd":
            raise _Exit(f"--listen {description}: {_SYSTEMD_HINT}")
        raise _Exit(f"--listen {description}: {_explain(e)}")
    except Exception as e:
        hint = ""
        if type(e).__module__.startswith("OpenSSL"):
            raise _Exit(
                f"--listen {description}: cannot load the TLS key or "
                f"certificate ({_explain(e)})"
            )
        if description.strip().isdigit():
            hint = f" (did you mean tcp:{description.strip()}?)"
        raise _Exit(f"--listen {description}: {_explain(e)}{hint}")


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
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on this server endpoint (repeatable), e.g. tcp:8989,
        tcp6:8989:interface=[::1], unix:/run/proxy.sock,
        systemd:domain=INET:index=0, ssl:8443:privateKey=key.pem.
        """
        self["listen"].append(description)

    opt_l = opt_listen

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
        if not self["connect"]:
            raise _Exit(
                "--connect is required (the upstream, e.g. --connect "
                "tcp:127.0.0.1:8080)"
            )
        if not self["listen"]:
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
        _checkConnect(self["connect"])
        listen = []
        for description in self["listen"]:
            _checkListen(description)
            listen.append(withBacklog(description, self["backlog"]))
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


class SpliceProxyService(Service):
    """
    Listens on the configured endpoints with a L{SpliceProxyFactory}, and
    drains on stop.

    Listening happens in L{privilegedStartService} (C{twistd} calls it before
    dropping privileges; L{startService} calls it when nobody did), so a
    port in use ends start-up with one line on standard error.

    @ivar factory: the L{SpliceProxyFactory}, once started.
    @ivar ports: the listening ports, once started.
    """

    name = "splice-proxy"

    def __init__(
        self,
        reactor: Any,
        listen: list[str],
        connect: str,
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
    ) -> None:
        """
        @param reactor: the reactor.
        @param listen: server endpoint strings.
        @param connect: the upstream client endpoint string.
        @param maxConnections: a number, C{None} (no limit) or C{"auto"}.
        @param listenGiven: the C{listen} strings as the user wrote them
            (before C{backlog=} was added), for messages.
        @param handleSignals: take over SIGTERM/SIGINT once the reactor runs
            (when the reactor installed its own handlers), so that they drain
            instead of stopping at once and the process exits with status 0.
        """
        self.reactor = reactor
        self.listen = listen
        self.listenGiven = listenGiven or listen
        self.connect = connect
        self.engine = engine
        self.pipeSize = pipeSize
        self.maxPipes = maxPipes
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.drainTimeout = drainTimeout
        self.handleSignals = handleSignals
        self.factory: SpliceProxyFactory | None = None
        self.ports: list[Any] = []
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

    def privilegedStartService(self) -> None:
        """
        Raise the file descriptor limit, build the factory and open every
        listening endpoint.

        @raise SystemExit: with a one-line message when an endpoint cannot
            be opened.
        """
        if self._started:
            return
        self._started = True
        reactor = self.reactor
        _, maxPipes, maxConnections = self._capacity()
        pool = PipePool(pipeSize=self.pipeSize, maxPipes=maxPipes)
        upstream = clientEndpoint(reactor, self.connect)
        factory = self.buildFactory(upstream, pool)
        factory.maxConnections = maxConnections
        self.factory = factory
        for description, given in zip(self.listen, self.listenGiven, strict=True):
            try:
                endpoint = serverEndpoint(reactor, description)
                d = endpoint.listen(factory)
            except Exception:
                d = Deferred()
                d.errback()
            outcome: list[Any] = []
            d.addBoth(outcome.append)
            if not outcome:
                d.addCallback(self._listening, description)
                d.addErrback(self._lateListenFailure, given)
                continue
            if isinstance(outcome[0], Failure):
                for port in self.ports:
                    port.stopListening()
                self.ports = []
                raise SystemExit(
                    f"splice-proxy: error: cannot listen on {given}: "
                    f"{_explain(outcome[0].value)}"
                )
            self._listening(outcome[0], description)
        _log.info(
            "splice-proxy relaying to {upstream} (engine {engine}, pipe size "
            "{pipeSize}, connect timeout {connectTimeout:g} s, idle timeout "
            "{idleTimeout:g} s, drain timeout {drainTimeout:g} s)",
            splicetxEvent="started",
            upstream=describeEndpoint(upstream),
            engine=self.engine,
            pipeSize=self.pipeSize,
            connectTimeout=self.connectTimeout,
            idleTimeout=self.idleTimeout,
            drainTimeout=self.drainTimeout,
        )

    def buildFactory(self, upstream: Any, pipePool: PipePool) -> SpliceProxyFactory:
        """
        Make the factory that serves every listening endpoint.  Override to
        use a L{SpliceProxyFactory} subclass or another protocol (access
        control, PROXY protocol, metrics).

        @param upstream: the C{--connect} endpoint.
        @param pipePool: the pipe pool built from C{--pipe-size} and
            C{--max-pipes}.
        """
        return SpliceProxyFactory(
            upstream,
            reactor=self.reactor,
            engine=self.engine,
            pipePool=pipePool,
            connectTimeout=self.connectTimeout,
            idleTimeout=self.idleTimeout,
        )

    def _listening(self, port: Any, description: str) -> Any:
        assert self.factory is not None
        self.ports.append(port)
        self.factory.addListeningPort(port)
        address = port.getHost()
        _log.info(
            "listening on {address} ({description})",
            splicetxEvent="listening",
            address=describeAddress(address),
            port=getattr(address, "port", None),
            description=description,
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

        def exitNow() -> None:
            import os

            os._exit(EXIT_START)

        self.reactor.addSystemEventTrigger("after", "shutdown", exitNow)
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
        import os

        _log.info(
            "splice-proxy ready (pid {pid})", splicetxEvent="ready", pid=os.getpid()
        )

    # -- stop -----------------------------------------------------------------

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
        factory = self.factory
        if not self._stopping:
            _log.info(
                "received {signal}: no longer accepting; letting {count} "
                "connection(s) finish for up to {timeout:g} s",
                signal=name,
                count=len(factory.liveProtocols) if factory else 0,
                timeout=self.drainTimeout,
            )
            self._stopReactor()
        elif factory is not None:
            _log.info(
                "received {signal} again: aborting {count} connection(s)",
                signal=name,
                count=len(factory.liveProtocols),
            )
            for proto in list(factory.liveProtocols):
                proto.abort(detail=f"{name} during drain")

    def _stopReactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    def stopService(self) -> Deferred[Any] | None:
        """
        Stop listening at once and let live connections finish for up to
        the drain timeout, then abort the rest.

        @return: a L{Deferred} that fires once every connection has ended.
        """
        Service.stopService(self)
        self._stopping = True
        factory = self.factory
        if factory is None:
            return None
        self.ports = []
        d = factory.drain(self.drainTimeout)

        def drained(aborted: int) -> None:
            _log.info(
                "drained: {aborted} connection(s) aborted at the drain timeout",
                splicetxEvent="drained",
                aborted=aborted,
            )

        return d.addCallback(drained)


def makeService(options: Options) -> SpliceProxyService:
    """
    Build the C{splice-proxy} service from parsed L{Options}, on the
    installed reactor.

    @param options: parsed options.
    @return: a L{SpliceProxyService}.
    """
    from twisted.internet import reactor

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
    )
