# -*- test-case-name: tests.test_status -*-
"""
Tests for L{splicetx._ops.status}: the C{/status}, C{/status.json} and
C{/healthz} resources of the C{--metrics} endpoint, in process and on a real
C{twist splice-proxy} child (single process, draining, C{--workers}), and
the page in a real headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from splicetx import PipePool, RelayResult
from splicetx._ops.metrics import ProxyMetrics
from splicetx._ops.status import (
    HealthResource,
    ServiceStatus,
    StatusPage,
    SupervisorStatus,
    registryTotals,
    renderHTML,
    statusResources,
)
from splicetx._relay import core

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    connectProxy,
    runAsync,
    startServer,
)

#: What the test upstream sends each client first, and what each client
#: then sends (both small enough to sit in socket buffers).
GREETING = b"g" * 5000
UPLOAD = b"u" * 100000


# -- in process -----------------------------------------------------------------


class _Peer:
    def __init__(self, host: str, port: int) -> None:
        from twisted.internet.address import IPv4Address

        self.address = IPv4Address("TCP", host, port)

    def getPeer(self) -> Any:
        return self.address


class _Relay:
    engine = "splice"

    def __init__(self, up: int, down: int) -> None:
        self.bytesAToB = up
        self.bytesBToA = down


class _Proto:
    proxyHeader = None
    upstreamEndpoint = None

    def __init__(self, port: int, up: int, down: int, startedAt: float) -> None:
        self.transport = _Peer("127.0.0.1", port)
        self.upstream = type("U", (), {"transport": _Peer("127.0.0.1", 8080)})()
        self.relay = _Relay(up, down)
        self.startedAt = startedAt


class _Factory:
    upstream = None
    draining = False
    maxConnections = 10

    def __init__(self, name: str, protos: list[_Proto], pool: PipePool) -> None:
        self.forwardName = name
        self.liveProtocols = set(protos)
        self.pipePool = pool


class _Forward:
    def __init__(self, listen: list[str]) -> None:
        self.listenGiven = listen


class _Service:
    def __init__(self, factories: list[_Factory], metrics: Any = None) -> None:
        self.factories = factories
        self.forwards = [_Forward([f.forwardName]) for f in factories]
        self.ports: list[Any] = []
        self.metrics = metrics
        self.running = True


def _render(resource: Any, path: bytes = b"") -> tuple[int, bytes]:
    request = DummyRequest([path])
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return request.responseCode or 200, b"".join(request.written)


class SnapshotTests(SynchronousTestCase):
    """
    L{ServiceStatus} describes the service's factories, their live
    connections and the metrics' totals.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = ProxyMetrics()
        self.metrics.relayFinished(
            RelayResult("copy", 10, 20, 0.5, "done", "closed", "TLS transport"), "web"
        )
        self.metrics.connectionOpened("web")
        pool = PipePool()
        protos = [
            _Proto(40000 + i, up, down, 1000 - i)
            for i, (up, down) in enumerate([(1, 2), (500, 500), (30, 0)])
        ]
        self.service = _Service([_Factory("web", protos, pool)], self.metrics)
        self.status = ServiceStatus(self.service, self.clock, limit=2)

    def test_connectionsBusiestFirstAndBounded(self) -> None:
        """
        Live connections are listed busiest first, cut at the limit, with
        their byte counts each way and their age; the live count is whole.
        """
        snap = self.status.snapshot()
        rows = snap["connections"]
        self.assertEqual(
            [(r["client"], r["bytesClientToUpstream"]) for r in rows],
            [("127.0.0.1:40001", 500), ("127.0.0.1:40002", 30)],
        )
        self.assertEqual(rows[0]["bytesUpstreamToClient"], 500)
        self.assertEqual(rows[0]["age"], 1.0)
        self.assertEqual(rows[0]["upstream"], "127.0.0.1:8080")
        self.assertEqual(snap["connectionsLive"], 3)

    def test_totals(self) -> None:
        """
        A listener's bytes are the finished relays' (from the metrics) plus
        the live ones'; fallbacks and endings come by reason.
        """
        [listener] = self.status.snapshot()["listeners"]
        self.assertEqual(listener["forward"], "web")
        self.assertEqual(listener["total"], 1)
        self.assertEqual(listener["live"], 3)
        self.assertEqual(
            listener["bytes"],
            {
                "client_to_upstream": {"copy": 10, "splice": 531},
                "upstream_to_client": {"copy": 20, "splice": 502},
            },
        )
        self.assertEqual(listener["fallbacks"], {"TLS transport": 1})
        self.assertEqual(listener["endings"], {"done": 1})
        self.assertEqual(listener["upstreams"][0]["live"], 3)

    def test_registryTotalsEmpty(self) -> None:
        """
        Without a registry there are no totals.
        """
        self.assertEqual(registryTotals(None), {})

    def test_upstreamStatusHook(self) -> None:
        """
        A factory with C{upstreamStatus()} (a pool) lists its upstreams with
        their health.
        """
        factory = self.service.factories[0]
        factory.upstreamStatus = lambda: [  # type: ignore[attr-defined]
            {"name": "a:1", "health": "up", "total": 7},
            {"name": "b:2", "health": "down"},
        ]
        upstreams = self.status.snapshot()["listeners"][0]["upstreams"]
        self.assertEqual(
            [(u["name"], u["health"], u["total"]) for u in upstreams],
            [("a:1", "up", 7), ("b:2", "down", None)],
        )

    def test_htmlEscapes(self) -> None:
        """
        Every value on the page is escaped: a forward name with markup shows
        as text.
        """
        self.service.factories[0].forwardName = "<script>x</script>"
        page = renderHTML(self.status.snapshot())
        self.assertNotIn("<script>", page)
        self.assertIn("&lt;script&gt;x&lt;/script&gt;", page)
        self.assertIn('<meta http-equiv="refresh" content="5">', page)

    def test_resources(self) -> None:
        """
        C{/status.json} serves the snapshot as JSON and C{/status} as HTML
        listing the connections with their exact byte counts.
        """
        resources = statusResources(self.status)
        code, body = _render(resources[b"status.json"])
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["connectionsLive"], 3)
        code, body = _render(resources[b"status"])
        self.assertIn(b"127.0.0.1:40001", body)
        self.assertIn(b'title="500 bytes"', body)

    def test_health(self) -> None:
        """
        C{/healthz} answers 200 C{ok} while serving and 503 once stopping.
        """
        health = statusResources(self.status)[b"healthz"]
        self.assertEqual(_render(health), (200, b"ok\n"))
        self.service.running = False
        self.assertEqual(_render(health), (503, b"draining\n"))

    def test_failedSnapshot(self) -> None:
        """
        A snapshot that raises gives a 500, not a broken connection.
        """

        def broken() -> dict[str, Any]:
            raise RuntimeError("no")

        code, body = _render(StatusPage(broken, asJSON=True))
        self.assertEqual(code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(b"failed", body)


class DeferredSnapshotTests(SynchronousTestCase):
    """
    L{StatusPage} answers once a snapshot that is a L{Deferred} fires (the
    supervisor's), and not at all for a client that went away.
    """

    def test_later(self) -> None:
        """
        The body is written and the request finished when the snapshot
        fires.
        """
        from twisted.internet.defer import Deferred
        from twisted.web.server import NOT_DONE_YET

        d: Deferred[dict[str, Any]] = Deferred()
        request = DummyRequest([b""])
        self.assertIs(StatusPage(lambda: d, asJSON=True).render(request), NOT_DONE_YET)
        self.assertEqual(request.finished, 0)
        d.callback({"connectionsLive": 7})
        self.assertEqual(request.finished, 1)
        self.assertEqual(json.loads(b"".join(request.written)), {"connectionsLive": 7})

    def test_clientGone(self) -> None:
        """
        Nothing is written to a request whose client disconnected first.
        """
        from twisted.internet.defer import Deferred

        d: Deferred[dict[str, Any]] = Deferred()
        request = DummyRequest([b""])
        StatusPage(lambda: d, asJSON=True).render(request)
        request.processingFailed(Exception("gone"))  # type: ignore[arg-type]
        d.callback({"connectionsLive": 7})
        self.assertEqual(request.written, [])


class MergeTests(SynchronousTestCase):
    """
    The supervisor merges its workers' snapshots.
    """

    def test_merge(self) -> None:
        """
        Live figures are summed over workers, connections carry their
        worker and stay busiest first, totals come from the combined
        registry, and an unreachable worker is listed as such.
        """
        metrics = ProxyMetrics()
        metrics.connectionOpened("web")
        metrics.relayFinished(
            RelayResult("splice", 100, 200, 0.1, "done", "closed", None), "web"
        )

        def worker(live: int, up: int, port: int) -> dict[str, Any]:
            return {
                "process": {"uptime": 3.0},
                "connectionsLive": live,
                "pipes": {"inUse": 1, "reserved": 2, "idle": 0, "size": 1 << 20},
                "connections": [
                    {
                        "client": f"127.0.0.1:{port}",
                        "bytesClientToUpstream": up,
                        "bytesUpstreamToClient": 0,
                    }
                ],
                "listeners": [
                    {
                        "forward": "web",
                        "listen": ["tcp:80"],
                        "addresses": ["0.0.0.0:80"],
                        "live": live,
                        "liveBytes": {
                            "client_to_upstream": {"splice": up},
                            "upstream_to_client": {},
                        },
                        "upstreams": [{"name": "up:1", "live": live, "health": None}],
                    }
                ],
            }

        service = type("S", (), {"count": 3, "running": True, "workers": None})()
        status = SupervisorStatus(service, metrics.registry, "/nonexistent")
        snap = status._merge(
            [
                (0, 11, worker(1, 5, 1), None),
                (1, 12, worker(2, 50, 2), None),
                (2, 13, None, "Connection refused"),
            ],
            {0: 1, 1: 2, 2: 1},
        )
        self.assertEqual(snap["process"]["role"], "supervisor")
        self.assertEqual(
            [(w["index"], w["reachable"], w["starts"]) for w in snap["workers"]],
            [(0, True, 1), (1, True, 2), (2, False, 1)],
        )
        self.assertEqual(snap["connectionsLive"], 3)
        self.assertEqual(
            [(r["worker"], r["client"]) for r in snap["connections"]],
            [(1, "127.0.0.1:2"), (0, "127.0.0.1:1")],
        )
        [listener] = snap["listeners"]
        self.assertEqual(listener["live"], 3)
        self.assertEqual(listener["total"], 1)
        self.assertEqual(listener["addresses"], ["0.0.0.0:80"])
        self.assertEqual(listener["upstreams"][0]["live"], 3)
        self.assertEqual(listener["bytes"]["client_to_upstream"], {"splice": 155})
        self.assertEqual(snap["pipes"]["reserved"], 4)
        self.assertEqual(snap["pipes"]["size"], 1 << 20)
        self.assertIn("unreachable", renderHTML(snap))


class HealthResourceTests(SynchronousTestCase):
    """
    L{HealthResource} follows its callable.
    """

    def test_follows(self) -> None:
        """
        The answer changes as soon as the callable does.
        """
        serving = [True]
        health = HealthResource(lambda: serving[0])
        self.assertEqual(_render(health)[0], 200)
        serving[0] = False
        self.assertEqual(_render(health)[0], 503)


# -- a real proxy --------------------------------------------------------------


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """
    GET C{path} from the metrics endpoint: the status code and body.
    """
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as f:
            return f.status, f.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Upstream:
    """
    A loopback upstream that sends L{GREETING} to every client, then reads
    to the end of stream (counting) and closes.
    """

    def __init__(self) -> None:
        self.received = 0
        self.server: Any = None
        self.port = 0

    async def start(self) -> _Upstream:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                w.write(GREETING)
                await w.drain()
                while chunk := await r.read(1 << 16):
                    self.received += len(chunk)
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        self.server, self.port = await startServer(handle)
        return self


async def holdConnection(port: int) -> tuple[Any, Any, str]:
    """
    Connect through the proxy, read the greeting, send L{UPLOAD} and keep
    the connection open.

    @return: the reader, the writer and the client's C{host:port}.
    """
    r, w = await connectProxy(port)
    await r.readexactly(len(GREETING))
    w.write(UPLOAD)
    await w.drain()
    host, cport = w.get_extra_info("sockname")[:2]
    return r, w, f"{host}:{cport}"


def _theConnection(snap: dict[str, Any], client: str) -> dict[str, Any] | None:
    for row in snap["connections"]:
        if row["client"] == client:
            return row
    return None


class _ProxyTestCase(SynchronousTestCase):
    def proxy(self, upstream: int, *extra: str) -> ProxyProcess:
        p = ProxyProcess(
            [
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--connect",
                f"tcp:{LOOPBACK}:{upstream}",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
                *extra,
            ]
        )
        self.addCleanup(p.kill)
        return p

    @staticmethod
    def metricsPort(proxy: ProxyProcess) -> int:
        event = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        return int(event["port"])

    async def settled(self, mport: int, client: str) -> dict[str, Any]:
        """
        Poll /status.json until it lists C{client} with every byte of the
        greeting and the upload counted.
        """
        found: dict[str, Any] = {}

        def check() -> bool:
            snap = json.loads(fetch(mport, "/status.json")[1])
            row = _theConnection(snap, client)
            if row is not None and row["bytesClientToUpstream"] == len(UPLOAD):
                found.update(snap)
                return True
            return False

        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.05)
        return found


class ProcessTests(_ProxyTestCase):
    """
    C{twist splice-proxy --metrics} serves the status page and health.
    """

    def test_liveConnection(self) -> None:
        """
        A live connection is listed in /status.json with its byte counts
        each way, and on /status with the same counts; the listener and its
        upstream are on the page.
        """

        async def scenario() -> tuple[Any, ...]:
            up = await _Upstream().start()
            proxy = self.proxy(up.port)
            port = await asyncio.to_thread(proxy.listeningPort)
            mport = self.metricsPort(proxy)
            r, w, client = await holdConnection(port)
            snap = await self.settled(mport, client)
            page = await asyncio.to_thread(fetch, mport, "/status")
            started = await asyncio.to_thread(
                proxy.waitForEvent, lambda e: e.get("splicetxEvent") == "core"
            )
            w.close()
            up.server.close()
            return snap, page, client, up, port, started

        snap, (code, page), client, up, port, started = runAsync(scenario(), 60)
        row = _theConnection(snap, client)
        assert row is not None
        self.assertEqual(row["bytesUpstreamToClient"], len(GREETING))
        self.assertEqual(row["upstream"], f"{LOOPBACK}:{up.port}")
        self.assertEqual(row["state"], "relaying")
        self.assertIn(row["engine"], ("splice", "copy"))
        self.assertEqual(snap["process"]["role"], "single")
        self.assertTrue(snap["process"]["serving"])
        # The relay core the process runs, in the page and its start log:
        # the one this (unswitched) test process runs under the same
        # environment.
        self.assertEqual(snap["process"]["core"], core.current())
        self.assertEqual(started["core"], core.current())
        [listener] = snap["listeners"]
        self.assertEqual(listener["addresses"], [f"{LOOPBACK}:{port}"])
        self.assertEqual(listener["upstreams"][0]["name"], f"{LOOPBACK}:{up.port}")
        self.assertEqual(code, 200)
        text = page.decode()
        self.assertIn(client, text)
        self.assertIn(f'title="{len(UPLOAD)} bytes"', text)
        self.assertIn(f'title="{len(GREETING)} bytes"', text)
        self.assertIn(f"{LOOPBACK}:{up.port}", text)

    def test_healthzDuringDrain(self) -> None:
        """
        /healthz is 200 while serving; after SIGTERM, while a connection is
        still draining, it is 503 (and /status says draining); the process
        exits once the connection ends.
        """

        async def scenario() -> tuple[Any, ...]:
            up = await _Upstream().start()
            proxy = self.proxy(up.port, "--drain-timeout", "30")
            port = await asyncio.to_thread(proxy.listeningPort)
            mport = self.metricsPort(proxy)
            before = await asyncio.to_thread(fetch, mport, "/healthz")
            r, w, client = await holdConnection(port)
            await self.settled(mport, client)
            proxy.signal(signal.SIGTERM)
            answers: list[tuple[int, bytes]] = []

            def draining() -> bool:
                answers.append(fetch(mport, "/healthz"))
                return answers[-1][0] == 503

            while not await asyncio.to_thread(draining):
                await asyncio.sleep(0.05)
            snap = json.loads(
                (await asyncio.to_thread(fetch, mport, "/status.json"))[1]
            )
            w.write_eof()
            await r.read()
            w.close()
            up.server.close()
            return proxy, before, answers, snap, client

        proxy, before, answers, snap, client = runAsync(scenario(), 60)
        self.assertEqual(before, (200, b"ok\n"))
        self.assertEqual(answers[-1], (503, b"draining\n"))
        self.assertFalse(snap["process"]["serving"])
        self.assertTrue(snap["listeners"][0]["draining"])
        self.assertIsNotNone(_theConnection(snap, client))
        self.assertEqual(proxy.wait(30), 0)


class BrowserTests(_ProxyTestCase):
    """
    The page in a real headless Chromium.
    """

    def test_renderedText(self) -> None:
        """
        Chromium loads /status and its rendered DOM shows the listener's
        address, the upstream, the live connection and the listener's
        rates: connections/s and bytes/s (the live upload counts).
        """
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            raise SkipTest("no chromium")

        async def scenario() -> tuple[Any, ...]:
            up = await _Upstream().start()
            proxy = self.proxy(up.port)
            port = await asyncio.to_thread(proxy.listeningPort)
            mport = self.metricsPort(proxy)
            r, w, client = await holdConnection(port)
            await self.settled(mport, client)
            dom = await asyncio.to_thread(
                subprocess.run,
                [
                    chromium,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--dump-dom",
                    f"http://{LOOPBACK}:{mport}/status",
                ],
                capture_output=True,
                timeout=90,
                text=True,
            )
            w.close()
            up.server.close()
            return dom, port, up.port, client

        dom, port, upPort, client = runAsync(scenario(), 150)
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        self.assertIn("splicetx status", dom.stdout)
        self.assertIn(f"{LOOPBACK}:{port}", dom.stdout)
        self.assertIn(f"{LOOPBACK}:{upPort}", dom.stdout)
        self.assertIn(client, dom.stdout)
        self.assertIn("rates over the last", dom.stdout)
        rate = re.search(r'<b class="rate">([0-9.]+)</b> connections/s', dom.stdout)
        assert rate is not None, dom.stdout[-3000:]
        self.assertGreater(float(rate.group(1)), 0)
        upload = re.search(
            r"<b>([0-9.]+) (B|KiB|MiB)/s</b> client → upstream", dom.stdout
        )
        assert upload is not None, dom.stdout[-3000:]
        self.assertGreater(float(upload.group(1)), 0)


class WorkersTests(_ProxyTestCase):
    """
    With C{--workers 2} the supervisor's page shows every worker.
    """

    def test_everyWorker(self) -> None:
        """
        The supervisor's /status.json lists both workers as reachable, the
        live connection with the worker serving it; its /healthz is 200,
        then 503 after SIGTERM while the connection drains.
        """

        async def scenario() -> tuple[Any, ...]:
            up = await _Upstream().start()
            proxy = self.proxy(up.port, "--workers", "2")
            port = await asyncio.to_thread(proxy.listeningPort)
            for index in (0, 1):
                await asyncio.to_thread(
                    proxy.waitForEvent,
                    lambda e, i=index: (
                        e.get("splicetxEvent") == "ready" and e.get("worker") == i
                    ),
                )
            mport = self.metricsPort(proxy)
            r, w, client = await holdConnection(port)
            snap = await self.settled(mport, client)
            health = await asyncio.to_thread(fetch, mport, "/healthz")
            page = await asyncio.to_thread(fetch, mport, "/status")
            proxy.signal(signal.SIGTERM)
            answers: list[tuple[int, bytes]] = []

            def draining() -> bool:
                answers.append(fetch(mport, "/healthz"))
                return answers[-1][0] == 503

            while not await asyncio.to_thread(draining):
                await asyncio.sleep(0.05)
            w.write_eof()
            await r.read()
            w.close()
            up.server.close()
            return proxy, snap, health, page, client, answers

        proxy, snap, health, (_, page), client, answers = runAsync(scenario(), 90)
        self.assertEqual(snap["process"]["role"], "supervisor")
        self.assertEqual(snap["process"]["pid"], proxy.pid)
        self.assertEqual(snap["process"]["workers"], 2)
        self.assertEqual(
            [(w["index"], w["reachable"]) for w in snap["workers"]],
            [(0, True), (1, True)],
        )
        row = _theConnection(snap, client)
        assert row is not None
        self.assertIn(row["worker"], (0, 1))
        self.assertEqual(row["bytesUpstreamToClient"], len(GREETING))
        self.assertEqual(snap["listeners"][0]["live"], 1)
        self.assertEqual(snap["listeners"][0]["total"], 1)
        self.assertEqual(health, (200, b"ok\n"))
        self.assertIn(b"Workers", page)
        self.assertIn(client.encode(), page)
        self.assertEqual(answers[-1], (503, b"draining\n"))
        self.assertEqual(proxy.wait(30), 0)
