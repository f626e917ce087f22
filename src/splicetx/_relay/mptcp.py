# -*- test-case-name: tests.test_mptcp -*-
"""
Multipath TCP (MPTCP, RFC 8684) listening and connecting endpoints: Twisted's
own TCP ports and clients over a socket made with C{IPPROTO_MPTCP}.

B{Listening}: L{MPTCPServerEndpoint} makes, binds and listens an MPTCP socket
itself and hands it to C{IReactorSocket.adoptStreamPort}, so the port is a
plain C{twisted.internet.tcp.Port} and its clients plain
C{twisted.internet.tcp.Server} transports: everything that knows Twisted's TCP
(the splice engine, the proxy's fast path that accepts at the C level) serves
them unchanged.

B{Connecting}: L{MPTCPClientEndpoint} drives Twisted's own TCP connect state
machine (C{tcp.Connector} and C{tcp.Client}) with one change, the socket it
creates.  That keeps, on every reactor with C{IReactorFDSet} (epoll, poll,
select, asyncio), what connecting a socket needs and what an adopted
connection would have had to re-implement: C{connectionMade} only once the
handshake completed, the connect timeout, cancellation through
C{stopConnecting}, the failures as C{ConnectError}s, C{bindAddress}, name
resolution, C{startTLS} and half-close.  Its transports are registered with
L{splicetx._relay.transports} as plain stream sockets, so they are spliced.

B{When the kernel cannot}: an MPTCP socket is refused with C{ENOPROTOOPT}
(C{net.mptcp.enabled = 0}), C{EPROTONOSUPPORT} (no C{CONFIG_MPTCP}) or
C{EINVAL} (kernels before 5.6).  The endpoints then fail with a sentence that
says which (L{MPTCPUnavailableError}), as HAProxy's C{mptcp@} does at listen;
with C{fallback=True} they use plain TCP instead and log why once
(C{splicetxEvent="mptcp-fallback"}).  A connection whose peer speaks plain TCP
is not a failure: the kernel falls back for that connection by itself, and
L{isMPTCP} tells which connections did.

L{parseServerArguments} and L{parseClientArguments} read the arguments of
C{mptcp:}/C{mptcp6:} endpoint strings for the Twisted plugin in
C{twisted/plugins/splicetx_mptcp.py}.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import CannotListenError, ConnectError, getConnectError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorSocket,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from splicetx._relay.runtime import LOG_ENDPOINTS
from splicetx._relay.transports import addStreamSocketClass

__all__ = [
    "IPPROTO_MPTCP",
    "MPTCPClientEndpoint",
    "MPTCPConnectError",
    "MPTCPServerEndpoint",
    "MPTCPUnavailableError",
    "isMPTCP",
    "mptcpUnavailableReason",
    "openSocket",
    "parseClientArguments",
    "parseServerArguments",
]

_log = Logger(namespace=LOG_ENDPOINTS)

#: The protocol number of MPTCP sockets (C{socket.IPPROTO_MPTCP} on Linux
#: with Python 3.10+).
IPPROTO_MPTCP: int = getattr(socket, "IPPROTO_MPTCP", 262)

# getsockopt(SOL_TCP, TCP_IS_MPTCP): 1 on a socket that speaks MPTCP, 0 on
# a plain TCP socket or an MPTCP one whose connection fell back (Linux 5.16+).
_TCP_IS_MPTCP = 43

# What socket() says when the kernel cannot make an MPTCP socket.
_REFUSALS = frozenset({errno.ENOPROTOOPT, errno.EPROTONOSUPPORT, errno.EINVAL})

_SYSCTL = "/proc/sys/net/mptcp/enabled"

_FALLBACK_HINT = "or add :fallback=tcp to use plain TCP"


class MPTCPUnavailableError(OSError):
    """
    The kernel cannot make an MPTCP socket.  C{str()} is one sentence saying
    why (C{errno} is the kernel's code).
    """

    def __str__(self) -> str:
        return str(self.strerror)


class MPTCPConnectError(ConnectError):
    """
    An MPTCP connection could not be started: the kernel refused the socket.
    """

    MESSAGE = "cannot open an MPTCP socket"


def openSocket(family: int, proto: int) -> socket.socket:
    """
    Make a stream socket: the one place this module calls C{socket()}, so
    that a test can stand in for a kernel without MPTCP.

    @param family: C{AF_INET} or C{AF_INET6}.
    @param proto: L{IPPROTO_MPTCP}, or C{0} for plain TCP.
    """
    return socket.socket(family, socket.SOCK_STREAM, proto)


def _sysctlValue() -> str | None:
    try:
        with open(_SYSCTL) as f:
            return f.read().strip()
    except OSError:
        return None


def _explain(family: int, code: int) -> tuple[str, str]:
    """
    Say why the kernel refused an MPTCP socket of C{family} with C{errno}
    C{code}, and what to do about it.

    @return: C{(reason, remedy)}, each a clause.
    """
    if not sys.platform.startswith("linux"):
        return f"MPTCP endpoints need Linux (this is {sys.platform})", _FALLBACK_HINT
    enabled = _sysctlValue()
    if enabled == "0":
        return (
            "MPTCP is off in this kernel (net.mptcp.enabled = 0)",
            f"turn it on with sysctl -w net.mptcp.enabled=1, {_FALLBACK_HINT}",
        )
    if enabled is None:
        return (
            "this kernel has no MPTCP (it needs Linux 5.6 or later built "
            "with CONFIG_MPTCP)",
            _FALLBACK_HINT.removeprefix("or "),
        )
    if family == socket.AF_INET6 and code == errno.EPROTONOSUPPORT:
        return (
            "this kernel has no MPTCP over IPv6 (CONFIG_MPTCP_IPV6)",
            f"use an IPv4 address, {_FALLBACK_HINT}",
        )
    return (
        f"the kernel refused an MPTCP socket ({os.strerror(code)})",
        _FALLBACK_HINT.removeprefix("or "),
    )


def _mptcpSocket(
    family: int, fallback: bool, fellBack: Callable[[str], None]
) -> socket.socket:
    """
    A non-blocking MPTCP socket, or, when the kernel refuses one and
    C{fallback} is set, a plain TCP socket (after calling C{fellBack} with
    the reason).

    @raise MPTCPUnavailableError: when the kernel refuses and C{fallback} is
        not set.
    """
    try:
        sock = openSocket(family, IPPROTO_MPTCP)
    except OSError as e:
        if e.errno not in _REFUSALS:
            raise
        reason, remedy = _explain(family, e.errno)
        if not fallback:
            raise MPTCPUnavailableError(e.errno, f"{reason}: {remedy}") from None
        fellBack(reason)
        sock = openSocket(family, 0)
    sock.setblocking(False)
    return sock


def _refusal(family: int) -> MPTCPUnavailableError | None:
    """
    Open and close an MPTCP socket of C{family}: what stood in the way.
    """
    try:
        openSocket(family, IPPROTO_MPTCP).close()
    except OSError as e:
        code = e.errno or 0
        if code in _REFUSALS:
            reason, remedy = _explain(family, code)
            return MPTCPUnavailableError(code, f"{reason}: {remedy}")
        return MPTCPUnavailableError(
            code, f"cannot open an MPTCP socket: {os.strerror(code)}"
        )
    return None


def mptcpUnavailableReason(family: int = socket.AF_INET) -> str | None:
    """
    Tell why this kernel cannot make MPTCP sockets of C{family}.

    @param family: C{AF_INET} or C{AF_INET6}.
    @return: C{None} when it can, otherwise a sentence (for example that
        C{net.mptcp.enabled} is 0).
    """
    refusal = _refusal(family)
    return None if refusal is None else str(refusal)


def isMPTCP(transport: Any) -> bool | None:
    """
    Whether a connection speaks MPTCP: C{False} for plain TCP, also when an
    MPTCP socket's peer did not offer MPTCP and the kernel fell back to TCP
    for this connection.

    @param transport: a connected TCP transport, or a socket.
    @return: C{None} when it cannot be told (not a socket, a kernel before
        5.16).
    """
    sock = getattr(transport, "socket", transport)
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, _TCP_IS_MPTCP))
    except (OSError, AttributeError, TypeError):
        return None


def _fellBackOnce(description: str) -> Callable[[str], None]:
    """
    A C{fellBack} callback for one endpoint that logs the first time only.
    """
    logged: list[bool] = []

    def fellBack(reason: str) -> None:
        if not logged:
            logged.append(True)
            _log.warn(
                "{endpoint}: MPTCP unavailable ({reason}); using plain TCP",
                splicetxEvent="mptcp-fallback",
                endpoint=description,
                reason=reason,
            )

    return fellBack


def _bindAddress(family: int, interface: str, port: int) -> tuple[Any, ...]:
    if family == socket.AF_INET6:
        flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
        return socket.getaddrinfo(
            interface or None, port, family, socket.SOCK_STREAM, 0, flags
        )[0][4]
    return (interface, port)


@implementer(IStreamServerEndpoint)
class MPTCPServerEndpoint:
    """
    Listen for MPTCP (and, through the kernel's own fallback, plain TCP)
    clients on a port: a C{tcp.Port} over an MPTCP socket.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        backlog: int = 50,
        interface: str = "",
        fallback: bool = False,
    ) -> None:
        """
        @param reactor: an C{IReactorSocket} provider (every POSIX reactor).
        @param port: the port number (C{0}: any free port).
        @param backlog: the C{listen()} queue length.
        @param interface: the address to bind (C{""}: every IPv4 address);
            an IPv6 literal listens on IPv6 (C{"::"}: every address, IPv4
            too unless the system sets C{bindv6only}).
        @param fallback: listen with plain TCP when the kernel has no MPTCP
            (logged once), instead of failing.
        """
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._fallback = fallback

    def __repr__(self) -> str:
        host = f"[{self._interface}]" if ":" in self._interface else self._interface
        return f"<MPTCPServerEndpoint {host}:{self._port}>"

    @property
    def family(self) -> socket.AddressFamily:
        """
        The address family the endpoint listens with.
        """
        return socket.AF_INET6 if isIPv6Address(self._interface) else socket.AF_INET

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with an MPTCP socket.

        @return: a L{Deferred} that fires with the C{IListeningPort}, or
            fails with C{CannotListenError} (whose C{socketError} is an
            L{MPTCPUnavailableError} when the kernel has no MPTCP).
        """
        return execute(self._listen, protocolFactory)

    def _listen(self, factory: Any) -> IListeningPort:
        reactor = self._reactor
        if not IReactorSocket.providedBy(reactor):
            raise CannotListenError(
                self._interface,
                self._port,
                OSError(f"reactor {type(reactor).__name__} cannot adopt sockets"),
            )
        family = self.family
        try:
            sock = _mptcpSocket(family, self._fallback, _fellBackOnce(repr(self)))
        except OSError as e:
            raise CannotListenError(self._interface, self._port, e) from None
        try:
            sock.set_inheritable(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(_bindAddress(family, self._interface, self._port))
            sock.listen(self._backlog)
            # adoptStreamPort duplicates the descriptor; this one is closed.
            port: IListeningPort = reactor.adoptStreamPort(
                sock.fileno(), family, factory
            )
        except OSError as e:
            raise CannotListenError(self._interface, self._port, e) from None
        finally:
            sock.close()
        return port


class MPTCPClient(tcp.Client):
    """
    A C{tcp.Client} whose socket is an MPTCP one (see L{MPTCPClientEndpoint}).
    """

    connector: _MPTCPConnector
    _refused: MPTCPUnavailableError | None = None

    def createInternetSocket(self) -> socket.socket:
        """
        Make the client's socket with C{IPPROTO_MPTCP}.
        """
        connector = self.connector
        try:
            return _mptcpSocket(
                self.addressFamily, connector.fallback, connector.fellBack
            )
        except MPTCPUnavailableError as e:
            self._refused = e
            raise

    def failIfNotConnected(self, err: Exception) -> None:
        """
        Fail the attempt: the kernel refusing MPTCP is reported as an
        L{MPTCPConnectError} saying why, not as Twisted's "Couldn't bind",
        and a refused connect as C{ConnectionRefusedError} on every reactor.
        """
        if self._refused is not None:
            err = MPTCPConnectError(string=str(self._refused))
            self._refused = None
        elif not self.connected and not self.disconnected:
            # A refused MPTCP connect polls as a hang-up without "readable"
            # (TCP's says both), which epoll and poll reactors report as a
            # lost connection: the socket's own error says what happened.
            sock = getattr(self, "socket", None)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock else 0
            if code:
                err = getConnectError((code, os.strerror(code)))
        super().failIfNotConnected(err)


addStreamSocketClass(MPTCPClient)


class _MPTCPConnector(tcp.Connector):
    """
    A C{tcp.Connector} whose transports are L{MPTCPClient}s.
    """

    def __init__(
        self,
        *args: Any,
        fallback: bool,
        fellBack: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fallback = fallback
        self.fellBack = fellBack

    def _makeTransport(self) -> MPTCPClient:
        return MPTCPClient(self.host, self.port, self.bindAddress, self, self.reactor)


class _MPTCPConnecting:
    """
    What Twisted's C{TCP4ClientEndpoint}/C{TCP6ClientEndpoint} take for the
    reactor: its C{connectTCP} connects an MPTCP socket, on the real reactor.
    Everything else those endpoints do (wrapping the factory, the
    L{Deferred} and its cancellation, IPv6 name resolution) is theirs.
    """

    def __init__(self, endpoint: MPTCPClientEndpoint) -> None:
        self._endpoint = endpoint

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> _MPTCPConnector:
        """
        Connect C{factory} to C{host}:C{port} over MPTCP.
        """
        endpoint = self._endpoint
        connector = _MPTCPConnector(
            host,
            port,
            factory,
            timeout,
            bindAddress,
            endpoint._reactor,
            fallback=endpoint._fallback,
            fellBack=endpoint._fellBack,
        )
        connector.connect()
        return connector


@implementer(IStreamClientEndpoint)
class MPTCPClientEndpoint:
    """
    Connect to a host and port over MPTCP (the kernel falls back to plain TCP
    by itself when the server does not speak MPTCP).
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
        ipv6: bool = False,
        fallback: bool = False,
    ) -> None:
        """
        @param reactor: a reactor with C{IReactorFDSet} (every POSIX one).
        @param host: an IPv4 or IPv6 address, or a host name.
        @param port: the port number.
        @param timeout: seconds before the attempt fails (C{0}: none).
        @param bindAddress: C{(host, port)} to bind the socket to first.
        @param ipv6: resolve a host name to IPv6 addresses (as
            C{TCP6ClientEndpoint}), not IPv4 ones (as C{TCP4ClientEndpoint}).
        @param fallback: connect with plain TCP when the kernel has no MPTCP
            (logged once per endpoint), instead of failing.
        """
        self._reactor = reactor
        self._host = host
        self._port = port
        self._timeout = timeout
        self._bindAddress = bindAddress
        self._ipv6 = ipv6
        self._fallback = fallback
        self._fellBack = _fellBackOnce(repr(self))
        shim = _MPTCPConnecting(self)
        self._tcp: IStreamClientEndpoint
        if ipv6:
            self._tcp = TCP6ClientEndpoint(shim, host, port, timeout, bindAddress)
        else:
            self._tcp = TCP4ClientEndpoint(shim, host, port, timeout, bindAddress)

    def __repr__(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"<MPTCPClientEndpoint {host}:{self._port}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect over MPTCP.

        @return: a L{Deferred} that fires with the connected protocol, or
            fails with a C{ConnectError} (an L{MPTCPConnectError} when the
            kernel refused the socket).
        """
        return self._tcp.connect(protocolFactory)


def _port(text: Any, low: int = 0) -> int:
    port = int(text)
    if not low <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def _fallbackFlag(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("tcp", "none"):
        raise ValueError(f"fallback must be tcp or none, got {text!r}")
    return value == "tcp"


def _mustHaveMPTCP(family: int, fallback: bool) -> None:
    if not fallback:
        refusal = _refusal(family)
        if refusal is not None:
            raise refusal


def parseServerArguments(
    reactor: Any,
    prefix: str,
    port: str,
    interface: str | None = None,
    backlog: str = "50",
    fallback: str = "none",
) -> MPTCPServerEndpoint:
    """
    Make the endpoint of C{mptcp:PORT[:interface=ADDR][:backlog=N]
    [:fallback=tcp|none]} (C{mptcp6:} listens on C{::} by default).

    @param prefix: C{"mptcp"} or C{"mptcp6"}.
    @raise ValueError: for a bad value; an L{MPTCPUnavailableError} when
        the kernel cannot make MPTCP sockets and C{fallback} is not C{tcp}.
    """
    if interface is None:
        interface = "::" if prefix == "mptcp6" else ""
    if prefix == "mptcp6" and not isIPv6Address(interface):
        raise ValueError(f"mptcp6 needs an IPv6 interface, got {interface!r}")
    count = int(backlog)
    if count < 1:
        raise ValueError(f"backlog must be at least 1, got {count}")
    endpoint = MPTCPServerEndpoint(
        reactor, _port(port), count, interface, _fallbackFlag(fallback)
    )
    _mustHaveMPTCP(endpoint.family, endpoint._fallback)
    return endpoint


def parseClientArguments(
    reactor: Any, prefix: str, *args: str, **kwargs: str
) -> MPTCPClientEndpoint:
    """
    Make the endpoint of C{mptcp:HOST:PORT[:timeout=S][:bindAddress=ADDR]
    [:fallback=tcp|none]} (C{mptcp6:} resolves host names to IPv6).

    @param prefix: C{"mptcp"} or C{"mptcp6"}.
    @raise ValueError: for a bad value; an L{MPTCPUnavailableError} when
        the kernel cannot make MPTCP sockets and C{fallback} is not C{tcp}.
    @raise TypeError: for unknown or missing arguments.
    """
    unknown = set(kwargs) - {"host", "port", "timeout", "bindAddress", "fallback"}
    if unknown:
        raise TypeError(f"unknown {prefix} argument(s): {', '.join(sorted(unknown))}")
    names = [n for n in ("host", "port") if n not in kwargs]
    if len(args) > len(names):
        raise TypeError("too many positional arguments")
    kwargs.update(zip(names, args, strict=False))
    if "host" not in kwargs or "port" not in kwargs:
        raise TypeError(f"{prefix} needs a host and a port ({prefix}:HOST:PORT)")
    host = kwargs["host"]
    timeout = float(kwargs.get("timeout", 30))
    if timeout < 0:
        raise ValueError(f"timeout must be zero or more, got {timeout:g}")
    bind = kwargs.get("bindAddress")
    ipv6 = prefix == "mptcp6"
    fallback = _fallbackFlag(kwargs.get("fallback", "none"))
    endpoint = MPTCPClientEndpoint(
        reactor,
        host,
        _port(kwargs["port"], 1),
        timeout=timeout,
        bindAddress=(bind, 0) if bind else None,
        ipv6=ipv6,
        fallback=fallback,
    )
    family = socket.AF_INET6 if ipv6 or isIPv6Address(host) else socket.AF_INET
    _mustHaveMPTCP(family, fallback)
    return endpoint
