"""
The compiled reading of a PROXY protocol header (C{proxy_header} of
C{splicetx._relay._ccore}) against the pure-Python parser, the reference:
for every input, real, built or mangled, L{parseProxyHeader} under the
compiled core ends exactly as under the pure core (the same
L{ProxyHeader}, the same "more bytes", or the same L{ProxyProtocolError}
message), and the compiled function takes the common case itself.
"""

from __future__ import annotations

import unittest

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.proxyheader import (
    LOCAL,
    ProxyProtocolError,
    buildV1Header,
    buildV2Header,
    parseProxyHeader,
)
from splicetx._relay import core
from tests._cores import CoreSwitch, usingCore

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

V4 = (IPv4Address("TCP", "192.0.2.1", 50000), IPv4Address("TCP", "10.0.0.2", 443))
V6 = (IPv6Address("TCP", "2001:db8::1", 50000), IPv6Address("TCP", "::1", 80))
VERSIONS = [(1, 2), (1,), (2,)]


def outcome(compiled: bool, data: bytes, versions: tuple[int, ...]) -> object:
    """
    What L{parseProxyHeader} gives under one core: the header, C{None} or
    the error's message.
    """
    with usingCore(compiled):
        try:
            return parseProxyHeader(data, versions)
        except ProxyProtocolError as e:
            return ("error", str(e))


class Compiled(CoreSwitch):
    compiledCore = True

    def assertSame(self, data: bytes) -> object:
        """
        C{data} ends the same under both cores, for each set of accepted
        versions; return the outcome with both accepted.
        """
        for versions in VERSIONS:
            self.assertEqual(
                outcome(True, data, versions), outcome(False, data, versions), data
            )
        return outcome(True, data, (1, 2))


class CommonCaseTests(Compiled, SynchronousTestCase):
    """
    TCP over IPv4, version 1 and 2: the compiled function reads it.
    """

    def test_v1(self) -> None:
        """
        A version 1 TCP4 line, with bytes after it.
        """
        for source, dest in [
            V4,
            (
                IPv4Address("TCP", "0.0.0.0", 0),
                IPv4Address("TCP", "255.255.255.255", 65535),
            ),
        ]:
            data = buildV1Header(source, dest) + b"GET / HTTP/1.1\r\n"
            self.assertIsNotNone(core.proxyHeader(data, True, True))  # type: ignore[misc]
            header = self.assertSame(data)
            self.assertEqual((header.source, header.destination), (source, dest))
            self.assertEqual(header.rest, b"GET / HTTP/1.1\r\n")

    def test_v2(self) -> None:
        """
        A version 2 PROXY header for TCP over IPv4, with and without TLVs.
        """
        for tlvs in [(), ((0x01, b"h2"), (0xEA, b"vpce-0123"), (0x04, b""))]:
            data = buildV2Header(*V4, tlvs=tlvs) + b"rest"
            self.assertIsNotNone(core.proxyHeader(data, True, True))  # type: ignore[misc]
            header = self.assertSame(data)
            self.assertEqual(header.tlvs, tlvs)
            self.assertEqual(header.source, V4[0])
            self.assertEqual(header.rest, b"rest")


class OtherCaseTests(Compiled, SynchronousTestCase):
    """
    Everything else is the parser's: the compiled function returns C{None}
    and the parser ends as it does under the pure core.
    """

    def assertLeft(self, data: bytes) -> object:
        self.assertIsNone(core.proxyHeader(data, True, True))  # type: ignore[misc]
        return self.assertSame(data)

    def test_otherFamilies(self) -> None:
        """
        IPv6, UNKNOWN, LOCAL: valid, and read by the parser.
        """
        for data in [
            buildV1Header(*V6),
            b"PROXY UNKNOWN\r\n",
            buildV2Header(*V6),
            buildV2Header(*V4, command=LOCAL),
        ]:
            self.assertNotIsInstance(self.assertLeft(data + b"x"), tuple)

    def test_incomplete(self) -> None:
        """
        Every prefix of a header needs more bytes.
        """
        for whole in [buildV1Header(*V4), buildV2Header(*V4, tlvs=((1, b"ab"),))]:
            for cut in range(len(whole)):
                self.assertIsNone(self.assertLeft(whole[:cut]))

    def test_refused(self) -> None:
        """
        Malformed lines and blocks: the parser's error.
        """
        good = buildV2Header(*V4)
        for data in [
            b"PROXY TCP4 192.0.2.1 10.0.0.2 050000 443\r\n",
            b"PROXY TCP4 192.0.2.01 10.0.0.2 50000 443\r\n",
            b"PROXY TCP4 256.0.2.1 10.0.0.2 50000 443\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.2 70000 443\r\n",
            b"PROXY TCP4 192.0.2.1  10.0.0.2 50000 443\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.2 50000 443 9\r\n",
            b"PROXY TCP4 192.0.2.1\t10.0.0.2 50000 443\r\n",
            b"PROXY TCP4 192.0.2.1\x0010.0.0.2 50000 443\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.2 50000 443\n",
            b"PROXY TCP4 ::1 10.0.0.2 50000 443\r\n",
            b"PROXY TCP5 192.0.2.1 10.0.0.2 50000 443\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.2 \xff0000 443\r\n",
            b"PROXY " + b"x" * 120,
            b"HELLO\r\n",
            good[:12] + b"\x11" + good[13:],  # version 1 nibble
            good[:12] + b"\x21\x11\x00\x08" + good[16:24],  # block too short
            good[:14] + b"\x00\x0f" + good[16:] + b"\x01\x00\x09",  # TLV overruns
        ]:
            result = self.assertLeft(data)
            self.assertIsInstance(result, tuple, repr(data))


class DifferentialFuzzTests(Compiled, SynchronousTestCase):
    """
    Mangled headers end the same under both cores.
    """

    def setUp(self) -> None:
        if given is None:
            raise unittest.SkipTest("hypothesis is not installed")
        super().setUp()

    def test_mutated(self) -> None:
        """
        Version 1 and 2 headers with bytes changed and cut anywhere.
        """
        headers = [
            buildV1Header(*V4) + b"after",
            buildV2Header(*V4, tlvs=((1, b"h2"), (0x20, b"\x01\x00\x00\x00\x00")))
            + b"after",
        ]

        @settings(max_examples=800, deadline=None)
        @given(
            st.sampled_from(headers),
            st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
            st.integers(0, 200),
            st.sampled_from(VERSIONS),
        )
        def check(
            header: bytes,
            changes: list[tuple[int, int]],
            cut: int,
            versions: tuple[int, ...],
        ) -> None:
            mutated = bytearray(header[:cut])
            for pos, value in changes:
                if pos < len(mutated):
                    mutated[pos] = value
            data = bytes(mutated)
            self.assertEqual(
                outcome(True, data, versions), outcome(False, data, versions)
            )

        check()

    def test_v1Text(self) -> None:
        """
        Version 1 lines made of address-like text.
        """
        octet = st.sampled_from(["0", "1", "01", "255", "256", "1000", "", "a", "9"])
        address = st.builds(
            lambda parts: ".".join(parts), st.lists(octet, min_size=3, max_size=5)
        )
        port = st.sampled_from(["0", "80", "080", "65535", "65536", "", "x", "123456"])
        sep = st.sampled_from([" ", "  ", "\t"])

        @settings(max_examples=600, deadline=None)
        @given(address, address, port, port, sep)
        def check(src: str, dst: str, sport: str, dport: str, s: str) -> None:
            data = f"PROXY TCP4 {src}{s}{dst} {sport} {dport}\r\nrest".encode()
            for versions in VERSIONS:
                self.assertEqual(
                    outcome(True, data, versions), outcome(False, data, versions)
                )

        check()
