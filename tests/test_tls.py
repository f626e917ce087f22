# -*- test-case-name: tests.test_tls -*-
"""
TLS termination and origination: C{twist splice-proxy --listen ssl:} as a
real subprocess, driven by real TLS clients (curl, C{openssl s_client},
Python's C{ssl}) with and without ALPN, in front of a real HTTP backend,
and the in-process ALPN choice of a factory.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx._app.tap import Options
from splicetx._proxy import tls as _tls
from splicetx.testing import digest as sha

from ._cli_support import LOOPBACK, ProxyProcess

try:
    import cryptography  # noqa: F401
    import OpenSSL  # noqa: F401
except ImportError as e:  # pragma: no cover - pyOpenSSL is a test dependency
    raise SkipTest(f"TLS needs pyOpenSSL: {e}")

MiB = 1 << 20
#: The backend's body: big enough to take many TLS records and relay reads.
BODY = os.urandom(4 * MiB + 12345)
BODY_SHA = sha(BODY)


def makeCertificate(directory: str) -> tuple[str, str]:
    """
    Write a self-signed certificate for C{127.0.0.1} and C{localhost} and
    its key into C{directory}.

    @return: the paths of the key and of the certificate (PEM).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


class _Handler(http.server.BaseHTTPRequestHandler):
    """
    C{GET /blob}: L{BODY}, with its length; anything else: 404.
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path != "/blob":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    """
    Ends TLS connections with close_notify, as a TLS server should (the
    standard library's server only closes the socket, which a TLS peer must
    treat as a truncation).
    """

    daemon_threads = True

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(10)
                request = request.unwrap()
            except (OSError, ValueError):
                pass
        super().shutdown_request(request)


class Backend:
    """
    A threaded HTTP server on loopback (plain, or TLS with the given
    certificate and ALPN protocols): the proxy's real upstream.

    @ivar port: its port.
    @ivar alpn: what each TLS connection negotiated, in order.
    """

    def __init__(
        self, certificate: tuple[str, str] | None = None, alpn: list[str] = ()
    ) -> None:
        self.alpn: list[str | None] = []
        server = _HTTPServer((LOOPBACK, 0), _Handler)
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate[1], certificate[0])
            if alpn:
                context.set_alpn_protocols(list(alpn))
            plain = server.get_request
            backend = self

            def getRequest() -> Any:
                sock, address = plain()
                tls = context.wrap_socket(sock, server_side=True)
                backend.alpn.append(tls.selected_alpn_protocol())
                return tls, address

            server.get_request = getRequest  # type: ignore[method-assign]
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _body(response: bytes) -> bytes:
    """
    The body of an HTTP response read to its end (by C{Content-Length}).
    """
    head, sep, rest = response.partition(b"\r\n\r\n")
    if not sep:
        return b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return rest[: int(value)]
    return rest


REQUEST = b"GET /blob HTTP/1.0\r\nHost: localhost\r\n\r\n"


class _TLSTestCase(SynchronousTestCase):
    """
    A certificate in a temporary directory, a backend, and proxies that are
    killed in cleanup.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="splicetx-tls-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.key, self.cert = makeCertificate(self.directory)
        # tls:...:trustRoots= reads every file of a directory as a certificate.
        self.trustRoots = os.path.join(self.directory, "ca")
        os.mkdir(self.trustRoots)
        shutil.copy(self.cert, self.trustRoots)
        self.backend = Backend()
        self.addCleanup(self.backend.stop)

    def tlsListen(self) -> str:
        return f"ssl:0:interface={LOOPBACK}:privateKey={self.key}:certKey={self.cert}"

    def proxy(
        self, *extra: str, connect: str | None = None
    ) -> tuple[ProxyProcess, int]:
        """
        Start C{twist splice-proxy --listen ssl:...} in front of the
        backend (or C{connect}); return it and its port.
        """
        p = ProxyProcess(
            [
                "--listen",
                self.tlsListen(),
                "--connect",
                connect or f"tcp:{LOOPBACK}:{self.backend.port}",
                *extra,
            ]
        )
        self.addCleanup(p.kill)
        return p, p.listeningPort()

    def binary(self, name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise SkipTest(f"{name} is not installed")
        return path

    def curl(self, port: int, *options: str) -> tuple[bytes, str]:
        """
        Fetch C{/blob} through the proxy with curl.

        @return: the body and the HTTP version curl used.
        """
        out = os.path.join(self.directory, "curl.out")
        done = subprocess.run(
            [
                self.binary("curl"),
                "-sSk",
                "--max-time",
                "60",
                "-o",
                out,
                "-w",
                "%{http_version}",
                *options,
                f"https://{LOOPBACK}:{port}/blob",
            ],
            capture_output=True,
            timeout=90,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out, "rb") as f:
            return f.read(), done.stdout.decode()

    def pythonClient(
        self, port: int, alpn: list[str] | None = None
    ) -> tuple[bytes, str | None]:
        """
        Fetch C{/blob} through the proxy with Python's C{ssl}.

        @return: the body and the negotiated ALPN protocol.
        """
        context = ssl.create_default_context(cafile=self.cert)
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        with socket.create_connection((LOOPBACK, port), timeout=60) as raw:
            with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
                chosen = tls.selected_alpn_protocol()
                tls.sendall(REQUEST)
                chunks = []
                while True:
                    try:
                        chunk = tls.recv(1 << 16)
                    except ssl.SSLEOFError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
        return _body(b"".join(chunks)), chosen

    def sClient(self, port: int, alpn: str) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{openssl s_client -alpn ALPN}, sending the request and reading
        to the end.
        """
        return subprocess.run(
            [
                self.binary("openssl"),
                "s_client",
                "-connect",
                f"{LOOPBACK}:{port}",
                "-alpn",
                alpn,
                "-ign_eof",
            ],
            input=REQUEST,
            capture_output=True,
            timeout=90,
        )

    def lastConnection(self, proxy: ProxyProcess) -> dict[str, Any]:
        return proxy.waitForConnections(1)[-1]


class TerminationTests(_TLSTestCase):
    """
    C{--listen ssl:} serves every TLS client, with or without ALPN, and
    relays the backend's body byte for byte.
    """

    def test_curlDefaultALPN(self) -> None:
        """
        curl offers h2,http/1.1; with no --alpn the listener negotiates
        none, and curl gets the whole body over HTTP/1.1.
        """
        proxy, port = self.proxy()
        body, version = self.curl(port)
        self.assertEqual(sha(body), BODY_SHA)
        self.assertEqual(version, "1.1")
        event = self.lastConnection(proxy)
        self.assertIsNone(event["alpn"])
        self.assertEqual(event["bytesUpstreamToClient"] > len(BODY), True)

    def test_curlHTTP11WithALPN(self) -> None:
        """
        With --alpn h2,http/1.1, curl --http1.1 negotiates http/1.1 and the
        connection's log event says so.
        """
        proxy, port = self.proxy("--alpn", "h2,http/1.1")
        body, version = self.curl(port, "--http1.1")
        self.assertEqual(sha(body), BODY_SHA)
        self.assertEqual(version, "1.1")
        self.assertEqual(self.lastConnection(proxy)["alpn"], "http/1.1")

    def test_curlNoALPN(self) -> None:
        """
        curl --no-alpn is served by a listener that has --alpn: a client
        without ALPN negotiates nothing and gets through.
        """
        proxy, port = self.proxy("--alpn", "http/1.1")
        body, _ = self.curl(port, "--no-alpn")
        self.assertEqual(sha(body), BODY_SHA)
        self.assertIsNone(self.lastConnection(proxy)["alpn"])

    def test_pythonWithALPN(self) -> None:
        """
        Python's ssl offering ALPN to a listener without --alpn: served,
        nothing negotiated, body intact.
        """
        proxy, port = self.proxy()
        body, chosen = self.pythonClient(port, ["h2", "http/1.1"])
        self.assertIsNone(chosen)
        self.assertEqual(sha(body), BODY_SHA)

    def test_pythonWithoutALPN(self) -> None:
        """
        Python's ssl without ALPN: served, body intact.
        """
        proxy, port = self.proxy()
        body, chosen = self.pythonClient(port)
        self.assertIsNone(chosen)
        self.assertEqual(sha(body), BODY_SHA)

    def test_serverPreference(self) -> None:
        """
        The listener picks by its own order: --alpn http/1.1,h2 with a
        client offering h2,http/1.1 negotiates http/1.1.
        """
        proxy, port = self.proxy("--alpn", "http/1.1,h2")
        body, chosen = self.pythonClient(port, ["h2", "http/1.1"])
        self.assertEqual(chosen, "http/1.1")
        self.assertEqual(sha(body), BODY_SHA)
        self.assertEqual(self.lastConnection(proxy)["alpn"], "http/1.1")

    def test_sClientShowsProtocol(self) -> None:
        """
        openssl s_client -alpn foo,http/1.1 reports the negotiated
        http/1.1 and receives the body byte for byte.
        """
        proxy, port = self.proxy("--alpn", "h2,http/1.1")
        done = self.sClient(port, "foo,http/1.1")
        self.assertIn(b"ALPN protocol: http/1.1", done.stdout)
        start = done.stdout.index(b"HTTP/1.")
        self.assertEqual(sha(_body(done.stdout[start:])), BODY_SHA)
        self.assertEqual(self.lastConnection(proxy)["alpn"], "http/1.1")


class RefusalTests(_TLSTestCase):
    """
    A client whose ALPN offer has no overlap with --alpn is refused with the
    no_application_protocol alert and a logged reason.
    """

    def test_pythonRefused(self) -> None:
        """
        Python's ssl offering only h2 to --alpn http/1.1 gets the
        no_application_protocol alert; the proxy logs why.
        """
        proxy, port = self.proxy("--alpn", "http/1.1")
        with self.assertRaises(ssl.SSLError) as caught:
            self.pythonClient(port, ["h2"])
        self.assertIn(
            "NO_APPLICATION_PROTOCOL", str(caught.exception).upper().replace(" ", "_")
        )
        refused = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "alpn-refused")
        self.assertEqual(refused["offered"], "h2")
        self.assertEqual(refused["acceptable"], "http/1.1")
        event = self.lastConnection(proxy)
        self.assertIn("no application protocol", event["detail"])
        self.assertEqual(event["bytesClientToUpstream"], 0)

    def test_sClientAlert(self) -> None:
        """
        openssl s_client -alpn foo sees TLS alert 120
        (no_application_protocol), not internal_error (80).
        """
        proxy, port = self.proxy("--alpn", "h2,http/1.1")
        done = self.sClient(port, "foo")
        self.assertIn(b"no application protocol", done.stderr)
        self.assertIn(b"alert number 120", done.stderr)
        self.assertNotIn(b"internal error", done.stderr)

    def test_servedAfterRefusal(self) -> None:
        """
        A refused handshake leaves the listener serving: the next client,
        with an overlap, gets the body.
        """
        proxy, port = self.proxy("--alpn", "http/1.1")
        with self.assertRaises(ssl.SSLError):
            self.pythonClient(port, ["spdy/3"])
        body, chosen = self.pythonClient(port, ["h2", "http/1.1"])
        self.assertEqual(chosen, "http/1.1")
        self.assertEqual(sha(body), BODY_SHA)


class RecordWordsTests(_TLSTestCase):
    """
    A TLS connection's record speaks of the client and the upstream, and
    says why it was copied.
    """

    def test_jsonRecord(self) -> None:
        """
        The backend answers and closes; the TLS client cannot be half-closed:
        the record's detail and fallback reason say so of the upstream and
        the client, with no A or B.
        """
        proxy, port = self.proxy()
        body, _ = self.pythonClient(port)
        self.assertEqual(sha(body), BODY_SHA)
        event = self.lastConnection(proxy)
        self.assertEqual(
            (event["reason"], event["detail"], event["fallbackReason"]),
            (
                "closed",
                "the upstream finished sending and the client's TLS connection "
                "cannot be half-closed",
                "the client uses TLS",
            ),
        )

    def test_textRecord(self) -> None:
        """
        The text access log line of a copied connection names why after its
        engine.
        """
        path = os.path.join(self.directory, "access.log")
        proxy, port = self.proxy("--access-log", path, "--access-log-format", "text")
        body, _ = self.pythonClient(port)
        self.assertEqual(sha(body), BODY_SHA)
        proxy.signal()
        self.assertEqual(proxy.wait(30), 0)
        with open(path) as f:
            [line] = f.read().splitlines()
        self.assertIn(
            ": closed (the upstream finished sending and the client's TLS "
            "connection cannot be half-closed); engine copy (the client uses "
            "TLS), ",
            line,
        )


class ReencryptionTests(_TLSTestCase):
    """
    A TLS listener in front of a TLS upstream (C{--connect tls:}), with
    C{--connect-alpn}.
    """

    def test_reencrypted(self) -> None:
        """
        curl -> ssl: listener -> tls: upstream offering http/1.1 (a Python
        TLS server): the body arrives byte for byte and both sides' ALPN
        are logged.
        """
        upstream = Backend((self.key, self.cert), alpn=["http/1.1"])
        self.addCleanup(upstream.stop)
        proxy, port = self.proxy(
            "--alpn",
            "http/1.1",
            "--connect-alpn",
            "http/1.1",
            connect=f"tls:{LOOPBACK}:{upstream.port}:trustRoots={self.trustRoots}",
        )
        body, _ = self.curl(port)
        self.assertEqual(sha(body), BODY_SHA)
        self.assertEqual(upstream.alpn, ["http/1.1"])
        event = self.lastConnection(proxy)
        self.assertEqual(event["alpn"], "http/1.1")
        self.assertEqual(event["upstreamAlpn"], "http/1.1")
        self.assertEqual(event["engine"], "copy")

    def test_reencryptedWithoutALPN(self) -> None:
        """
        Without --connect-alpn the upstream negotiates nothing and the body
        still arrives intact.
        """
        upstream = Backend((self.key, self.cert), alpn=["http/1.1"])
        self.addCleanup(upstream.stop)
        proxy, port = self.proxy(
            connect=f"tls:{LOOPBACK}:{upstream.port}:trustRoots={self.trustRoots}"
        )
        body, _ = self.pythonClient(port, ["http/1.1"])
        self.assertEqual(sha(body), BODY_SHA)
        self.assertEqual(upstream.alpn, [None])
        self.assertIsNone(self.lastConnection(proxy)["upstreamAlpn"])


class OptionTests(SynchronousTestCase):
    """
    C{--alpn} and C{--connect-alpn} are checked when parsed.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.exitOnUsageError = False
        options.parseOptions(list(args))
        return options

    def test_parsed(self) -> None:
        """
        The lists become tuples of bytes, in the order given.
        """
        directory = tempfile.mkdtemp(prefix="splicetx-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        key, cert = makeCertificate(directory)
        options = self.parse(
            "--listen",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={cert}",
            "--connect",
            "tls:example.com:443",
            "--alpn",
            "h2, http/1.1",
            "--connect-alpn",
            "http/1.1",
        )
        self.assertEqual(options.proxyConfig.alpn, (b"h2", b"http/1.1"))
        self.assertEqual(options.proxyConfig.connectALPN, (b"http/1.1",))

    def test_needsTLSListener(self) -> None:
        """
        --alpn without an ssl: listener is a usage error naming --alpn.
        """
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError) as caught:
            self.parse(
                "--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1", "--alpn", "h2"
            )
        self.assertIn("--alpn", str(caught.exception))

    def test_connectALPNNeedsTLS(self) -> None:
        """
        --connect-alpn with a plain upstream is a usage error.
        """
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError) as caught:
            self.parse(
                "--listen",
                "tcp:0",
                "--connect",
                "tcp:127.0.0.1:1",
                "--connect-alpn",
                "h2",
            )
        self.assertIn("--connect-alpn", str(caught.exception))

    def test_badNames(self) -> None:
        """
        Empty, duplicated and over-long names are refused.
        """
        for text in ("h2,,http/1.1", "h2,h2", "x" * 256, "é"):
            with self.assertRaises(ValueError):
                _tls.parseProtocols("--alpn", text)

    def test_commandLine(self) -> None:
        """
        The real command ends with one line and status 64 for --alpn
        without a TLS listener.
        """
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "twisted",
                "splice-proxy",
                "--listen",
                "tcp:0",
                "--connect",
                "tcp:127.0.0.1:1",
                "--alpn",
                "h2",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 64)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        self.assertIn("--alpn", done.stderr)


# -- a subclass chooses per connection ----------------------------------------

#: A proxy whose factory provides IProtocolNegotiationFactory: odd
#: connections are offered h2, even ones http/1.1.  (A script on the global
#: reactor: Twisted's TLS layer schedules its writes on the global reactor,
#: so TLS does not run on the fresh reactors of the in-process tests.)
_CHOOSING_PROXY = """
import sys
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocolNegotiationFactory
from zope.interface import implementer
from splicetx._proxy import tls as _tls
from splicetx.proxy import SpliceProxyFactory

key, cert, backend = sys.argv[1:4]

@implementer(IProtocolNegotiationFactory)
class Choosing(SpliceProxyFactory):
    built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return SpliceProxyFactory.buildProtocol(self, addr)

    def acceptableProtocols(self):
        return [b"h2"] if self.built % 2 else [b"http/1.1"]

pem = ssl.PrivateCertificate.loadPEM(open(key).read() + open(cert).read())
factory = Choosing(
    TCP4ClientEndpoint(reactor, "127.0.0.1", int(backend)), reactor=reactor
)
endpoint = _tls.withServerALPN(
    SSL4ServerEndpoint(reactor, 0, pem.options(), interface="127.0.0.1")
)
endpoint.listen(factory).addCallback(
    lambda port: print(port.getHost().port, flush=True)
)
reactor.run()
"""


class SubclassTests(_TLSTestCase):
    """
    A L{SpliceProxyFactory} subclass providing L{IProtocolNegotiationFactory}
    chooses the protocols at every handshake.
    """

    def test_perConnection(self) -> None:
        """
        Two clients offering h2,http/1.1 get what the factory offered for
        their connection (h2, then http/1.1), and the body intact.
        """
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHOOSING_PROXY,
                self.key,
                self.cert,
                str(self.backend.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

        def stop() -> None:
            child.kill()
            child.wait(10)
            assert child.stdout is not None
            child.stdout.close()

        self.addCleanup(stop)
        assert child.stdout is not None
        port = int(child.stdout.readline())
        chosen = []
        for _ in range(2):
            body, protocolName = self.pythonClient(port, ["h2", "http/1.1"])
            self.assertEqual(sha(body), BODY_SHA)
            chosen.append(protocolName)
        self.assertEqual(chosen, ["h2", "http/1.1"])


class BenchTests(SynchronousTestCase):
    """
    C{python -m splicetx.bench --tls} runs its loads end to end (nothing
    here looks at how fast).
    """

    def test_quickRun(self) -> None:
        """
        A quick run through splicetx alone writes figures: bytes moved on a
        bulk download and handshakes completed on churn, without errors.
        """
        if shutil.which("openssl") is None:
            raise SkipTest("the TLS bench makes its certificate with openssl")
        from splicetx.bench import tls

        out = tempfile.mkdtemp(prefix="splicetx-test-bench-tls-")
        self.addCleanup(shutil.rmtree, out, True)
        path = os.path.join(out, "tls.json")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "splicetx.bench.tls",
                "--seconds",
                "0.3",
                "--churn-seconds",
                # Long enough for a TLS handshake to finish on a loaded
                # machine (0.3 s saw none at a load average of 6).
                "2",
                "--streams",
                "1",
                "--proxies",
                "splicetx",
                "--json",
                path,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(path) as f:
            figures = json.load(f)["results"]["splicetx"]
        self.assertGreater(figures["bulk1"]["bytes"], 0)
        self.assertEqual(figures["bulk1"]["errors"], 0)
        self.assertGreater(figures["churn"]["connections"], 0)
        self.assertIn(tls.LABELS["splicetx"], done.stdout)

    def test_categories(self) -> None:
        """
        perf's DSO names are grouped as the table says: the kernel,
        OpenSSL (also inside cryptography's _rust module), the interpreter.
        """
        from splicetx.bench.tls import category

        self.assertTrue(category("[kernel.kallsyms]").startswith("kernel"))
        self.assertTrue(category("/usr/lib/libcrypto.so.3").startswith("OpenSSL"))
        self.assertTrue(
            category(
                "/site-packages/cryptography/hazmat/bindings/_rust.abi3.so"
            ).startswith("OpenSSL")
        )
        self.assertTrue(category("/usr/bin/python3.11").startswith("Python"))
        self.assertTrue(category("/lib/libc.so.6").startswith("libc"))
