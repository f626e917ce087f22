"""
The compiled reading of a ClientHello (C{client_hello} of
C{splicetx._relay._ccore}) against the pure-Python reader, the reference:
for every input, real, built or mangled, a reader under the compiled core
ends exactly as one under the pure core does (the same L{ClientHello}, the
same "more bytes", or the same L{ClientHelloError} reason and detail), and
the compiled function takes the common case itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import unittest

from twisted.trial.unittest import SynchronousTestCase

from splicetx._pool.sni import ClientHello, ClientHelloError, ClientHelloReader
from splicetx._relay import core
from tests._cores import CoreSwitch, usingCore
from tests.test_sni import buildHello, pythonHello, recordsOf, sniExtension, vector

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


def outcome(compiled: bool, chunks: list[bytes], maxSize: int) -> object:
    """
    How a fresh reader under one core ends on C{chunks}: the ClientHello,
    C{None}, or C{(reason, detail)} of its error; and what it buffered.
    """
    with usingCore(compiled):
        reader = ClientHelloReader(maxSize)
        result: object = None
        for chunk in chunks:
            try:
                result = reader.feed(chunk)
            except ClientHelloError as e:
                return ("error", e.reason, e.detail), reader.buffered
            if result is not None:
                break
        return result, reader.buffered


def opensslHello(serverName: str) -> bytes | None:
    """
    The first flight of C{openssl s_client -servername serverName}, caught
    on a loopback listener; C{None} without openssl.
    """
    if shutil.which("openssl") is None:
        return None
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def accept() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        data = b""
        try:
            while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            conn.close()
        got.append(data)

    t = threading.Thread(target=accept)
    t.start()
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            serverName,
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    t.join(30)
    listener.close()
    del proc
    return got[0] if got else None


class Compiled(CoreSwitch):
    """
    Skip without the compiled core; the function under test.
    """

    compiledCore = True

    def assertSame(self, data: bytes, maxSize: int = 16384) -> object:
        """
        C{data}, fed in one piece and byte by byte, ends the same under
        both cores; return the one-piece outcome.
        """
        once = outcome(True, [data], maxSize)
        self.assertEqual(once, outcome(False, [data], maxSize))
        pieces = [data[i : i + 1] for i in range(len(data))]
        self.assertEqual(
            outcome(True, pieces, maxSize), outcome(False, pieces, maxSize)
        )
        return once[0]


class CommonCaseTests(Compiled, SynchronousTestCase):
    """
    Real and well-formed ClientHellos: the compiled function reads them
    itself, with the reader's result.
    """

    def test_python(self) -> None:
        """
        A Python C{ssl} client's ClientHello, with and without SNI and ALPN.
        """
        for name, alpn in [
            ("bench.example", None),
            ("www.Example.COM", ["h2", "http/1.1"]),
            (None, ["h2"]),
        ]:
            data = pythonHello(name, alpn)
            found = core.clientHello(data, 16384)  # type: ignore[misc]
            self.assertIsNotNone(found, name)
            hello = self.assertSame(data + b"after")
            self.assertEqual(hello, ClientHello(*found))  # type: ignore[misc]
            self.assertEqual(hello.serverName, name.lower() if name else None)

    def test_openssl(self) -> None:
        """
        C{openssl s_client}'s ClientHello.
        """
        data = opensslHello("openssl.example")
        if data is None:
            raise unittest.SkipTest("openssl is not installed")
        self.assertIsNotNone(core.clientHello(data, 16384))  # type: ignore[misc]
        hello = self.assertSame(data)
        self.assertEqual(hello.serverName, "openssl.example")

    def test_names(self) -> None:
        """
        Case, one trailing dot, other name types beside the host name.
        """
        for names, kind, want in [
            ([b"A.Example."], 0, "a.example"),
            ([b"a.."], 0, "a."),
            ([b"x"], 1, None),
        ]:
            data = recordsOf(buildHello(sniExtension(*names, nameType=kind)))
            self.assertIsNotNone(core.clientHello(data, 16384))  # type: ignore[misc]
            self.assertEqual(self.assertSame(data).serverName, want)

    def test_noExtensions(self) -> None:
        """
        A ClientHello without an extensions block.
        """
        data = recordsOf(buildHello(withExtensions=False))
        self.assertEqual(
            core.clientHello(data, 16384), (None, (), 0x0303, len(data) - 9)
        )  # type: ignore[misc]
        self.assertSame(data)


class OtherCaseTests(Compiled, SynchronousTestCase):
    """
    Everything else is the reader's: the compiled function returns C{None}
    and the reader ends as it does under the pure core.
    """

    def assertLeft(self, data: bytes, maxSize: int = 16384) -> object:
        self.assertIsNone(core.clientHello(data, maxSize))  # type: ignore[misc]
        return self.assertSame(data, maxSize)

    def test_incomplete(self) -> None:
        """
        Any prefix of a ClientHello needs more bytes.
        """
        data = pythonHello("cut.example")
        for cut in (0, 1, 4, 5, 9, 40, len(data) - 1):
            self.assertIsNone(self.assertLeft(data[:cut]))

    def test_severalRecords(self) -> None:
        """
        A ClientHello over several records.
        """
        data = recordsOf(buildHello(sniExtension(b"split.example")), size=20)
        self.assertEqual(self.assertLeft(data).serverName, "split.example")

    def test_refused(self) -> None:
        """
        Malformed, foreign and oversized input: the reader's error.
        """
        cases = [
            b"GET / HTTP/1.1\r\n\r\n",
            recordsOf(
                buildHello(sniExtension(b"a.example"), sniExtension(b"b.example"))
            ),
            recordsOf(buildHello(sniExtension(b"a.example", b"b.example"))),
            recordsOf(buildHello(sniExtension(b""))),
            recordsOf(buildHello(sniExtension(b".a.example"))),
            recordsOf(buildHello(sniExtension(b"a..example"))),
            recordsOf(buildHello(sniExtension(b"bad name"))),
            recordsOf(buildHello(sniExtension(b"caf\xc3\xa9.example"))),
            recordsOf(buildHello((0, vector(2, b"")))),
            recordsOf(buildHello((16, vector(2, vector(1, b""))))),
            recordsOf(buildHello(sessionId=b"s" * 33)),
            recordsOf(buildHello(suites=b"\x13")),
            recordsOf(buildHello(compression=b"")),
            recordsOf(buildHello(trailing=b"x")),
            recordsOf(buildHello(handshakeType=2)),
            recordsOf(buildHello() + b"\x01\x00\x00\x00"),
            recordsOf(buildHello(), kind=23),
        ]
        for data in cases:
            result = self.assertLeft(data + b"tail")
            self.assertIsInstance(result, tuple, repr(data))
        # Over maxSize: oversized.
        big = recordsOf(buildHello(sniExtension(b"big.example")))
        self.assertEqual(self.assertLeft(big, maxSize=20)[1], "oversized ClientHello")  # type: ignore[index]


class DifferentialFuzzTests(Compiled, SynchronousTestCase):
    """
    Mangled ClientHellos end the same under both cores.
    """

    def setUp(self) -> None:
        if given is None:
            raise unittest.SkipTest("hypothesis is not installed")
        super().setUp()

    def test_mutated(self) -> None:
        """
        A real ClientHello with bytes changed and cut anywhere.
        """
        data = pythonHello("fuzz.example", alpn=["h2", "http/1.1"]) + b"after"

        @settings(max_examples=600, deadline=None)
        @given(
            st.lists(
                st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                max_size=4,
            ),
            st.integers(0, len(data)),
            st.sampled_from([16384, 600, 300]),
        )
        def check(changes: list[tuple[int, int]], cut: int, maxSize: int) -> None:
            mutated = bytearray(data[:cut])
            for pos, value in changes:
                if pos < len(mutated):
                    mutated[pos] = value
            chunk = bytes(mutated)
            self.assertEqual(
                outcome(True, [chunk], maxSize), outcome(False, [chunk], maxSize)
            )

        check()

    def test_lengths(self) -> None:
        """
        Built ClientHellos whose length fields (record, message, vectors)
        say more or less than they carry.
        """
        hello = recordsOf(
            buildHello(sniExtension(b"len.example"), (16, vector(2, vector(1, b"h2"))))
        )
        # Where the length fields are: record, message, session, suites,
        # compression, extensions, and the two extensions' own.
        positions = [3, 4, 6, 7, 8, 43, 44, 45, 47, 48, 49, 50, 51, 52, 53, 54, 55]

        @settings(max_examples=400, deadline=None)
        @given(
            st.lists(
                st.tuples(st.sampled_from(positions), st.integers(0, 255)),
                min_size=1,
                max_size=3,
            )
        )
        def check(changes: list[tuple[int, int]]) -> None:
            mutated = bytearray(hello)
            for pos, value in changes:
                mutated[pos] = value
            chunk = bytes(mutated) + b"rest"
            self.assertEqual(
                outcome(True, [chunk], 16384), outcome(False, [chunk], 16384)
            )

        check()
