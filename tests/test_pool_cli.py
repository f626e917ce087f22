# -*- test-case-name: tests.test_pool_cli -*-
"""
Subprocess tests of upstream pools in C{twist splice-proxy}: repeatable
C{--connect}, balancing, failover, health checks, C{--route-sni} with real
TLS clients and servers, a TOML C{--config}, and bad pool options.  Every
peer is real on loopback; every child is killed in cleanup.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import tempfile
from collections import Counter
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx.testing import digest as sha

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    closedWithin,
    readAll,
    refusingPort,
    runAsync,
    sendAll,
    twistCommand,
)

USAGE = 64


class _Backend:
    """
    An asyncio loopback server that answers every connection with its name
    and closes (a health probe sees a good upstream); it counts clients.

    @ivar name: what it answers.
    @ivar port: its port.
    @ivar clients: connections it served.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.clients = 0
        self.server: asyncio.AbstractServer | None = None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.clients += 1
        try:
            writer.write(self.name.encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def start(self) -> _Backend:
        self.server = await asyncio.start_server(
            self._serve, LOOPBACK, self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    @property
    def connect(self) -> str:
        return f"tcp:{LOOPBACK}:{self.port}"


async def _backends(*names: str) -> list[_Backend]:
    return [await _Backend(n).start() for n in names]


async def _ask(port: int, source: str | None = None) -> bytes:
    """
    Connect to the proxy (from C{source}, a loopback address), read to the
    end.
    """
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, local_addr=(source, 0) if source else None
    )
    try:
        return await asyncio.wait_for(readAll(reader), 20)
    finally:
        writer.close()


def _listen() -> list[str]:
    return ["--listen", f"tcp:0:interface={LOOPBACK}"]


class _PoolTestCase(SynchronousTestCase):
    """
    Starts proxies that are killed in cleanup.
    """

    def proxy(self, args: list[str]) -> ProxyProcess:
        p = ProxyProcess(args)
        self.addCleanup(p.kill)
        return p

    async def start(self, args: list[str]) -> tuple[ProxyProcess, int]:
        proxy = self.proxy(args)
        port = await asyncio.to_thread(proxy.listeningPort)
        return proxy, port


class BalanceTests(_PoolTestCase):
    """
    Several C{--connect} upstreams share the clients.
    """

    def test_roundRobin(self) -> None:
        """
        Nine clients over three live upstreams: three each, and every
        connection's log event names the pool.
        """

        async def go() -> None:
            backends = await _backends("a", "b", "c")
            args = _listen()
            for b in backends:
                args += ["--connect", b.connect]
            proxy, port = await self.start(args)
            answers = [await _ask(port) for _ in range(9)]
            self.assertEqual(Counter(answers), {b"a": 3, b"b": 3, b"c": 3})
            events = await asyncio.to_thread(proxy.waitForConnections, 9)
            self.assertEqual(
                {e["pool"] for e in events}, {f"tcp:0:interface={LOOPBACK}"}
            )
            self.assertEqual({e["reason"] for e in events}, {"done"})

        runAsync(go(), 90)

    def test_refusedSkipped(self) -> None:
        """
        An upstream that refuses is skipped: every client is served by the
        live ones and none fails.
        """
        dead = refusingPort()
        self.addCleanup(dead.close)

        async def go() -> None:
            backends = await _backends("a", "b")
            args = _listen() + [
                "--connect",
                backends[0].connect,
                "--connect",
                f"tcp:{LOOPBACK}:{dead.getsockname()[1]}",
                "--connect",
                backends[1].connect,
            ]
            proxy, port = await self.start(args)
            answers = [await _ask(port) for _ in range(10)]
            self.assertEqual(set(answers), {b"a", b"b"})
            events = await asyncio.to_thread(proxy.waitForConnections, 10)
            self.assertEqual([e for e in events if e["reason"] != "done"], [])
            proxy.waitForEvent(
                lambda e: e.get("splicetxEvent") == "upstream-connect-failed"
            )

        runAsync(go(), 90)

    def test_allDown(self) -> None:
        """
        With every upstream refusing, clients are closed promptly and the
        log says why: every upstream failed, then none was available.
        """
        dead = [refusingPort(), refusingPort()]
        for s in dead:
            self.addCleanup(s.close)

        async def go() -> None:
            args = _listen()
            for s in dead:
                args += ["--connect", f"tcp:{LOOPBACK}:{s.getsockname()[1]}"]
            proxy, port = await self.start(args)
            for _ in range(2):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                self.assertTrue(await closedWithin(reader, 15))
                writer.close()
            events = await asyncio.to_thread(proxy.waitForConnections, 2)
            self.assertEqual({e["reason"] for e in events}, {"upstream failed"})
            self.assertIn("every upstream failed in pool", events[0]["detail"])
            self.assertIn("no upstream available in pool", events[1]["detail"])

        runAsync(go(), 90)

    def test_sourceSticky(self) -> None:
        """
        With C{--balance source} each client address keeps its upstream,
        and different addresses spread over more than one.
        """

        async def go() -> None:
            backends = await _backends("a", "b", "c")
            args = _listen() + ["--balance", "source"]
            for b in backends:
                args += ["--connect", b.connect]
            proxy, port = await self.start(args)
            chosen: dict[str, set[bytes]] = {}
            for i in range(2, 12):
                source = f"127.0.0.{i}"
                for _ in range(3):
                    chosen.setdefault(source, set()).add(await _ask(port, source))
            self.assertEqual({len(v) for v in chosen.values()}, {1})
            self.assertGreater(len(set().union(*chosen.values())), 1)

        runAsync(go(), 120)

    def test_weights(self) -> None:
        """
        Weights 1 and 3 give one and three quarters of the clients.
        """

        async def go() -> None:
            backends = await _backends("a", "b")
            args = _listen() + [
                "--connect",
                backends[0].connect,
                "--connect",
                backends[1].connect + " weight=3",
            ]
            proxy, port = await self.start(args)
            answers = Counter([await _ask(port) for _ in range(40)])
            self.assertLessEqual(abs(answers[b"a"] - 10), 2)
            self.assertLessEqual(abs(answers[b"b"] - 30), 2)

        runAsync(go(), 120)


class HealthCheckTests(_PoolTestCase):
    """
    Active health checks take an upstream out and bring it back.
    """

    def test_outAndBack(self) -> None:
        """
        A stopped upstream is marked down (and clients all go to the other),
        then up again once it listens again.
        """

        async def go() -> None:
            a, b = await _backends("a", "b")
            args = _listen() + [
                "--connect",
                a.connect,
                "--connect",
                b.connect,
                "--health-check-interval",
                "0.2",
                "--health-check-fall",
                "1",
                "--health-check-rise",
                "1",
            ]
            proxy, port = await self.start(args)
            await b.stop()
            down = await asyncio.to_thread(
                proxy.waitForEvent,
                lambda e: e.get("splicetxEvent") == "upstream-down",
                30,
            )
            self.assertEqual(down["upstream"], b.connect)
            answers = [await _ask(port) for _ in range(4)]
            self.assertEqual(set(answers), {b"a"})
            await b.start()
            up = await asyncio.to_thread(
                proxy.waitForEvent,
                lambda e: e.get("splicetxEvent") == "upstream-up",
                30,
            )
            self.assertEqual(up["upstream"], b.connect)
            answers = [await _ask(port) for _ in range(4)]
            self.assertEqual(set(answers), {b"a", b"b"})

        runAsync(go(), 120)

    def test_startUpInUsersWords(self) -> None:
        """
        The start-up line names the pool by its members (as --connect wrote
        them) and balancing and the access rules as written; no start-up
        line shows a Python repr or class name.
        """

        async def go() -> tuple[ProxyProcess, list[_Backend]]:
            backends = await _backends("a", "b")
            args = [*_listen(), "--connect", backends[0].connect]
            args += ["--connect", f"{backends[1].connect} weight=2"]
            proxy, _ = await self.start([*args, "--deny", "192.0.2.0/24"])
            return proxy, backends

        proxy, (a, b) = runAsync(go(), 60)
        started = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "started")
        self.assertEqual(
            started["upstream"],
            f"{a.connect}, {b.connect} weight=2 (roundrobin)",
        )
        self.assertEqual(started["acl"], "deny 192.0.2.0/24")
        texts = [str(e.get("log_text") or e.get("log_format")) for e in proxy.events]
        self.assertIn("listener starting on", " ".join(texts))
        self.assertEqual([t for t in texts if "<" in t or "Factory" in t], [])

    def test_probesLogNothing(self) -> None:
        """
        A second of interval, three rounds of probes of a live upstream: the
        log has no factory start/stop lines, and no health line at all (no
        state changed).
        """

        async def go() -> tuple[ProxyProcess, int]:
            [a] = await _backends("a")
            args = [*_listen(), "--connect", a.connect, "--connect", a.connect]
            proxy, port = await self.start([*args, "--health-check-interval", "1"])
            # Two upstreams probed at start and after 1 s and 2 s.
            while a.clients < 6:
                await asyncio.sleep(0.05)
            self.assertEqual(await _ask(port), b"a")
            return proxy, a.clients

        proxy, probes = runAsync(go(), 60)
        self.assertGreaterEqual(probes, 6)
        proxy.waitForConnections(1)
        noise = [
            e
            for e in proxy.events
            if "factory" in str(e.get("log_format", "")).lower()
            or e.get("log_namespace", "").startswith("splicetx._pool.health")
        ]
        self.assertEqual(noise, [])


def _certificate(directory: str) -> tuple[str, str]:
    try:
        from .test_tls import makeCertificate
    except ImportError as e:  # pragma: no cover (no cryptography)
        raise SkipTest(f"cannot make a certificate: {e}")
    return makeCertificate(directory)


class _TLSEcho:
    """
    A TLS loopback server that sends its name, then echoes everything; it
    records the server names its clients sent.
    """

    def __init__(self, name: str, certificate: tuple[str, str]) -> None:
        self.name = name
        self.names: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate[1], certificate[0])

        def sni(sslObject: Any, serverName: str | None, ctx: Any) -> None:
            self.names.append(serverName)

        context.sni_callback = sni
        self.context = context
        self.port = 0

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            writer.write(self.name.encode() + b"\n")
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self) -> _TLSEcho:
        self.server = await asyncio.start_server(
            self._serve, LOOPBACK, 0, ssl=self.context
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self


async def _tlsExchange(port: int, serverName: str, data: bytes) -> tuple[bytes, bytes]:
    """
    A TLS client of the proxy with SNI C{serverName}: send C{data}, return
    the backend's name line and the echoed bytes.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=context, server_hostname=serverName
    )
    name = await reader.readline()

    async def send() -> None:
        for i in range(0, len(data), 1 << 16):
            writer.write(data[i : i + (1 << 16)])
            await writer.drain()

    sender = asyncio.ensure_future(send())
    echoed = b""
    while len(echoed) < len(data):
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        echoed += chunk
    await sender
    writer.close()
    return name.strip(), echoed


class SNITests(_PoolTestCase):
    """
    C{--route-sni} routes real TLS clients to real TLS servers by name,
    without ending TLS.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.certificate = _certificate(directory)

    def test_routes(self) -> None:
        """
        An exact name and a wildcard go to their own backends; the TLS
        session completes through the proxy and a megabyte comes back
        byte-exact; the log names the server name and the pool.
        """
        payload = os.urandom(1 << 20)

        async def go() -> None:
            www = await _TLSEcho("www", self.certificate).start()
            wild = await _TLSEcho("wild", self.certificate).start()
            args = _listen() + [
                "--route-sni",
                f"www.example.com=tcp:{LOOPBACK}:{www.port}",
                "--route-sni",
                f"*.example.com=tcp:{LOOPBACK}:{wild.port}",
            ]
            proxy, port = await self.start(args)
            for serverName, expected in [
                ("www.example.com", b"www"),
                ("api.example.com", b"wild"),
                ("a.b.example.com", b"wild"),
            ]:
                name, echoed = await _tlsExchange(port, serverName, payload)
                self.assertEqual(name, expected)
                self.assertEqual(sha(echoed), sha(payload))
            self.assertEqual(www.names, ["www.example.com"])
            self.assertEqual(wild.names, ["api.example.com", "a.b.example.com"])
            events = await asyncio.to_thread(proxy.waitForConnections, 3)
            self.assertEqual(
                sorted(e["serverName"] for e in events),
                ["a.b.example.com", "api.example.com", "www.example.com"],
            )
            self.assertIn(
                f"tcp:0:interface={LOOPBACK} *.example.com", {e["pool"] for e in events}
            )

        runAsync(go(), 120)

    def test_notTLS(self) -> None:
        """
        A client that does not speak TLS is closed, and the log says why.
        """

        async def go() -> None:
            www = await _TLSEcho("www", self.certificate).start()
            args = _listen() + [
                "--route-sni",
                f"www.example.com=tcp:{LOOPBACK}:{www.port}",
            ]
            proxy, port = await self.start(args)
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            await sendAll(writer, b"GET / HTTP/1.0\r\n\r\n", eof=False)
            self.assertTrue(await closedWithin(reader, 15))
            writer.close()
            (event,) = await asyncio.to_thread(proxy.waitForConnections, 1)
            self.assertEqual(event["reason"], "rejected")
            self.assertIn("not TLS", event["detail"])
            self.assertEqual(www.names, [])

        runAsync(go(), 60)


class TomlConfigTests(_PoolTestCase):
    """
    A TOML C{--config} file with two forwards.
    """

    def test_twoForwards(self) -> None:
        """
        Each forward listens under its name and relays to its own pool.
        """

        async def go() -> None:
            a, b, c = await _backends("a", "b", "c")
            path = os.path.join(tempfile.mkdtemp(), "pools.toml")
            with open(path, "w") as f:
                f.write(
                    f"""
[defaults]
balance = "roundrobin"

[[forward]]
name = "web"
listen = "tcp:0:interface={LOOPBACK}"
connect = ["{a.connect}", "{b.connect} weight=1"]

[[forward]]
name = "other"
listen = "tcp:0:interface={LOOPBACK}"
connect = {{ endpoint = "{c.connect}", weight = 2 }}
"""
                )
            proxy = self.proxy(["--config", path])
            await asyncio.to_thread(proxy.listeningPort)
            ports = {}
            for name in ("web", "other"):
                event = await asyncio.to_thread(
                    proxy.waitForEvent,
                    lambda e, n=name: (
                        e.get("splicetxEvent") == "listening" and e.get("forward") == n
                    ),
                )
                ports[name] = int(event["port"])
            web = {await _ask(ports["web"]) for _ in range(4)}
            self.assertEqual(web, {b"a", b"b"})
            self.assertEqual(await _ask(ports["other"]), b"c")
            events = await asyncio.to_thread(proxy.waitForConnections, 5)
            self.assertEqual(Counter(e["pool"] for e in events), {"web": 4, "other": 1})

        runAsync(go(), 90)


def _toml(text: str) -> str:
    path = os.path.join(tempfile.mkdtemp(), "bad.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


_OK = ["--connect", f"tcp:{LOOPBACK}:9"]

#: (arguments, text expected in the one line on stderr).
BAD_POOL_INPUTS: list[tuple[list[str], str]] = [
    ([*_OK, "--balance", "fastest"], "--balance: unknown 'fastest'"),
    (["--connect", f"tcp:{LOOPBACK}:9 weight=0"], "--connect: upstream"),
    ([*_OK, *_OK, "--max-fails", "x"], "--max-fails: expected a whole number"),
    ([*_OK, "--fail-timeout", "-1"], "--fail-timeout"),
    ([*_OK, "--connect-tries", "0"], "--connect-tries: must be at least 1"),
    (
        [*_OK, "--health-check-rise", "2"],
        "--health-check-rise needs --health-check-interval",
    ),
    ([*_OK, "--health-check-interval", "soon"], "--health-check-interval"),
    (["--route-sni", "www.example.com"], "--route-sni: expected NAME=ENDPOINT"),
    (["--route-sni", "a.*.example.com=tcp:127.0.0.1:9"], "--route-sni"),
    ([*_OK, "--connect", "bogus:1"], "--connect bogus:1"),
    ([*_OK, "--sni-timeout", "0"], "--sni-timeout"),
    ([*_OK, "--sni-max-size", "10"], "--sni-max-size: must be at least 512"),
]


class BadPoolInputTests(SynchronousTestCase):
    """
    Bad pool options and TOML files: one line on stderr, exit status 64.
    """

    def test_badInputs(self) -> None:
        """
        Every bad input gives exit status 64 and one line naming the option
        (or the file and key), never a traceback.
        """
        badToml = _toml('[[forward]]\nlisten = "tcp:0"\nconnect = "tcp:a:1 weight=0"\n')
        notToml = _toml("[[forward\n")
        rows = [(_listen() + args, text) for args, text in BAD_POOL_INPUTS] + [
            (["--config", badToml], f"{badToml}: forward[0].connect: upstream"),
            (["--config", notToml], f"{notToml}: not TOML"),
        ]
        procs = [
            (
                args,
                text,
                subprocess.Popen(
                    twistCommand(args),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for args, text in rows
        ]
        for args, text, proc in procs:
            out, err = proc.communicate(timeout=120)
            lines = err.strip().splitlines()
            self.assertEqual(proc.returncode, USAGE, (args, err))
            self.assertEqual(len(lines), 1, (args, err))
            self.assertIn(text, lines[0], args)
            self.assertNotIn("Traceback", err)


class MetricsAndStatusTests(_PoolTestCase):
    """
    With C{--metrics}, pools have per-upstream series and the status page
    lists every member.
    """

    def test_scrape(self) -> None:
        """
        A pool with a refusing member: per-upstream up and failure series,
        and the status page shows the live member up with its connection.
        """
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise SkipTest("needs prometheus_client")
        import json
        import urllib.request

        from .test_ops_cli import scrape

        dead = refusingPort()
        self.addCleanup(dead.close)
        deadConnect = f"tcp:{LOOPBACK}:{dead.getsockname()[1]}"

        async def go() -> tuple[ProxyProcess, str]:
            (live,) = await _backends("a")
            args = _listen() + [
                "--connect",
                deadConnect,
                "--connect",
                live.connect,
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
            ]
            proxy, port = await self.start(args)
            answers = {await _ask(port) for _ in range(3)}
            self.assertEqual(answers, {b"a"})
            await asyncio.to_thread(proxy.waitForConnections, 3)
            return proxy, live.connect

        proxy, liveConnect = runAsync(go(), 90)
        port = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")["port"]
        values = scrape(port)
        forward = f"tcp:0:interface={LOOPBACK}"
        self.assertEqual(
            values[
                f'splicetx_upstream_up{{forward="{forward}",upstream="{liveConnect}"}}'
            ],
            1.0,
        )
        self.assertEqual(
            values[
                "splicetx_upstream_connections_total"
                f'{{forward="{forward}",upstream="{liveConnect}"}}'
            ],
            3.0,
        )
        self.assertEqual(
            values[
                f'splicetx_upstream_failures_total{{forward="{forward}",'
                f'reason="refused",upstream="{deadConnect}"}}'
            ],
            1.0,
        )
        url = f"http://{LOOPBACK}:{port}/status.json"
        with urllib.request.urlopen(url, timeout=10) as f:
            status = json.loads(f.read())
        upstreams = {u["name"]: u for u in status["listeners"][0]["upstreams"]}
        self.assertEqual(upstreams[liveConnect]["health"], "up")
        self.assertEqual(upstreams[liveConnect]["total"], 3)
        self.assertEqual(upstreams[deadConnect]["health"], "degraded")
        # The refused try that failed over counts for the listener too
        # (issue 23), and by reason for its upstream.
        self.assertEqual(status["listeners"][0]["connectFailures"], {"refused": 1})
        self.assertEqual(
            values[
                "splicetx_upstream_connect_failures_total"
                f'{{forward="{forward}",reason="refused"}}'
            ],
            1.0,
        )
        self.assertEqual(upstreams[deadConnect]["failures"], {"refused": 1})
        self.assertEqual(upstreams[liveConnect]["failures"], {})
        self.assertEqual(upstreams[liveConnect]["bytes"]["upstream_to_client"], 3)
        self.assertIsNotNone(upstreams[liveConnect]["rates"])


class FastPathTests(SynchronousTestCase):
    """
    In-process checks of what the options build.
    """

    def options(self, *args: str) -> Any:
        from splicetx._app.tap import Options

        o = Options()
        o.exitOnUsageError = False
        o.parseOptions([*_listen(), *args])
        return o.proxyConfig

    def test_onePlainConnect(self) -> None:
        """
        One plain C{--connect} (also as C{-c}) makes a forward without a
        pool, so no pool object is on its connection path.
        """
        for flag in ("--connect", "-c"):
            (forward,) = self.options(flag, f"tcp:{LOOPBACK}:9").forwards
            self.assertIsNone(forward.pool)
            self.assertEqual(forward.routes, ())
            self.assertEqual(forward.connect, f"tcp:{LOOPBACK}:9")

    def test_poolWhenAsked(self) -> None:
        """
        Two upstreams, or one with an option or a pool option, make a pool.
        """
        for args in [
            ["-c", f"tcp:{LOOPBACK}:9", "-c", f"tcp:{LOOPBACK}:10"],
            ["-c", f"tcp:{LOOPBACK}:9 weight=2"],
            ["-c", f"tcp:{LOOPBACK}:9", "--health-check-interval", "5"],
        ]:
            (forward,) = self.options(*args).forwards
            self.assertIsNotNone(forward.pool, args)

    def test_failureLabels(self) -> None:
        """
        The forward's connect-failure label is C{no_upstream} for a pool
        that reached nobody, and C{cancelled} for a cancelled endpoint
        connect.
        """
        try:
            from splicetx._ops.metrics import connectFailureReason
        except ImportError:
            raise SkipTest("needs prometheus_client")
        from twisted.internet.error import ConnectingCancelledError

        from splicetx._pool.pool import ALL_DOWN, NoUpstreamAvailable

        self.assertEqual(
            connectFailureReason(NoUpstreamAvailable(ALL_DOWN, "none", [])),
            "no_upstream",
        )
        self.assertEqual(
            connectFailureReason(ConnectingCancelledError(None)), "cancelled"
        )


class RinetdPoolTests(SynchronousTestCase):
    """
    The rinetd format's pool extension: pool options in a forward's
    brackets and C{upstream} lines after it.
    """

    def test_pool(self) -> None:
        """
        A forward with pool options and two upstream lines is a pool of
        three, with the weights and options given; a plain forward has none.
        """
        from splicetx._config.rinetd import parseConfig

        config = parseConfig(
            "0.0.0.0 8080 10.0.0.1 80 [balance=leastconn,health-check-interval=5]\n"
            "upstream 10.0.0.2 80 [weight=3]\n"
            "upstream 10.0.0.3 8080 [max-fails=3,fail-timeout=30,src=10.0.0.9]\n"
            "allow 10.0.0.0/8\n"
            "0.0.0.0 8081 10.0.0.1 81\n"
        )
        pooled, plain = config.forwards
        self.assertIsNone(plain.pool)
        pool = pooled.pool
        self.assertEqual(pool.balance, "leastconn")
        self.assertEqual(pool.healthCheck.interval, 5.0)
        self.assertEqual(
            [(u.endpoint, u.weight, u.maxFails, u.failTimeout) for u in pool.upstreams],
            [
                ("tcp:host=10.0.0.1:port=80", 1, None, None),
                ("tcp:host=10.0.0.2:port=80", 3, None, None),
                ("tcp:host=10.0.0.3:port=8080:bindAddress=10.0.0.9", 1, 3, 30.0),
            ],
        )
        self.assertEqual(pooled.connect, "tcp:host=10.0.0.1:port=80")
        self.assertEqual([r.text for r in pooled.acl.allow], ["10.0.0.0/8"])

    def test_errors(self) -> None:
        """
        A misplaced or bad upstream line names the file and line.
        """
        from splicetx._config.rinetd import parseConfig
        from splicetx._config.values import ConfigError

        for text, line, problem in [
            ("upstream 10.0.0.2 80\n", 1, "upstream must follow a forward line"),
            ("0.0.0.0 1 10.0.0.1 2\nupstream 10.0.0.2\n", 2, "expected 'upstream"),
            (
                "0.0.0.0 1 10.0.0.1 2\nupstream 10.0.0.2 80 [balance=random]\n",
                2,
                "balance belongs on the forward's line",
            ),
            ("0.0.0.0 1 10.0.0.1 2\nupstream 10.0.0.2 80 [weight=0]\n", 2, "weight"),
            ("0.0.0.0 1 10.0.0.1 2 [balance=fastest]\n", 1, "balance: unknown"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig(text, "f.conf")
            self.assertEqual(caught.exception.lineNumber, line, text)
            self.assertIn(problem, str(caught.exception), text)


class BenchPoolSpecTests(SynchronousTestCase):
    """
    The bench's pool variant runs C{twist splice-proxy} with a pool.
    """

    def test_command(self) -> None:
        """
        The C{-pool3} proxy's command gives the CLI three C{--connect}
        upstreams, which make a round-robin pool of three.
        """
        from splicetx._app.tap import Options
        from splicetx.bench import _proxies

        (spec,) = [s for s in _proxies.allSpecs(1 << 20) if s.poolSize]
        self.assertEqual((spec.poolSize, spec.loads), (3, ("bulk", "churn")))
        argv = _proxies.command(spec, 1000, 2000, "standin", tempfile.mkdtemp())
        args = argv[argv.index("splice-proxy") + 1 :]
        o = Options()
        o.exitOnUsageError = False
        o.parseOptions(args)
        (forward,) = o.proxyConfig.forwards
        self.assertEqual(len(forward.pool.upstreams), 3)
        self.assertEqual(forward.pool.balance, "roundrobin")
