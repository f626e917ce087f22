# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for the proxy, with the C{prometheus-client} library.

One L{ProxyMetrics} per proxy process holds the metrics in its own
C{CollectorRegistry} (never the library's global default), so two proxies in
one process, or two tests, do not see each other's figures::

    metrics = ProxyMetrics()
    metrics.watchPipePool(pool)
    metrics.connectionOpened("web")
    ...
    metrics.relayFinished(result, "web")        # a splicetx.RelayResult
    metrics.connectionClosed("web")
    startMetricsEndpoint("tcp:9100:interface=127.0.0.1", metrics.registry)

Exposed (all prefixed C{splicetx_}; C{forward} names the forward, e.g. its
listen endpoint, so one process serving many forwards stays readable):

  - C{connections_active{forward}}: relayed client connections now open.
  - C{connections_total{forward}}: client connections accepted (refused ones
    included).
  - C{connections_refused_total{forward,reason}}: clients closed before any
    upstream connection (C{acl}, C{proxy_protocol}, C{proxy_protocol_timeout},
    C{proxy_protocol_untrusted}).
  - C{bytes_total{forward,direction,engine}}: bytes relayed;
    C{direction} is C{client_to_upstream} or C{upstream_to_client},
    C{engine} is C{splice} or C{copy}.
  - C{relays_total{forward,engine,reason}}: finished relays by how they ended
    (C{done}, C{reset}, C{error}, C{cancelled}, C{closed}).
  - C{copy_fallbacks_total{forward,reason}}: relays that used the copy
    engine, by L{RelayResult.fallbackReason <splicetx.RelayResult>}.
  - C{upstream_connect_failures_total{forward,reason}}: failed upstream
    connects (C{refused}, C{timeout}, C{dns}, C{no_route}, ...): every
    try, also one that a pool then made good on another member, as
    HAProxy's backend connection errors count; plus C{no_upstream} once
    for each client a pool could connect to no member.
  - C{connection_duration_seconds{forward}}: a histogram of relay durations.
  - C{pipes{state}}: the kernel pipes of the process's L{PipePool}:
    C{in_use} (holding data in flight), C{reserved} (by live spliced
    relays), C{idle} (kept open for reuse).
  - C{pipes_max}: the cap on reserved pipes (past it the fast path waits
    and the general path copies): C{reserved / pipes_max} is how close the
    process is to running out.

L{splicetx._ops.processmetrics} adds the process's own series (version,
draining, worker starts, and C{prometheus_client}'s C{process_*}).

B{With several worker processes} the library's multiprocess mode combines
the figures: the supervisor creates an empty directory and starts every
worker with C{PROMETHEUS_MULTIPROC_DIR} set to it; workers write their
values to memory-mapped files there, and the supervisor alone serves the
endpoint with L{multiprocessRegistry}, which adds them up: counters and the
histogram are summed over every worker that ever ran (so they never go back
when a worker is restarted), and the gauges are C{livesum}: the sum over
live workers (L{markWorkerDead} drops a dead worker's gauges).  In that mode
the pipe gauges are sampled every few seconds instead of at scrape time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from zope.interface import implementer

from splicetx._proxy.interfaces import IProxyMetrics
from splicetx._relay.runtime import defaultReactor

__all__ = [
    "ProxyMetrics",
    "MetricsResource",
    "startMetricsEndpoint",
    "multiprocessRegistry",
    "markWorkerDead",
    "isMultiprocess",
    "setMultiprocessEnvironment",
    "connectFailureReason",
    "DURATION_BUCKETS",
]

#: Connection duration buckets, in seconds: relayed connections live from
#: milliseconds (a health check) to hours (a database session).
DURATION_BUCKETS = (
    0.005,
    0.05,
    0.25,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    float("inf"),
)

CLIENT_TO_UPSTREAM = "client_to_upstream"
UPSTREAM_TO_CLIENT = "upstream_to_client"


def isMultiprocess() -> bool:
    """
    Tell whether C{prometheus-client} runs in multiprocess mode in this
    process (C{PROMETHEUS_MULTIPROC_DIR} was set when it was imported).
    """
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def connectFailureReason(failure: Any) -> str:
    """
    Give a short, bounded label for why an upstream connection failed.

    @param failure: a L{Failure <twisted.python.failure.Failure>} or an
        exception.
    @return: C{"refused"}, C{"timeout"}, C{"dns"}, C{"no_route"},
        C{"cancelled"}, C{"unreachable"}, C{"no_upstream"} (a pool could
        reach none of its upstreams) or the exception's class name.
    """
    from splicetx._pool.pool import NoUpstreamAvailable, failureReason

    if isinstance(getattr(failure, "value", failure), NoUpstreamAvailable):
        return "no_upstream"
    return failureReason(failure)


class _PipePoolCollector:
    """
    Reads a L{PipePool}'s counters when the registry is scraped.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def collect(self) -> Any:
        g = GaugeMetricFamily(
            "splicetx_pipes", "Kernel pipes of the splice engine.", labels=["state"]
        )
        g.add_metric(["in_use"], self.pool.inUse)
        g.add_metric(["reserved"], self.pool.reserved)
        g.add_metric(["idle"], self.pool.idle)
        yield g
        yield GaugeMetricFamily(
            "splicetx_pipes_max",
            "The cap on kernel pipes reserved by live spliced relays.",
            value=self.pool.maxPipes,
        )


@implementer(IProxyMetrics)
class ProxyMetrics:
    """
    The metrics of one proxy process (see the module docstring).

    @ivar registry: the private C{CollectorRegistry} holding them.
    @ivar multiprocess: whether values go to the multiprocess directory.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """
        @param registry: where to register; default a new private one.
        """
        self.registry = CollectorRegistry() if registry is None else registry
        self.multiprocess = isMultiprocess()
        r = self.registry
        self.active = Gauge(
            "splicetx_connections_active",
            "Relayed client connections now open.",
            ["forward"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "splicetx_connections",
            "Client connections accepted.",
            ["forward"],
            registry=r,
        )
        self.refused = Counter(
            "splicetx_connections_refused",
            "Client connections closed before any upstream connection.",
            ["forward", "reason"],
            registry=r,
        )
        self.bytes = Counter(
            "splicetx_bytes",
            "Bytes relayed.",
            ["forward", "direction", "engine"],
            registry=r,
        )
        self.relays = Counter(
            "splicetx_relays",
            "Finished relays by engine and ending.",
            ["forward", "engine", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "splicetx_copy_fallbacks",
            "Relays that used the copy engine, by reason.",
            ["forward", "reason"],
            registry=r,
        )
        self.connectFailures = Counter(
            "splicetx_upstream_connect_failures",
            "Failed upstream connections, by reason.",
            ["forward", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "splicetx_connection_duration_seconds",
            "Relay durations.",
            ["forward"],
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self._pipes: Gauge | None = None
        self._pipeLoop: Any = None
        # Label children by (metric, label values): labels() validates and
        # locks on every call, which costs more per connection than the
        # increments themselves.  Label values are bounded, so is this.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def connectionOpened(self, forward: str = "default") -> None:
        """
        Count an accepted client connection and mark it active.
        """
        self._child(self.connections, forward).inc()
        self._child(self.active, forward).inc()

    def connectionClosed(self, forward: str = "default") -> None:
        """
        Mark a client connection counted by L{connectionOpened} as gone.
        """
        self._child(self.active, forward).dec()

    def connectionRefused(self, reason: str, forward: str = "default") -> None:
        """
        Count a client closed before any upstream connection.

        @param reason: a short bounded label: C{"acl"}, C{"proxy_protocol"},
            C{"proxy_protocol_timeout"}, C{"proxy_protocol_untrusted"}.
        """
        self.refused.labels(forward, reason).inc()

    def connectFailed(self, failure: Any, forward: str = "default") -> str:
        """
        Count a failed upstream connection.

        @param failure: the L{twisted.python.failure.Failure} or exception (see
            L{connectFailureReason}).
        @return: the reason label used.
        """
        reason = connectFailureReason(failure)
        self.connectFailures.labels(forward, reason).inc()
        return reason

    def relayFinished(
        self, result: Any, forward: str = "default", clientIsA: bool = True
    ) -> None:
        """
        Record a finished relay.

        @param result: the L{splicetx.RelayResult}.
        @param forward: the forward's label.
        @param clientIsA: C{True} when the relay was started as C{relay(client,
            upstream)}, so C{bytesAToB} flowed from the client to the upstream.
        """
        up, down = result.bytesAToB, result.bytesBToA
        if not clientIsA:
            up, down = down, up
        engine = result.engine
        child = self._child
        if up:
            child(self.bytes, forward, CLIENT_TO_UPSTREAM, engine).inc(up)
        if down:
            child(self.bytes, forward, UPSTREAM_TO_CLIENT, engine).inc(down)
        child(self.relays, forward, engine, result.reason).inc()
        if result.fallbackReason is not None:
            # Free text: not cached (the label set is the library's concern).
            self.fallbacks.labels(forward, result.fallbackReason).inc()
        child(self.duration, forward).observe(max(0.0, result.duration))

    def watchPipePool(
        self, pool: Any, reactor: Any = None, interval: float = 5.0
    ) -> None:
        """
        Export a L{PipePool}'s C{inUse}, C{reserved} and C{idle} counts.

        In a single process they are read at scrape time.  In multiprocess
        mode (workers) a scrape cannot reach into the worker, so they are
        sampled every C{interval} seconds on C{reactor} until
        L{stopWatching}.

        @param pool: the L{PipePool}.
        @param reactor: the reactor for the sampling timer (multiprocess
            mode only); default the global one.
        @param interval: seconds between samples (multiprocess mode only).
        """
        if not self.multiprocess:
            self.registry.register(_PipePoolCollector(pool))
            return
        from twisted.internet.task import LoopingCall

        reactor = defaultReactor(reactor)
        self._pipes = Gauge(
            "splicetx_pipes",
            "Kernel pipes of the splice engine.",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        pipesMax = Gauge(
            "splicetx_pipes_max",
            "The cap on kernel pipes reserved by live spliced relays.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        def sample() -> None:
            assert self._pipes is not None
            self._pipes.labels("in_use").set(pool.inUse)
            self._pipes.labels("reserved").set(pool.reserved)
            self._pipes.labels("idle").set(pool.idle)
            pipesMax.set(pool.maxPipes)

        loop = LoopingCall(sample)
        loop.clock = reactor
        loop.start(interval, now=True)
        self._pipeLoop = loop

    def stopWatching(self) -> None:
        """
        Stop the pipe sampling timer started by L{watchPipePool}, if any.
        """
        if self._pipeLoop is not None and self._pipeLoop.running:
            self._pipeLoop.stop()
        self._pipeLoop = None


def multiprocessRegistry(path: str) -> CollectorRegistry:
    """
    Make a registry that combines the values every worker wrote to C{path}
    (see the module docstring).  For the supervisor's endpoint.

    @param path: the directory given to workers as
        C{PROMETHEUS_MULTIPROC_DIR}.
    @raise ValueError: when C{path} is not a directory.
    """
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return registry


def markWorkerDead(pid: int, path: str) -> None:
    """
    Drop the C{livesum} gauges of a worker that exited, so active
    connections and pipes count live workers only.  Its counters stay.

    @param pid: the worker's process id.
    @param path: the multiprocess directory.
    """
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path)


def _resourceClass() -> type:
    from twisted.web.resource import Resource

    class _MetricsResource(Resource):
        isLeaf = True

        def __init__(self, registry: CollectorRegistry) -> None:
            super().__init__()
            self.registry = registry

        def render_GET(self, request: Any) -> bytes:
            from prometheus_client.exposition import choose_encoder, gzip_accepted

            accept = (request.getHeader(b"accept") or b"").decode("latin-1")
            encoder, contentType = choose_encoder(accept)
            output = encoder(self.registry)
            request.setHeader(b"content-type", contentType.encode("ascii"))
            encoding = (request.getHeader(b"accept-encoding") or b"").decode("latin-1")
            if gzip_accepted(encoding):
                import gzip

                output = gzip.compress(output)
                request.setHeader(b"content-encoding", b"gzip")
            return output

    return _MetricsResource


def MetricsResource(registry: CollectorRegistry) -> Any:
    """
    A C{twisted.web} resource serving C{registry} in the Prometheus text
    format (or OpenMetrics when the scraper asks for it; gzipped when it
    accepts gzip).

    C{prometheus_client.twisted.MetricsResource} is not used: it imports the
    global reactor when imported and renders on the global reactor's thread
    pool, which neither suits an injected reactor nor is needed, since
    rendering an in-memory registry takes microseconds.

    @param registry: what to serve.
    """
    return _resourceClass()(registry)


def startMetricsEndpoint(
    description: str,
    registry: CollectorRegistry,
    reactor: Any = None,
    children: dict[bytes, Any] | None = None,
    access: Any = None,
) -> Any:
    """
    Listen for scrapes on a Twisted server endpoint: C{GET /metrics}.

    @param description: a server endpoint string, e.g.
        C{tcp:9100:interface=127.0.0.1}.
    @param registry: what to serve (L{ProxyMetrics.registry} or
        L{multiprocessRegistry}).
    @param reactor: the reactor; default the global one.
    @param children: more resources to serve, by path segment (e.g. the
        status page of L{splicetx._ops.status.statusResources}).
    @param access: an L{AccessControl <splicetx.AccessControl>} of who may
        connect (others are closed at once, unanswered), or C{None}.
    @return: a L{Deferred <twisted.internet.defer.Deferred>} firing with the
        L{IListeningPort <twisted.internet.interfaces.IListeningPort>}.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.web.resource import Resource

    from splicetx._ops.statusweb import QuietSite

    reactor = defaultReactor(reactor)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    for path, child in (children or {}).items():
        root.putChild(path, child)
    site = QuietSite(root, reactor=reactor)
    site.access = access
    from splicetx._proxy.tls import withServerALPN

    # An ssl: metrics endpoint must serve browsers and curl too (ALPN).
    return withServerALPN(serverFromString(reactor, description)).listen(site)


def setMultiprocessEnvironment(env: dict[str, str], path: str) -> dict[str, str]:
    """
    Return a copy of C{env} that puts a child process's metrics in C{path}.

    @param env: the child's environment.
    @param path: the multiprocess directory.
    """
    env = dict(env)
    env["PROMETHEUS_MULTIPROC_DIR"] = path
    env.pop("prometheus_multiproc_dir", None)
    return env
