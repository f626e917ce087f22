# -*- test-case-name: tests.test_lifecycle -*-
"""
The socket-level settings and queries the proxy applies to the two
connections of a proxied client: TCP keepalive (L{TCPKeepalive},
L{setKeepalive}), so that a peer that vanished without a FIN or RST is
found without traffic, and whether a socket's peer has acknowledged
everything written to it (L{delivered}), which a drain waits for before it
closes a connection.

Both work on the Twisted transport's socket; transports without one (TLS
wrappers are unwrapped, fakes have none) are left alone.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from _socket import socket as _RawSocket
from typing import Any

import attr

__all__ = [
    "TCPKeepalive",
    "DEFAULT_KEEPALIVE",
    "setKeepalive",
    "keepaliveOn",
    "delivered",
]

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)
_INT = struct.Struct("i")


@attr.s(frozen=True, auto_attribs=True, slots=True)
class TCPKeepalive:
    """
    TCP keepalive settings: after C{idle} seconds without traffic the kernel
    sends a probe every C{interval} seconds and resets the connection after
    C{count} unanswered ones (so a dead peer is found after about
    C{idle + interval * count} seconds).

    @ivar idle: C{TCP_KEEPIDLE}, seconds (at least 1).
    @ivar interval: C{TCP_KEEPINTVL}, seconds (at least 1).
    @ivar count: C{TCP_KEEPCNT}, probes (at least 1).
    """

    idle: int
    interval: int
    count: int

    def __str__(self) -> str:
        return f"{self.idle}:{self.interval}:{self.count}"


#: The default of C{twist splice-proxy --tcp-keepalive}: probe after a
#: minute of silence, every 10 s, give up after 6 (a dead peer is found
#: within about two minutes).
DEFAULT_KEEPALIVE = TCPKeepalive(60, 10, 6)


def _socket(transport: Any) -> _RawSocket | None:
    """
    The socket under a transport (through TLS and other wrappers), or
    C{None}.
    """
    for _ in range(4):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, _RawSocket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def setKeepalive(transport: Any, keepalive: TCPKeepalive) -> bool:
    """
    Turn TCP keepalive on for a transport's socket: four C{setsockopt}
    calls.  UNIX sockets and transports without a socket are left alone.

    @param transport: a connected transport.
    @param keepalive: the settings.
    @return: C{True} when they were applied.
    """
    sock = _socket(transport)
    if sock is None:
        return False
    return keepaliveOn(sock, keepalive)


def keepaliveOn(sock: _RawSocket, keepalive: TCPKeepalive) -> bool:
    """
    Turn TCP keepalive on for a socket (see L{setKeepalive}).

    @param sock: a connected socket; not TCP: left alone.
    @param keepalive: the settings.
    @return: C{True} when they were applied.
    """
    if sock.family not in _TCP_FAMILIES:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive.idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive.interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, keepalive.count)
    except OSError:
        # A socket that is closing already, or a kernel without them.
        return False
    return True


def delivered(transport: Any) -> bool:
    """
    Whether everything written to a transport has left it and its peer
    acknowledged it: the transport's own write buffer is empty and the
    kernel's send queue (C{SIOCOUTQ}: bytes not yet acknowledged) is empty.
    Without a socket to ask, the transport's buffer alone decides.

    @param transport: a connected transport.
    """
    buffer = getattr(transport, "dataBuffer", None)
    if buffer is not None:
        pending = (
            len(buffer)
            - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0)
        )
        if pending > 0:
            return False
    sock = _socket(transport)
    if sock is None:
        return True
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        raw = fcntl.ioctl(fd, _SIOCOUTQ, b"\0" * _INT.size)
    except OSError:
        return True
    return not _INT.unpack(raw)[0]
