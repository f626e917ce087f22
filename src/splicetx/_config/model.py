# -*- test-case-name: tests.test_cli -*-
"""
The configuration of a C{splice-proxy} run as one frozen value: the
forwards to serve (L{Forward}) and every setting of the service and its
factories (L{ProxyConfig}).

C{Options.postOptions} (in L{splicetx._app.tap}) builds it from the command
line and a C{--config} file (L{splicetx._config.rinetd} reads those into
L{Forward}s too); L{SpliceProxyService <splicetx._app.service.SpliceProxyService>}
and L{SpliceProxySupervisorService
<splicetx._app.supervisor.SpliceProxySupervisorService>} take it whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attr

from splicetx._config.endpoints import DEFAULT_BACKLOG, withBacklog
from splicetx._proxy.access import AccessControl
from splicetx._relay.pipes import DEFAULT_PIPE_SIZE
from splicetx._relay.tcpoptions import DEFAULT_KEEPALIVE, TCPKeepalive

__all__ = ["Forward", "ProxyConfig"]


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _routes(value: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple(value)


def _forwards(value: Iterable[Forward]) -> tuple[Forward, ...]:
    return tuple(value)


def _atLeastOne(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} needs at least one endpoint string")


def _protocols(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


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
    @ivar connect: the upstream client endpoint string.
    @ivar acl: its access rules, or C{None} for none.
    @ivar lineNumber: the configuration file line it was declared on.
    @ivar bindAddress: the listening address as written in the file.
    @ivar bindPort: the listening port number from the file.
    @ivar connectAddress: the upstream address as written in the file.
    @ivar connectPort: the upstream port number from the file.
    @ivar name: the forward's name in logs and metrics (a TOML forward's
        C{name}); C{None}: named by L{listen}.
    @ivar pool: the upstream pool (L{PoolSpec <splicetx._config.pools.PoolSpec>})
        when it has several upstreams or pool options, else C{None} (one
        plain upstream: L{connect}, no pool on the connection path).  With
        a pool, L{connect} is its first upstream, for messages.
    @ivar routes: C{(pattern, PoolSpec)} per C{--route-sni} name; empty: no
        SNI routing.
    @ivar sniTimeout: with routes, seconds a client has to send its
        ClientHello.
    @ivar sniMaxSize: with routes, the longest ClientHello accepted.
    """

    listens: tuple[str, ...] = attr.ib(converter=_strings, validator=_atLeastOne)
    connect: str
    acl: AccessControl | None = None
    lineNumber: int = 0
    bindAddress: str | None = None
    bindPort: int | None = None
    connectAddress: str | None = None
    connectPort: int | None = None
    name: str | None = None
    pool: Any = None
    routes: tuple[tuple[str, Any], ...] = attr.ib(default=(), converter=_routes)
    sniTimeout: float = 5.0
    sniMaxSize: int = 16384

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
    """

    forwards: tuple[Forward, ...] = attr.ib(converter=_forwards)
    backlog: int = DEFAULT_BACKLOG
    engine: str = "auto"
    pipeSize: int = DEFAULT_PIPE_SIZE
    maxPipes: int | None = None
    connectTimeout: float = 30.0
    idleTimeout: float = 600.0
    halfCloseTimeout: float = 60.0
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
