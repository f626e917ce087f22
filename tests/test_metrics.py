"""
Tests for L{splicetx._ops.metrics}: Prometheus metrics of the proxy, their HTTP
endpoint on a real reactor, and how worker processes' figures combine.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from splicetx import PipePool, RelayResult
from splicetx._ops.metrics import (
    ProxyMetrics,
    connectFailureReason,
    markWorkerDead,
    multiprocessRegistry,
    setMultiprocessEnvironment,
    startMetricsEndpoint,
)
from splicetx.testing import ReactorTestMixin, makeReactorTests

SPLICED = RelayResult("splice", 1000, 250, 0.3, "done", "both sides closed", None)
COPIED = RelayResult("copy", 10, 20, 42.0, "reset", "peer reset", "TLS transport")


class RecordingTests(SynchronousTestCase):
    """
    L{ProxyMetrics} turns events and L{RelayResult}s into samples.
    """

    def setUp(self) -> None:
        self.m = ProxyMetrics()

    def value(self, name: str, **labels: str) -> float | None:
        """
        One sample of the private registry.
        """
        return self.m.registry.get_sample_value(name, labels)

    def test_connections(self) -> None:
        """
        Opened connections count in the total and the active gauge; closed
        ones leave the gauge.
        """
        self.m.connectionOpened("a")
        self.m.connectionOpened("a")
        self.m.connectionOpened("b")
        self.m.connectionClosed("a")
        self.assertEqual(self.value("splicetx_connections_total", forward="a"), 2)
        self.assertEqual(self.value("splicetx_connections_active", forward="a"), 1)
        self.assertEqual(self.value("splicetx_connections_active", forward="b"), 1)

    def test_relayFinished(self) -> None:
        """
        Bytes are counted by direction and engine; relays by ending; the copy
        fallback by reason; the duration goes to the histogram.
        """
        self.m.relayFinished(SPLICED, "f")
        self.m.relayFinished(COPIED, "f")
        v = self.value
        self.assertEqual(
            v(
                "splicetx_bytes_total",
                forward="f",
                direction="client_to_upstream",
                engine="splice",
            ),
            1000,
        )
        self.assertEqual(
            v(
                "splicetx_bytes_total",
                forward="f",
                direction="upstream_to_client",
                engine="splice",
            ),
            250,
        )
        self.assertEqual(
            v(
                "splicetx_bytes_total",
                forward="f",
                direction="upstream_to_client",
                engine="copy",
            ),
            20,
        )
        self.assertEqual(
            v("splicetx_relays_total", forward="f", engine="copy", reason="reset"), 1
        )
        self.assertEqual(
            v("splicetx_copy_fallbacks_total", forward="f", reason="TLS transport"), 1
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_count", forward="f"), 2
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_sum", forward="f"), 42.3
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_bucket", forward="f", le="0.25"), 0
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_bucket", forward="f", le="1.0"), 1
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_bucket", forward="f", le="60.0"), 2
        )

    def test_clientIsB(self) -> None:
        """
        With the client as transport B, the directions swap.
        """
        self.m.relayFinished(SPLICED, "f", clientIsA=False)
        self.assertEqual(
            self.value(
                "splicetx_bytes_total",
                forward="f",
                direction="upstream_to_client",
                engine="splice",
            ),
            1000,
        )

    def test_refusedAndConnectFailures(self) -> None:
        """
        Refusals and upstream failures are counted by reason.
        """
        self.m.connectionRefused("acl", "f")
        reason = self.m.connectFailed(Failure(error.ConnectionRefusedError()), "f")
        self.assertEqual(reason, "refused")
        self.assertEqual(
            self.value("splicetx_connections_refused_total", forward="f", reason="acl"),
            1,
        )
        self.assertEqual(
            self.value(
                "splicetx_upstream_connect_failures_total",
                forward="f",
                reason="refused",
            ),
            1,
        )

    def test_pipePool(self) -> None:
        """
        The pipe gauges read the pool at scrape time.
        """
        pool = PipePool(pipeSize=4096, maxPipes=8, maxIdle=4)
        self.addCleanup(pool.close)
        self.m.watchPipePool(pool)
        self.assertEqual(self.value("splicetx_pipes", state="in_use"), 0)
        self.assertTrue(pool.reserve(2))
        pipe = pool.take()
        self.assertEqual(self.value("splicetx_pipes", state="in_use"), 1)
        self.assertEqual(self.value("splicetx_pipes", state="reserved"), 2)
        pool.give(pipe)
        self.assertEqual(self.value("splicetx_pipes", state="in_use"), 0)
        self.assertEqual(self.value("splicetx_pipes", state="idle"), 1)
        self.assertEqual(self.value("splicetx_pipes_max"), 8)

    def test_processSeries(self) -> None:
        """
        The process's series follow the status source: version info,
        draining from the moment it stops serving, worker starts by slot,
        and C{process_start_time_seconds}.
        """
        from splicetx import __version__
        from splicetx._ops.processmetrics import registerProcessMetrics

        class Status:
            serving = True

            def isServing(self) -> bool:
                return self.serving

            def workerStarts(self) -> dict[int, int]:
                return {0: 1, 1: 3}

        status = Status()
        registerProcessMetrics(self.m.registry, status)
        self.assertEqual(self.value("splicetx_info", version=__version__), 1)
        self.assertEqual(self.value("splicetx_draining"), 0)
        status.serving = False
        self.assertEqual(self.value("splicetx_draining"), 1)
        self.assertEqual(self.value("splicetx_worker_starts_total", worker="1"), 3)
        self.assertGreater(self.value("process_start_time_seconds") or 0, 0)

    def test_isolated(self) -> None:
        """
        Two L{ProxyMetrics} do not share values, and neither touches the
        library's global registry.
        """
        from prometheus_client import REGISTRY

        other = ProxyMetrics()
        self.m.connectionOpened("x")
        self.assertIsNone(
            other.registry.get_sample_value(
                "splicetx_connections_total", {"forward": "x"}
            )
        )
        self.assertIsNone(
            REGISTRY.get_sample_value("splicetx_connections_total", {"forward": "x"})
        )

    def test_connectFailureReason(self) -> None:
        """
        Common connection errors map to short, bounded labels.
        """
        cases = [
            (error.ConnectionRefusedError(), "refused"),
            (error.TCPTimedOutError(), "timeout"),
            (error.TimeoutError(), "timeout"),
            (error.DNSLookupError(), "dns"),
            (error.NoRouteError(), "no_route"),
            (CancelledError(), "cancelled"),
            (error.ConnectError("Network is unreachable"), "unreachable"),
            (ValueError("x"), "ValueError"),
        ]
        for exc, reason in cases:
            self.assertEqual(connectFailureReason(Failure(exc)), reason)
            self.assertEqual(connectFailureReason(exc), reason)


class _BodyCollector(Protocol):
    """
    Collects a response body (twisted.web.client.readBody warns on some
    transports).
    """

    def __init__(self, done: Deferred) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        if reason is not None and reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def _readBody(response) -> Deferred:
    """
    Read a whole response body.
    """
    d: Deferred = Deferred()
    response.deliverBody(_BodyCollector(d))
    return d


class EndpointTests(ReactorTestMixin):
    """
    L{startMetricsEndpoint} serves the registry over HTTP on a real reactor.
    """

    scenarioTimeout = 30.0

    def fetch(self, headers: dict[bytes, list[bytes]] | None = None):
        """
        Start the endpoint on an ephemeral loopback port, record a relay,
        GET /metrics with L{Agent}, and return (status, headers, body).
        """
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.http_headers import Headers

        metrics = ProxyMetrics()

        def scenario(reactor):
            pool = HTTPConnectionPool(reactor, persistent=False)
            agent = Agent(reactor, pool=pool)
            state = {}

            def listening(port):
                state["port"] = port
                metrics.connectionOpened("web")
                metrics.relayFinished(SPLICED, "web")
                url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
                return agent.request(b"GET", url, Headers(headers or {}))

            def gotResponse(response):
                state["response"] = response
                return _readBody(response)

            def done(body):
                r = state["response"]
                return (
                    state["port"]
                    .stopListening()
                    .addCallback(lambda _: (r.code, r.headers, body))
                )

            d = startMetricsEndpoint(
                "tcp:0:interface=127.0.0.1", metrics.registry, reactor
            )
            d.addCallback(listening)
            d.addCallback(gotResponse)
            d.addCallback(done)
            return d

        return self.runScenario(scenario)

    def test_exposition(self) -> None:
        """
        The text format holds the recorded figures.
        """
        code, headers, body = self.fetch()
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", headers.getRawHeaders(b"content-type")[0])
        text = body.decode()
        self.assertIn('splicetx_connections_total{forward="web"} 1.0', text)
        self.assertIn('splicetx_connections_active{forward="web"} 1.0', text)
        self.assertIn(
            'splicetx_bytes_total{direction="client_to_upstream",engine="splice",'
            'forward="web"} 1000.0',
            text,
        )
        self.assertIn(
            'splicetx_connection_duration_seconds_count{forward="web"} 1.0', text
        )
        self.assertIn("# TYPE splicetx_connection_duration_seconds histogram", text)

    def test_gzipOpenMetrics(self) -> None:
        """
        A scraper asking for OpenMetrics and gzip gets both.
        """
        code, headers, body = self.fetch(
            {
                b"accept": [b"application/openmetrics-text; version=1.0.0"],
                b"accept-encoding": [b"gzip"],
            }
        )
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertIn(
            b"application/openmetrics-text", headers.getRawHeaders(b"content-type")[0]
        )
        text = gzip.decompress(body).decode()
        self.assertTrue(text.rstrip().endswith("# EOF"))
        self.assertIn(
            'splicetx_relays_total{engine="splice",forward="web",reason="done"} 1.0',
            text,
        )


globals().update(makeReactorTests(EndpointTests))


WORKER = textwrap.dedent(
    """
    import sys
    from splicetx import RelayResult, PipePool
    from splicetx._ops.metrics import ProxyMetrics, isMultiprocess
    from twisted.internet.task import Clock
    assert isMultiprocess()
    m = ProxyMetrics()
    clock = Clock()
    pool = PipePool(pipeSize=4096, maxPipes=8)
    pool.reserve(2)
    m.watchPipePool(pool, reactor=clock)
    n = int(sys.argv[1])
    for i in range(n):
        m.connectionOpened("web")
    m.connectionClosed("web")
    m.relayFinished(RelayResult("splice", 100 * n, 1, 2.0, "done", "", None), "web")
    m.stopWatching()
    """
)


class MultiprocessTests(SynchronousTestCase):
    """
    Figures of several worker processes combine in the supervisor's
    registry.
    """

    def runWorker(self, path: str, n: int) -> None:
        """
        Run one stand-in worker process recording C{n} connections.
        """
        env = setMultiprocessEnvironment(os.environ, path)
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, str(n)],
            env=env,
            timeout=60,
            capture_output=True,
        )
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())

    def test_combined(self) -> None:
        """
        Counters and histograms are summed over workers; live gauges are
        summed over live workers and a dead worker's gauges are dropped.
        """
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path)
        self.runWorker(path, 2)
        self.runWorker(path, 3)
        registry = multiprocessRegistry(path)

        def v(name, **labels):
            return registry.get_sample_value(name, labels)

        self.assertEqual(v("splicetx_connections_total", forward="web"), 5)
        self.assertEqual(v("splicetx_connections_active", forward="web"), 3)
        self.assertEqual(v("splicetx_pipes", state="reserved"), 4)
        self.assertEqual(v("splicetx_pipes_max"), 16)
        self.assertEqual(
            v(
                "splicetx_bytes_total",
                forward="web",
                direction="client_to_upstream",
                engine="splice",
            ),
            500,
        )
        self.assertEqual(
            v("splicetx_connection_duration_seconds_count", forward="web"), 2
        )
        pids = {
            int(f.rsplit("_", 1)[1][:-3])
            for f in os.listdir(path)
            if f.startswith("gauge_livesum_")
        }
        self.assertEqual(len(pids), 2)
        markWorkerDead(min(pids), path)
        registry = multiprocessRegistry(path)
        self.assertIn(
            registry.get_sample_value(
                "splicetx_connections_active", {"forward": "web"}
            ),
            (1, 2),
        )
        self.assertEqual(
            registry.get_sample_value("splicetx_connections_total", {"forward": "web"}),
            5,
        )

    def test_badDirectory(self) -> None:
        """
        A missing directory is refused.
        """
        self.assertRaises(ValueError, multiprocessRegistry, "/nonexistent/metrics")
