# -*- test-case-name: tests.test_cli -*-
"""
The configuration of a C{splice-proxy} run as frozen values, the one model
that every way of writing it produces: the command line
(L{splicetx._config.commandline}), a rinetd file (L{splicetx._config.rinetd})
and a TOML file (L{splicetx._config.toml}).

  - L{ProxyConfig}: everything the service needs, with its L{Forward}s.
  - L{Forward}: listening endpoints, one upstream or a L{PoolSpec}, SNI
    routes, access rules.
  - L{PoolSpec}, L{UpstreamSpec}, L{HealthCheckSpec}: a pool, its members
    and its active checks, as written (the service builds the running
    objects from them).
  - L{ConfigFile}: what a configuration file gave: its forwards and the
    warnings about it.

L{SpliceProxyService <splicetx._app.service.SpliceProxyService>} and
L{SpliceProxySupervisorService
<splicetx._app.supervisor.SpliceProxySupervisorService>} take a
L{ProxyConfig} whole.  Values here are already checked: the readers raise
L{ConfigError <splicetx._config.values.ConfigError>} before any is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attr

from splicetx._config.endpoints import DEFAULT_BACKLOG, isUDP, withBacklog
from splicetx._pool.health import DEFAULT_FALL, DEFAULT_RISE
from splicetx._pool.pool import DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS
from splicetx._pool.resolver import DEFAULT_VALIDITY
from splicetx._pool.sni import DEFAULT_MAX_SIZE
from splicetx._proxy.access import AccessControl
from splicetx._proxy.clientlimits import ConnectionRate
from splicetx._relay.pipes import DEFAULT_PIPE_SIZE
from splicetx._relay.tcpoptions import DEFAULT_KEEPALIVE, TCPKeepalive
from splicetx._udp.forwarder import DEFAULT_UDP_IDLE_TIMEOUT, DEFAULT_UDP_MAX_SESSIONS

__all__ = [
    "Forward",
    "ProxyConfig",
    "PoolSpec",
    "UpstreamSpec",
    "HealthCheckSpec",
    "ConfigFile",
    "DEFAULT_SNI_TIMEOUT",
    "MIN_SNI_MAX_SIZE",
]

#: Seconds a client may take to send its ClientHello.
DEFAULT_SNI_TIMEOUT = 5.0

#: The smallest C{sni-max-size} accepted (a ClientHello's usual size is
#: 0.2 to 2 KiB).
MIN_SNI_MAX_SIZE = 512


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _routes(
    value: Iterable[tuple[str, PoolSpec]],
) -> tuple[tuple[str, PoolSpec], ...]:
    return tuple(value)


def _forwards(value: Iterable[Forward]) -> tuple[Forward, ...]:
    return tuple(value)


def _atLeastOne(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} needs at least one endpoint string")


def _protocols(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


@attr.s(frozen=True, auto_attribs=True)
class UpstreamSpec:
    """
    One upstream of a pool, as written.

    @ivar endpoint: the client endpoint string.
    @ivar weight: see L{Upstream.weight <splicetx.pools.Upstream.weight>}.
    @ivar maxFails: see L{Upstream.maxFails <splicetx.pools.Upstream.maxFails>};
        C{None}: the pool's default.
    @ivar failTimeout: see L{Upstream.failTimeout
        <splicetx.pools.Upstream.failTimeout>}; C{None}: the pool's default.
    """

    endpoint: str
    weight: int = 1
    maxFails: int | None = None
    failTimeout: float | None = None


@attr.s(frozen=True, auto_attribs=True)
class HealthCheckSpec:
    """
    Active health checking of a pool (see L{splicetx.pools.HealthChecker}).

    @ivar interval: seconds between probes.
    @ivar timeout: seconds per probe; C{None}: C{min(interval, 10)}.
    @ivar rise: good probes that bring an upstream up.
    @ivar fall: failed probes that take it down.
    @ivar send: bytes sent once connected.
    @ivar expect: the reply's expected prefix.
    """

    interval: float
    timeout: float | None = None
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    send: bytes = b""
    expect: bytes = b""


@attr.s(frozen=True, auto_attribs=True)
class PoolSpec:
    """
    A pool of upstreams.

    @ivar upstreams: its members.
    @ivar balance: a balancer name (L{splicetx.pools.BALANCERS}).
    @ivar maxFails: the members' default C{max-fails}.
    @ivar failTimeout: the members' default C{fail-timeout}.
    @ivar maxTries: see L{UpstreamPool.maxTries
        <splicetx.pools.UpstreamPool.maxTries>}.
    @ivar failoverTimeout: see L{UpstreamPool.totalTimeout
        <splicetx.pools.UpstreamPool.totalTimeout>}.
    @ivar healthCheck: active checks, or C{None}.
    """

    upstreams: tuple[UpstreamSpec, ...]
    balance: str = "roundrobin"
    maxFails: int = DEFAULT_MAX_FAILS
    failTimeout: float = DEFAULT_FAIL_TIMEOUT
    maxTries: int | None = None
    failoverTimeout: float | None = None
    healthCheck: HealthCheckSpec | None = None


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Forward:
    """
    One forward: connections accepted on its listening endpoints are
    relayed to its upstream by one factory.

    The rinetd fields (L{lineNumber}, L{bindAddress} ...) say where a
    forward of a C{--config} file came from; they are C{0} and C{None} for
    the command line's forward.

    @ivar listens: its server endpoint strings as the user wrote them (the
        service adds C{backlog=}, see L{ProxyConfig.backlog}); one or more.
    @ivar connect: the upstream client endpoint string, or C{None} when a
        C{--protocol} class chooses the upstream itself.
    @ivar acl: its access rules, or C{None} for none.
    @ivar lineNumber: the configuration file line it was declared on.
    @ivar bindAddress: the listening address as written in the file.
    @ivar bindPort: the listening port number from the file.
    @ivar connectAddress: the upstream address as written in the file.
    @ivar connectPort: the upstream port number from the file.
    @ivar name: the forward's name in logs and metrics (a TOML forward's
        C{name}); C{None}: named by L{listen}.
    @ivar pool: the upstream pool (L{PoolSpec})
        when it has several upstreams or pool options, else C{None} (one
        plain upstream: L{connect}, no pool on the connection path).  With
        a pool, L{connect} is its first upstream, for messages.
    @ivar routes: C{(pattern, PoolSpec)} per C{--route-sni} name; empty: no
        SNI routing.
    @ivar sniTimeout: with routes, seconds a client has to send its
        ClientHello.
    @ivar sniMaxSize: with routes, the longest ClientHello accepted.
    @ivar udpIdleTimeout: for a UDP forward, its own session idle timeout
        (rinetd's C{[timeout=N]}, TOML's C{udp-idle-timeout}); C{None}:
        L{ProxyConfig.udpIdleTimeout}.
    @ivar resolveTTL: its own validity of upstream host names' addresses
        (C{resolve-ttl} in a TOML file), or C{None}: C{--resolve-ttl}.
    @ivar clientMaxConnections: its own live connections per client at
        most (C{client-max-connections}), C{0} for no limit; C{None}: the
        command line's L{ProxyConfig.clientMaxConnections}.
    @ivar clientConnectionRate: its own L{ConnectionRate} of new
        connections per client; C{None}: the command line's.
    @ivar clientPrefix: its own client prefix lengths; C{None}: the
        command line's.
    @ivar clientLimitAction: its own C{client-limit-action} (C{"reset"}
        or C{"close"}); C{None}: the command line's.
    @ivar connectionBandwidth: its own C{connection-bandwidth} in bytes
        per second, C{0} for no limit; C{None}: the command line's.
    @ivar clientBandwidth: likewise, C{client-bandwidth}.
    @ivar listenerBandwidth: likewise, C{listener-bandwidth}.
    """

    listens: tuple[str, ...] = attr.ib(converter=_strings, validator=_atLeastOne)
    connect: str | None = None
    acl: AccessControl | None = None
    lineNumber: int = 0
    bindAddress: str | None = None
    bindPort: int | None = None
    connectAddress: str | None = None
    connectPort: int | None = None
    name: str | None = None
    pool: PoolSpec | None = None
    routes: tuple[tuple[str, PoolSpec], ...] = attr.ib(default=(), converter=_routes)
    sniTimeout: float = DEFAULT_SNI_TIMEOUT
    sniMaxSize: int = DEFAULT_MAX_SIZE
    udpIdleTimeout: float | None = None
    resolveTTL: float | None = None
    clientMaxConnections: int | None = None
    clientConnectionRate: ConnectionRate | None = None
    clientPrefix: tuple[int, int] | None = None
    clientLimitAction: str | None = None
    connectionBandwidth: int | None = None
    clientBandwidth: int | None = None
    listenerBandwidth: int | None = None

    @property
    def isUDP(self) -> bool:
        """
        Whether this is a UDP forward (it listens on C{udp:} endpoints).
        """
        return isUDP(self.listens[0])

    def connectStrings(self) -> list[str]:
        """
        Every upstream endpoint string: its pool's and SNI routes' members,
        or its one L{connect} (none when the protocol chooses its upstream).
        """
        pools = ([self.pool] if self.pool is not None else []) + [
            p for _, p in self.routes
        ]
        if not pools:
            return [] if self.connect is None else [self.connect]
        return [u.endpoint for p in pools for u in p.upstreams]

    @property
    def listen(self) -> str:
        """
        The first listening endpoint string, as written: it names the
        forward (the C{forward} label of its metrics and log events).
        """
        return self.listens[0]


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class ProxyConfig:
    """
    Everything a C{splice-proxy} service needs to run.

    @ivar forwards: the forwards to serve, each with its own factory.
    @ivar backlog: the listen queue length added to C{tcp}, C{tcp6},
        C{unix} and C{ssl} listening strings that set none.
    @ivar engine: C{"auto"}, C{"splice"} or C{"copy"}.
    @ivar pipeSize: the kernel pipe size per direction, in bytes.
    @ivar maxPipes: the cap on pipes held by spliced relays, or C{None} to
        derive it from the file descriptor limit.
    @ivar connectTimeout: seconds to wait for the upstream connection.
    @ivar idleTimeout: seconds without a byte before a connection is
        closed, C{0} for never.
    @ivar halfCloseTimeout: once one direction has ended, seconds without a
        byte in the other before the connection is closed, C{0} for never.
    @ivar tcpKeepalive: the TCP keepalive settings of both sockets of every
        connection, or C{None} for none.
    @ivar proxyProtocolFrom: with L{acceptProxyProtocol}, the networks whose
        PROXY header is believed (others are refused); empty: every peer.
    @ivar maxConnections: connections each forward serves at once: a
        number, C{None} (no limit) or C{"auto"} (derived from the file
        descriptor limit, see L{splicetx._app.filelimit}).
    @ivar drainTimeout: seconds live connections get to finish on
        SIGTERM/SIGINT.
    @ivar acceptProxyProtocol: read a PROXY protocol header from every
        client first.
    @ivar proxyProtocolTimeout: seconds a client has to send that header.
    @ivar sendProxyProtocol: C{1} or C{2} to send a PROXY header upstream,
        C{None} for none.
    @ivar metricsEndpoint: the server endpoint string to serve Prometheus
        metrics on, or C{None}.
    @ivar workers: how many worker processes to run under a supervisor, or
        C{None} for one process.
    @ivar logNormalConnections: log the C{info} event of connections that
        ended normally (C{False} when nothing would show it).
    @ivar accessLog: where the connection records go: a file path, C{"-"}
        for standard output, or C{None} for C{twist}'s own log file (see
        L{SpliceProxyService <splicetx._app.service.SpliceProxyService>}).
    @ivar accessLogFormat: C{"text"}, C{"json"}, or C{None} to choose as
        C{twist} does (its own choice for its log file; text on a
        terminal, else JSON, for another file).
    @ivar warnings: lines to log at start (about the C{--config} file).
    @ivar configFile: the C{--config} file (re-read on SIGHUP, see
        L{splicetx._app.reload}), or C{None}.
    @ivar commandACL: the command line's C{--allow}/C{--deny} rules, applied
        to the forwards of C{configFile} first, or C{None}.
    @ivar alpn: the ALPN protocols C{ssl:} listeners offer, in preference
        order (see L{splicetx._proxy.tls}); empty: negotiate none.
    @ivar connectALPN: the ALPN protocols offered to C{tls:} upstreams.
    @ivar fastPath: let plain forwards take the fast path (see
        L{SpliceProxyFactory.fastPath <splicetx.proxy.SpliceProxyFactory.fastPath>}).
    @ivar protocolClass: the C{--protocol} class (a
        L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>} subclass)
        every forward's factory uses, or C{None}.
    @ivar factoryClass: the C{--factory} class (a
        L{SpliceProxyFactory <splicetx.proxy.SpliceProxyFactory>} subclass)
        every forward is served by, or C{None}.
    @ivar classOptions: the parsed C{commandLineOptions} of those classes
        (a C{usage.Options}), given to every factory as its C{options}, or
        C{None}.
    @ivar udpIdleTimeout: seconds without a datagram before a UDP session
        ends (a forward's own L{Forward.udpIdleTimeout} wins).
    @ivar udpMaxSessions: live sessions per UDP forward at most.
    @ivar clientMaxConnections: live connections per client at most, or
        C{None} (see L{splicetx._proxy.clientlimits}).
    @ivar clientConnectionRate: new connections per client, a
        L{ConnectionRate <splicetx._proxy.clientlimits.ConnectionRate>}, or
        C{None}.
    @ivar clientPrefix: the IPv4 and IPv6 prefix lengths of the network a
        client counts as for those limits.
    @ivar connectionBandwidth: bytes per second each direction of each
        connection may move at most, or C{None} (see
        L{splicetx._relay.bandwidth}).
    @ivar clientBandwidth: bytes per second each direction of all the
        connections of one client may move at most together, or C{None}.
    @ivar listenerBandwidth: bytes per second each direction of all the
        connections of one forward may move at most together, or C{None}.
    @ivar clientLimitAction: what a client over a limit per client gets:
        C{"reset"} or C{"close"}.
    @ivar resolveTTL: seconds an upstream host name's addresses are used
        before it is resolved again (C{--resolve-ttl}; see
        L{splicetx._pool.resolver}).
    @ivar metricsAllow: the networks that may read the C{--metrics}
        endpoint; empty: everyone who reaches it.
    """

    forwards: tuple[Forward, ...] = attr.ib(converter=_forwards)
    backlog: int = DEFAULT_BACKLOG
    engine: str = "auto"
    pipeSize: int = DEFAULT_PIPE_SIZE
    maxPipes: int | None = None
    connectTimeout: float = 30.0
    idleTimeout: float = 600.0
    halfCloseTimeout: float = 60.0
    resolveTTL: float = DEFAULT_VALIDITY
    tcpKeepalive: TCPKeepalive | None = DEFAULT_KEEPALIVE
    proxyProtocolFrom: tuple[str, ...] = attr.ib(default=(), converter=_strings)
    maxConnections: int | str | None = "auto"
    drainTimeout: float = 30.0
    acceptProxyProtocol: bool = False
    proxyProtocolTimeout: float = 5.0
    sendProxyProtocol: int | None = None
    metricsEndpoint: str | None = None
    workers: int | None = None
    logNormalConnections: bool = True
    accessLog: str | None = None
    accessLogFormat: str | None = None
    warnings: tuple[str, ...] = attr.ib(default=(), converter=_strings)
    configFile: str | None = None
    commandACL: AccessControl | None = None
    alpn: tuple[bytes, ...] = attr.ib(default=(), converter=_protocols)
    connectALPN: tuple[bytes, ...] = attr.ib(default=(), converter=_protocols)
    fastPath: bool = True
    protocolClass: type | None = None
    factoryClass: type | None = None
    classOptions: Any = None
    udpIdleTimeout: float = DEFAULT_UDP_IDLE_TIMEOUT
    udpMaxSessions: int = DEFAULT_UDP_MAX_SESSIONS
    clientMaxConnections: int | None = None
    clientConnectionRate: ConnectionRate | None = None
    clientPrefix: tuple[int, int] = (32, 128)
    connectionBandwidth: int | None = None
    clientBandwidth: int | None = None
    listenerBandwidth: int | None = None
    clientLimitAction: str = "reset"
    metricsAllow: tuple[str, ...] = attr.ib(default=(), converter=_strings)

    def listenEndpoints(self, forward: Forward) -> list[str]:
        """
        The server endpoint strings to listen on for one forward: its
        L{Forward.listens} with L{backlog} added.
        """
        return [withBacklog(d, self.backlog) for d in forward.listens]

    @property
    def listen(self) -> list[str]:
        """
        Every server endpoint string to listen on, forward after forward,
        with L{backlog} added.
        """
        return [d for f in self.forwards for d in self.listenEndpoints(f)]

    @property
    def listenGiven(self) -> list[str]:
        """
        The same strings as the user wrote them (for messages).
        """
        return [d for f in self.forwards for d in f.listens]


@attr.s(frozen=True, auto_attribs=True)
class ConfigFile:
    """
    What a C{--config} file gave, in either format.

    @ivar forwards: its forwards, in file order.
    @ivar warnings: C{FILE:LINE: ...} lines about statements accepted but
        ignored, for the log.
    @ivar globalACL: the rules that apply to every forward of the file
        (rinetd's rules before the first forward), or C{None}.
    @ivar logFile: rinetd's C{logfile} path, if given (unused: logging goes
        to C{twist}'s log observers).
    @ivar pidFile: rinetd's C{pidlogfile} path, if given (unused: use
        C{twist}'s own pid handling or the service manager).
    @ivar logCommon: whether rinetd's C{logcommon} was given (unused).
    """

    forwards: tuple[Forward, ...] = attr.ib(converter=_forwards)
    warnings: tuple[str, ...] = attr.ib(default=(), converter=_strings)
    globalACL: AccessControl | None = None
    logFile: str | None = None
    pidFile: str | None = None
    logCommon: bool = False
