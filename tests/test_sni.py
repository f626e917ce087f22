"""
Tests for L{splicetx._pool.sni}: the incremental ClientHello reader, against real
ClientHellos from Python's C{ssl} and C{openssl s_client} and against
malformed input, and the server-name router.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import unittest

from twisted.trial.unittest import SynchronousTestCase

from splicetx._pool.sni import (
    DEFAULT_MAX_SIZE,
    MALFORMED,
    NOT_TLS,
    OVERSIZED,
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    SNIRouter,
    normaliseServerName,
)
from splicetx.bench._wire import clientHello

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


def pythonHello(serverName: str | None = None, alpn: list[str] | None = None) -> bytes:
    """
    The first flight of a Python C{ssl} client: its ClientHello records
    (the bench's SNI load sends the same).
    """
    return clientHello(serverName, alpn)


def handshakeOf(records: bytes) -> bytes:
    """
    The handshake bytes carried by a run of TLS records.
    """
    out, pos = b"", 0
    while pos < len(records):
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        out += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def recordsOf(handshake: bytes, size: int = 16384, kind: int = 22) -> bytes:
    """
    C{handshake} carried in TLS records of at most C{size} bytes each.
    """
    out = b""
    for i in range(0, len(handshake), size):
        chunk = handshake[i : i + size]
        out += bytes([kind, 3, 1]) + len(chunk).to_bytes(2, "big") + chunk
    return out


def vector(lengthSize: int, data: bytes) -> bytes:
    """
    A TLS vector: a big-endian length then the bytes.
    """
    return len(data).to_bytes(lengthSize, "big") + data


def sniExtension(*names: bytes, nameType: int = 0) -> tuple[int, bytes]:
    """
    A C{server_name} extension listing C{names}.
    """
    entries = b"".join(bytes([nameType]) + vector(2, n) for n in names)
    return 0, vector(2, entries)


def buildHello(
    *extensions: tuple[int, bytes],
    withExtensions: bool = True,
    sessionId: bytes = b"",
    suites: bytes = b"\x13\x01",
    compression: bytes = b"\x00",
    trailing: bytes = b"",
    handshakeType: int = 1,
) -> bytes:
    """
    A synthetic ClientHello handshake message.
    """
    body = b"\x03\x03" + b"r" * 32 + vector(1, sessionId)
    body += vector(2, suites) + vector(1, compression)
    if withExtensions:
        body += vector(
            2, b"".join(k.to_bytes(2, "big") + vector(2, d) for k, d in extensions)
        )
    body += trailing
    return bytes([handshakeType]) + len(body).to_bytes(3, "big") + body


def read(data: bytes, maxSize: int = DEFAULT_MAX_SIZE) -> ClientHello | None:
    """
    Feed C{data} to a fresh reader in one piece.
    """
    return ClientHelloReader(maxSize).feed(data)


class RealHelloTests(SynchronousTestCase):
    """
    ClientHellos produced by real TLS stacks.
    """

    def test_pythonSNI(self) -> None:
        """
        The server name of a Python client's ClientHello, lower-cased.
        """
        hello = read(pythonHello("WWW.Example.com"))
        assert hello is not None
        self.assertEqual(hello.serverName, "www.example.com")
        self.assertEqual(hello.legacyVersion, 0x0303)

    def test_pythonNoSNI(self) -> None:
        """
        A ClientHello without SNI gives a server name of C{None}.
        """
        hello = read(pythonHello(None))
        assert hello is not None
        self.assertIsNone(hello.serverName)

    def test_alpn(self) -> None:
        """
        The ALPN protocols offered are read in order.
        """
        hello = read(pythonHello("a.example", alpn=["h2", "http/1.1"]))
        assert hello is not None
        self.assertEqual(hello.alpn, (b"h2", b"http/1.1"))

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time (one TCP segment each), the reader needs more
        until the last byte, then returns the ClientHello.
        """
        data = pythonHello("split.example")
        reader = ClientHelloReader()
        for byte in data[:-1]:
            self.assertIsNone(reader.feed(bytes([byte])))
        hello = reader.feed(data[-1:])
        assert hello is not None
        self.assertEqual(hello.serverName, "split.example")
        self.assertEqual(reader.buffered, data)

    def test_manyRecords(self) -> None:
        """
        A ClientHello split across many small TLS records is reassembled.
        """
        data = recordsOf(handshakeOf(pythonHello("records.example")), size=7)
        hello = read(data)
        assert hello is not None
        self.assertEqual(hello.serverName, "records.example")

    def test_buffered(self) -> None:
        """
        L{ClientHelloReader.buffered} keeps every byte fed, including those
        after the ClientHello, so they can go upstream first.
        """
        data = pythonHello("b.example") + b"early data"
        reader = ClientHelloReader()
        hello = reader.feed(data[:10])
        self.assertIsNone(hello)
        hello = reader.feed(data[10:])
        self.assertEqual(hello, reader.hello)
        self.assertIs(reader.feed(b"more"), reader.hello)
        self.assertEqual(reader.buffered, data + b"more")

    def test_opensslClient(self) -> None:
        """
        The ClientHello of C{openssl s_client -servername} is read, and
        C{-noservername} gives none.
        """
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("no openssl command")
        self.assertEqual(
            self.opensslHello(["-servername", "OpenSSL.Example."]), "openssl.example"
        )
        self.assertIsNone(self.opensslHello(["-noservername"]))

    def opensslHello(self, args: list[str]) -> str | None:
        """
        Run C{openssl s_client} against a loopback listener that reads its
        ClientHello; return the server name read.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(30)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result: list[ClientHello | None] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                reader = ClientHelloReader()
                hello = None
                while hello is None:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    hello = reader.feed(chunk)
                result.append(hello)

        thread = threading.Thread(target=serve)
        thread.start()
        thread.join(60)
        proc.kill()
        proc.communicate()
        self.assertTrue(result)
        hello = result[0]
        assert hello is not None
        return hello.serverName


class BadInputTests(SynchronousTestCase):
    """
    Input that is not an acceptable ClientHello fails with a reason.
    """

    def assertFails(
        self, data: bytes, reason: str, maxSize: int = DEFAULT_MAX_SIZE
    ) -> str:
        """
        Feeding C{data} fails with C{reason}; return the detail.
        """
        with self.assertRaises(ClientHelloError) as caught:
            read(data, maxSize)
        self.assertEqual(caught.exception.reason, reason)
        return caught.exception.detail

    def test_notTLS(self) -> None:
        """
        HTTP, an SSLv2-style hello, a PROXY header or a TLS alert fail as
        L{NOT_TLS} from their first byte(s).
        """
        self.assertFails(b"G", NOT_TLS)
        self.assertFails(b"\x80\x2e\x01\x03\x01", NOT_TLS)
        self.assertFails(b"PROXY TCP4 ", NOT_TLS)
        self.assertFails(b"\x15\x03\x03\x00\x02\x02\x28", NOT_TLS)
        self.assertFails(b"\x16\x02", NOT_TLS)

    def test_oversizedEarly(self) -> None:
        """
        A ClientHello announcing more than the limit fails as L{OVERSIZED} as
        soon as its header is in, before the rest arrives.
        """
        head = b"\x16\x03\x01\x40\x00" + b"\x01" + (20000).to_bytes(3, "big")
        detail = self.assertFails(head, OVERSIZED)
        self.assertIn("20000", detail)

    def test_oversizedLimit(self) -> None:
        """
        A configurable limit below a real ClientHello's size refuses it.
        """
        self.assertFails(pythonHello("x.example"), OVERSIZED, maxSize=100)

    def test_tooManyBytes(self) -> None:
        """
        Bytes piling up without a ClientHello are bounded too.
        """
        hs = buildHello(sniExtension(b"a.example"))
        reader = ClientHelloReader(maxSize=len(hs))
        data = recordsOf(hs[:-1], size=1)
        with self.assertRaises(ClientHelloError) as caught:
            reader.feed(data)
        self.assertEqual(caught.exception.reason, OVERSIZED)

    def test_malformed(self) -> None:
        """
        Lengths that do not add up, foreign handshake or record types, and
        bad names fail as L{MALFORMED}.
        """
        good = sniExtension(b"a.example")
        cases = {
            "handshake type": recordsOf(buildHello(good, handshakeType=2)),
            "record length 0": b"\x16\x03\x01\x00\x00",
            "trailing": recordsOf(buildHello(good, trailing=b"x")),
            "twice": recordsOf(buildHello(good, good)),
            "two names": recordsOf(buildHello(sniExtension(b"a.x", b"b.x"))),
            "empty name": recordsOf(buildHello(sniExtension(b""))),
            "bad name": recordsOf(buildHello(sniExtension(b"a b.example"))),
            "dots": recordsOf(buildHello(sniExtension(b"a..example"))),
            "session": recordsOf(buildHello(good, sessionId=b"s" * 33)),
            "suites": recordsOf(buildHello(good, suites=b"\x13")),
            "compression": recordsOf(buildHello(good, compression=b"")),
            "overrun": recordsOf(buildHello((0, b"\x00\x09\x00\x00\x01a"))),
            "alert inside": recordsOf(buildHello(good)[:20])
            + b"\x15\x03\x03\x00\x02\x02\x28",
            "after hello": recordsOf(buildHello(good) + b"\x01"),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertFails(data, MALFORMED)

    def test_minimal(self) -> None:
        """
        A ClientHello without extensions is accepted, with no server name; a
        non-host_name entry is ignored.
        """
        self.assertIsNone(read(recordsOf(buildHello(withExtensions=False))).serverName)  # type: ignore[union-attr]
        other = sniExtension(b"opaque", nameType=7)
        self.assertIsNone(read(recordsOf(buildHello(other))).serverName)  # type: ignore[union-attr]

    def test_sticky(self) -> None:
        """
        After a failure every further feed fails the same way.
        """
        reader = ClientHelloReader()
        with self.assertRaises(ClientHelloError):
            reader.feed(b"GET / HTTP/1.0\r\n")
        with self.assertRaises(ClientHelloError) as caught:
            reader.feed(b"\x16")
        self.assertEqual(caught.exception.reason, NOT_TLS)

    def test_badMaxSize(self) -> None:
        """
        The limit must be positive.
        """
        with self.assertRaises(ValueError):
            ClientHelloReader(0)


class FuzzTests(SynchronousTestCase):
    """
    The reader never fails with anything but L{ClientHelloError}.
    """

    def setUp(self) -> None:
        if given is None:
            raise unittest.SkipTest("hypothesis is not installed")

    def test_randomBytes(self) -> None:
        """
        Arbitrary bytes, fed in arbitrary pieces, give a ClientHello, need
        more, or a L{ClientHelloError} -- nothing else.
        """

        @settings(max_examples=300, deadline=None)
        @given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
        def check(chunks: list[bytes], tls: bool) -> None:
            reader = ClientHelloReader(maxSize=512)
            for i, chunk in enumerate(chunks):
                if i == 0 and tls:
                    chunk = b"\x16\x03" + chunk
                try:
                    reader.feed(chunk)
                except ClientHelloError:
                    return

        check()

    def test_mutatedHello(self) -> None:
        """
        A real ClientHello with bytes changed or cut off never makes the
        reader fail otherwise; any prefix of it only needs more.
        """
        data = pythonHello("fuzz.example", alpn=["h2"])

        @settings(max_examples=300, deadline=None)
        @given(
            st.lists(
                st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                max_size=4,
            ),
            st.integers(0, len(data)),
        )
        def check(changes: list[tuple[int, int]], cut: int) -> None:
            self.assertIsNone(
                ClientHelloReader().feed(data[:cut]) if cut < len(data) else None
            )
            mutated = bytearray(data)
            for pos, value in changes:
                mutated[pos] = value
            try:
                hello = ClientHelloReader().feed(bytes(mutated))
            except ClientHelloError:
                return
            if hello is not None:
                self.assertIsInstance(hello.serverName, (str, type(None)))

        check()


class RouterTests(SynchronousTestCase):
    """
    L{SNIRouter}: exact names, wildcards, the default.
    """

    def router(self) -> SNIRouter:
        """
        A router with exact, wildcard and nested wildcard routes.
        """
        return SNIRouter(
            {
                "www.example.com": "exact",
                "*.example.com": "wild",
                "*.eu.example.com": "eu",
            },
            default="pool",
        )

    def test_exactBeatsWildcard(self) -> None:
        """
        An exact name wins over a wildcard that also matches.
        """
        self.assertEqual(self.router().route("www.example.com"), "exact")

    def test_wildcardLabels(self) -> None:
        """
        C{*.example.com} matches one or more labels but not the bare domain.
        """
        router = self.router()
        self.assertEqual(router.route("api.example.com"), "wild")
        self.assertEqual(router.route("a.b.example.com"), "wild")
        self.assertEqual(router.route("example.com"), "pool")

    def test_longestWildcard(self) -> None:
        """
        The longest matching wildcard wins.
        """
        router = self.router()
        self.assertEqual(router.route("x.eu.example.com"), "eu")
        self.assertEqual(router.match("x.eu.example.com"), ("*.eu.example.com", "eu"))
        self.assertEqual(router.route("eu.example.com"), "wild")

    def test_caseAndDot(self) -> None:
        """
        Matching ignores case and a trailing dot, in names and patterns.
        """
        router = SNIRouter([("API.Example.COM.", "a")])
        self.assertEqual(router.route("api.example.com."), "a")
        self.assertEqual(router.route("Api.example.com"), "a")

    def test_default(self) -> None:
        """
        No SNI and unmatched names get the default; without one, C{None}.
        """
        self.assertEqual(self.router().route(None), "pool")
        self.assertEqual(self.router().route("other.org"), "pool")
        self.assertIsNone(SNIRouter({"a.example": 1}).route("b.example"))

    def test_idna(self) -> None:
        """
        A non-ASCII route matches the IDNA form clients send.
        """
        router = SNIRouter({"bücher.example": "books"})
        self.assertEqual(router.route("xn--bcher-kva.example"), "books")
        self.assertEqual(
            normaliseServerName("Bücher.Example."), "xn--bcher-kva.example"
        )

    def test_badPatterns(self) -> None:
        """
        A C{*} anywhere but a leading C{*.}, empty names and duplicates are
        refused.
        """
        for pattern in ["*", "www.*.com", "a*.example", "*.", "", "*.*.example", ".x"]:
            with self.subTest(pattern):
                with self.assertRaises(ValueError):
                    SNIRouter({pattern: 1})
        with self.assertRaises(ValueError):
            SNIRouter([("a.example", 1), ("A.example.", 2)])
