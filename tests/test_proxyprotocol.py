"""
Tests for L{splicetx._proxy.proxyheader}: building and parsing HAProxy PROXY
protocol v1 and v2 headers.
"""

from __future__ import annotations

import struct

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.proxyheader import (
    LOCAL,
    PROXY,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeaderParser,
    ProxyProtocolError,
    buildHeader,
    buildV1Header,
    buildV2Header,
    parseProxyHeader,
)

C4 = IPv4Address("TCP", "192.168.0.1", 56324)
S4 = IPv4Address("TCP", "192.168.0.11", 443)
C6 = IPv6Address("TCP", "2001:db8::1", 40000)
S6 = IPv6Address("TCP", "::1", 8080)


def v2(verCmd: int, famProto: int, block: bytes) -> bytes:
    """
    A raw v2 header with the given fields.
    """
    return V2_SIGNATURE + struct.pack("!BBH", verCmd, famProto, len(block)) + block


class BuildV1Tests(SynchronousTestCase):
    """
    L{buildV1Header} writes the specification's text line.
    """

    def test_specExampleTCP4(self) -> None:
        """
        The IPv4 example of the specification is reproduced byte for byte.
        """
        self.assertEqual(
            buildV1Header(C4, S4), b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        )

    def test_tcp6(self) -> None:
        """
        IPv6 addresses give a TCP6 line in compressed canonical form.
        """
        self.assertEqual(
            buildV1Header(C6, S6), b"PROXY TCP6 2001:db8::1 ::1 40000 8080\r\n"
        )

    def test_mappedIPv4(self) -> None:
        """
        IPv4-mapped IPv6 addresses (dual-stack listener) are sent as TCP4.
        """
        c = IPv6Address("TCP", "::ffff:10.0.0.1", 1000)
        s = IPv6Address("TCP", "::ffff:10.0.0.2", 2000)
        self.assertEqual(
            buildV1Header(c, s), b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n"
        )

    def test_mixedFamilies(self) -> None:
        """
        An IPv4 address paired with an IPv6 one is written IPv4-mapped in TCP6.
        """
        self.assertEqual(
            buildV1Header(C4, S6),
            b"PROXY TCP6 ::ffff:c0a8:1 ::1 56324 8080\r\n",
        )

    def test_zoneDropped(self) -> None:
        """
        An IPv6 zone index is not written (the line has no room for it).
        """
        c = IPv6Address("TCP", "fe80::1%lo", 5)
        self.assertEqual(buildV1Header(c, S6), b"PROXY TCP6 fe80::1 ::1 5 8080\r\n")

    def test_unknown(self) -> None:
        """
        Non-IP addresses give the short UNKNOWN form.
        """
        self.assertEqual(
            buildV1Header(UNIXAddress(b"/tmp/x"), S4), b"PROXY UNKNOWN\r\n"
        )

    def test_roundTrip(self) -> None:
        """
        What is built parses back to the same addresses.
        """
        for c, s in [(C4, S4), (C6, S6)]:
            h = parseProxyHeader(buildV1Header(c, s) + b"tail")
            self.assertEqual((h.source, h.destination, h.rest), (c, s, b"tail"))

    def test_maximumLength(self) -> None:
        """
        The longest TCP6 line is 104 bytes, within the 107-byte limit.
        """
        f = "ffff:" * 7 + "ffff"
        line = buildV1Header(IPv6Address("TCP", f, 65535), IPv6Address("TCP", f, 65535))
        self.assertEqual(len(line), 104)
        self.assertLessEqual(len(line), V1_MAX_LENGTH)


class BuildV2Tests(SynchronousTestCase):
    """
    L{buildV2Header} writes the binary format.
    """

    def test_tcp4(self) -> None:
        """
        A TCP4 header: signature, 0x21, 0x11, length 12, addresses, ports.
        """
        self.assertEqual(
            buildV2Header(C4, S4),
            V2_SIGNATURE
            + b"\x21\x11\x00\x0c"
            + bytes([192, 168, 0, 1, 192, 168, 0, 11])
            + struct.pack("!HH", 56324, 443),
        )

    def test_tcp6(self) -> None:
        """
        A TCP6 header has family byte 0x21 and a 36-byte block.
        """
        h = buildV2Header(C6, S6)
        self.assertEqual(h[12:16], b"\x21\x21\x00\x24")
        self.assertEqual(len(h), 16 + 36)

    def test_local(self) -> None:
        """
        A LOCAL header is version 2, command 0, UNSPEC, no address block.
        """
        self.assertEqual(
            buildV2Header(None, None, LOCAL), V2_SIGNATURE + b"\x20\x00\x00\x00"
        )

    def test_unspec(self) -> None:
        """
        A PROXY header for non-IP addresses uses UNSPEC with no addresses.
        """
        self.assertEqual(
            buildV2Header(UNIXAddress(b"/x"), UNIXAddress(b"/y")),
            V2_SIGNATURE + b"\x21\x00\x00\x00",
        )

    def test_tlvs(self) -> None:
        """
        TLVs are appended after the addresses and counted in the length.
        """
        h = buildV2Header(C4, S4, tlvs=[(0x04, b"ab"), (0xE0, b"")])
        self.assertEqual(h[14:16], struct.pack("!H", 12 + 5 + 3))
        self.assertEqual(h[-8:], b"\x04\x00\x02ab\xe0\x00\x00")
        self.assertEqual(parseProxyHeader(h).tlvs, ((0x04, b"ab"), (0xE0, b"")))

    def test_badCommand(self) -> None:
        """
        An unknown command is refused.
        """
        self.assertRaises(ValueError, buildV2Header, C4, S4, "HEALTH")

    def test_buildHeaderVersions(self) -> None:
        """
        L{buildHeader} accepts 1, 2, "v1", "v2" and nothing else.
        """
        self.assertEqual(buildHeader("v1", C4, S4), buildV1Header(C4, S4))
        self.assertEqual(buildHeader(2, C4, S4), buildV2Header(C4, S4))
        self.assertRaises(ValueError, buildHeader, "v3", C4, S4)


class ParseV1Tests(SynchronousTestCase):
    """
    Parsing version 1 headers.
    """

    def test_specExample(self) -> None:
        """
        The specification's example before an HTTP request parses, and the
        request is left in C{rest}.
        """
        data = (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
            b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
        )
        h = parseProxyHeader(data)
        self.assertEqual(h.version, 1)
        self.assertEqual(h.command, PROXY)
        self.assertEqual(h.family, "TCP4")
        self.assertEqual(h.source, C4)
        self.assertEqual(h.destination, S4)
        self.assertEqual(h.length, 47)
        self.assertEqual(h.rest, b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n")

    def test_tcp6(self) -> None:
        """
        A TCP6 line gives L{IPv6Address}es.
        """
        h = parseProxyHeader(b"PROXY TCP6 2001:DB8::1 ::1 40000 8080\r\n")
        self.assertEqual(h.source, C6)
        self.assertEqual(h.destination, S6)
        self.assertFalse(h.useRealEndpoints)

    def test_unknownShort(self) -> None:
        """
        C{PROXY UNKNOWN\\r\\n} means "use the real endpoints".
        """
        h = parseProxyHeader(b"PROXY UNKNOWN\r\nabc")
        self.assertEqual((h.family, h.source, h.rest), ("UNKNOWN", None, b"abc"))
        self.assertTrue(h.useRealEndpoints)

    def test_unknownLongIgnored(self) -> None:
        """
        Whatever follows UNKNOWN before the CRLF is ignored, even at 107 bytes.
        """
        f = "ffff:" * 7 + "ffff"
        line = f"PROXY UNKNOWN {f} {f} 65535 65535\r\n".encode()
        self.assertEqual(len(line), 107)
        h = parseProxyHeader(line + b"x")
        self.assertEqual((h.source, h.length, h.rest), (None, 107, b"x"))

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time, the parser needs more until the LF arrives,
        then returns the header with the following bytes.
        """
        data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        p = ProxyHeaderParser()
        for i in range(len(data) - 1):
            self.assertIsNone(p.feed(data[i : i + 1]), i)
        h = p.feed(data[-1:] + b"payload")
        self.assertEqual((h.source, h.rest), (C4, b"payload"))
        self.assertEqual(p.buffered, 0)
        self.assertRaises(RuntimeError, p.feed, b"more")

    def test_oversize(self) -> None:
        """
        107 bytes without CRLF is an error (no waiting for more).
        """
        data = b"PROXY TCP6 " + b"1" * 96
        self.assertEqual(len(data), 107)
        self.assertIsNone(parseProxyHeader(data[:-1]))
        e = self.assertRaises(ProxyProtocolError, parseProxyHeader, data)
        self.assertIn("no CRLF in the first 107 bytes", str(e))

    def test_crlfJustPastLimit(self) -> None:
        """
        A line whose CRLF ends at byte 108 is refused.
        """
        data = b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n"
        self.assertEqual(len(data), 108)
        self.assertRaises(ProxyProtocolError, parseProxyHeader, data)

    def test_malformed(self) -> None:
        """
        Each malformed line is refused with a message naming the problem.
        """
        cases = [
            (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n", "LF, not CRLF"),
            (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rx", "CR, not CRLF"),
            (b"PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n", "unknown protocol 'TCP5'"),
            (b"PROXY TCP4  1.1.1.1 2.2.2.2 1 2\r\n", "expected 6 fields"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n", "expected 6 fields"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2 \r\n", "expected 6 fields"),
            (b"PROXY TCP4 1.1.1.01 2.2.2.2 1 2\r\n", "bad source address"),
            (b"PROXY TCP4 1.1.1.1 256.2.2.2 1 2\r\n", "bad destination address"),
            (b"PROXY TCP4 ::1 2.2.2.2 1 2\r\n", "not an IPv4 address"),
            (b"PROXY TCP6 1.1.1.1 ::1 1 2\r\n", "not an IPv6 address"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 01 2\r\n", "bad source port"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 65536\r\n", "out of range"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 -1 2\r\n", "bad source port"),
            (b"PROXY TCP4 1.1.1.1 2.2.2.2 \xd9\xa1 2\r\n", "non-ASCII"),
            (b"PROXY\r\n", "missing PROXY protocol header"),
            (b"PROXY \r\n", "unknown protocol ''"),
        ]
        for data, message in cases:
            e = self.assertRaises(ProxyProtocolError, parseProxyHeader, data)
            self.assertIn(message, str(e), data)
            self.assertNotIn("\n", str(e))

    def test_portZero(self) -> None:
        """
        Port 0 (a single zero is not a leading zero) is accepted.
        """
        h = parseProxyHeader(b"PROXY TCP4 1.1.1.1 2.2.2.2 0 65535\r\n")
        self.assertEqual((h.source.port, h.destination.port), (0, 65535))


class ParseV2Tests(SynchronousTestCase):
    """
    Parsing version 2 headers.
    """

    def test_tcp4(self) -> None:
        """
        A TCP4 header parses to its addresses and leaves the payload.
        """
        h = parseProxyHeader(buildV2Header(C4, S4) + b"hello")
        self.assertEqual(h.version, 2)
        self.assertEqual((h.command, h.family), (PROXY, "TCP4"))
        self.assertEqual((h.source, h.destination), (C4, S4))
        self.assertEqual((h.length, h.rest), (28, b"hello"))

    def test_tcp6(self) -> None:
        """
        A TCP6 header parses to L{IPv6Address}es.
        """
        h = parseProxyHeader(buildV2Header(C6, S6))
        self.assertEqual((h.family, h.source, h.destination), ("TCP6", C6, S6))
        self.assertEqual(h.rest, b"")

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time (TLVs included), the parser needs more until
        the last header byte.
        """
        data = buildV2Header(C6, S6, tlvs=[(0x02, b"example.com")])
        p = ProxyHeaderParser()
        for i in range(len(data) - 1):
            self.assertIsNone(p.feed(data[i : i + 1]), i)
        h = p.feed(data[-1:] + b"\x00rest")
        self.assertEqual(
            (h.source, h.tlvs, h.rest), (C6, ((2, b"example.com"),), b"\x00rest")
        )

    def test_localDiscardsBlock(self) -> None:
        """
        LOCAL: the address block (whatever it holds) is skipped by its length
        and the real endpoints are to be used.
        """
        h = parseProxyHeader(v2(0x20, 0x11, b"\xff" * 12) + b"data")
        self.assertEqual((h.command, h.source, h.destination), (LOCAL, None, None))
        self.assertEqual(h.rest, b"data")
        self.assertTrue(h.useRealEndpoints)
        self.assertEqual(parseProxyHeader(v2(0x20, 0x00, b"")).length, 16)

    def test_unspec(self) -> None:
        """
        PROXY with the UNSPEC family means "use the real endpoints"; the
        block is skipped.
        """
        h = parseProxyHeader(v2(0x21, 0x00, b"junk") + b"z")
        self.assertEqual((h.family, h.source, h.rest), ("UNSPEC", None, b"z"))

    def test_fallbackFamilies(self) -> None:
        """
        UDP and AF_UNIX headers are valid but fall back to the real endpoints.
        """
        for famProto, size, name in [
            (0x12, 12, "UDP4"),
            (0x22, 36, "UDP6"),
            (0x31, 216, "UNIX_STREAM"),
            (0x32, 216, "UNIX_DGRAM"),
        ]:
            h = parseProxyHeader(v2(0x21, famProto, b"\x00" * size))
            self.assertEqual((h.family, h.source), (name, None))

    def test_tlvsSkipped(self) -> None:
        """
        TLVs after the addresses are returned raw, and the addresses and rest
        are unaffected by them.
        """
        block = bytes([127, 0, 0, 1, 127, 0, 0, 2]) + struct.pack("!HH", 1, 2)
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\x20\x00\x05\x01\x00\x00\x00\x00"
        h = parseProxyHeader(v2(0x21, 0x11, block + tlvs) + b"R")
        self.assertEqual(h.source, IPv4Address("TCP", "127.0.0.1", 1))
        self.assertEqual(
            h.tlvs, ((1, b"h2"), (4, b""), (0x20, b"\x01\x00\x00\x00\x00"))
        )
        self.assertEqual(h.rest, b"R")

    def test_truncated(self) -> None:
        """
        Every strict prefix of a header is "need more", never an error.
        """
        data = buildV2Header(C4, S4, tlvs=[(4, b"xyz")])
        for i in range(1, len(data)):
            self.assertIsNone(parseProxyHeader(data[:i]), i)

    def test_malformed(self) -> None:
        """
        Each malformed v2 header is refused with a message naming the problem.
        """
        ok = bytes(8) + bytes(4)
        cases = [
            (V2_SIGNATURE + b"\x11\x11\x00\x0c" + ok, "unsupported version 1"),
            (V2_SIGNATURE + b"\x31", "unsupported version 3"),
            (v2(0x22, 0x11, ok), "unknown command 0x2"),
            (v2(0x2F, 0x11, ok), "unknown command 0xf"),
            (v2(0x21, 0x41, ok), "unknown address family 0x4"),
            (v2(0x21, 0x13, ok), "unknown transport protocol 0x3"),
            (v2(0x21, 0x11, ok[:11]), "needs a 12-byte address block, length is 11"),
            (v2(0x21, 0x21, ok), "needs a 36-byte address block"),
            (v2(0x21, 0x31, bytes(215)), "needs a 216-byte address block"),
            (v2(0x21, 0x11, ok + b"\x04\x00"), "truncated TLV"),
            (v2(0x21, 0x11, ok + b"\x04\x00\x05abc"), "overruns the header"),
        ]
        for data, message in cases:
            e = self.assertRaises(ProxyProtocolError, parseProxyHeader, data)
            self.assertIn(message, str(e), data)

    def test_badSignature(self) -> None:
        """
        A corrupted signature byte is refused as soon as it is seen.
        """
        data = buildV2Header(C4, S4)
        for i in range(12):
            bad = bytearray(data)
            bad[i] ^= 0x40
            e = self.assertRaises(
                ProxyProtocolError, parseProxyHeader, bytes(bad[: i + 1])
            )
            self.assertIn("missing PROXY protocol header", str(e))


class DetectionTests(SynchronousTestCase):
    """
    Telling v1, v2 and no header apart, and restricting versions.
    """

    def test_empty(self) -> None:
        """
        No bytes yet: need more.
        """
        self.assertIsNone(parseProxyHeader(b""))

    def test_noHeader(self) -> None:
        """
        A client speaking HTTP straight away is refused with what it sent.
        """
        e = self.assertRaises(
            ProxyProtocolError, parseProxyHeader, b"GET / HTTP/1.1\r\n"
        )
        self.assertEqual(
            str(e), "missing PROXY protocol header: got b'GET / HTTP/1.1\\r\\n'"
        )

    def test_proxyPrefixIsNotEnough(self) -> None:
        """
        "PROXYX" is not a v1 header.
        """
        self.assertIsNone(parseProxyHeader(b"PROX"))
        self.assertRaises(ProxyProtocolError, parseProxyHeader, b"PROXYX")

    def test_versionRestriction(self) -> None:
        """
        A parser limited to one version refuses the other at its first byte.
        """
        e = self.assertRaises(
            ProxyProtocolError, parseProxyHeader, b"\r", versions=(1,)
        )
        self.assertIn("only v1 is accepted", str(e))
        e = self.assertRaises(
            ProxyProtocolError, parseProxyHeader, b"PR", versions=(2,)
        )
        self.assertIn("only v2 is accepted", str(e))
        self.assertIsNotNone(
            ProxyHeaderParser(versions=(2,)).feed(buildV2Header(C4, S4))
        )

    def test_longGarbageShownTruncated(self) -> None:
        """
        The error for a long non-header shows only its start.
        """
        e = self.assertRaises(ProxyProtocolError, parseProxyHeader, b"A" * 5000)
        self.assertLess(len(str(e)), 120)
