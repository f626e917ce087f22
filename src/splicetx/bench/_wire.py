"""
What the bench's load generator and backend say to each other, and the
kernel-side helpers both use to move bytes cheaply.

Every connection starts with a fixed 16-byte header from the client: one mode
byte and a right-aligned decimal parameter.

  - C{U}: upload.  The client sends frames, each a header C{C<length>} and
    C{length} bytes of data; the backend splices the data into C{/dev/null}.
    A frame of length 0 ends the upload and the backend answers with the byte
    count (8 bytes, big-endian).  No half-close is needed, so proxies that
    cannot half-close (C{twist portforward}) still work.
  - C{D<ms>}: download.  The backend C{sendfile}s from a page-cached file for
    C{ms} milliseconds, then half-closes; the client splices into
    C{/dev/null}.
  - C{E}: echo (ping-pong and idle connections).
  - C{Q<count>}: echo C{count} bytes, then close (churn).  The backend
    closes first, so the socket that waits in TIME_WAIT afterwards is the
    backend's, on its listening port: see L{splicetx.bench._loadgen.churn}.
  - C{R<size>}: request/response (keep-alive).  For every
    L{KEEPALIVE_REQUEST} bytes the client sends, the backend answers
    C{size} bytes.

TLS records before the header (a proxy that routes by SNI delivered the
client's ClientHello first) are echoed whole, each as it completes; the
header follows them.  A connection that is all TLS records (a real TLS
client) is echoed in full.

The preamble loads (L{PREAMBLES}) send L{preambleBytes} before the header:
a PROXY protocol v1 line or v2 header (which the proxy takes off), or a
TLS ClientHello naming L{SNI_NAME} (which it passes on).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

HEADER_SIZE = 16
UPLOAD = b"U"
DOWNLOAD = b"D"
ECHO = b"E"
ECHO_THEN_CLOSE = b"Q"
REPLY = b"R"
#: The size of one keep-alive request (mode C{R}).
KEEPALIVE_REQUEST = 100
FRAME = b"C"

#: Bytes per C{sendfile} call: large, so the sender costs few system calls,
#: small enough to check the clock often.
SENDFILE_CHUNK = 8 << 20
#: Pipe size for the generator's own C{splice} into C{/dev/null}.
SINK_PIPE_SIZE = 1 << 20
#: Size of the page-cached file that senders C{sendfile} from.
SOURCE_FILE_SIZE = 64 << 20

#: The preambles a client may send first: C{proxy-v1}, C{proxy-v2}, C{sni}.
PREAMBLES = ("proxy-v1", "proxy-v2", "sni", "connect")
#: What a CONNECT proxy answers before the tunnel.
CONNECT_REPLY = b"HTTP/1.1 200 Connection established\r\n\r\n"
#: The server name of the C{sni} preamble's ClientHello.
SNI_NAME = "bench.example"
#: The first bytes of TLS records (change_cipher_spec, alert, handshake,
#: application_data); no header's mode byte is one of them.
TLS_RECORD_TYPES = frozenset(range(20, 24))
#: The size of a TLS record's header (type, version, length).
TLS_RECORD_HEADER = 5
_PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n" + struct.pack("!BBH", 0x21, 0x11, 12)
_hellos: dict[str, bytes] = {}

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
COUNT = struct.Struct("!Q")


def header(mode: bytes, param: int = 0) -> bytes:
    """
    Build a connection header.
    """
    out = mode + str(param).encode("ascii").rjust(HEADER_SIZE - 1)
    assert len(out) == HEADER_SIZE
    return out


def preambleBytes(kind: str | None, target: int = 0) -> bytes:
    """
    What a client of the preamble C{kind} (one of L{PREAMBLES}, or C{None}
    for none) sends before the header: a PROXY header claiming
    192.0.2.1:50000 -> 127.0.0.1:80, or the ClientHello of a Python C{ssl}
    client for L{SNI_NAME} (made once), or (C{connect}) an HTTP CONNECT
    request for 127.0.0.1:C{target}.
    """
    if kind is None:
        return b""
    if kind == "connect":
        return f"CONNECT 127.0.0.1:{target} HTTP/1.1\r\n\r\n".encode("ascii")
    if kind == "proxy-v1":
        return b"PROXY TCP4 192.0.2.1 127.0.0.1 50000 80\r\n"
    if kind == "proxy-v2":
        addresses = socket.inet_aton("192.0.2.1") + socket.inet_aton("127.0.0.1")
        return _PROXY_V2 + addresses + struct.pack("!HH", 50000, 80)
    if kind == "sni":
        hello = _hellos.get(SNI_NAME)
        if hello is None:
            hello = _hellos[SNI_NAME] = clientHello(SNI_NAME)
        return hello
    raise ValueError(f"unknown preamble {kind!r}")


def clientHello(serverName: str | None, alpn: list[str] | None = None) -> bytes:
    """
    The first flight of a Python C{ssl} client for C{serverName} (offering
    C{alpn}): its ClientHello records.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def parseHeader(data: bytes) -> tuple[bytes, int]:
    """
    Split a header into its mode byte and parameter.
    """
    return data[:1], int(data[1:HEADER_SIZE].strip() or b"0")


def bigPipe(size: int = SINK_PIPE_SIZE) -> tuple[int, int]:
    """
    Open a blocking, close-on-exec pipe and grow it to C{size} when allowed.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, size)
    except OSError:
        pass
    return r, w


def makeSourceFile(path: str, size: int = SOURCE_FILE_SIZE) -> None:
    """
    Write C{size} bytes of random data to C{path} and read it back once so the
    page cache holds it.
    """
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def sendFor(
    sock: socket.socket,
    fileFD: int,
    fileSize: int,
    seconds: float,
    framed: bool = False,
) -> int:
    """
    C{sendfile} from C{fileFD} into a blocking C{sock} for about C{seconds}.

    @param framed: precede every chunk with a frame header and end with an
        empty frame (the upload protocol).
    @return: the number of data bytes sent.
    """
    from time import monotonic

    fd = sock.fileno()
    deadline = monotonic() + seconds
    sent = 0
    offset = 0
    sendfile = os.sendfile
    chunk = min(SENDFILE_CHUNK, fileSize)
    while True:
        if framed:
            sock.sendall(header(FRAME, chunk))
        left = chunk
        while left:
            n = sendfile(fd, fileFD, offset, left)
            if not n:
                raise OSError("sendfile sent nothing")
            left -= n
            offset += n
        sent += chunk
        if offset + chunk > fileSize:
            offset = 0
        if monotonic() >= deadline:
            if framed:
                sock.sendall(header(FRAME, 0))
            return sent


def sinkAll(sock: socket.socket, devnull: int) -> int:
    """
    Splice everything a blocking C{sock} delivers into C{devnull} until end
    of stream, through a large pipe.

    @return: the number of bytes received.
    """
    r, w = bigPipe()
    fd = sock.fileno()
    total = 0
    splice = os.splice
    flags = os.SPLICE_F_MOVE
    try:
        while True:
            n = splice(fd, w, SINK_PIPE_SIZE, flags=flags)
            if not n:
                return total
            total += n
            while n:
                n -= splice(r, devnull, n, flags=flags)
    finally:
        os.close(r)
        os.close(w)


def sinkFrames(sock: socket.socket, devnull: int) -> int:
    """
    Receive an upload (frames until an empty one) on a blocking C{sock},
    splicing the data into C{devnull}.

    @return: the number of data bytes received.
    """
    r, w = bigPipe()
    fd = sock.fileno()
    total = 0
    splice = os.splice
    flags = os.SPLICE_F_MOVE
    try:
        while True:
            mode, length = parseHeader(recvExactly(sock, HEADER_SIZE))
            if mode != FRAME:
                raise ConnectionError(f"bad frame header {mode!r}")
            if not length:
                return total
            while length:
                n = splice(fd, w, min(length, SINK_PIPE_SIZE), flags=flags)
                if not n:
                    raise ConnectionError("end of stream inside a frame")
                length -= n
                total += n
                while n:
                    n -= splice(r, devnull, n, flags=flags)
    finally:
        os.close(r)
        os.close(w)


def recvExactly(sock: socket.socket, n: int) -> bytes:
    """
    Read exactly C{n} bytes from a blocking socket.

    @raise ConnectionError: on an early end of stream.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"end of stream after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
