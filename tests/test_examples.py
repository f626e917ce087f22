"""
The programs in examples/, run for real as subprocesses and driven over
loopback with blocking sockets (every wait is bounded; every child is killed
in cleanup).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from splicetx.testing import payload

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
TIMEOUT = 20.0
MiB = 1 << 20


def _example(name: str) -> str:
    return os.path.join(EXAMPLES, name)


class _Child:
    """
    An example program running in a subprocess.
    """

    def __init__(self, name: str, *args: str) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, _example(name), *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )
        self.port = self._readPort()

    def _readPort(self) -> int:
        """
        The port of the C{listening on HOST PORT} line a plain example
        prints, or of the C{listening on HOST:PORT (...)} line of the log
        (JSON, on stdout) of one run by C{splicetx.service.serve}, once it is
        ready (signals handled).
        """
        port = None
        while True:
            line = self._readLine()
            plain = re.fullmatch(rb"listening on \S+ (\d+)", line)
            if plain:
                return int(plain.group(1))
            try:
                # twist logs JSON when its output is not a terminal.
                event = json.loads(line.lstrip(b"\x1e"))
            except ValueError:
                continue
            if event.get("splicetxEvent") == "listening" and port is None:
                port = int(event["port"])
            elif event.get("splicetxEvent") == "ready" and port is not None:
                return port

    def _readLine(self) -> bytes:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + TIMEOUT
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no 'listening on' line: {self.log()}")
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    raise AssertionError(f"example exited: {self.log()}")
                line += chunk
        finally:
            sel.close()
        return line.strip()

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.stderr.close()


class _EchoServer:
    """
    A threaded echo server on loopback.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    return s


def _readExactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _readAll(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _roundTrip(s: socket.socket, data: bytes) -> bytes:
    """
    Send C{data} (from a thread), half-close, and read until end of stream.
    """

    def send() -> None:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        return _readAll(s)
    finally:
        t.join(TIMEOUT)
        s.close()


def _closedPort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _ExampleTestCase(SynchronousTestCase):
    def start(self, name: str, *args: str) -> _Child:
        child = _Child(name, "--listen", "tcp:0:interface=127.0.0.1", *args)
        self.addCleanup(child.kill)
        return child

    def echo(self, host: str = "127.0.0.1") -> _EchoServer:
        e = _EchoServer(host)
        self.addCleanup(e.close)
        return e


class HelpTests(SynchronousTestCase):
    """
    Every example explains itself with C{--help}.
    """

    def test_help(self) -> None:
        """
        C{python examples/NAME.py --help} exits 0 with a usage text, for
        each example.
        """
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))
        self.assertEqual(
            names,
            [
                "http_connect_proxy.py",
                "line_router.py",
                "sendfile_server.py",
                "socks5_proxy.py",
                "tcp_forward.py",
            ],
        )
        # All five at once: each is its own process, mostly Python starting.
        procs = [
            subprocess.Popen(
                [sys.executable, _example(name), "--help"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name in names
        ]
        for proc in procs:
            self.addCleanup(proc.wait)
            self.addCleanup(proc.kill)
        for name, proc in zip(names, procs, strict=True):
            out, err = proc.communicate(timeout=TIMEOUT)
            self.assertEqual(proc.returncode, 0, (name, err))
            self.assertIn(b"usage:", out.lower(), name)


class TcpForwardTests(_ExampleTestCase):
    """
    examples/tcp_forward.py.
    """

    def test_forward(self) -> None:
        """
        4 MiB through the forwarder to an echo server come back exactly,
        and the connection is logged as spliced.
        """
        echo = self.echo()
        child = self.start("tcp_forward.py", "--connect", f"tcp:127.0.0.1:{echo.port}")
        data = payload(4 * MiB)
        self.assertEqual(_roundTrip(_connect(child.port), data), data)
        deadline = time.monotonic() + TIMEOUT
        while "engine splice" not in child.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIn("engine splice", child.log())


class LineRouterTests(_ExampleTestCase):
    """
    examples/line_router.py: a subclass that routes by the first line.
    """

    def test_routes(self) -> None:
        """
        Each name reaches its own upstream; the line is consumed and the
        bytes after it arrive first, exactly.
        """
        web, db = self.echo(), self.echo()
        child = self.start(
            "line_router.py",
            "--route",
            f"web=tcp:127.0.0.1:{web.port}",
            "--route",
            f"db=tcp:127.0.0.1:{db.port}",
        )
        for name, echo, seed in ((b"web", web, 1), (b"db", db, 2), (b"db", db, 3)):
            data = payload(1 * MiB, seed)
            before = echo.accepted
            s = _connect(child.port)
            self.assertEqual(_roundTrip(s, name + b"\n" + data), data)
            self.assertEqual(echo.accepted, before + 1)
        self.assertEqual((web.accepted, db.accepted), (1, 2))

    def test_unknownRoute(self) -> None:
        """
        An unknown name is refused with a reason and reaches no upstream.
        """
        web = self.echo()
        child = self.start("line_router.py", "--route", f"web=tcp:127.0.0.1:{web.port}")
        s = _connect(child.port)
        try:
            s.sendall(b"mail\nhello")
            self.assertEqual(_readAll(s), b"ERR unknown route mail\n")
        finally:
            s.close()
        self.assertEqual(web.accepted, 0)


class HttpConnectTests(_ExampleTestCase):
    """
    examples/http_connect_proxy.py.
    """

    def setUp(self) -> None:
        self.child = self.start("http_connect_proxy.py", "--connect-timeout", "5")

    def request(self, raw: bytes) -> bytes:
        s = _connect(self.child.port)
        try:
            s.sendall(raw)
            return _readAll(s)
        finally:
            s.close()

    def tunnel(self, target: str, echo: _EchoServer) -> None:
        s = _connect(self.child.port)
        early = b"bytes sent with the request"
        s.sendall(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + early
        )
        expected = b"HTTP/1.1 200 Connection established\r\n\r\n"
        self.assertEqual(_readExactly(s, len(expected)), expected)
        data = payload(2 * MiB, 3)
        self.assertEqual(_roundTrip(s, data), early + data)
        self.assertEqual(echo.accepted, 1)

    def test_connectIPv4(self) -> None:
        """
        CONNECT 127.0.0.1:port answers 200, then relays both ways, bytes
        sent along with the request included.
        """
        echo = self.echo()
        self.tunnel(f"127.0.0.1:{echo.port}", echo)

    def test_connectIPv6(self) -> None:
        """
        CONNECT [::1]:port works too.
        """
        echo = self.echo("::1")
        self.tunnel(f"[::1]:{echo.port}", echo)

    def test_badRequests(self) -> None:
        """
        Malformed requests get a 400, other methods a 405 (with Allow),
        oversized headers a 431; each connection is then closed.
        """
        cases = [
            (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 "),
            (b"CONNECT nohost HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),
            (b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),
            (b"CONNECT 127.0.0.1:80 SPDY/3\r\n\r\n", b"HTTP/1.1 400 "),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 "),
            (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: " + b"a" * 20000, b"HTTP/1.1 431 "),
        ]
        for raw, status in cases:
            response = self.request(raw)
            self.assertTrue(response.startswith(status), (raw[:40], response))
            self.assertTrue(response.endswith(b"\r\n\r\n"), response)
        self.assertIn(b"Allow: CONNECT", self.request(b"GET / HTTP/1.1\r\n\r\n"))

    def test_unreachable(self) -> None:
        """
        A target that refuses the connection gets a 502.
        """
        response = self.request(
            f"CONNECT 127.0.0.1:{_closedPort()} HTTP/1.1\r\n\r\n".encode()
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), response)


class Socks5Tests(_ExampleTestCase):
    """
    examples/socks5_proxy.py.
    """

    def setUp(self) -> None:
        self.child = self.start("socks5_proxy.py", "--connect-timeout", "5")

    def negotiate(self, methods: bytes = b"\x00") -> socket.socket:
        s = _connect(self.child.port)
        s.sendall(bytes([5, len(methods)]) + methods)
        return s

    def connectRequest(self, s: socket.socket, address: bytes, port: int) -> bytes:
        """
        Send a CONNECT request; return the reply.
        """
        self.assertEqual(_readExactly(s, 2), b"\x05\x00")
        s.sendall(b"\x05\x01\x00" + address + struct.pack("!H", port))
        head = _readExactly(s, 4)
        size = {1: 4, 4: 16}.get(head[3], 0) if len(head) == 4 else 0
        return head + _readExactly(s, size + 2)

    def relayThrough(self, address: bytes, echo: _EchoServer) -> None:
        s = self.negotiate()
        reply = self.connectRequest(s, address, echo.port)
        self.assertEqual(reply[:3], b"\x05\x00\x00")
        data = payload(2 * MiB, 4)
        self.assertEqual(_roundTrip(s, data), data)

    def test_ipv4(self) -> None:
        """
        CONNECT to an IPv4 address: success reply, then a byte-exact relay.
        """
        echo = self.echo()
        self.relayThrough(b"\x01" + socket.inet_aton("127.0.0.1"), echo)

    def test_ipv6(self) -> None:
        """
        CONNECT to an IPv6 address.
        """
        echo = self.echo("::1")
        self.relayThrough(b"\x04" + socket.inet_pton(socket.AF_INET6, "::1"), echo)

    def test_domain(self) -> None:
        """
        CONNECT to a domain name (localhost, resolved by the proxy).
        """
        echo = self.echo()
        self.relayThrough(b"\x03\x09localhost", echo)

    def test_refused(self) -> None:
        """
        A refused connection is answered with code 5 (connection refused).
        """
        s = self.negotiate()
        reply = self.connectRequest(
            s, b"\x01" + socket.inet_aton("127.0.0.1"), _closedPort()
        )
        self.assertEqual(reply[:2], b"\x05\x05")
        self.assertEqual(_readAll(s), b"")
        s.close()

    def test_unsupportedCommand(self) -> None:
        """
        BIND (command 2) is answered with code 7 (command not supported).
        """
        s = self.negotiate()
        self.assertEqual(_readExactly(s, 2), b"\x05\x00")
        s.sendall(b"\x05\x02\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x50")
        self.assertEqual(_readAll(s)[:2], b"\x05\x07")
        s.close()

    def test_unsupportedAddressType(self) -> None:
        """
        An unknown address type is answered with code 8.
        """
        s = self.negotiate()
        self.assertEqual(_readExactly(s, 2), b"\x05\x00")
        s.sendall(b"\x05\x01\x00\x09\x00\x00\x00\x00\x00\x50")
        self.assertEqual(_readAll(s)[:2], b"\x05\x08")
        s.close()

    def test_noAcceptableMethod(self) -> None:
        """
        A client that offers only username/password authentication gets
        0xFF (no acceptable method) and is closed.
        """
        s = self.negotiate(b"\x02")
        self.assertEqual(_readAll(s), b"\x05\xff")
        s.close()


class SendfileServerTests(_ExampleTestCase):
    """
    examples/sendfile_server.py.
    """

    def setUp(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="splicetx-example-")
        self.addCleanup(os.unlink, self.path)
        self.data = payload(8 * MiB, 9)
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)

    def test_wholeFile(self) -> None:
        """
        A client receives the whole file, byte-exact, sent with sendfile.
        """
        child = self.start("sendfile_server.py", self.path)
        s = _connect(child.port)
        got = _readAll(s)
        s.close()
        self.assertEqual(
            hashlib.sha256(got).digest(), hashlib.sha256(self.data).digest()
        )
        deadline = time.monotonic() + TIMEOUT
        while "sendfile;" not in child.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIn("(sendfile; 8388608 bytes)", child.log())

    def test_range(self) -> None:
        """
        C{--offset} and C{--count} serve exactly that range.
        """
        child = self.start(
            "sendfile_server.py", self.path, "--offset", "1000", "--count", "123457"
        )
        s = _connect(child.port)
        got = _readAll(s)
        s.close()
        self.assertEqual(got, self.data[1000 : 1000 + 123457])
