# -*- test-case-name: tests.test_udp_cli -*-
"""
C{twist splice-proxy} forwarding UDP, as a real subprocess on 127.0.0.1,
driven by real clients: Python's socket, C{socat}, C{nc -u} and C{dig}
against a tiny DNS responder; with metrics and the status page, a SIGHUP
reload of a rinetd file and a SIGTERM drain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from ._cli_support import LOOPBACK, ProxyProcess

#: Bound on any one wait (not a limit that is asserted).
DEADLINE = 30.0


def dnsAnswer(query: bytes, address: str = "127.0.0.7") -> bytes:
    """
    Answer a DNS query for an A record with C{address}.
    """
    ident = query[:2]
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + answer


class Upstream:
    """
    A UDP upstream on 127.0.0.1 in a thread: echoes with a tag, or answers
    DNS queries.
    """

    def __init__(self, test: SynchronousTestCase, tag: bytes = b"", dns: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.tag, self.dns = tag, dns
        self.sources: list[Any] = []
        thread = threading.Thread(target=self.serve, daemon=True)
        thread.start()
        test.addCleanup(self.sock.close)

    def serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
                self.sources.append(addr)
                reply = dnsAnswer(data) if self.dns else self.tag + data
                self.sock.sendto(reply, addr)
            except OSError:
                return


def client(test: SynchronousTestCase) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(DEADLINE)
    test.addCleanup(s.close)
    return s


def exchange(sock: socket.socket, port: int, data: bytes) -> bytes:
    sock.sendto(data, (LOOPBACK, port))
    return sock.recv(65535)


class UDPCommandLineTests(SynchronousTestCase):
    """
    A UDP forward served by C{twist splice-proxy}.
    """

    def start(self, *args: str) -> ProxyProcess:
        proc = ProxyProcess(list(args))
        self.addCleanup(proc.kill)
        return proc

    def forward(self, upstream: Upstream, *extra: str) -> tuple[ProxyProcess, int]:
        proc = self.start(
            "--listen",
            f"udp:0:interface={LOOPBACK}",
            "--connect",
            f"udp:{LOOPBACK}:{upstream.port}",
            *extra,
        )
        return proc, proc.listeningPort(DEADLINE)

    def test_pythonClients(self) -> None:
        """
        Two Python clients at once each get their own replies, through an
        upstream socket each; 1 B and 65,507 B datagrams arrive whole; each
        session has its record once it idles out.
        """
        upstream = Upstream(self, b">")
        proc, port = self.forward(upstream, "--udp-idle-timeout", "0.5")
        a, b = client(self), client(self)
        self.assertEqual(exchange(a, port, b"a"), b">a")
        self.assertEqual(exchange(b, port, b"b"), b">b")
        self.assertEqual(exchange(a, port, b"x" * 65506), b">" + b"x" * 65506)
        a.sendto(b"y" * 65507, (LOOPBACK, port))
        self.assertEqual(len(upstream.sources), 3)
        records = proc.waitForConnections(2, DEADLINE)
        self.assertEqual(len({tuple(s) for s in upstream.sources}), 2)
        byClient = {r["client"]: r for r in records}
        first = byClient[f"{LOOPBACK}:{a.getsockname()[1]}"]
        self.assertEqual(first["reason"], "idle")
        self.assertEqual(first["engine"], "udp")
        self.assertEqual(first["datagramsClientToUpstream"], 3)
        self.assertEqual(first["bytesClientToUpstream"], 1 + 65506 + 65507)

    def test_socatAndNetcat(self) -> None:
        """
        C{socat} and C{nc -u} get their datagrams echoed through the proxy.
        """
        tools = [t for t in ("socat", "nc") if shutil.which(t)]
        if not tools:
            raise SkipTest("neither socat nor nc is installed")
        upstream = Upstream(self)
        _, port = self.forward(upstream)
        for tool in tools:
            command = {
                "socat": ["socat", "-t", "3", "-", f"UDP:{LOOPBACK}:{port}"],
                "nc": ["nc", "-u", "-w", "3", LOOPBACK, str(port)],
            }[tool]
            out = subprocess.run(
                command,
                input=b"hello through splicetx\n",
                capture_output=True,
                timeout=DEADLINE,
            )
            self.assertEqual(out.stdout, b"hello through splicetx\n", tool)

    def test_dig(self) -> None:
        """
        C{dig} resolves through the proxy from a tiny DNS responder.
        """
        if not shutil.which("dig"):
            raise SkipTest("dig is not installed (bind9-dnsutils)")
        upstream = Upstream(self, dns=True)
        _, port = self.forward(upstream)
        out = subprocess.run(
            ["dig", f"@{LOOPBACK}", "-p", str(port), "+tries=1", "+time=10"]
            + ["+short", "example.test", "A"],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        self.assertEqual(out.stdout.strip(), "127.0.0.7")

    def test_metricsAndStatus(self) -> None:
        """
        The UDP series are on C{/metrics} and the forward has a C{udp} row
        on C{/status.json}; an access-rule refusal is a counted drop.
        """
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise SkipTest("prometheus-client is not installed")
        upstream = Upstream(self)
        proc, port = self.forward(
            upstream, "--metrics", f"tcp:0:interface={LOOPBACK}", "--deny", "127.0.0.2"
        )
        event = proc.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        base = f"http://{LOOPBACK}:{event['port']}"
        c = client(self)
        self.assertEqual(exchange(c, port, b"1234"), b"1234")
        denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(denied.close)
        denied.bind(("127.0.0.2", 0))
        denied.sendto(b"no", (LOOPBACK, port))
        self.assertEqual(exchange(c, port, b"5678"), b"5678")
        with urllib.request.urlopen(base + "/metrics", timeout=DEADLINE) as r:
            text = r.read().decode()
        forward = f"udp:0:interface={LOOPBACK}"
        self.assertIn(
            f'splicetx_udp_datagrams_total{{direction="client_to_upstream",'
            f'forward="{forward}"}} 2.0',
            text,
        )
        self.assertIn(
            f'splicetx_udp_bytes_total{{direction="upstream_to_client",'
            f'forward="{forward}"}} 8.0',
            text,
        )
        self.assertIn(f'splicetx_udp_sessions_active{{forward="{forward}"}} 1.0', text)
        with urllib.request.urlopen(base + "/status.json", timeout=DEADLINE) as r:
            status = json.load(r)
        (row,) = status["listeners"]
        self.assertEqual(row["protocol"], "udp")
        self.assertEqual(row["live"], 1)
        self.assertEqual(row["datagrams"]["client_to_upstream"], 2)
        # The denied datagram may still be in flight: poll the drop.
        for _ in range(int(DEADLINE / 0.05)):
            with urllib.request.urlopen(base + "/status.json", timeout=DEADLINE) as r:
                if json.load(r)["listeners"][0]["refused"].get("acl") == 1:
                    break
            threading.Event().wait(0.05)
        else:
            self.fail("the refused datagram was not counted")

    def test_reloadAndDrain(self) -> None:
        """
        SIGHUP re-reads a rinetd file with a C{/udp} forward: new sessions
        go to the new upstream while a live one keeps its own.  SIGTERM
        then drains: a new client is dropped, the live session keeps
        working until it idles out, and the process exits with status 0.
        """
        old, new = Upstream(self, b"old:"), Upstream(self, b"new:")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LOOPBACK, 0))
        listen = probe.getsockname()[1]
        probe.close()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "rinetd.conf")

        def write(upstream: Upstream) -> None:
            with open(path, "w") as f:
                f.write(
                    f"{LOOPBACK} {listen}/udp {LOOPBACK} {upstream.port}/udp "
                    "[timeout=2]\n"
                )

        write(old)
        proc = self.start("--config", path, "--drain-timeout", "60")
        port = proc.listeningPort(DEADLINE)
        live = client(self)
        self.assertEqual(exchange(live, port, b"a"), b"old:a")
        write(new)
        proc.signal(signal.SIGHUP)
        proc.waitForEvent(
            lambda e: e.get("splicetxEvent") == "reload" and "changed" in e, DEADLINE
        )
        self.assertEqual(exchange(client(self), port, b"b"), b"new:b")
        self.assertEqual(exchange(live, port, b"c"), b"old:c")
        proc.signal(signal.SIGTERM)
        proc.waitForEvent(lambda e: "no longer accepting" in str(e.get("log_format")))
        late = client(self)
        late.settimeout(1.0)
        late.sendto(b"late", (LOOPBACK, port))
        self.assertEqual(exchange(live, port, b"d"), b"old:d")
        self.assertEqual(proc.wait(DEADLINE), 0)
        self.assertRaises(OSError, late.recv, 100)
        self.assertEqual((len(old.sources), len(new.sources)), (3, 1))
        reasons = [r["reason"] for r in proc.connections()]
        self.assertEqual(reasons, ["idle"] * 2)
