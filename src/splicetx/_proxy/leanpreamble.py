# -*- test-case-name: tests.test_fastforward -*-
"""
The preamble of a lean connection (L{splicetx._proxy.fastconn}), read from
its raw socket: the PROXY protocol header a load balancer sends first
(C{--accept-proxy-protocol}) and the TLS ClientHello its SNI route is
chosen by (C{--route-sni}).  The parsers are the general path's
(L{parseProxyHeader <splicetx._proxy.proxyheader.parseProxyHeader>},
L{ClientHelloReader <splicetx._pool.sni.ClientHelloReader>}), and so are
the refusals (L{splicetx._proxy.preamble}).

The bytes are I{peeked} (C{MSG_PEEK}), not read: only the PROXY header is
taken out of the socket once it is complete (it is not the client's
stream); everything after it, the ClientHello included, stays in the
kernel and is the first thing the relay splices to the upstream.  So the
bytes past the header reach the upstream first and byte-exact by
construction, with no copy of them in Python and no write of our own.

A peek leaves the bytes readable, and the socket loop is level-triggered:
while the preamble is incomplete the socket's C{SO_RCVLOWAT} is set one
byte above what was seen, so that the kernel reports it readable only when
more bytes (or the end of the stream, or an error) arrive.  A readable
socket whose peek shows nothing new has therefore reached its end.  The
low-water mark is put back to 1 before the relay starts.

How much is peeked is bounded: at most a version 2 header's 65,551 bytes
while the header is read, and one byte more than the ClientHello reader
accepts (twice C{sniMaxSize}, plus a record header) while the ClientHello
is.  The time is bounded by the factory's C{proxyProtocolTimeout} and
C{sniTimeout}, both counted from the accept, which the forwarder's timer
checks (L{LeanPreamble.expired}).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import main
from twisted.python.failure import Failure

from splicetx._pool.sni import ClientHelloReader
from splicetx._proxy.preamble import (
    Refusal,
    badHeader,
    headerTimedOut,
    helloTimedOut,
    readHello,
)
from splicetx._proxy.proxyheader import ProxyProtocolError, parseProxyHeader
from splicetx._relay.direction import INERT

__all__ = ["LeanPreamble", "HEADER_BOUND"]

#: The longest PROXY header: version 2's 16 fixed bytes and a 16-bit length.
HEADER_BOUND = 16 + 0xFFFF
#: The first peek's size: a whole PROXY header and ClientHello, usually.
_FIRST_PEEK = 4096
_PEEK = socket.MSG_PEEK
_LOWAT = socket.SO_RCVLOWAT
_SOL = socket.SOL_SOCKET


class LeanPreamble:
    """
    The client socket's reader while the preamble is read: its C{source}
    in the socket loop.  It tells its connection what it found:
    C{headerRead(header)} (the connection admits the client, or ends it:
    C{False}), C{preambleDone(target, serverName)}, C{refused(refusal)},
    or C{preambleLost(reason)} when the client left first.

    @ivar header: whether the PROXY header is still to be read.
    @ivar hello: the ClientHello reader once the ClientHello is read, else
        C{None}.
    @ivar seen: bytes of the current part (header or ClientHello) peeked so
        far.
    """

    __slots__ = (
        "conn",
        "member",
        "header",
        "router",
        "maxSize",
        "hello",
        "seen",
        "size",
        "lowat",
        "headerDeadline",
        "helloDeadline",
    )

    def __init__(
        self, conn: Any, member: Any, factory: Any, header: bool, now: float
    ) -> None:
        """
        @param conn: the L{FastConnection
            <splicetx._proxy.fastconn.FastConnection>}.
        @param member: its client socket (a member of the socket loop).
        @param factory: its factory (the timeouts, C{router}, C{sniMaxSize}).
        @param header: read a PROXY header first.
        @param now: when the client was accepted.
        """
        self.conn = conn
        self.member = member
        self.header = header
        router = getattr(factory, "router", None)
        self.router = router
        self.maxSize = getattr(factory, "sniMaxSize", 0)
        self.hello: ClientHelloReader | None = None
        if not header and router is not None:
            self.hello = ClientHelloReader(self.maxSize)
        self.seen = 0
        self.size = _FIRST_PEEK
        self.lowat = 1
        self.headerDeadline = now + factory.proxyProtocolTimeout if header else 0.0
        self.helloDeadline = now + factory.sniTimeout if router is not None else 0.0
        member.source = self

    def readable(self) -> None:
        """
        The client sent something (or left): peek, and go as far as the
        bytes allow.
        """
        while self.conn is not None:
            try:
                data = self.member.sock.recv(self.size, _PEEK)
            except BlockingIOError:
                self._wait(0)
                return
            except InterruptedError:
                continue
            except OSError:
                self._lost(main.CONNECTION_LOST)
                return
            n = len(data)
            if n <= self.seen:
                # Readable with nothing new past the low-water mark: the end.
                self._lost(main.CONNECTION_DONE)
                return
            if self.header:
                data = self._readHeader(data)
                if data is None:
                    return
                if not data:
                    # Nothing past the header yet: peek again.
                    continue
            if self.hello is not None:
                self._readHello(data)
            return

    def _readHeader(self, data: bytes) -> bytes | None:
        """
        Parse the PROXY header at the start of C{data}; once complete take
        it out of the socket and let the connection admit the client.

        @return: what follows the header in C{data}, or C{None} when
            nothing more is to be done now.
        """
        try:
            header = parseProxyHeader(data)
        except ProxyProtocolError as e:
            self._refuse(badHeader(e))
            return None
        if header is None:
            self._more(data, HEADER_BOUND)
            return None
        sock = self.member.sock
        left = header.length
        try:
            while left:
                got = len(sock.recv(left))
                if not got:
                    raise ConnectionResetError
                left -= got
        except OSError:
            self._lost(main.CONNECTION_LOST)
            return None
        self.header = False
        self.seen = 0
        self.size = _FIRST_PEEK
        self._lowWater(1)
        if not self.conn.headerRead(header):
            self.detach()
            return None
        if self.router is None:
            self._done(None, None)
            return None
        self.hello = ClientHelloReader(self.maxSize)
        return data[header.length :]

    def _readHello(self, data: bytes) -> None:
        """
        Feed the ClientHello reader what is new in C{data}; once complete,
        route by its server name.
        """
        reader = self.hello
        assert reader is not None
        hello, target, refusal = readHello(reader, data[self.seen :], self.router)
        if hello is not None:
            self.conn.serverName = hello.serverName
        if refusal is not None:
            self._refuse(refusal)
        elif hello is None:
            self._more(data, 2 * self.maxSize + 6)
        else:
            self._done(target, hello.serverName)

    def _more(self, data: bytes, bound: int) -> None:
        """
        The part is incomplete in C{data}: peek more at once when the peek
        was full (up to C{bound}), else wait for more bytes.
        """
        n = len(data)
        self.seen = n
        self.conn.lastActivity = self.conn.forwarder.reactor.seconds()
        if n >= self.size and self.size < bound:
            self.size = min(bound, self.size * 2)
            self.readable()
            return
        self._wait(n)

    def _wait(self, seen: int) -> None:
        """
        Wait for the client's next bytes: readable only past C{seen}.
        """
        self._lowWater(seen + 1)
        self.member.startReading()

    def _lowWater(self, mark: int) -> None:
        if mark != self.lowat:
            self.lowat = mark
            self.member.sock.setsockopt(_SOL, _LOWAT, mark)

    def expired(self, now: float) -> Refusal | None:
        """
        The timeout refusal due at C{now}, if any (the ClientHello's is
        checked first, as its timer starts first on the general path).
        """
        if self.helloDeadline and now >= self.helloDeadline:
            received = self.seen if self.hello is not None else 0
            return helloTimedOut(self.conn.forwarder.factory.sniTimeout, received)
        if self.header and now >= self.headerDeadline:
            timeout = self.conn.forwarder.factory.proxyProtocolTimeout
            return headerTimedOut(timeout, self.seen)
        return None

    # -- the end of the preamble ------------------------------------------------

    def _done(self, target: Any, serverName: str | None) -> None:
        conn = self.conn
        self._lowWater(1)
        self.detach()
        conn.preambleDone(target, serverName)

    def _refuse(self, refusal: Refusal) -> None:
        conn = self.conn
        self.detach()
        conn.refused(refusal)

    def _lost(self, reason: Failure | Exception) -> None:
        conn = self.conn
        self.detach()
        conn.preambleLost(Failure(reason))

    def detach(self) -> None:
        """
        Stop being the socket's reader (no reference cycle left behind).
        """
        member = self.member
        if member.source is self:
            member.source = INERT
        self.conn = None
        self.hello = None

    def __repr__(self) -> str:
        part = "PROXY header" if self.header else "ClientHello"
        return f"<splicetx lean preamble: {part}, {self.seen} bytes>"
