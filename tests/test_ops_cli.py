# -*- test-case-name: tests.test_ops_cli -*-
"""
Subprocess tests of the operations options of C{twist splice-proxy} (issue
5): C{--allow}/C{--deny}, C{--proxy-protocol}, C{--accept-proxy-protocol},
C{--config}, C{--metrics} and C{--workers}, over 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import urllib.request
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.proxyheader import buildV1Header, buildV2Header

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    closedWithin,
    connectProxy,
    readAll,
    refusedSoon,
    runAsync,
    sendAll,
    startServer,
    waitUntil,
)


class Upstream:
    """
    A loopback upstream that counts the connections it accepts and keeps
    what each one sent (it reads to the end, then answers C{b"ok"}).
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.received: list[bytes] = []
        self.port = 0
        self.server: Any = None

    async def start(self) -> Upstream:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            try:
                self.received.append(await readAll(r))
                w.write(b"ok")
                w.write_eof()
                await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        self.server, self.port = await startServer(handle)
        return self


async def exchange(port: int, data: bytes, source: str | None = None) -> bytes:
    """
    Send C{data} through the proxy, half-close, and read the answer to the
    end (C{b""} when the proxy closed the connection).

    @param source: the loopback address to connect from (a client of its
        own), or C{None} for any.
    """
    try:
        if source is None:
            r, w = await connectProxy(port)
        else:
            r, w = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
    except (ConnectionError, OSError):
        # A denied client is reset, which may reach it during the connect.
        return b""
    try:
        await sendAll(w, data)
        return await readAll(r)
    except (ConnectionError, OSError):
        return b""
    finally:
        w.close()


def freePorts(n: int) -> list[int]:
    """
    C{n} distinct loopback ports that were free a moment ago.
    """
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((LOOPBACK, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def scrape(port: int) -> dict[str, float]:
    """
    GET /metrics; return C{{"name{labels}": value}} for the splicetx series.
    """
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as f:
        text = f.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("splicetx_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(values: dict[str, float], prefix: str) -> float:
    """
    The sum of every series whose name starts with C{prefix}.
    """
    return sum(v for k, v in values.items() if k.startswith(prefix))


class _OpsTestCase(SynchronousTestCase):
    """
    Starts proxies that are killed in cleanup.
    """

    def proxy(self, *args: str) -> ProxyProcess:
        p = ProxyProcess(list(args))
        self.addCleanup(p.kill)
        return p

    def forward(self, upstream: int, *extra: str) -> ProxyProcess:
        return self.proxy(
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--connect",
            f"tcp:{LOOPBACK}:{upstream}",
            *extra,
        )


async def ports(*proxies: ProxyProcess) -> list[int]:
    """
    The listening ports of proxies started together, without blocking the
    event loop.
    """
    return list(
        await asyncio.gather(*(asyncio.to_thread(p.listeningPort) for p in proxies))
    )


class AccessControlTests(_OpsTestCase):
    """
    --allow/--deny: a refused client is closed before any upstream
    connection, logged once with the rule, and counted.
    """

    def test_allowedAndDenied(self) -> None:
        """
        With --allow 127.0.0.1 a client is relayed; with --allow 127.0.0.0/8
        --deny 127.0.0.1 (deny wins) it is closed, the upstream never sees
        it, the event names the rule and the refusal is counted.
        """

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            allowed = self.forward(up.port, "--allow", "127.0.0.1", "--deny", "::1")
            denied = self.forward(
                up.port,
                "--allow",
                "127.0.0.0/8",
                "--deny",
                "127.0.0.1",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
            )
            aport, dport = await ports(allowed, denied)
            ok = await exchange(aport, b"hello")
            refused = await exchange(dport, b"nope")
            await waitUntil(lambda: up.accepted >= 1)
            await asyncio.sleep(0.2)
            up.server.close()
            return allowed, denied, ok, refused, up

        allowed, denied, ok, refused, up = runAsync(scenario(), 40)
        self.assertEqual((ok, refused), (b"ok", b""))
        self.assertEqual((up.accepted, up.received), (1, [b"hello"]))
        [event] = denied.waitForConnections(1)
        self.assertEqual(event["reason"], "rejected")
        self.assertEqual(event["detail"], "127.0.0.1 denied by rule 127.0.0.1")
        self.assertEqual(event["engine"], "none")
        self.assertEqual(event["upstream"], f"{LOOPBACK}:{up.port}")
        [good] = allowed.waitForConnections(1)
        self.assertEqual(good["reason"], "done")
        metrics = denied.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        values = scrape(metrics["port"])
        self.assertEqual(
            total(values, 'splicetx_connections_refused_total{forward="tcp:0:'), 1
        )
        self.assertEqual(total(values, "splicetx_relays_total"), 0)


class ProxyProtocolTests(_OpsTestCase):
    """
    Sending and accepting PROXY protocol headers.
    """

    def test_sendV1AndV2(self) -> None:
        """
        --proxy-protocol v1 / v2: the upstream receives exactly the header
        for the client's real addresses, then the client's bytes.
        """

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            p1 = self.forward(up.port, "--proxy-protocol", "v1")
            p2 = self.forward(up.port, "--proxy-protocol", "v2")
            port1, port2 = await ports(p1, p2)
            sent = []
            for port, version in ((port1, 1), (port2, 2)):
                r, w = await connectProxy(port)
                host, cport = w.get_extra_info("sockname")[:2]
                src = IPv4Address("TCP", host, cport)
                dst = IPv4Address("TCP", LOOPBACK, port)
                build = buildV1Header if version == 1 else buildV2Header
                sent.append(build(src, dst) + b"stream %d" % version)
                await sendAll(w, b"stream %d" % version)
                self.assertEqual(await readAll(r), b"ok")
                w.close()
            await waitUntil(lambda: len(up.received) == 2)
            up.server.close()
            return sent, up.received

        sent, received = runAsync(scenario(), 40)
        self.assertTrue(sent[0].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 "))
        self.assertEqual(received, sent)

    def test_accept(self) -> None:
        """
        --accept-proxy-protocol: a v1 and a v2 header are stripped, their
        source address is the one logged, checked against --allow and sent
        on (--proxy-protocol v1), and the bytes after the header (in the
        same segment) are relayed first.  A header from an address the
        rules refuse, a malformed header and a header that trickles in
        slower than --proxy-protocol-timeout are closed with a logged
        reason, without an upstream connection.
        """
        v2 = buildV2Header(
            IPv4Address("TCP", "192.0.2.8", 4242), IPv4Address("TCP", "10.9.9.9", 443)
        )
        refusedV2 = buildV2Header(
            IPv4Address("TCP", "198.51.100.1", 1), IPv4Address("TCP", "10.9.9.9", 443)
        )

        async def slow(port: int) -> bool:
            r, w = await connectProxy(port)
            w.write(b"PROXY TCP4 ")
            await w.drain()
            closed = await closedWithin(r, 5)
            w.close()
            return closed

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            proxy = self.forward(
                up.port,
                "--accept-proxy-protocol",
                "--proxy-protocol-timeout",
                "0.5",
                "--allow",
                "192.0.2.0/24",
                "--proxy-protocol",
                "v1",
            )
            [port] = await ports(proxy)
            answers = [
                await exchange(
                    port, b"PROXY TCP4 192.0.2.7 10.9.9.9 5555 80\r\nfirst bytes"
                ),
                await exchange(port, v2 + b"v2 bytes"),
                await exchange(port, refusedV2 + b"x"),
                await exchange(port, b"GET / HTTP/1.1\r\n\r\n"),
            ]
            closed = await slow(port)
            await asyncio.to_thread(proxy.waitForConnections, 5)
            up.server.close()
            return proxy, answers, closed, up

        proxy, answers, closed, up = runAsync(scenario(), 40)
        self.assertEqual(answers, [b"ok", b"ok", b"", b""])
        self.assertTrue(closed)
        self.assertEqual(up.accepted, 2)
        self.assertEqual(
            sorted(up.received),
            sorted(
                [
                    b"PROXY TCP4 192.0.2.7 10.9.9.9 5555 80\r\nfirst bytes",
                    b"PROXY TCP4 192.0.2.8 10.9.9.9 4242 443\r\nv2 bytes",
                ]
            ),
        )
        events = {e["client"]: e for e in proxy.connections()}
        self.assertEqual(events["192.0.2.7:5555"]["reason"], "done")
        self.assertTrue(events["192.0.2.7:5555"]["peer"].startswith(f"{LOOPBACK}:"))
        self.assertEqual(events["192.0.2.8:4242"]["reason"], "done")
        self.assertEqual(
            events["198.51.100.1:1"]["detail"],
            "198.51.100.1 not matched by any allow rule",
        )
        details = sorted(
            e["detail"]
            for e in proxy.connections()
            if e["client"].startswith(f"{LOOPBACK}:")
        )
        self.assertEqual(len(details), 2)
        self.assertIn("missing PROXY protocol header", details[0])
        self.assertIn("no complete PROXY protocol header within 0.5 s", details[1])


class ConfigTests(_OpsTestCase):
    """
    --config: a rinetd file with several forwards and per-forward rules.
    """

    def test_twoForwards(self) -> None:
        """
        Two forwards from one rinetd file listen at once; the first (allow
        127.0.0.1) relays, the second (deny 127.0.0.1) refuses; a global
        rule and an ignored logfile line are accepted (with a warning).
        """
        p1, p2 = freePorts(2)

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            fd, path = tempfile.mkstemp(suffix=".conf")
            self.addCleanup(os.unlink, path)
            with os.fdopen(fd, "w") as f:
                f.write(
                    "# rinetd style\n"
                    "allow 127.0.0.*\n"
                    f"127.0.0.1 {p1} 127.0.0.1 {up.port}\n"
                    "allow 127.0.0.1\n"
                    f"127.0.0.1 {p2}/tcp 127.0.0.1 {up.port}   # second\n"
                    "deny 127.0.0.1\n"
                    "logfile /var/log/rinetd.log\n"
                )
            proxy = self.proxy("--config", path)
            await asyncio.to_thread(proxy.listeningPort)
            await asyncio.to_thread(
                proxy.waitForEvent,
                lambda e: e.get("splicetxEvent") == "listening" and e["port"] == p2,
            )
            answers = [await exchange(p1, b"one"), await exchange(p2, b"two")]
            await asyncio.to_thread(proxy.waitForConnections, 2)
            up.server.close()
            return proxy, answers, up, path

        proxy, answers, up, path = runAsync(scenario(), 40)
        self.assertEqual(answers, [b"ok", b""])
        self.assertEqual(up.received, [b"one"])
        refused = [e for e in proxy.connections() if e["reason"] == "rejected"]
        self.assertEqual(
            [e["detail"] for e in refused], ["127.0.0.1 denied by rule 127.0.0.1"]
        )
        warning = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "config")
        self.assertEqual(
            warning["warning"],
            f"{path}:7: logfile ignored: splicetx logs through twist's log options",
        )


class MetricsTests(_OpsTestCase):
    """
    --metrics serves Prometheus figures that follow the traffic.
    """

    def test_countersMove(self) -> None:
        """
        After three relayed connections the counters, byte totals, duration
        histogram and a connect failure show up on /metrics.
        """
        dead = socket.socket()
        dead.bind((LOOPBACK, 0))
        self.addCleanup(dead.close)

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            proxy = self.forward(up.port, "--metrics", f"tcp:0:interface={LOOPBACK}")
            broken = self.forward(
                dead.getsockname()[1], "--metrics", f"tcp:0:interface={LOOPBACK}"
            )
            port, bport = await ports(proxy, broken)
            for _ in range(3):
                self.assertEqual(await exchange(port, b"x" * 1000), b"ok")
            self.assertEqual(await exchange(bport, b"y"), b"")
            await asyncio.to_thread(proxy.waitForConnections, 3)
            await asyncio.to_thread(broken.waitForConnections, 1)
            up.server.close()
            return proxy, broken

        proxy, broken = runAsync(scenario(), 40)
        port = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")["port"]
        values = scrape(port)
        self.assertEqual(total(values, "splicetx_connections_total"), 3)
        self.assertEqual(total(values, "splicetx_connections_active"), 0)
        up = sum(
            v
            for k, v in values.items()
            if k.startswith("splicetx_bytes_total")
            and 'direction="client_to_upstream"' in k
        )
        down = sum(
            v
            for k, v in values.items()
            if k.startswith("splicetx_bytes_total")
            and 'direction="upstream_to_client"' in k
        )
        self.assertEqual((up, down), (3000, 6))
        self.assertEqual(total(values, "splicetx_connection_duration_seconds_count"), 3)
        self.assertIn('splicetx_pipes{state="idle"}', values)
        bport = broken.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        failures = scrape(bport["port"])
        self.assertEqual(
            [
                k
                for k in failures
                if k.startswith("splicetx_upstream_connect_failures_total")
            ],
            [
                'splicetx_upstream_connect_failures_total{forward="tcp:0:interface='
                f'{LOOPBACK}",reason="refused"}}'
            ],
        )

    def test_scrapesAreNotLogged(self) -> None:
        """
        Scrapes of /metrics, probes of /healthz and refreshes of /status
        and /status.json write nothing to the log: once the proxy is ready,
        the only line is the connection's record.
        """

        async def scenario() -> tuple[ProxyProcess, int]:
            up = await Upstream().start()
            proxy = self.forward(up.port, "--metrics", f"tcp:0:interface={LOOPBACK}")
            [port] = await ports(proxy)
            metrics = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
            for path in ["metrics", "healthz", "status", "status.json"] * 3:
                url = f"http://{LOOPBACK}:{metrics['port']}/{path}"
                await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u).read())
            self.assertEqual(await exchange(port, b"x"), b"ok")
            await asyncio.to_thread(proxy.waitForConnections, 1)
            up.server.close()
            return proxy, port

        proxy, port = runAsync(scenario(), 40)
        ready = next(
            i for i, e in enumerate(proxy.events) if e.get("splicetxEvent") == "ready"
        )
        after = proxy.events[ready + 1 :]
        self.assertEqual([e.get("splicetxEvent") for e in after], ["connection"])


class WorkersTests(_OpsTestCase):
    """
    --workers 2: connections spread over the worker processes, combined
    metrics, and SIGTERM drains.
    """

    def test_spreadMetricsAndDrain(self) -> None:
        """
        Twenty concurrent connections land on both workers (their log
        events carry different pids); the supervisor's /metrics sums the
        workers; SIGTERM to the supervisor stops new connections, lets a
        transfer in flight finish, and everything exits with status 0.
        """
        data = os.urandom(1 << 20)

        async def scenario() -> tuple[Any, ...]:
            up = await Upstream().start()
            proxy = self.forward(
                up.port,
                "--workers",
                "2",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
                "--drain-timeout",
                "10",
            )
            [port] = await ports(proxy)
            await asyncio.to_thread(
                proxy.waitForEvent,
                lambda e: e.get("splicetxEvent") == "ready" and e.get("worker") == 1,
            )
            await asyncio.to_thread(
                proxy.waitForEvent,
                lambda e: e.get("splicetxEvent") == "ready" and e.get("worker") == 0,
            )
            answers = await asyncio.gather(
                *(exchange(port, b"%d" % i) for i in range(20))
            )
            events = await asyncio.to_thread(proxy.waitForConnections, 20)
            metricsPort = proxy.waitForEvent(
                lambda e: e.get("splicetxEvent") == "metrics"
            )["port"]
            values = await asyncio.to_thread(scrape, metricsPort)
            # A transfer in flight when SIGTERM arrives.
            r, w = await connectProxy(port)
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            refused = None
            for i, chunk in enumerate(chunks):
                w.write(chunk)
                await w.drain()
                if i == 0:
                    proxy.signal(signal.SIGTERM)
                    refused = await refusedSoon(port, tries=100)
                await asyncio.sleep(0.02)
            w.write_eof()
            reply = await readAll(r)
            w.close()
            up.server.close()
            return proxy, answers, events, values, refused, reply, up

        proxy, answers, events, values, refused, reply, up = runAsync(scenario(), 50)
        self.assertEqual(answers, [b"ok"] * 20)
        pids = {e["pid"] for e in events}
        self.assertEqual(len(pids), 2, pids)
        self.assertNotIn(proxy.pid, pids)
        self.assertEqual(total(values, "splicetx_connections_total"), 20)
        self.assertTrue(refused)
        self.assertEqual(reply, b"ok")
        self.assertIn(data, up.received)
        self.assertEqual(proxy.wait(20), 0)
        drained = [
            e
            for e in proxy.events
            if e.get("splicetxEvent") == "drained" and e.get("aborted") == 0
        ]
        self.assertEqual(len(drained), 2)


class HelperTests(SynchronousTestCase):
    """
    The supervisor's command line for its workers, and --metrics without
    prometheus-client.
    """

    def test_workerArguments(self) -> None:
        """
        Workers get the supervisor's splice-proxy arguments less --workers,
        and its twist options when it runs under twist.
        """
        from splicetx._app.supervisor import twistArguments, workerArguments

        self.assertEqual(
            workerArguments(
                ["--listen", "tcp:1", "--workers", "2", "--connect", "tcp:h:1"]
            ),
            ["--listen", "tcp:1", "--connect", "tcp:h:1"],
        )
        self.assertEqual(
            workerArguments(["--workers=auto", "-l", "tcp:1"]), ["-l", "tcp:1"]
        )
        self.assertEqual(
            twistArguments(
                ["/x/twisted/__main__.py", "--reactor=epoll", "splice-proxy", "-l"]
            ),
            ["--reactor=epoll"],
        )
        self.assertEqual(
            twistArguments(["/usr/bin/twist", "--log-format=json", "splice-proxy"]),
            ["--log-format=json"],
        )
        self.assertEqual(twistArguments(["/usr/bin/twistd", "-n", "splice-proxy"]), [])

    def test_metricsWithoutPrometheusClient(self) -> None:
        """
        --metrics without prometheus-client installed exits 64 with one line
        saying how to install it from the checkout.
        """
        import subprocess

        from ._cli_support import twistCommand

        tmp = tempfile.mkdtemp(prefix="splicetx-noprom-")
        package = os.path.join(tmp, "prometheus_client")
        os.mkdir(package)
        with open(os.path.join(package, "__init__.py"), "w") as f:
            f.write("raise ImportError('No module named prometheus_client')\n")
        # The stand-in first, then whatever splicetx this test runs.
        path = [tmp, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        result = subprocess.run(
            twistCommand(
                ["--listen", "tcp:0", "--connect", "tcp:127.0.0.1:9"]
                + ["--metrics", "tcp:0"]
            ),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 64)
        self.assertEqual(
            result.stderr.strip(),
            "splice-proxy: error: --metrics needs the prometheus-client package: "
            "pip install '.[metrics]' in the splicetx checkout (after a release: "
            "pip install 'splicetx[metrics]')",
        )
