# -*- test-case-name: tests.test_udp -*-
"""
The C{udp:} endpoints: where a UDP forward listens
(L{UDPServerEndpoint}) and where it sends (L{UDPClientEndpoint}).

Twisted has no endpoint strings for UDP (a datagram port is not a stream
endpoint), so these are small values of their own, parsed from
C{udp:PORT[:interface=ADDRESS]} and C{udp:HOST:PORT[:bindAddress=ADDRESS]}
by L{splicetx._config.endpoints}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attr
from twisted.internet import base, error, udp
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IResolutionReceiver
from zope.interface import implementer

__all__ = [
    "MAX_DATAGRAM",
    "UDPServerEndpoint",
    "UDPClientEndpoint",
    "isIPLiteral",
    "SessionPort",
    "openSessionPort",
]

#: The largest datagram a socket is asked to read: 65,535 bytes, more than
#: the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6), so
#: nothing is ever cut short (Twisted's default is 8,192).
MAX_DATAGRAM = 65535


def isIPLiteral(host: str) -> bool:
    """
    Whether C{host} is an IPv4 or IPv6 address rather than a name.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@attr.s(frozen=True, auto_attribs=True)
class UDPServerEndpoint:
    """
    A UDP port to listen on.

    @ivar reactor: the reactor (an C{IReactorUDP}).
    @ivar port: the port number (C{0}: any free port).
    @ivar interface: the address to bind, C{""} for every IPv4 address
        (C{"::"} for every address, IPv4 and IPv6).
    """

    reactor: Any = attr.ib(eq=False, repr=False)
    port: int
    interface: str = ""

    def listen(self, forwarder: Any) -> Deferred[Any]:
        """
        Listen with a forwarder's datagram protocol.

        @param forwarder: a L{UDPForwarder
            <splicetx._udp.forwarder.UDPForwarder>} (anything with
            C{buildProtocol(None)} returning a C{DatagramProtocol}).
        @return: a C{Deferred} firing with the listening port (an
            C{IListeningPort} of C{IUDPTransport}), or failing with the
            bind error.
        """
        return maybeDeferred(
            self.reactor.listenUDP,
            self.port,
            forwarder.buildProtocol(None),
            interface=self.interface,
            maxPacketSize=MAX_DATAGRAM,
        )


@implementer(IResolutionReceiver)
class _FirstAddress:
    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self.done: Deferred[str] = Deferred()

    def resolutionBegan(self, resolutionInProgress: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if self.addresses:
            self.done.callback(self.addresses[0].host)
        else:
            self.done.errback(OSError(f"no address for {self!r}"))


@attr.s(frozen=True, auto_attribs=True, repr=False)
class UDPClientEndpoint:
    """
    A UDP upstream: where a session's datagrams go.

    @ivar reactor: the reactor.
    @ivar host: an IP address or a host name.
    @ivar port: the port number.
    @ivar bindAddress: the source address of the sessions' sockets, or
        C{None} for the kernel's choice.
    """

    reactor: Any = attr.ib(eq=False, repr=False)
    host: str
    port: int
    bindAddress: str | None = None

    def resolve(self) -> Deferred[str]:
        """
        The upstream's address: L{host} itself when it is an address, else
        the first answer of the reactor's name resolver (without blocking).

        @return: a C{Deferred} firing with an IP address as text.
        """
        if isIPLiteral(self.host):
            return succeed(self.host)
        resolver = getattr(self.reactor, "nameResolver", None)
        if resolver is None:
            return fail(OSError("the reactor cannot resolve names"))
        receiver = _FirstAddress()
        resolver.resolveHostName(receiver, self.host, portNumber=self.port)
        return receiver.done

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"

    __repr__ = __str__


class SessionPort(udp.Port):
    """
    A session's upstream socket: Twisted's UDP port without its two log
    lines per socket (C{"... starting on N"}, C{"(UDP Port N Closed)"}),
    which a forward opening thousands of sessions a second cannot afford
    in its log.  Otherwise the same as C{reactor.listenUDP} makes (every
    POSIX reactor, C{asyncio}'s included, uses this class).
    """

    def _bindSocket(self) -> None:
        try:
            skt = self.createInternetSocket()
            skt.bind((self.interface, self.port))
        except OSError as le:
            raise error.CannotListenError(self.interface, self.port, le)
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = self.socket.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


def openSessionPort(reactor: Any, protocol: Any, interface: str) -> SessionPort:
    """
    Open a session's upstream socket on an ephemeral port.

    @param reactor: a POSIX reactor.
    @param protocol: the session (a C{DatagramProtocol}).
    @param interface: the address to bind (C{""}: any IPv4, C{"::"}: any).
    @raise error.CannotListenError: when the socket cannot be opened.
    """
    port = SessionPort(0, protocol, interface, MAX_DATAGRAM, reactor)
    port.startListening()
    return port
