# -*- test-case-name: tests.test_status -*-
"""
The status page of the C{--metrics} endpoint, next to C{/metrics}:

  - C{GET /status}: an HTML page (L{splicetx._ops.statushtml}: no script, no
    external assets; it reloads itself every few seconds) showing the process, every
    listener with its upstream(s) and figures, the kernel pipes and the
    busiest live connections.
  - C{GET /status.json}: the same data as JSON (documented field by field in
    C{docs/status.md}).
  - C{GET /healthz}: C{200 ok} while the process serves, C{503 draining}
    from the moment a drain starts (the endpoint itself stays up during the
    drain).

A snapshot is a plain C{dict} built on request, never on a timer, so a
process nobody polls pays nothing.  L{ServiceStatus} takes it from a running
L{SpliceProxyService <splicetx._app.tap.SpliceProxyService>}: live connections
come from each factory's C{liveProtocols} (their relays' live byte counts),
totals from the L{ProxyMetrics <splicetx._ops.metrics.ProxyMetrics>} registry
plus the live relays' bytes.

With C{--workers N} (see L{splicetx._app.processes}) every worker serves its own
snapshot on a UNIX socket in a private directory the supervisor names in
C{SPLICETX_STATUS_DIR} (the supervisor's metrics directory); the
supervisor's L{SupervisorStatus} fetches every live worker's C{/status.json}
on each request and merges them: per-listener totals come from the
combined metrics registry (so they include workers that have since been
restarted, as C{/metrics} does), live figures are summed over the workers,
and live connections carry the worker's index.

A factory that balances over several upstreams (pools) can describe them by
having an C{upstreamStatus()} method returning a list of C{dict}s with at
least C{"name"} (and optionally C{"health"}, C{"live"}, C{"total"}); without
it a listener shows its one configured upstream, with no health check.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.web.resource import Resource

from splicetx._ops.statushtml import REFRESH_SECONDS, renderHTML
from splicetx._ops.statusrates import RateRing, applyRates
from splicetx._ops.statusweb import (
    HealthResource,
    QuietSite,
    StatusPage,
    statusResources,
)
from splicetx._ops.udpstats import isUDPForwarder, udpListenerStatus
from splicetx._pool.addresses import describeAddress, describeEndpoint
from splicetx._relay import core
from splicetx._relay.runtime import LOG_STATUS, __version__, defaultReactor

__all__ = [
    "ENV_STATUS_DIR",
    "SCHEMA",
    "DEFAULT_CONNECTION_LIMIT",
    "REFRESH_SECONDS",
    "ServiceStatus",
    "SupervisorStatus",
    "StatusPage",
    "HealthResource",
    "statusResources",
    "renderHTML",
    "connectionStatus",
    "fetchWorkerStatus",
    "registryTotals",
    "processVersion",
    "setStatusEnvironment",
    "startWorkerStatusEndpoint",
    "workerSocketPath",
]

_log = Logger(namespace=LOG_STATUS)

#: The environment variable naming the directory of the workers' status
#: sockets.
ENV_STATUS_DIR = "SPLICETX_STATUS_DIR"

#: The version of the JSON layout (C{"schema"}); bumped on incompatible
#: changes.
SCHEMA = 1

#: How many live connections a snapshot lists (the busiest).
DEFAULT_CONNECTION_LIMIT = 100

#: How long the supervisor waits for one worker's snapshot.
WORKER_TIMEOUT = 2.0

CLIENT_TO_UPSTREAM = "client_to_upstream"
UPSTREAM_TO_CLIENT = "upstream_to_client"
_DIRECTIONS = (CLIENT_TO_UPSTREAM, UPSTREAM_TO_CLIENT)

# Counter samples read from the metrics registry, by sample name: the
# listener field they fill and the label that keys it (None: a number).
_COUNTERS = {
    "splicetx_connections_total": ("total", None),
    "splicetx_connections_refused_total": ("refused", "reason"),
    "splicetx_upstream_connect_failures_total": ("connectFailures", "reason"),
    "splicetx_copy_fallbacks_total": ("fallbacks", "reason"),
    "splicetx_relays_total": ("endings", "reason"),
}


def processVersion() -> str:
    """
    The splicetx version (C{splicetx.__version__}).
    """
    return __version__


def _emptyBytes() -> dict[str, dict[str, int]]:
    return {CLIENT_TO_UPSTREAM: {}, UPSTREAM_TO_CLIENT: {}}


def _emptyListener(forward: str) -> dict[str, Any]:
    return {
        "forward": forward,
        "listen": [],
        "addresses": [],
        "upstreams": [],
        "live": 0,
        "total": 0,
        "refused": {},
        "connectFailures": {},
        "endings": {},
        "fallbacks": {},
        "bytes": _emptyBytes(),
        "liveBytes": _emptyBytes(),
        "draining": False,
        "maxConnections": None,
    }


def _add(table: dict[str, Any], key: str, value: float) -> None:
    table[key] = table.get(key, 0) + int(value)


def _addBytes(into: dict[str, dict[str, int]], more: Mapping[str, Any]) -> None:
    for direction in _DIRECTIONS:
        for engine, n in (more.get(direction) or {}).items():
            _add(into[direction], engine, n)


def registryTotals(registry: Any) -> dict[str, dict[str, Any]]:
    """
    Read the counters of a metrics registry, by forward: the finished
    relays' bytes (by direction and engine), connections accepted, refused,
    failed upstream connections, copy fallbacks and relay endings.

    @param registry: a C{prometheus_client} registry (L{ProxyMetrics.registry
        <splicetx._ops.metrics.ProxyMetrics>} or the supervisor's combined one),
        or C{None}.
    @return: C{{forward: {"total": n, "refused": {...}, "bytes": {...},
        ...}}}.
    """
    out: dict[str, dict[str, Any]] = {}
    if registry is None:
        return out
    for family in registry.collect():
        if not family.name.startswith("splicetx_"):
            continue
        for sample in family.samples:
            name = sample.name
            if name == "splicetx_bytes_total":
                labels = sample.labels
                totals = out.setdefault(labels.get("forward", "default"), {})
                table = totals.setdefault("bytes", _emptyBytes())
                direction = labels.get("direction")
                if direction in table:
                    _add(table[direction], labels.get("engine", "?"), sample.value)
                continue
            spec = _COUNTERS.get(name)
            if spec is None:
                continue
            field, key = spec
            totals = out.setdefault(sample.labels.get("forward", "default"), {})
            if key is None:
                totals[field] = totals.get(field, 0) + int(sample.value)
            else:
                _add(
                    totals.setdefault(field, {}),
                    sample.labels.get(key, "?"),
                    sample.value,
                )
    return out


def _applyTotals(listener: dict[str, Any], totals: Mapping[str, Any]) -> None:
    """
    Fill a listener's counters from L{registryTotals}, then add the live
    relays' bytes to the finished ones.
    """
    listener["total"] = int(totals.get("total", 0))
    for field in ("refused", "connectFailures", "fallbacks", "endings"):
        listener[field] = dict(totals.get(field) or {})
    listener["bytes"] = _emptyBytes()
    _addBytes(listener["bytes"], totals.get("bytes") or {})
    _addBytes(listener["bytes"], listener["liveBytes"])


def _clientText(proto: Any) -> str:
    text = getattr(proto, "clientText", None)
    if text is not None:
        return str(text)
    header = getattr(proto, "proxyHeader", None)
    if header is not None and getattr(header, "source", None) is not None:
        return describeAddress(header.source)
    transport = getattr(proto, "transport", None)
    if transport is None:
        return "(gone)"
    return describeAddress(transport.getPeer())


def _upstreamName(proto: Any, factory: Any) -> str:
    return describeEndpoint(
        getattr(proto, "upstreamEndpoint", None) or factory.upstream
    )


def connectionStatus(proto: Any, factory: Any, now: float) -> dict[str, Any]:
    """
    Describe one live connection.

    @param proto: a L{SpliceProxyProtocol <splicetx.proxy.SpliceProxyProtocol>}.
    @param factory: its factory.
    @param now: the reactor's time.
    @return: C{client}, C{upstream}, C{forward}, C{state} (C{"connecting"},
        C{"connected"} or C{"relaying"}), C{engine} (C{None} before the
        relay), C{bytesClientToUpstream}, C{bytesUpstreamToClient} and
        C{age} in seconds.
    """
    relay = getattr(proto, "relay", None)
    upstream = getattr(proto, "upstream", None)
    upstreamTransport = getattr(upstream, "transport", None)
    if upstreamTransport is not None:
        upstreamText = describeAddress(upstreamTransport.getPeer())
    else:
        upstreamText = _upstreamName(proto, factory)
    if relay is not None:
        state = "relaying"
        up, down = relay.bytesAToB, relay.bytesBToA
        engine = relay.engine
    else:
        state = "connected" if upstream is not None else "connecting"
        up = down = 0
        engine = None
    return {
        "forward": factory.forwardName,
        "client": _clientText(proto),
        "upstream": upstreamText,
        "state": state,
        "engine": engine,
        "bytesClientToUpstream": up,
        "bytesUpstreamToClient": down,
        "age": round(max(0.0, now - proto.startedAt), 3),
    }


def _busiest(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    def size(row: dict[str, Any]) -> int:
        return row["bytesClientToUpstream"] + row["bytesUpstreamToClient"]

    return heapq.nlargest(limit, rows, key=size)


def _pipes(pool: Any) -> dict[str, Any] | None:
    if pool is None:
        return None
    return {
        "inUse": pool.inUse,
        "reserved": pool.reserved,
        "idle": pool.idle,
        "created": pool.created,
        "max": pool.maxPipes,
        "size": pool.pipeSize,
    }


def _memberName(proto: Any, endpoint: Any) -> str | None:
    """
    The name of the pool member a live connection goes to (as its
    C{upstreamStatus()} row names it), or C{None} outside a pool: the fast
    path's connection has a C{member}, the general path's endpoint (a
    L{PoolEndpoint <splicetx.pools.PoolEndpoint>} or
    L{UpstreamEndpoint <splicetx.pools.UpstreamEndpoint>}) an
    C{upstream}.
    """
    member = getattr(proto, "member", None) or getattr(endpoint, "upstream", None)
    name = getattr(member, "description", None)
    return name if isinstance(name, str) else None


def _addMemberBytes(
    upstreams: list[dict[str, Any]], memberBytes: Mapping[str, list[int]]
) -> None:
    """
    Add the live relays' bytes to the finished ones of the upstream rows
    that count bytes (a pool's members).
    """
    for row in upstreams:
        table = row.get("bytes")
        sums = memberBytes.get(row.get("name", ""))
        if table is None or sums is None:
            continue
        row["bytes"] = {
            CLIENT_TO_UPSTREAM: int(table.get(CLIENT_TO_UPSTREAM) or 0) + sums[0],
            UPSTREAM_TO_CLIENT: int(table.get(UPSTREAM_TO_CLIENT) or 0) + sums[1],
        }


def _plainUpstream(name: str, live: int) -> dict[str, Any]:
    """
    The row of an upstream outside a pool: no health check, and no counters
    of its own (the listener's are its).
    """
    return {
        "name": name,
        "health": None,
        "live": live,
        "total": None,
        "failures": None,
        "bytes": None,
    }


def _boundAddresses(ports: list[Any], factory: Any) -> list[str]:
    out = []
    for port in ports:
        if getattr(port, "factory", None) is factory:
            try:
                out.append(describeAddress(port.getHost()))
            except Exception:
                pass
    return out


class ServiceStatus:
    """
    Snapshots of one proxy process (a single process, or one worker), read
    from its L{SpliceProxyService <splicetx._app.tap.SpliceProxyService>}.

    The service is read on each L{snapshot}, not when this is made, so it
    can be made before the service has built its factories.

    @ivar service: the service: its C{factories}, C{forwards} (for the
        listen strings), C{ports}, C{metrics} and C{running} are read.
    @ivar limit: how many live connections a snapshot lists.
    @ivar worker: this process's worker slot under C{--workers}, or C{None}
        for a process serving on its own.
    @ivar startedAt: when this process started serving (UNIX time).
    @ivar rates: the samples the snapshots' rates are taken from (see
        L{splicetx._ops.statusrates}).
    """

    def __init__(
        self,
        service: Any,
        reactor: Any = None,
        limit: int = DEFAULT_CONNECTION_LIMIT,
        worker: int | None = None,
    ) -> None:
        """
        @param service: see L{service}.
        @param reactor: the reactor (its clock dates connections); default
            the service's, else the global one.
        @param limit: see L{limit}.
        @param worker: see L{worker}.
        """
        self.service = service
        self._reactor = reactor
        self.limit = limit
        self.worker = worker
        self.startedAt = time.time()
        # Every counter is zero now: the first snapshot's rates are
        # averaged since this moment.
        self.rates = RateRing(start=self.reactor.seconds())

    @property
    def reactor(self) -> Any:
        """
        The reactor whose clock dates the connections.
        """
        if self._reactor is None:
            self._reactor = defaultReactor(getattr(self.service, "reactor", None))
        return self._reactor

    def isServing(self) -> bool:
        """
        C{True} while the service runs and has not begun to drain.
        """
        return bool(getattr(self.service, "running", False))

    def _processInfo(self, role: str, workers: int | None) -> dict[str, Any]:
        return {
            "version": processVersion(),
            "pid": os.getpid(),
            "role": role,
            "worker": self.worker,
            "workers": workers,
            "startedAt": round(self.startedAt, 3),
            "uptime": round(max(0.0, time.time() - self.startedAt), 3),
            "serving": self.isServing(),
            "python": sys.version.split()[0],
            "reactor": type(self.reactor).__name__,
            "core": core.current(),
        }

    def snapshot(self) -> dict[str, Any]:
        """
        Describe the process now (see C{docs/status.md} for the fields).
        """
        service = self.service
        factories = list(getattr(service, "factories", None) or [])
        config = getattr(service, "config", None)
        forwards = list(getattr(config, "forwards", None) or [])
        ports = list(getattr(service, "ports", None) or [])
        metrics = getattr(service, "metrics", None)
        totals = registryTotals(getattr(metrics, "registry", None))
        now = self.reactor.seconds()
        listeners = []
        candidates: list[tuple[int, Any, Any]] = []
        live = 0
        for i, factory in enumerate(factories):
            given = list(forwards[i].listens) if i < len(forwards) else []
            if isUDPForwarder(factory):
                listeners.append(
                    udpListenerStatus(factory, given, factory.describeListeners())
                )
                live += len(factory.liveProtocols)
                continue
            listener = _emptyListener(factory.forwardName)
            listener["listen"] = given
            listener["addresses"] = _boundAddresses(ports, factory)
            listener["draining"] = bool(getattr(factory, "draining", False))
            listener["maxConnections"] = getattr(factory, "maxConnections", None)
            byUpstream: dict[str, int] = {}
            memberBytes: dict[str, list[int]] = {}
            names: dict[int, str] = {}
            up = listener["liveBytes"][CLIENT_TO_UPSTREAM]
            down = listener["liveBytes"][UPSTREAM_TO_CLIENT]
            # One cheap pass over every live connection (bytes and upstream
            # only); the full rows are built for the busiest ones alone.
            for proto in list(factory.liveProtocols):
                endpoint = proto.upstreamEndpoint or factory.upstream
                name = names.get(id(endpoint))
                if name is None:
                    name = names[id(endpoint)] = describeEndpoint(endpoint)
                byUpstream[name] = byUpstream.get(name, 0) + 1
                relay = proto.relay
                if relay is None:
                    candidates.append((0, proto, factory))
                    continue
                a, b = relay.bytesAToB, relay.bytesBToA
                engine = relay.engine
                if engine is not None:
                    up[engine] = up.get(engine, 0) + a
                    down[engine] = down.get(engine, 0) + b
                    member = _memberName(proto, endpoint)
                    if member is not None:
                        sums = memberBytes.setdefault(member, [0, 0])
                        sums[0] += a
                        sums[1] += b
                candidates.append((a + b, proto, factory))
            listener["live"] = len(factory.liveProtocols)
            live += listener["live"]
            listener["upstreams"] = self._upstreams(factory, byUpstream)
            _addMemberBytes(listener["upstreams"], memberBytes)
            _applyTotals(listener, totals.get(factory.forwardName, {}))
            listeners.append(listener)
        pool = next((f.pipePool for f in factories if not isUDPForwarder(f)), None)
        rows = []
        for _, proto, factory in heapq.nlargest(
            self.limit, candidates, key=lambda c: c[0]
        ):
            try:
                rows.append(connectionStatus(proto, factory, now))
            except Exception:
                _log.failure("cannot describe {proto!r}", proto=proto)
        snap = {
            "schema": SCHEMA,
            "generatedAt": round(time.time(), 3),
            "process": self._processInfo(
                "worker" if self.worker is not None else "single", None
            ),
            "workers": [],
            "listeners": listeners,
            "pipes": _pipes(pool),
            "connectionsLive": live,
            "connectionsLimit": self.limit,
            "connections": rows,
        }
        return applyRates(snap, self.rates, now)

    def _upstreams(
        self, factory: Any, byUpstream: dict[str, int]
    ) -> list[dict[str, Any]]:
        describe = getattr(factory, "upstreamStatus", None)
        if callable(describe):
            upstreams = [dict(u) for u in describe()]
            for u in upstreams:
                u.setdefault("health", None)
                u.setdefault("live", byUpstream.get(u.get("name", ""), 0))
                u.setdefault("total", None)
                u.setdefault("failures", None)
                u.setdefault("bytes", None)
            return upstreams
        name = describeEndpoint(factory.upstream)
        upstreams = [_plainUpstream(name, byUpstream.pop(name, 0))]
        # Upstreams chosen per connection by a subclass.
        for other, count in sorted(byUpstream.items()):
            upstreams.append(_plainUpstream(other, count))
        return upstreams


# -- workers ------------------------------------------------------------------


def workerSocketPath(directory: str, pid: int) -> str:
    """
    Where the worker with process id C{pid} serves its status.
    """
    return os.path.join(directory, f"status-{pid}.sock")


def setStatusEnvironment(env: dict[str, str], directory: str) -> dict[str, str]:
    """
    Return a copy of C{env} that makes a worker serve its status in
    C{directory}.
    """
    env = dict(env)
    env[ENV_STATUS_DIR] = directory
    return env


def startWorkerStatusEndpoint(
    status: ServiceStatus,
    reactor: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """
    In a worker started with C{SPLICETX_STATUS_DIR}, serve C{/status.json}
    on a UNIX socket there, for the supervisor.

    @param status: the worker's L{ServiceStatus}.
    @param reactor: an C{IReactorUNIX}; default the global one.
    @param environ: the environment (default C{os.environ}).
    @return: the listening port, or C{None} without the variable.
    """
    env = os.environ if environ is None else environ
    directory = env.get(ENV_STATUS_DIR)
    if not directory:
        return None
    reactor = defaultReactor(reactor)
    root = Resource()
    root.putChild(b"status.json", StatusPage(status.snapshot, asJSON=True))
    site = QuietSite(root, reactor=reactor)
    path = workerSocketPath(directory, os.getpid())
    try:
        return reactor.listenUNIX(path, site, mode=0o600)
    except Exception:
        _log.failure("cannot serve the worker's status on {path}", path=path)
        return None


class _UNIXEndpointFactory:
    def __init__(self, reactor: Any, path: str) -> None:
        self.reactor = reactor
        self.path = path

    def endpointForURI(self, uri: Any) -> Any:
        from twisted.internet.endpoints import UNIXClientEndpoint

        return _QuietEndpoint(
            UNIXClientEndpoint(self.reactor, self.path, timeout=WORKER_TIMEOUT)
        )


class _QuietEndpoint:
    """
    An endpoint whose connections' factories log no start and stop lines
    (the supervisor fetches every worker's status at each refresh).
    """

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def connect(self, factory: Any) -> Any:
        factory.noisy = False
        return self.endpoint.connect(factory)


def fetchWorkerStatus(path: str, reactor: Any = None) -> Deferred[dict[str, Any]]:
    """
    Fetch a worker's snapshot from its status socket.

    @param path: the socket (L{workerSocketPath}).
    @param reactor: the reactor; default the global one.
    @return: a L{Deferred} firing with the decoded snapshot, or failing
        (connection refused, timeout after L{WORKER_TIMEOUT} s, bad answer).
    """
    from twisted.web.client import Agent, readBody

    reactor = defaultReactor(reactor)
    agent = Agent.usingEndpointFactory(reactor, _UNIXEndpointFactory(reactor, path))
    d = agent.request(b"GET", b"http://worker/status.json")

    def got(response: Any) -> Any:
        if response.code != 200:
            raise ValueError(f"HTTP {response.code}")
        return readBody(response)

    d.addCallback(got)
    d.addCallback(lambda body: json.loads(body.decode("utf-8")))
    d.addTimeout(WORKER_TIMEOUT, reactor)
    return d


class SupervisorStatus(ServiceStatus):
    """
    Snapshots of a C{--workers} supervisor: its own process, every worker,
    and their listeners and connections merged (see the module docstring).

    @ivar service: the L{SpliceProxySupervisorService
        <splicetx._app.tap.SpliceProxySupervisorService>}: its C{workers} (a
        L{WorkerSupervisor <splicetx._app.processes.WorkerSupervisor>}), C{count}
        and C{running} are read.
    @ivar registry: the combined metrics registry, for the totals.
    @ivar directory: the workers' status directory.
    """

    def __init__(
        self,
        service: Any,
        registry: Any,
        directory: str,
        reactor: Any = None,
        limit: int = DEFAULT_CONNECTION_LIMIT,
    ) -> None:
        """
        @param service: see L{service}.
        @param registry: see L{registry}.
        @param directory: see L{directory}.
        @param reactor: the reactor; default the service's.
        @param limit: how many live connections a snapshot lists.
        """
        super().__init__(service, reactor, limit)
        self.registry = registry
        self.directory = directory

    def snapshot(self) -> Deferred[dict[str, Any]]:  # type: ignore[override]
        """
        Fetch every live worker's snapshot and merge them.

        @return: a L{Deferred} firing with the merged snapshot; a worker that
            does not answer is listed with C{reachable} false.
        """
        supervisor = getattr(self.service, "workers", None)
        pids = dict(supervisor.pids) if supervisor is not None else {}
        starts = self.workerStarts()

        def fetch(index: int, pid: int) -> Deferred[tuple[Any, ...]]:
            d: Deferred[Any] = fetchWorkerStatus(
                workerSocketPath(self.directory, pid), self.reactor
            )
            return d.addCallbacks(
                lambda snap: (index, pid, snap, None),
                lambda f: (index, pid, None, f.getErrorMessage() or f.type.__name__),
            )

        ds = [fetch(i, pid) for i, pid in sorted(pids.items())]
        return gatherResults(ds).addCallback(self._merge, starts)

    def workerStarts(self) -> dict[int, int]:
        """
        How many times each worker slot was started: C{{slot: starts}}.
        """
        supervisor = getattr(self.service, "workers", None)
        return {s.index: s.starts for s in getattr(supervisor, "_slots", None) or []}

    def _merge(
        self, answers: list[tuple[Any, ...]], starts: dict[int, int]
    ) -> dict[str, Any]:
        count = getattr(self.service, "count", None)
        workers = []
        listeners: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        live = 0
        pipes: dict[str, Any] | None = None
        for index, pid, snap, error in answers:
            entry: dict[str, Any] = {
                "index": index,
                "pid": pid,
                "reachable": snap is not None,
                "error": error,
                "uptime": None,
                "live": None,
                "starts": starts.get(index),
            }
            workers.append(entry)
            if snap is None:
                continue
            entry["uptime"] = snap.get("process", {}).get("uptime")
            entry["live"] = snap.get("connectionsLive", 0)
            live += entry["live"]
            for row in snap.get("connections", []):
                row = dict(row)
                row["worker"] = index
                rows.append(row)
            workerPipes = snap.get("pipes")
            if workerPipes:
                if pipes is None:
                    pipes = dict.fromkeys(workerPipes, 0)
                for key, value in workerPipes.items():
                    if key == "size":
                        pipes[key] = value
                    else:
                        pipes[key] = pipes.get(key, 0) + (value or 0)
            for theirs in snap.get("listeners", []):
                self._mergeListener(listeners, theirs)
        totals = registryTotals(self.registry)
        for forward in totals:
            listeners.setdefault(forward, _emptyListener(forward))
        for forward, listener in listeners.items():
            if not listener["listen"]:
                listener["listen"] = [forward]
            _applyTotals(listener, totals.get(forward, {}))
        snap = {
            "schema": SCHEMA,
            "generatedAt": round(time.time(), 3),
            "process": self._processInfo("supervisor", count),
            "workers": workers,
            "listeners": list(listeners.values()),
            "pipes": pipes,
            "connectionsLive": live,
            "connectionsLimit": self.limit,
            "connections": _busiest(rows, self.limit),
        }
        return applyRates(snap, self.rates, self.reactor.seconds())

    @staticmethod
    def _mergeListener(
        listeners: dict[str, dict[str, Any]], theirs: Mapping[str, Any]
    ) -> None:
        forward = theirs.get("forward", "default")
        mine = listeners.get(forward)
        if mine is None:
            mine = listeners[forward] = _emptyListener(forward)
            mine["listen"] = list(theirs.get("listen") or [])
            mine["maxConnections"] = theirs.get("maxConnections")
        for address in theirs.get("addresses") or []:
            if address not in mine["addresses"]:
                mine["addresses"].append(address)
        mine["live"] += int(theirs.get("live") or 0)
        mine["draining"] = mine["draining"] or bool(theirs.get("draining"))
        _addBytes(mine["liveBytes"], theirs.get("liveBytes") or {})
        byName = {u["name"]: u for u in mine["upstreams"]}
        for upstream in theirs.get("upstreams") or []:
            known = byName.get(upstream.get("name"))
            if known is None:
                known = dict(upstream)
                mine["upstreams"].append(known)
                byName[known.get("name")] = known
                continue
            for key in ("live", "total"):
                if upstream.get(key) is not None:
                    known[key] = (known.get(key) or 0) + upstream[key]
            for key in ("failures", "bytes"):
                if upstream.get(key) is not None:
                    table = known[key] = dict(known.get(key) or {})
                    for name, n in upstream[key].items():
                        _add(table, name, n)
            if known.get("health") != upstream.get("health"):
                # Workers disagree: show the worst-sounding answer.
                known["health"] = _worse(known.get("health"), upstream.get("health"))


def _worse(a: Any, b: Any) -> Any:
    order = {"down": 0, "unhealthy": 0, "degraded": 1, "unknown": 2, None: 3}
    return a if order.get(a, 2) <= order.get(b, 2) else b
