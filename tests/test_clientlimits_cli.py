# -*- test-case-name: tests.test_clientlimits_cli -*-
"""
Subprocess tests of C{--client-max-connections},
C{--client-connection-rate} and C{--metrics-allow}, over 127.x addresses:
the refusals, their records and the C{splicetx_connections_refused_total}
series by reason; and the start-up warning of an open C{--metrics}.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from splicetx._config.limits import LIMIT_OPTIONS, clientLimitsFor
from splicetx._config.values import ConfigError

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    readAll,
    runAsync,
    sendAll,
    waitUntil,
)
from .test_config_values import LISTEN, UPSTREAMS, parse
from .test_ops_cli import Upstream, exchange, ports, scrape, total


def metricsAnswer(source: str, port: int) -> bytes:
    """
    What C{GET /metrics} from C{source} gets (C{b""}: closed unanswered).
    """
    s = socket.create_connection((LOOPBACK, port), 10, source_address=(source, 0))
    try:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        s.close()


class ClientLimitsCLITests(SynchronousTestCase):
    """
    C{twist splice-proxy} with limits per client.
    """

    def test_refusedByReason(self) -> None:
        """
        With one connection and 2 per hour per client: 127.0.0.1's second
        live connection is refused (client_connections), its third new one
        too (client_rate), while 127.0.0.2 is served; both are counted by
        reason, and the first is recorded as rejected (the second, within a
        minute, is not); the metrics answer
        127.0.0.1 (--metrics-allow) and not 127.0.0.3.
        """

        async def run() -> tuple[ProxyProcess, list[bytes]]:
            up = await Upstream().start()
            proxy = ProxyProcess(
                [
                    "--listen",
                    f"tcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"tcp:{LOOPBACK}:{up.port}",
                    "--client-max-connections",
                    "1",
                    "--client-connection-rate",
                    "2/h:2",
                    "--metrics",
                    f"tcp:0:interface={LOOPBACK}",
                    "--metrics-allow",
                    "127.0.0.1",
                ]
            )
            self.addCleanup(proxy.kill)
            [port] = await ports(proxy)
            r, w = await asyncio.open_connection(LOOPBACK, port)
            await waitUntil(lambda: up.accepted >= 1)
            got = [await exchange(port, b"two", "127.0.0.1")]
            await sendAll(w, b"one")
            got.append(await readAll(r))
            w.close()
            await asyncio.to_thread(proxy.waitForConnections, 2)
            got.append(await exchange(port, b"three", "127.0.0.1"))
            got.append(await exchange(port, b"four", "127.0.0.1"))
            got.append(await exchange(port, b"five", "127.0.0.2"))
            up.server.close()
            return proxy, got

        proxy, got = runAsync(run(), 60)
        self.assertEqual(got, [b"", b"ok", b"ok", b"", b"ok"])
        records = proxy.waitForConnections(4)
        rejected = [e["detail"] for e in records if e["reason"] == "rejected"]
        # The second refusal of 127.0.0.1 within a minute is counted, not
        # recorded.
        self.assertEqual(len(records), 4)
        [detail] = rejected
        self.assertIn("client 127.0.0.1 is at its limit of 1 live connections", detail)
        self.assertIn("next refusals in 60 s are counted, not recorded", detail)
        metrics = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        values = scrape(metrics["port"])
        refused = "splicetx_connections_refused_total{"
        self.assertEqual(
            [
                total(
                    {k: v for k, v in values.items() if f'reason="{r}"' in k}, refused
                )
                for r in ("client_connections", "client_rate")
            ],
            [1, 1],
        )
        self.assertEqual(metricsAnswer("127.0.0.3", metrics["port"]), b"")
        self.assertIn(b"200 OK", metricsAnswer("127.0.0.1", metrics["port"]))
        # The status page counts them by reason too (as JSON and in HTML).
        base = f"http://{LOOPBACK}:{metrics['port']}"
        with urllib.request.urlopen(f"{base}/status.json", timeout=10) as f:
            [listener] = json.loads(f.read())["listeners"]
        self.assertEqual(
            listener["refused"], {"client_connections": 1, "client_rate": 1}
        )
        with urllib.request.urlopen(f"{base}/status", timeout=10) as f:
            page = f.read().decode()
        self.assertIn("client_connections&nbsp;1", page)
        self.assertIn("client_rate&nbsp;1", page)


class LimitOptionsTests(SynchronousTestCase):
    """
    The options in process: their values in the configuration, and the
    warning of an open metrics endpoint.
    """

    def test_values(self) -> None:
        """
        The flags reach L{ProxyConfig} and build each forward's limits.
        """
        config = parse(
            *LISTEN,
            *UPSTREAMS,
            "--client-max-connections",
            "20",
            "--client-connection-rate",
            "5/s:20",
            "--client-prefix",
            "24,64",
        ).proxyConfig
        self.assertEqual(
            (
                config.clientMaxConnections,
                tuple(config.clientConnectionRate),
                config.clientPrefix,
            ),
            (20, (5.0, 20), (24, 64)),
        )
        limits = clientLimitsFor(config)
        assert limits is not None
        self.assertEqual((limits.maxConnections, limits.prefix), (20, (24, 64)))
        self.assertIsNone(clientLimitsFor(parse(*LISTEN, *UPSTREAMS).proxyConfig))
        self.assertEqual(
            [row[0] for row in LIMIT_OPTIONS][:1], ["client-max-connections"]
        )

    def test_connectionBandwidth(self) -> None:
        """
        --connection-bandwidth reads a size per second (powers of 1024)
        into L{ProxyConfig}; none means no limit; a bad one names the flag.
        """
        config = parse(*LISTEN, *UPSTREAMS, "--connection-bandwidth", "500KiB/s")
        self.assertEqual(config.proxyConfig.connectionBandwidth, 500 * 1024)
        self.assertIsNone(parse(*LISTEN, *UPSTREAMS).proxyConfig.connectionBandwidth)
        with self.assertRaises(ConfigError) as caught:
            parse(*LISTEN, *UPSTREAMS, "--connection-bandwidth", "fast")
        self.assertIn("--connection-bandwidth", str(caught.exception))

    def test_sharedBandwidthsAndAction(self) -> None:
        """
        --client-bandwidth and --listener-bandwidth read sizes per second,
        --client-limit-action reset or close (reset by default); a bad one
        names the flag.
        """
        config = parse(
            *LISTEN,
            *UPSTREAMS,
            "--client-bandwidth",
            "1MiB/s",
            "--listener-bandwidth",
            "10MB/s",
            "--client-limit-action",
            "close",
        ).proxyConfig
        self.assertEqual(
            (
                config.clientBandwidth,
                config.listenerBandwidth,
                config.clientLimitAction,
            ),
            (1024 * 1024, 10 * 1024 * 1024, "close"),
        )
        limits = clientLimitsFor(config)
        assert limits is not None
        self.assertEqual((limits.bandwidth, limits.reset), (1024 * 1024, False))
        plain = parse(*LISTEN, *UPSTREAMS).proxyConfig
        self.assertEqual(plain.clientLimitAction, "reset")
        for flag, value in [
            ("--client-bandwidth", "fast"),
            ("--listener-bandwidth", "0"),
            ("--client-limit-action", "drop"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse(*LISTEN, *UPSTREAMS, flag, value)
            self.assertIn(flag, str(caught.exception))

    def test_openMetricsWarned(self) -> None:
        """
        --metrics on every address with no --metrics-allow is warned of at
        start; on the loopback, or with a rule, it is not.
        """
        warned = [
            any(
                "--metrics-allow" in w
                for w in parse(
                    *LISTEN, *UPSTREAMS, "--metrics", m, *extra
                ).proxyConfig.warnings
            )
            for m, extra in [
                ("tcp:9100", ()),
                ("tcp:9100:interface=0.0.0.0", ()),
                ("tcp:9100:interface=127.0.0.1", ()),
                ("tcp6:9100:interface=[::1]", ()),
                ("tcp:9100", ("--metrics-allow", "10.0.0.0/8")),
            ]
        ]
        self.assertEqual(warned, [True, True, False, False, False])
