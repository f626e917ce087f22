# -*- test-case-name: tests.test_leanhooks -*-
"""
A raw socket of the lean path as the transport of a protocol with hooks
(docs/design-decisions.md rule 16): L{LeanTransport}.

A subclass of L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}
(the CONNECT and SOCKS5 examples, anything in docs/build-your-own.md) is
served from the socket the lean accept took (L{splicetx._proxy.fastpath}):
its protocol object is built as usual and its C{transport} is a
L{LeanTransport} over that socket, a member of the reactor's L{SocketLoop
<splicetx._relay.socketloop.SocketLoop>}.  It does what the hooks use of a
transport -- C{write} (a partial send waits for writability),
C{loseConnection}, C{abortConnection}, C{pauseProducing} /
C{resumeProducing} (bytes read are consumed and go to C{dataReceived}),
C{getPeer}, C{getHost}, C{getHandle} -- with no Twisted transport, and an
upstream connected raw (L{connectRaw}) gets one too.

Anything else asked of it (C{registerProducer}, C{startTLS},
C{setTcpNoDelay}, ...) makes a real Twisted transport on demand: the
socket is adopted with C{IReactorSocket.adoptStreamConnection}, the
protocol's C{transport} becomes the adopted C{tcp.Server}, and the
connection goes on on the general path from there (L{LeanTransport.adopt}).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from _socket import socket as _RawSocket
from typing import Any

from twisted.internet import error as _error
from twisted.internet import main
from twisted.internet import tcp as _tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._proxy.upstream import Address, UpstreamProtocol
from splicetx._relay.direction import INERT, errname
from splicetx._relay.runtime import LOG_PROXY
from splicetx._relay.socketloop import LoopMember

__all__ = ["SocketMember", "LeanTransport", "connectRaw", "isLean", "realTransport"]

_log = Logger(namespace=LOG_PROXY)

_LINGER_RESET = struct.pack("ii", 1, 0)
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_CONNECTING = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)
_RECV = 65536


def _address(family: int, sockaddr: Any) -> Any:
    if family == socket.AF_INET6:
        return IPv6Address("TCP", sockaddr[0], sockaddr[1])
    return IPv4Address("TCP", sockaddr[0], sockaddr[1])


#: L{rawConnect}'s answer while the connect is under way.
PENDING = -1


def rawConnect(family: int, sockaddr: Any) -> tuple[_RawSocket, int]:
    """
    Start a non-blocking connect to C{sockaddr}: the one way the lean path
    connects (a plain forward's L{FastConnection
    <splicetx._proxy.fastconn.FastConnection>} and L{connectRaw}).  On
    loopback (and other links faster than a system call) the handshake is
    already done when C{connect} returns C{EINPROGRESS}, which a
    C{getpeername} tells without spending a reactor turn to hear that the
    socket is writable.

    @return: the socket and C{0} (connected), L{PENDING} (wait until it is
        writable, then ask L{connectError}) or the C{errno} it failed with
        (the socket is still open: the caller closes it).
    @raise OSError: when the socket cannot be created.
    """
    sock = _RawSocket(family, _STREAM)
    err = sock.connect_ex(sockaddr)
    if err in _CONNECTING:
        try:
            sock.getpeername()
        except OSError:
            return sock, PENDING
        return sock, 0
    return sock, err


def connectError(sock: _RawSocket) -> int:
    """
    How a pending connect ended, once its socket is writable: C{0} or an
    C{errno}.
    """
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


class SocketMember(LoopMember):
    """
    A raw socket of the lean path as a member of the L{SocketLoop
    <splicetx._relay.socketloop.SocketLoop>} and, once spliced, one of the
    two sockets of a relay's L{Direction
    <splicetx._relay.direction.Direction>}s (its C{engine} is the relay):
    the plain forward's sockets (L{splicetx._proxy.fastconn}) and
    L{LeanTransport}.
    """

    __slots__ = ("engine", "name", "sock")

    engine: Any
    name: str
    sock: _RawSocket

    @property
    def socket(self) -> _RawSocket:
        """
        The socket (what L{splicetx._relay.tcpoptions} looks for).
        """
        return self.sock

    def shut(self, abort: bool) -> None:
        """
        Leave the loop, go inert, close the socket (with a reset when
        C{abort}).
        """
        self.loop.forget(self)
        self.reading = self.writing = False
        self.engine = None
        self.source = self.sink = INERT
        sock = self.sock
        if abort:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        sock.close()
        self.fd = -1


@implementer(ITCPTransport)
class LeanTransport(SocketMember):
    """
    One raw socket as a protocol's transport (see the module docstring),
    and, once a L{LeanRelay <splicetx._proxy.leanrelay.LeanRelay>} took it
    over, one of the relay's sockets (its C{engine}).

    @ivar protocol: the protocol told of bytes and of the end
        (C{dataReceived}, C{connectionLost}), until a relay takes over.
    @ivar engine: the relay, once it took the socket over, else C{None}.
    @ivar name: C{"A"} (the client) or C{"B"} (the upstream), as a relay
        names its sockets.
    """

    __slots__ = (
        "reactor",
        "protocol",
        "peer",
        "server",
        "connected",
        "disconnecting",
        "onFlushed",
        "paused",
        "_buffer",
        "_adopted",
        "_peerAddress",
    )

    #: Not TLS (what L{splicetx._proxy.tls.negotiatedProtocol} asks).
    TLS = False
    negotiatedProtocol = None
    #: Not a wrapper of another transport (what L{splicetx._relay.tcpoptions}
    #: looks through).
    transport = None
    #: What L{splicetx._relay.tcpoptions.delivered} reads of a buffer.
    offset = 0

    def __init__(
        self,
        sock: _RawSocket,
        loop: Any,
        reactor: Any,
        peer: Any,
        name: str,
        server: Any = None,
    ) -> None:
        """
        @param sock: a connected non-blocking socket.
        @param loop: the reactor's socket loop.
        @param reactor: the reactor.
        @param peer: the peer's C{sockaddr} tuple.
        @param name: see L{name}.
        @param server: the listening port that accepted it, or C{None}.
        """
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.reactor = reactor
        self.reading = False
        self.writing = False
        self.source: Any = self
        self.sink: Any = self
        self.protocol: Any = None
        self.engine: Any = None
        self.name = name
        self.peer = peer
        self.server = server
        self.connected = 1
        self.disconnecting = False
        #: C{pauseProducing} was called (and no C{resumeProducing} since).
        self.paused = False
        #: Called once the write buffer is empty again (the relay's start).
        self.onFlushed: Any = None
        self._buffer = b""
        self._adopted: Any = None
        self._peerAddress: Any = None

    # -- ITransport ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Send C{data}; what the kernel does not take now is sent when the
        socket is writable, in order.
        """
        real = self._adopted
        if real is not None:
            real.write(data)
            return
        if not self.connected or self.disconnecting or not data:
            return
        if self._buffer:
            self._buffer += data
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._writeFailed(e)
            return
        if n < len(data):
            self._buffer = bytes(data[n:])
            self.startWriting()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        Close once what was written is sent (a FIN).
        """
        real = self._adopted
        if real is not None:
            real.loseConnection()
            return
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        self.stopReading()
        if not self._buffer:
            self._closed(False, main.CONNECTION_DONE)

    def abortConnection(self) -> None:
        """
        Close now, with a reset; unsent bytes are dropped.
        """
        real = self._adopted
        if real is not None:
            real.abortConnection()
            return
        if not self.connected:
            return
        self._buffer = b""
        self._closed(True, _error.ConnectionAborted())

    def getPeer(self) -> Any:
        real = self._adopted
        if real is not None:
            return real.getPeer()
        address = self._peerAddress
        if address is None:
            address = self._peerAddress = _address(self.sock.family, self.peer)
        return address

    def getHost(self) -> Any:
        real = self._adopted
        if real is not None:
            return real.getHost()
        return _address(self.sock.family, self.sock.getsockname())

    def getHandle(self) -> _RawSocket:
        return self.sock

    # -- IPushProducer ------------------------------------------------------------

    def pauseProducing(self) -> None:
        real = self._adopted
        if real is not None:
            real.pauseProducing()
            return
        self.paused = True
        self.stopReading()

    def resumeProducing(self) -> None:
        real = self._adopted
        if real is not None:
            real.resumeProducing()
            return
        self.paused = False
        if self._wantsBytes():
            self.startReading()

    def begin(self) -> None:
        """
        Its protocol is connected: read, as a new Twisted transport does,
        unless the protocol paused it already.

        The first read is tried at once: a client that speaks first (a
        CONNECT request, a SOCKS greeting) has usually spoken by the time
        it is accepted, and reading now saves a turn of the socket loop
        and the socket's registration with it (as the lean preamble's first
        peek does).
        """
        if self.paused:
            return
        if self._adopted is None and self._wantsBytes():
            try:
                self.readable()
            except Exception:
                # As the socket loop does for a member whose event raised.
                _log.failure("relayed socket {member!r} failed", member=self)
                self.crashed()
                return
            if self.paused or self._adopted is not None:
                # What it read paused it (an upstream to connect first) or
                # gave it a Twisted transport of its own.
                return
        self.resumeProducing()

    def _wantsBytes(self) -> bool:
        return self.connected and not self.disconnecting and self.engine is None

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- the socket loop ------------------------------------------------------------

    def readable(self) -> None:
        """
        Bytes for the protocol (consumed: they are its, not the relay's), or
        the end of the stream.
        """
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._closed(False, main.CONNECTION_LOST)
            return
        if not data:
            self._closed(False, main.CONNECTION_DONE)
            return
        protocol = self.protocol
        if protocol is not None:
            protocol.dataReceived(data)

    def writable(self) -> None:
        """
        Send what is left of the buffer; once empty, close when asked to,
        or tell L{onFlushed}.
        """
        data = self._buffer
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            return
        except OSError as e:
            self._buffer = b""
            self._writeFailed(e)
            return
        self._buffer = data = data[n:]
        if data:
            return
        self.stopWriting()
        if self.disconnecting:
            self._closed(False, main.CONNECTION_DONE)
            return
        flushed, self.onFlushed = self.onFlushed, None
        if flushed is not None:
            flushed()

    @property
    def dataBuffer(self) -> bytes:
        """
        What was written and is not sent yet.
        """
        return self._buffer

    @property
    def flushed(self) -> bool:
        """
        Whether everything written was sent.
        """
        return not self._buffer

    def crashed(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.fail("error", f"internal error on socket {self.name}")
        else:
            self.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the socket loop (reactor shutdown).
        """
        engine = self.engine
        if engine is not None:
            engine.socketLost(self, reason)
        else:
            self._closed(True, reason.value)

    def _writeFailed(self, e: OSError) -> None:
        engine = self.engine
        if engine is not None:
            engine.fail(
                "reset", f"write to {self.name} failed: {errname(e.errno or 0)}"
            )
            return
        self._closed(True, _error.ConnectionLost(errname(e.errno or 0)))

    def _closed(self, abort: bool, reason: Any) -> None:
        """
        Close the socket and tell the protocol.
        """
        self.close(abort)
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connectionLost(Failure(reason))

    def close(self, abort: bool) -> None:
        """
        Leave the loop and close the socket (with a reset when C{abort});
        the protocol is not told (a relay's end, or the socket's own).
        """
        if not self.connected:
            return
        self.connected = 0
        self.onFlushed = None
        self.shut(abort)

    # -- a real transport, on demand -----------------------------------------------

    def adopt(self) -> Any:
        """
        Make this socket a Twisted transport (C{adoptStreamConnection}),
        for a protocol that needs more than this class gives: the
        protocol's C{transport} becomes it, with what was buffered, paused
        as this was, and this object passes every call on to it.

        @return: the Twisted transport.
        @raise RuntimeError: once a lean relay owns the socket, or once the
            socket is closed.
        """
        real = self._adopted
        if real is not None:
            return real
        if self.engine is not None or not self.connected:
            raise RuntimeError(f"{self!r} cannot become a Twisted transport now")
        holder = _Holder()
        self.reactor.adoptStreamConnection(self.fd, self.sock.family, holder)
        real = holder.transport
        assert real is not None
        protocol = self.protocol
        reading = not self.paused
        buffered, self._buffer = self._buffer, b""
        disconnecting = self.disconnecting
        # Our copy goes (the reactor has its own descriptor), quietly.
        self.connected = 0
        self.loop.forget(self)
        self.reading = self.writing = False
        self.sock.close()
        self._adopted = real
        if protocol is not None:
            real.protocol = protocol
            if getattr(protocol, "transport", None) is self:
                protocol.transport = real
        if not reading:
            real.pauseProducing()
        if buffered:
            real.write(buffered)
        if disconnecting:
            real.loseConnection()
        return real

    @property
    def adopted(self) -> Any:
        """
        The Twisted transport made by L{adopt}, or C{None}.
        """
        return self._adopted

    def __getattr__(self, name: str) -> Any:
        # Only for what the slots and methods above do not have: the rest
        # of a Twisted transport, from a real one.
        if name.startswith("_") or not hasattr(_tcp.Server, name):
            raise AttributeError(name)
        return getattr(self.adopt(), name)

    def __repr__(self) -> str:
        return f"<splicetx lean transport {self.name} fd={self.fd}>"


class _Holder(Factory):
    """
    The factory C{adoptStreamConnection} is given: its protocol only keeps
    the transport, which L{LeanTransport.adopt} hands to the real protocol.
    """

    noisy = False

    def __init__(self) -> None:
        self.transport: Any = None

    def buildProtocol(self, addr: Any) -> Protocol:
        holder = self

        class _Keep(Protocol):
            def makeConnection(self, transport: Any) -> None:
                holder.transport = transport

        return _Keep()


def isLean(transport: Any) -> bool:
    """
    Whether C{transport} is a L{LeanTransport} still on the lean path.
    """
    return type(transport) is LeanTransport and transport._adopted is None


def realTransport(transport: Any) -> Any:
    """
    C{transport}, or for a L{LeanTransport} the Twisted transport it
    becomes (L{LeanTransport.adopt}).
    """
    if type(transport) is LeanTransport:
        return transport.adopt()
    return transport


class _RawConnect:
    """
    One raw non-blocking upstream connect of a protocol on the lean path:
    the proxy's C{_connecting} until it ends (L{stopConnecting} is what
    L{splicetx._proxy.upstream.stopConnecting} calls), with its timeout.
    """

    __slots__ = (
        "proxy",
        "member",
        "timer",
        "text",
        "loop",
        "reactor",
    )

    def __init__(self, proxy: Any, loop: Any, reactor: Any, text: str) -> None:
        self.proxy: Any = proxy
        self.member: LeanTransport | None = None
        self.timer: Any = None
        self.text = text
        self.loop = loop
        self.reactor = reactor

    def writable(self) -> None:
        member = self.member
        assert member is not None
        err = connectError(member.sock)
        member.stopWriting()
        member.sink = member
        if err:
            self.failed(_error.getConnectError(OSError(err, os.strerror(err))))
        else:
            self.connected()

    def connected(self) -> None:
        self._cancelTimer()
        proxy, self.proxy = self.proxy, None
        member = self.member
        assert member is not None and proxy is not None
        upstream = UpstreamProtocol(proxy)
        upstream.transport = member
        member.protocol = upstream
        proxy._connected(upstream)

    def failed(self, exc: BaseException) -> None:
        self._cancelTimer()
        member, self.member = self.member, None
        if member is not None:
            member.close(True)
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._connectFailed(Failure(exc))

    def timedOut(self) -> None:
        self.timer = None
        proxy = self.proxy
        if proxy is not None:
            proxy._timedOut = True
        self.failed(_error.TimeoutError())

    def stopConnecting(self) -> None:
        """
        Stop quietly: the proxy is not told.
        """
        self.proxy = None
        self._cancelTimer()
        member, self.member = self.member, None
        if member is not None:
            member.close(True)

    def _cancelTimer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def __repr__(self) -> str:
        return f"<splicetx raw connect to {self.text}>"


def connectRaw(
    proxy: Any, loop: Any, reactor: Any, target: Address, timeout: float
) -> None:
    """
    Connect C{proxy}'s upstream to C{target} with a raw non-blocking
    socket (as the lean path of a plain forward does): on success its
    C{_connected} gets an L{UpstreamProtocol} whose transport is a
    L{LeanTransport}, on failure its C{_connectFailed}; the attempt is its
    C{_connecting} meanwhile.

    @param proxy: the proxied connection.
    @param loop: the reactor's socket loop.
    @param reactor: the reactor.
    @param target: where to (see L{splicetx._proxy.upstream.directAddress}).
    @param timeout: the connect timeout (0: none; a shorter one of the
        endpoint's wins).
    """
    family, sockaddr, text, own = target
    if own and (not timeout or own < timeout):
        timeout = own
    attempt = _RawConnect(proxy, loop, reactor, text)
    try:
        up, err = rawConnect(family, sockaddr)
    except OSError as e:
        attempt.failed(
            _error.ConnectError(
                string=f"cannot create a socket: {errname(e.errno or 0)}"
            )
        )
        return
    member = attempt.member = LeanTransport(up, loop, reactor, sockaddr, "B")
    if err == 0:
        attempt.connected()
        return
    if err != PENDING:
        attempt.failed(_error.getConnectError(OSError(err, os.strerror(err))))
        return
    proxy._connecting = attempt
    if timeout:
        attempt.timer = reactor.callLater(timeout, attempt.timedOut)
    member.sink = attempt
    member.startWriting()
