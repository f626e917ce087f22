# -*- test-case-name: tests.test_proxyprotocol -*-
"""
The HAProxy PROXY protocol, versions 1 and 2: build the header a proxy sends
to its upstream, and parse (incrementally) the header a fronting load
balancer sends to us.

The format follows the published specification
(U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}):

  - B{version 1} is one line of US-ASCII text,
    C{PROXY TCP4|TCP6|UNKNOWN src dst sport dport\\r\\n}, at most 107 bytes
    including the CRLF.  Numbers carry no leading zeroes; exactly one space
    separates fields; for C{UNKNOWN} everything up to the CRLF is ignored.
  - B{version 2} is binary: a 12-byte signature, a version/command byte
    (version 2; command C{LOCAL} or C{PROXY}), a family/protocol byte, a
    16-bit big-endian length of what follows, the address block, and then
    optional type-length-value (TLV) records.

Receiving is strict: anything that does not match the specification exactly
raises L{ProxyProtocolError} with a message fit for a log line, and the
caller must close the connection.  Per the specification, a C{LOCAL}
command, the C{UNSPEC} family (v2) and C{UNKNOWN} (v1) mean "use the real
connection endpoints": the parsed L{ProxyHeader} then has C{source} and
C{destination} set to C{None}.  Valid v2 combinations this TCP relay does not
use (UDP, AF_UNIX) fall back to that same mode, as the specification asks of
receivers that do not implement them.

The parser never looks past the header: L{ProxyHeader.rest} holds the bytes
that followed it in the buffer, which the caller must relay first (the
hand-off after a handshake).  The specification asks for a short timeout on
a header that trickles in; that is the caller's (it owns the clock).
"""

from __future__ import annotations

import ipaddress
import struct
from socket import AF_INET as _AF_INET
from socket import inet_ntop as _inetNtop
from socket import inet_pton as _inetPton

import attr
from twisted.internet.address import IPv4Address, IPv6Address

from splicetx._relay import core as _core

__all__ = [
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
    "buildHeader",
    "buildV1Header",
    "buildV2Header",
    "parseProxyHeader",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "LOCAL",
    "PROXY",
]

#: The 12-byte signature that starts every version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 line, CRLF included.
V1_MAX_LENGTH = 107
_V1_PREFIX = b"PROXY "
_V2_FIXED = 16

#: v2 command: the connection was made by the proxy itself (health check);
#: the receiver uses the real endpoints.
LOCAL = "LOCAL"
#: v2 command (and the only v1 meaning): relayed on behalf of a client.
PROXY = "PROXY"

_COMMANDS = {0x0: LOCAL, 0x1: PROXY}
# family nibble -> (name, length of the two addresses)
_FAMILIES = {
    0x0: ("UNSPEC", 0),
    0x1: ("INET", 4),
    0x2: ("INET6", 16),
    0x3: ("UNIX", 108),
}
_PROTOCOLS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}

Address = IPv4Address | IPv6Address


class ProxyProtocolError(ValueError):
    """
    A PROXY protocol header is malformed, unsupported or missing.  C{str()}
    of it is one line that says what was wrong, for a log line.
    """


@attr.s(frozen=True, auto_attribs=True, slots=True)
class ProxyHeader:
    """
    A parsed PROXY protocol header.

    @ivar version: C{1} or C{2}.
    @ivar command: L{PROXY} or L{LOCAL} (version 1 headers are always
        L{PROXY}).
    @ivar family: what the header announced: C{"TCP4"}, C{"TCP6"} or
        C{"UNKNOWN"} for v1; C{"TCP4"}, C{"TCP6"}, C{"UDP4"}, C{"UDP6"},
        C{"UNIX_STREAM"}, C{"UNIX_DGRAM"} or C{"UNSPEC"} for v2.
    @ivar source: the original client address, or C{None} when the real
        connection endpoints must be used (L{LOCAL}, C{UNKNOWN}, C{UNSPEC},
        or a family this relay does not use).
    @ivar destination: the address the client connected to, or C{None} as
        for C{source}.
    @ivar tlvs: the v2 TLV records as C{(type, value)} pairs, in order
        (C{()} for v1).  They are not interpreted.
    @ivar length: the size of the header on the wire, in bytes.
    @ivar rest: the bytes that followed the header in the parsed buffer:
        the start of the relayed stream.
    """

    version: int
    command: str
    family: str
    source: Address | None
    destination: Address | None
    tlvs: tuple[tuple[int, bytes], ...] = ()
    length: int = 0
    rest: bytes = b""

    @property
    def useRealEndpoints(self) -> bool:
        """
        C{True} when the header carries no client address, so the receiver
        must use the real connection endpoints.
        """
        return self.source is None


# ---------------------------------------------------------------------------
# Building


def _ipOf(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    Return the IP address of a Twisted address (or C{None} for a non-IP
    one), with IPv4-mapped IPv6 addresses turned into IPv4 and any IPv6 zone
    dropped.
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    host = address.host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _pair(
    source: object, destination: object
) -> (
    tuple[
        ipaddress.IPv4Address | ipaddress.IPv6Address,
        ipaddress.IPv4Address | ipaddress.IPv6Address,
        int,
        int,
    ]
    | None
):
    """
    Normalise a (source, destination) pair to two IPs of the same version
    and two ports, or C{None} when either is not an IP address.  When one is
    IPv4 and the other IPv6, the IPv4 one is written IPv4-mapped.
    """
    src, dst = _ipOf(source), _ipOf(destination)
    if src is None or dst is None:
        return None
    if src.version != dst.version:
        if src.version == 4:
            src = ipaddress.IPv6Address(f"::ffff:{src}")
        else:
            dst = ipaddress.IPv6Address(f"::ffff:{dst}")
    return src, dst, source.port, destination.port  # type: ignore[attr-defined]


def buildV1Header(source: object, destination: object) -> bytes:
    """
    Build a version 1 (text) header.

    @param source: the client's address (the accepted connection's
        C{getPeer()}), an L{IPv4Address} or L{IPv6Address}.
    @param destination: the address the client connected to (the accepted
        connection's C{getHost()}).
    @return: C{PROXY TCP4 ...\\r\\n} or C{PROXY TCP6 ...\\r\\n}; C{PROXY
        UNKNOWN\\r\\n} when either address is not an IP address (e.g. a UNIX
        socket).
    """
    pair = _pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst, sport, dport = pair
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def buildV2Header(
    source: object | None,
    destination: object | None,
    command: str = PROXY,
    tlvs: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]] = (),
) -> bytes:
    """
    Build a version 2 (binary) header for a TCP connection.

    @param source: the client's address (see L{buildV1Header}); ignored for
        L{LOCAL}.
    @param destination: the address the client connected to.
    @param command: L{PROXY} (relayed for a client) or L{LOCAL} (made by the
        proxy itself, e.g. a health check: no address is sent).
    @param tlvs: C{(type, value)} records to append.
    @return: the header.  A L{PROXY} header for non-IP addresses uses the
        C{UNSPEC} family with no address block.
    @raise ValueError: for an unknown command or a TLV that does not fit.
    """
    if command == LOCAL:
        verCmd, famProto, block = 0x20, 0x00, b""
    elif command == PROXY:
        verCmd = 0x21
        pair = _pair(source, destination)
        if pair is None:
            famProto, block = 0x00, b""
        else:
            src, dst, sport, dport = pair
            famProto = 0x11 if src.version == 4 else 0x21
            block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    else:
        raise ValueError(f"unknown PROXY protocol command {command!r}")
    for kind, value in tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise ValueError(f"TLV type {kind!r} / length {len(value)} out of range")
        block += struct.pack("!BH", kind, len(value)) + value
    if len(block) > 0xFFFF:
        raise ValueError(f"PROXY v2 header too long ({len(block)} bytes)")
    return V2_SIGNATURE + struct.pack("!BBH", verCmd, famProto, len(block)) + block


def buildHeader(version: int | str, source: object, destination: object) -> bytes:
    """
    Build a header of the given version for a relayed client connection.

    @param version: C{1}, C{2}, C{"v1"} or C{"v2"}.
    @param source: the client's address.
    @param destination: the address the client connected to.
    @raise ValueError: for an unknown version.
    """
    v = str(version).lower().lstrip("v")
    if v == "1":
        return buildV1Header(source, destination)
    if v == "2":
        return buildV2Header(source, destination)
    raise ValueError(f"unknown PROXY protocol version {version!r} (use v1 or v2)")


# ---------------------------------------------------------------------------
# Parsing


def _show(data: bytes, limit: int = 40) -> str:
    """
    Render the start of C{data} safely for a log line.
    """
    shown = repr(bytes(data[:limit]))
    return shown + ("..." if len(data) > limit else "")


def _v1Port(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"PROXY v1: bad {what} {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY v1: {what} {port} out of range")
    return port


def _v1Address(text: str, version: int, what: str) -> str:
    """
    The address C{text} of a version 1 line, as Python writes it.

    An IPv4 address that C{inet_pton} takes (four decimal octets, no
    leading zeros: what C{ipaddress} takes too) is already written that
    way and is returned as it is -- the common case, checked in one C call
    instead of C{ipaddress}'s parse in Python (a few microseconds per
    connection); anything else is left to C{ipaddress}, which also words
    the errors.
    """
    if version == 4:
        try:
            _inetPton(_AF_INET, text)
        except (OSError, ValueError):  # ValueError: a NUL in the text
            pass
        else:
            return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1: bad {what} {text!r}") from None
    if ip.version != version or "%" in text:
        raise ProxyProtocolError(
            f"PROXY v1: {what} {text!r} is not an IPv{version} address"
        )
    return str(ip)


def _twistedAddress(host: str, version: int, port: int) -> Address:
    if version == 4:
        return IPv4Address("TCP", host, port)
    return IPv6Address("TCP", host, port)


def _parseV1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(
                f"PROXY v1: no CRLF in the first {V1_MAX_LENGTH} bytes"
            )
        if b"\n" in data:
            raise ProxyProtocolError("PROXY v1: line ends with LF, not CRLF")
        cr = data.find(b"\r")
        if 0 <= cr < len(data) - 1:
            raise ProxyProtocolError("PROXY v1: line ends with CR, not CRLF")
        return None
    line = data[:end]
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("PROXY v1: stray CR or LF inside the line")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v1: non-ASCII header {_show(line)}") from None
    length = end + 2
    rest = bytes(data[length:])
    fields = text.split(" ")
    if len(fields) < 2:
        raise ProxyProtocolError(f"PROXY v1: missing protocol in {text!r}")
    family = fields[1]
    if family == "UNKNOWN":
        return ProxyHeader(1, PROXY, "UNKNOWN", None, None, (), length, rest)
    if family not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"PROXY v1: unknown protocol {family!r}")
    if len(fields) != 6:
        raise ProxyProtocolError(
            f"PROXY v1: expected 6 fields, got {len(fields)} in {text!r}"
        )
    version = 4 if family == "TCP4" else 6
    src = _v1Address(fields[2], version, "source address")
    dst = _v1Address(fields[3], version, "destination address")
    sport = _v1Port(fields[4], "source port")
    dport = _v1Port(fields[5], "destination port")
    return ProxyHeader(
        1,
        PROXY,
        family,
        _twistedAddress(src, version, sport),
        _twistedAddress(dst, version, dport),
        (),
        length,
        rest,
    )


def _parseTLVs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyProtocolError(
                f"PROXY v2: truncated TLV header at offset {pos} of {len(data)}"
            )
        kind, size = struct.unpack_from("!BH", data, pos)
        pos += 3
        if pos + size > len(data):
            raise ProxyProtocolError(
                f"PROXY v2: TLV type 0x{kind:02x} of {size} bytes overruns the header"
            )
        tlvs.append((kind, bytes(data[pos : pos + size])))
        pos += size
    return tuple(tlvs)


def _parseV2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        # Check what we can already: the version nibble.
        if len(data) > 12 and data[12] >> 4 != 2:
            raise ProxyProtocolError(f"PROXY v2: unsupported version {data[12] >> 4}")
        return None
    verCmd, famProto, size = struct.unpack_from("!BBH", data, 12)
    if verCmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {verCmd >> 4}")
    command = _COMMANDS.get(verCmd & 0x0F)
    if command is None:
        raise ProxyProtocolError(f"PROXY v2: unknown command 0x{verCmd & 0x0F:x}")
    family = _FAMILIES.get(famProto >> 4)
    protocol = _PROTOCOLS.get(famProto & 0x0F)
    if family is None:
        raise ProxyProtocolError(
            f"PROXY v2: unknown address family 0x{famProto >> 4:x}"
        )
    if protocol is None:
        raise ProxyProtocolError(
            f"PROXY v2: unknown transport protocol 0x{famProto & 0x0F:x}"
        )
    total = _V2_FIXED + size
    if len(data) < total:
        return None
    block = bytes(data[_V2_FIXED:total])
    rest = bytes(data[total:])
    familyName, addrLen = family
    if familyName == "UNSPEC" or protocol == "UNSPEC":
        name, needed = "UNSPEC", 0
    elif familyName == "UNIX":
        name, needed = f"UNIX_{protocol}", 2 * addrLen
    else:
        name = ("TCP" if protocol == "STREAM" else "UDP") + (
            "4" if familyName == "INET" else "6"
        )
        needed = 2 * addrLen + 4
    if command == LOCAL:
        # The receiver must discard the whole address block and the family:
        # only the length counts.
        return ProxyHeader(2, LOCAL, name, None, None, (), total, rest)
    if name == "UNSPEC":
        # No address information to read (the block is ignored whole).
        return ProxyHeader(2, PROXY, name, None, None, (), total, rest)
    if size < needed:
        raise ProxyProtocolError(
            f"PROXY v2: {name} needs a {needed}-byte address block, length is {size}"
        )
    tlvs = _parseTLVs(block[needed:])
    if name not in ("TCP4", "TCP6"):
        # Valid, but not something a TCP relay uses: fall back to the real
        # endpoints, as the specification asks.
        return ProxyHeader(2, PROXY, name, None, None, tlvs, total, rest)
    if name == "TCP4":
        version = 4
        src = _inetNtop(_AF_INET, block[:addrLen])
        dst = _inetNtop(_AF_INET, block[addrLen : 2 * addrLen])
    else:
        # (ipaddress, not inet_ntop: they write IPv4-mapped addresses
        # differently, and the records have always used ipaddress's form.)
        version = 6
        src = str(ipaddress.IPv6Address(block[:addrLen]))
        dst = str(ipaddress.IPv6Address(block[addrLen : 2 * addrLen]))
    sport, dport = struct.unpack_from("!HH", block, 2 * addrLen)
    return ProxyHeader(
        2,
        PROXY,
        name,
        _twistedAddress(src, version, sport),
        _twistedAddress(dst, version, dport),
        tlvs,
        total,
        rest,
    )


def parseProxyHeader(
    data: bytes, versions: tuple[int, ...] = (1, 2)
) -> ProxyHeader | None:
    """
    Parse a PROXY protocol header at the start of C{data}.

    Call it again with more bytes appended while it returns C{None}.

    @param data: everything received on the connection so far.
    @param versions: the versions to accept.
    @return: C{None} when C{data} is a valid beginning of a header but does
        not hold all of it yet ("need more"); otherwise the L{ProxyHeader},
        whose C{rest} holds the bytes after the header.
    @raise ProxyProtocolError: when C{data} does not start with a valid
        header of an accepted version.
    """
    data = bytes(data)
    fast = _core.proxyHeader
    if fast is not None:
        # The compiled core reads the common case (a whole, valid TCP4
        # header of an accepted version) with the same result, and leaves
        # everything else, refusals included, to the parser below
        # (docs/design-decisions.md, "The PROXY header and the ClientHello,
        # compiled").
        found = fast(data, 1 in versions, 2 in versions)
        if found is not None:
            version, family, src, sport, dst, dport, length, tlvs = found
            return ProxyHeader(
                version,
                PROXY,
                family,
                IPv4Address("TCP", src, sport),
                IPv4Address("TCP", dst, dport),
                tlvs,
                length,
                data[length:],
            )
    n = len(data)
    if n == 0:
        return None
    if data[:12] == V2_SIGNATURE[: min(n, 12)]:
        if 2 not in versions:
            raise ProxyProtocolError("PROXY v2 header received, only v1 is accepted")
        return None if n < 12 else _parseV2(data)
    if data[:6] == _V1_PREFIX[: min(n, 6)]:
        if 1 not in versions:
            raise ProxyProtocolError("PROXY v1 header received, only v2 is accepted")
        return None if n < len(_V1_PREFIX) else _parseV1(data)
    raise ProxyProtocolError(f"missing PROXY protocol header: got {_show(data)}")


class ProxyHeaderParser:
    """
    Accumulates the bytes of a connection until a PROXY protocol header is
    complete.  In a protocol::

        parser = ProxyHeaderParser()
        def dataReceived(self, data):
            header = parser.feed(data)      # may raise ProxyProtocolError
            if header is None:
                return                      # need more
            ...                             # relay header.rest first

    @ivar header: the parsed header once complete, else C{None}.
    """

    def __init__(self, versions: tuple[int, ...] = (1, 2)) -> None:
        """
        @param versions: the versions to accept (default both).
        """
        self._buffer = b""
        self._versions = versions
        self.header: ProxyHeader | None = None

    def feed(self, data: bytes) -> ProxyHeader | None:
        """
        Add received bytes.

        @return: C{None} while more bytes are needed, then the
            L{ProxyHeader}.
        @raise ProxyProtocolError: on a malformed or missing header.
        @raise RuntimeError: when called again after the header was parsed
            (the rest of the stream is the caller's).
        """
        if self.header is not None:
            raise RuntimeError("the PROXY protocol header was already parsed")
        self._buffer += data
        header = parseProxyHeader(self._buffer, self._versions)
        if header is not None:
            self.header = header
            self._buffer = b""
        return header

    @property
    def buffered(self) -> int:
        """
        How many bytes are held while waiting for the rest of the header.
        """
        return len(self._buffer)
