# -*- test-case-name: tests.test_examples_curl -*-
"""
The HTTP CONNECT and SOCKS5 examples run as C{twist splice-proxy
--protocol} classes and driven by curl over loopback: downloads through
them are byte-exact, and one running when SIGTERM arrives completes (a
drain) before the proxy exits with status 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from twisted.trial.unittest import SynchronousTestCase

from splicetx.testing import payload

from ._cli_support import LOOPBACK, ProxyProcess

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
TIMEOUT = 60.0
SIZE = 4 << 20


if TYPE_CHECKING:
    Base = SynchronousTestCase
else:
    Base = object


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _CurlTests(Base):
    """
    A loopback HTTP server with one file, the example's proxy, and curl
    (mixed into a C{SynchronousTestCase} per example).
    """

    protocol = ""
    #: curl's options that make it go through the proxy on port {port}.
    via: tuple[str, ...] = ()

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed")
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.data = payload(SIZE, 7)
        with open(os.path.join(self.directory, "file"), "wb") as f:
            f.write(self.data)
        handler = partial(_Quiet, directory=self.directory)
        self.server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [EXAMPLES, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.proxy = ProxyProcess(
            [
                "--protocol",
                self.protocol,
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--drain-timeout",
                "30",
            ],
            env=env,
        )
        self.addCleanup(self.proxy.kill)
        self.port = self.proxy.listeningPort()

    def curl(self, *extra: str) -> subprocess.Popen[bytes]:
        """
        Start curl downloading the file through the proxy into C{out}.
        """
        url = f"http://{LOOPBACK}:{self.server.server_address[1]}/file"
        via = [a.format(port=self.port) for a in self.via]
        process = subprocess.Popen(
            ["curl", "-sS", "--max-time", "50", *via, *extra, "-o", self.out, url],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    @property
    def out(self) -> str:
        return os.path.join(self.directory, "out")

    def received(self) -> bytes:
        with open(self.out, "rb") as f:
            return f.read()

    def test_download(self) -> None:
        """
        A download through the proxy is byte-exact and logged as done.
        """
        process = self.curl()
        _, err = process.communicate(timeout=TIMEOUT)
        self.assertEqual(process.returncode, 0, err)
        self.assertEqual(
            hashlib.sha256(self.received()).digest(), hashlib.sha256(self.data).digest()
        )
        [event] = self.proxy.waitForConnections(1)
        self.assertIn(event["reason"], ("done", "closed"))
        self.assertGreaterEqual(event["bytesUpstreamToClient"], SIZE)

    def test_drainOnSIGTERM(self) -> None:
        """
        A download running when SIGTERM arrives completes byte-exact; the
        proxy then exits with status 0, having aborted nothing.
        """
        process = self.curl("--limit-rate", "1M")
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(self.out) or os.path.getsize(self.out) < SIZE // 8:
            self.assertIsNone(process.poll(), "curl ended before the signal")
            self.assertLess(time.monotonic(), deadline, "the download did not start")
            time.sleep(0.02)
        self.proxy.signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT)
        self.assertEqual(process.returncode, 0, err)
        self.assertEqual(self.received(), self.data)
        self.assertEqual(self.proxy.wait(TIMEOUT), 0)
        drained = self.proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "drained")
        self.assertEqual(drained["aborted"], 0)


class HttpConnectCurlTests(_CurlTests, SynchronousTestCase):
    """
    examples/http_connect_proxy.py under C{--protocol}, with C{curl -p -x}.
    """

    protocol = "http_connect_proxy.ConnectProtocol"
    via = ("-p", "-x", f"http://{LOOPBACK}:{{port}}")


class Socks5CurlTests(_CurlTests, SynchronousTestCase):
    """
    examples/socks5_proxy.py under C{--protocol}, with C{curl --socks5}.
    """

    protocol = "socks5_proxy.Socks5Protocol"
    via = ("--socks5", f"{LOOPBACK}:{{port}}")


class DefaultsTests(SynchronousTestCase):
    """
    The examples that forward anywhere listen on 127.0.0.1 by default.
    """

    def test_loopbackByDefault(self) -> None:
        """
        Each open proxy's default listening endpoint names 127.0.0.1.
        """
        for name in ("http_connect_proxy.py", "socks5_proxy.py", "line_router.py"):
            with open(os.path.join(EXAMPLES, name)) as f:
                source = f.read()
            [listen] = re.findall(r'serve\(\w+, listen="([^"]+)"\)', source)
            self.assertTrue(listen.endswith(":interface=127.0.0.1"), name)
