"""
C{python -m splicetx.bench}: options, the run plan, and the loop that runs
every load through every proxy, interleaved across repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from splicetx._app.filelimit import raiseFileLimit
from splicetx._relay import core
from splicetx.bench import _loadgen, _proxies, _report, _underbulk
from splicetx.bench._options import (
    CHURN_WORKERS,
    KEEPALIVE_CONNS,
    LOAD_FAMILIES,
    QUICK_PROXIES,
    argumentParser,
)
from splicetx.bench._procstats import (
    TreeMeter,
    cpuOf,
    cpuOfSelf,
    pinned,
    snapshot,
    treePids,
)
from splicetx.bench._progress import Progress
from splicetx.bench._tracing import (
    awaitAck,
    classifyDso,
    interruptTracer,
    parseStrace,
    perfReport,
)
from splicetx.bench._wire import makeSourceFile

#: Connections a proxy started for the idle load may hold beyond the idle
#: ones (the warm-up's and the fresh ones' stragglers, the bench's probes).
IDLE_HEADROOM = 100
#: Connections opened and closed on the idle load's fresh proxy before the
#: baseline is taken.
IDLE_WARMUP = 20
#: Seconds the idle load lets the proxy settle before each snapshot.
IDLE_SETTLE = 0.5
#: New connections timed while the idle ones are held.
IDLE_FRESH = 50


class Bench:
    """
    One bench run: the plan, the processes, the measurements.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.errors: list[str] = []
        self.runs: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.proxies: dict[str, _proxies.RunningProxy] = {}
        self.iperfProxies: dict[str, _proxies.RunningProxy] = {}
        self.backend: subprocess.Popen | None = None
        self.iperfServer: subprocess.Popen | None = None
        self.pinnedLatency = False
        #: The argv of the proxies started for the idle load, by name.
        self.idleArgv: dict[str, list[str]] = {}

    # -- plan ---------------------------------------------------------------

    def configure(self) -> None:
        a = self.args
        q = a.quick
        self.reps = a.reps or (1 if q else 3)
        self.seconds = a.seconds or (0.3 if q else 2.0)
        self.pings = a.pings or (1000 if q else 20000)
        self.churnSeconds = a.churn_seconds or (0.5 if q else 3.0)
        self.idleConns = a.idle_conns or (200 if q else 2000)
        self.keepaliveSeconds = a.keepalive_seconds or (0.5 if q else 3.0)
        self.families = [f for f in a.loads.split(",") if f]
        for f in self.families:
            if f not in LOAD_FAMILIES:
                raise SystemExit(f"unknown load family {f!r}")
        streams = [int(s) for s in a.streams.split(",") if s]
        directions = [d for d in a.directions.split(",") if d]
        self.loads: list[str] = []
        if "bulk" in self.families:
            self.loads += [f"bulk-{n}-{d}" for n in streams for d in directions]
        self.loads += [
            f for f in ("latency", "churn", "keepalive", "idle") if f in self.families
        ]
        if _underbulk.FAMILY in self.families:
            if a.underbulk_streams < 1:
                raise SystemExit("--underbulk-streams must be at least 1")
            self.loads.append(_underbulk.FAMILY)

        import splicetx

        self.defaultPipeSize = splicetx.DEFAULT_PIPE_SIZE
        self.spliceDefault = _proxies.defaultSpliceName(self.defaultPipeSize)
        specs = _proxies.allSpecs(self.defaultPipeSize)
        known = {s.name for s in specs}
        if a.proxies:
            wanted = [p for p in a.proxies.split(",") if p]
        elif q:
            wanted = list(QUICK_PROXIES)
        else:
            wanted = [s.name for s in specs]
        for w in wanted:
            if w not in known:
                raise SystemExit(
                    f"unknown proxy {w!r}; known: {', '.join(sorted(known))}"
                )
        self.specs = []
        for s in specs:
            if s.name not in wanted:
                continue
            why = _proxies.unavailableReason(s)
            if why:
                self.skipped[s.name] = why
                continue
            self.specs.append(s)

        if a.splicetx_launcher == "auto":
            self.launcher = "cli" if _proxies.hasSpliceProxyPlugin() else "standin"
        else:
            self.launcher = a.splicetx_launcher
        if a.strace and shutil.which("strace") is None:
            self.skipped["--strace"] = "strace is not installed"
        if a.perf and shutil.which("perf") is None:
            self.skipped["--perf"] = "perf is not installed (Debian: linux-perf)"
        self.useIperf = a.iperf3 and "bulk" in self.families
        if a.iperf3 and shutil.which("iperf3") is None:
            self.skipped["--iperf3"] = (
                "iperf3 is not installed; built-in generator used"
            )
            self.useIperf = False

    def applies(self, spec: _proxies.ProxySpec, load: str) -> bool:
        family = load.split("-")[0]
        if family == _underbulk.FAMILY:
            return _underbulk.applies(spec, self.spliceDefault)
        if family == "idle" and spec.kind == "direct":
            return False
        return family in spec.loads

    # -- processes ----------------------------------------------------------

    def startAll(self, work: str) -> None:
        self.work = work
        self.sourcePath = os.path.join(work, "source.bin")
        makeSourceFile(self.sourcePath)
        self.backend = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "splicetx.bench._backend",
                "--file",
                self.sourcePath,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(work, "backend.log"), "wb"),
        )
        assert self.backend.stdout is not None
        line = self.backend.stdout.readline()
        if not line.strip():
            raise SystemExit("the backend did not start; see backend.log")
        self.backendPort = int(line)
        upstreamFor = {s.name: self.backendPort for s in self.specs}
        starting = []
        for s in self.specs:
            launcher = self.launcher
            proxy = _proxies.start(s, upstreamFor[s.name], launcher, work)
            starting.append(proxy)
        if self.useIperf:
            port = _proxies.freePort()
            self.iperfServer = subprocess.Popen(
                ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.iperfPort = port
            for s in self.specs:
                if "bulk" in s.loads:
                    proxy = _proxies.start(s, port, self.launcher, work)
                    self.iperfProxies[s.name] = proxy
        for proxy in starting:
            why = _proxies.waitListening(proxy)
            if (
                why
                and proxy.spec.kind == "splicetx"
                and proxy.launcher == "cli"
                and not proxy.spec.workers  # the stand-in has no workers
                # nor pools, a general path or log levels:
                and not _proxies.needsCLI(proxy.spec)
            ):
                # The CLI may not take our options yet: fall back, and say so.
                self.errors.append(
                    f"{proxy.spec.name}: twist splice-proxy failed ({why}); "
                    "using the stand-in"
                )
                proxy.stop()
                proxy = _proxies.start(proxy.spec, self.backendPort, "standin", work)
                why = _proxies.waitListening(proxy)
            if why:
                self.skipped[proxy.spec.name] = f"did not start: {why}"
                proxy.stop()
                continue
            why = self.whyNotRelaying(proxy)
            if why:
                self.skipped[proxy.spec.name] = why
                proxy.stop()
                continue
            self.proxies[proxy.spec.name] = proxy
        for name, proxy in list(self.iperfProxies.items()):
            if name not in self.proxies or _proxies.waitListening(proxy):
                proxy.stop()
                del self.iperfProxies[name]

    def whyNotRelaying(self, proxy: _proxies.RunningProxy) -> str | None:
        """
        Warm C{proxy} up with a moment of churn (its preamble included).

        @return: why it does not relay, or C{None} when it does.
        """
        preamble = (proxy.spec.preamble, self.backendPort)
        warm = _loadgen.churn(proxy.port, 0.05, 1, *preamble)
        if warm["conns"] == 0:
            return f"does not relay: {warm['error']}"
        return None

    def restart(self, name: str, work: str) -> bool:
        """
        Stop proxy C{name} (and its copy for iperf3) and start it again
        (C{--fresh-process}).

        @return: whether the new one relays; when not, the error is noted
            and the runs of the processes before are all it has.
        """
        old = self.proxies[name]
        old.stop()
        proxy = _proxies.start(old.spec, self.backendPort, old.launcher or "", work)
        why = _proxies.waitListening(proxy) or self.whyNotRelaying(proxy)
        if why:
            self.errors.append(f"{name}: did not start again: {why}")
            proxy.stop()
            return False
        self.proxies[name] = proxy
        iperf = self.iperfProxies.get(name)
        if iperf is not None:
            iperf.stop()
            again = _proxies.start(old.spec, self.iperfPort, old.launcher or "", work)
            if _proxies.waitListening(again):
                again.stop()
                del self.iperfProxies[name]
            else:
                self.iperfProxies[name] = again
        return True

    def stopAll(self) -> None:
        for proxy in [*self.proxies.values(), *self.iperfProxies.values()]:
            proxy.stop()
        for p in (self.backend, self.iperfServer):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()

    # -- one measurement ----------------------------------------------------

    def measure(self, proxy: _proxies.RunningProxy, load: str) -> dict[str, Any]:
        family = load.split("-")[0]
        backendPid = self.backend.pid if self.backend is not None else None
        if family == "bulk":
            _, n, d = load.split("-")
            useIperf = self.useIperf and proxy.spec.name in self.iperfProxies
            target = self.iperfProxies[proxy.spec.name] if useIperf else proxy
            port = (
                target.port
                if target.spec.kind != "direct"
                else (self.iperfPort if useIperf else self.backendPort)
            )
            meter = TreeMeter(target.pid)
            gen0 = cpuOfSelf() + cpuOf(None if useIperf else backendPid)
            meter.start()
            if useIperf:
                r = _loadgen.iperf3Bulk(port, int(n), d == "up", self.seconds)
            else:
                r = _loadgen.bulk(
                    port,
                    int(n),
                    d == "up",
                    self.seconds,
                    self.fileFD,
                    self.fileSize,
                    self.devnull,
                )
            m = meter.stop()
            gen = cpuOfSelf() + cpuOf(None if useIperf else backendPid) - gen0
            gb = r["bytes"] / 1e9
            out: dict[str, Any] = {
                "gbps": r["bytes"] * 8 / r["seconds"] / 1e9,
                "bytes": r["bytes"],
                "seconds": r["seconds"],
                "errors": r["errors"],
            }
            if r["error"]:
                out["error"] = r["error"]
            if gb > 0 and not useIperf:
                out["genCPUPerGB"] = gen / gb
            if m and gb > 0:
                out.update(
                    cpuUserPerGB=m["user"] / gb,
                    cpuSysPerGB=m["system"] / gb,
                    cpuPerGB=(m["user"] + m["system"]) / gb,
                    ctxPerGB=m["ctx"] / gb,
                    peakRSSMiB=m["peakRSS"] / (1 << 20),
                    peakFDs=m["peakFDs"],
                )
            return out
        if family == "latency":
            pids = [p for p in (proxy.pid, backendPid) if p is not None]
            meter = TreeMeter(proxy.pid)
            with pinned(pids, not self.args.no_pin) as did:
                self.pinnedLatency = did
                meter.start()
                r = _loadgen.latency(proxy.port, self.pings)
                m = meter.stop()
            if m and r.get("count"):
                r["cpuUsPerOp"] = (m["user"] + m["system"]) / r["count"] * 1e6
                r["cpuUserUsPerOp"] = m["user"] / r["count"] * 1e6
            return r
        if family == _underbulk.FAMILY:
            streams = self.args.underbulk_streams

            def bulk(seconds: float) -> dict[str, Any]:
                return _loadgen.bulk(
                    proxy.port,
                    streams,
                    True,
                    seconds,
                    self.fileFD,
                    self.fileSize,
                    self.devnull,
                )

            return _underbulk.measure(proxy.port, streams, self.seconds, bulk)
        if family == "churn":
            meter = TreeMeter(proxy.pid)
            meter.start()
            preamble = (proxy.spec.preamble, self.backendPort)
            r = _loadgen.churn(proxy.port, self.churnSeconds, CHURN_WORKERS, *preamble)
            m = meter.stop()
            if m and r["conns"]:
                r["cpuUsPerOp"] = (m["user"] + m["system"]) / r["conns"] * 1e6
                r["cpuUserUsPerOp"] = m["user"] / r["conns"] * 1e6
                r["peakRSSMiB"] = m["peakRSS"] / (1 << 20)
            return r
        if family == "keepalive":
            return self.measureKeepalive(proxy)
        if family == "idle":
            return self.measureIdle(proxy)
        raise ValueError(load)

    def measureIdle(self, proxy: _proxies.RunningProxy) -> dict[str, Any]:
        """
        The idle load, on a proxy process of its own started for it (same
        spec and launcher as C{proxy}; splicetx and HAProxy allowed
        L{idleConns} + L{IDLE_HEADROOM} connections) and stopped after it:
        a process that ran other loads kept the heap they grew, and the
        idle connections then reused it instead of costing RSS.

        After L{IDLE_WARMUP} connections opened and closed (what the first
        connection of a process imports and allocates once) and a settle:
        RSS and fds of the process tree; then L{idleConns} connections,
        each proven with a 100 B echo and held; a settle; RSS and fds
        again, the difference per connection held; then, with them still
        held, L{IDLE_FRESH} new connections one after another
        (L{_loadgen.freshConnections}).
        """
        fresh = _proxies.start(
            proxy.spec,
            self.backendPort,
            proxy.launcher or self.launcher,
            self.work,
            maxConnections=self.idleConns + IDLE_HEADROOM,
        )
        socks: list = []
        try:
            why = _proxies.waitListening(fresh)
            if why:
                return {"error": f"the idle load's proxy did not start: {why}"}
            assert fresh.pid is not None
            warm, _, _ = _loadgen.openIdle(fresh.port, IDLE_WARMUP)
            for s in warm:
                s.close()
            time.sleep(IDLE_SETTLE)
            base = snapshot(fresh.pid)
            socks, failures, error = _loadgen.openIdle(fresh.port, self.idleConns)
            time.sleep(IDLE_SETTLE)
            held = snapshot(fresh.pid)
            opened = max(1, len(socks))
            out: dict[str, Any] = {
                "conns": len(socks),
                "rssPerConnKiB": (held.rss - base.rss) / opened / 1024,
                "fdsPerConn": (held.fds - base.fds) / opened,
                "failures": failures,
                "baseRSSMiB": base.rss / (1 << 20),
            }
            if error:
                out["error"] = error
            tries = _loadgen.freshConnections(fresh.port, IDLE_FRESH)
            freshError = tries.pop("freshError")
            if freshError:
                out.setdefault("error", f"fresh connection: {freshError}")
            out.update(tries)
            for s in socks:
                s.close()
            socks = []
            left = held.fds
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                left = snapshot(fresh.pid).fds
                if left <= base.fds:
                    break
                time.sleep(0.1)
            out["fdsLeft"] = max(0, left - base.fds)
            if not fresh.alive():
                out.setdefault("error", "the idle load's proxy died")
            return out
        finally:
            for s in socks:
                s.close()
            fresh.stop()
            self.idleArgv.setdefault(proxy.spec.name, fresh.argv)

    def measureKeepalive(self, proxy: _proxies.RunningProxy) -> dict[str, Any]:
        """
        The keep-alive load (L{_loadgen.keepalive}): requests per second and
        the proxy's CPU per request.
        """
        meter = TreeMeter(proxy.pid)
        meter.start()
        r = _loadgen.keepalive(proxy.port, self.keepaliveSeconds, KEEPALIVE_CONNS)
        m = meter.stop()
        if m and r["requests"]:
            r["cpuUsPerOp"] = (m["user"] + m["system"]) / r["requests"] * 1e6
            r["cpuUserUsPerOp"] = m["user"] / r["requests"] * 1e6
        return r

    # -- strace -------------------------------------------------------------

    def straceRun(self, proxy: _proxies.RunningProxy, load: str, work: str) -> dict:
        assert proxy.pid is not None
        path = os.path.join(work, f"strace-{proxy.spec.name}.txt")
        # Every process of the tree: a --workers supervisor relays nothing
        # itself, and -f follows only children forked after attaching.
        pids = [a for pid in treePids(proxy.pid) for a in ("-p", str(pid))]
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-q", "-o", path, *pids],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        _, n, d = load.split("-")
        try:
            r = _loadgen.bulk(
                proxy.port,
                int(n),
                d == "up",
                self.seconds,
                self.fileFD,
                self.fileSize,
                self.devnull,
            )
        finally:
            interruptTracer(tracer, 20)
        gb = r["bytes"] / 1e9
        calls = parseStrace(path)
        if not calls or gb <= 0:
            return {"error": f"no strace summary ({r.get('error') or 'no data'})"}
        total = sum(calls.values())
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        return {
            "syscallsPerGB": total / gb,
            "topPerGB": [(k, v / gb) for k, v in top],
            "bytes": r["bytes"],
        }

    # -- perf -----------------------------------------------------------------

    def perfRun(self, proxy: _proxies.RunningProxy, load: str, work: str) -> dict:
        """
        Sample the proxy's process tree (workers included) with C{perf
        record -e cpu-clock} while C{load} runs once more, untimed, and say
        where its CPU went.
        """
        assert proxy.pid is not None
        path = os.path.join(work, f"perf-{proxy.spec.name}-{load}.data")
        errPath = path + ".err"
        # perf starts with its events off (-D -1) and turns them on when
        # told on the control pipe, answering "ack": the load starts only
        # once sampling runs. (A fixed sleep lost every sample of a --quick
        # run whenever perf took longer than that to start on a busy box.)
        ctlRead, ctlWrite = os.pipe()
        ackRead, ackWrite = os.pipe()
        try:
            with open(errPath, "w") as err:
                recorder = subprocess.Popen(
                    ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999"]
                    + ["-D", "-1", "--control", f"fd:{ctlRead},{ackWrite}"]
                    + ["-o", path, "-p", ",".join(map(str, treePids(proxy.pid)))],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    pass_fds=(ctlRead, ackWrite),
                )
        except OSError as e:
            for fd in (ctlWrite, ackRead):
                os.close(fd)
            return {"error": f"perf did not start ({e})"}
        finally:
            os.close(ctlRead)
            os.close(ackWrite)
        r: dict = {}
        started = False
        try:
            with contextlib.suppress(OSError):  # EPIPE: perf already gone
                os.write(ctlWrite, b"enable\n")
                started = awaitAck(ackRead, 30.0)
            if started:
                r = self.measure(proxy, load)
        finally:
            # The control pipes stay open until perf has exited: perf left
            # an unfinished data file when they closed under it.
            interruptTracer(recorder, 30)
            os.close(ctlWrite)
            os.close(ackRead)
        with open(errPath) as f:
            why = " ".join(f.read().split())[-200:]
        if not started:
            return {"error": f"perf did not start sampling ({why or 'no ack'})"}
        byDso = perfReport(path, "dso")
        if not byDso:
            why = r.get("error") or why or "perf report found none"
            return {"error": f"no perf samples ({why})"}
        shares = {"kernel": 0.0, "python": 0.0, "other": 0.0}
        for dso, pct in byDso.items():
            shares[classifyDso(dso)] += pct
        top = sorted(perfReport(path, "sym").items(), key=lambda kv: -kv[1])[:5]
        return {**shares, "topSymbols": top}

    # -- the whole run ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        started = datetime.datetime.now().astimezone()
        t0 = time.monotonic()
        work = tempfile.mkdtemp(prefix="splicetx-bench-")
        logs = os.path.join(os.path.abspath(a.out), "logs")
        try:
            self.startAll(work)
            self.fileFD = os.open(self.sourcePath, os.O_RDONLY)
            self.fileSize = os.fstat(self.fileFD).st_size
            self.devnull = os.open(os.devnull, os.O_WRONLY)
            order = [s.name for s in self.specs if s.name in self.proxies]
            plan = [
                (rep, load, name)
                for rep in range(self.reps)
                for load in self.loads
                for name in repetitionOrder(order, rep)
                if self.applies(self.proxies[name].spec, load)
            ]
            straceLoad = next(
                (lo for lo in self.loads if lo.startswith("bulk-8")), None
            )
            straceLoad = straceLoad or next(
                (lo for lo in self.loads if lo.startswith("bulk")), None
            )
            doStrace = a.strace and "--strace" not in self.skipped and straceLoad
            straceTargets = [n for n in order if self.proxies[n].pid is not None]
            perfLoads = [straceLoad] if straceLoad else []
            perfLoads += [lo for lo in self.loads if lo == "churn"]
            perfPlan = [
                (lo, n)
                for lo in perfLoads
                for n in straceTargets
                if self.applies(self.proxies[n].spec, lo)
            ]
            if not a.perf or "--perf" in self.skipped:
                perfPlan = []
            progress = Progress(
                len(plan) + (len(straceTargets) if doStrace else 0) + len(perfPlan)
            )
            fresh: set[tuple[int, str]] = set()
            gone: set[str] = set()
            for rep, load, name in plan:
                if a.fresh_process and rep > 0 and (rep, name) not in fresh:
                    fresh.add((rep, name))
                    if name not in gone and not self.restart(name, work):
                        gone.add(name)
                if name in gone:
                    continue
                proxy = self.proxies[name]
                progress.step(f"rep {rep + 1}/{self.reps} {load:<12} {name}")
                if not proxy.alive() and not load.startswith("idle"):
                    self.errors.append(f"{name} died before {load} (rep {rep + 1})")
                    continue
                gc.collect()
                r = self.measure(proxy, load)
                r.update(proxy=name, load=load, rep=rep)
                if r.get("error"):
                    self.errors.append(f"{name} {load} rep {rep + 1}: {r['error']}")
                self.runs.append(r)
                time.sleep(0.1)
            strace: dict[str, Any] = {}
            if doStrace and straceLoad:
                for name in straceTargets:
                    progress.step(f"strace {straceLoad} {name}")
                    strace[name] = self.straceRun(self.proxies[name], straceLoad, work)
            perf: dict[str, dict[str, Any]] = {}
            for lo, name in perfPlan:
                progress.step(f"perf {lo} {name}")
                perf.setdefault(lo, {})[name] = self.perfRun(
                    self.proxies[name], lo, work
                )
            progress.finish(f"done in {time.monotonic() - t0:.0f}s")
        finally:
            self.stopAll()
            os.makedirs(logs, exist_ok=True)
            for f in os.listdir(work):
                if f.endswith((".log", ".cfg")) or f.startswith("strace-"):
                    shutil.copy(os.path.join(work, f), logs)
            shutil.rmtree(work, ignore_errors=True)

        summary = _report.summarize(self.runs)
        import splicetx
        import twisted

        result: dict[str, Any] = {
            "meta": {
                "command": "python -m splicetx.bench "
                + " ".join(shlex.quote(x) for x in sys.argv[1:]),
                "started": started.isoformat(timespec="seconds"),
                "elapsed": time.monotonic() - t0,
                "machine": f"{platform.node()}, Linux {platform.release()}, "
                f"{os.cpu_count()} CPUs ({_cpuModel()})",
                "software": f"Python {platform.python_version()}, Twisted "
                f"{twisted.__version__}, splicetx {splicetx.__version__}",
                "launcher": (
                    "twist splice-proxy (the CLI)"
                    if self.launcher == "cli"
                    else "the bench's stand-in (splicetx.bench._standin; "
                    "twist splice-proxy not used)"
                ),
                "core": core.describe(),
                "generator": (
                    "iperf3 -Z for the bulk loads, built-in for the others"
                    if self.useIperf
                    else "built-in (sendfile from a page-cached file; "
                    "splice into /dev/null)"
                ),
                "reps": self.reps,
                "freshProcess": bool(self.args.fresh_process),
                "underbulkStreams": self.args.underbulk_streams,
                "bulkSeconds": self.seconds,
                "pings": self.pings,
                "churnSeconds": self.churnSeconds,
                "churnWorkers": CHURN_WORKERS,
                "idleConns": self.idleConns,
                "idleMaxConnections": self.idleConns + IDLE_HEADROOM,
                "idleFresh": IDLE_FRESH,
                "idleWarmup": IDLE_WARMUP,
                "idleArgv": self.idleArgv,
                "keepaliveSeconds": self.keepaliveSeconds,
                "keepaliveConns": KEEPALIVE_CONNS,
                "pinned": self.pinnedLatency,
                "quick": bool(a.quick),
                "spliceDefault": self.spliceDefault,
                "defaultPipeSize": self.defaultPipeSize,
                "straceLoad": straceLoad if doStrace else None,
            },
            "proxies": {n: _proxies.describe(p) for n, p in self.proxies.items()},
            "skipped": self.skipped,
            "summary": summary,
            "targets": _report.targets(summary, self.spliceDefault),
            "strace": strace,
            "perf": perf,
            "errors": self.errors,
            "runs": self.runs,
        }
        return result


def repetitionOrder(names: list[str], rep: int) -> list[str]:
    """
    The order in which repetition C{rep} runs the proxies: the same proxies
    every time, shuffled by a fixed seed per repetition, so that reruns
    repeat it.

    A fixed order (A B C A B C ...) let one proxy always follow the same
    neighbour and pay for what it left behind: the churn run right after
    direct's (30,000 connections in 3 s, each leaving a TIME_WAIT socket
    whose timers and hash chains the kernel keeps working on) measured
    0.84x portforward in one run where the same code measured 1.03x
    following portforward.
    """
    shuffled = list(names)
    random.Random(f"splicetx.bench repetition {rep}").shuffle(shuffled)
    return shuffled


def _cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    """
    Run the bench; return the process exit status (0 when every proxy that
    started produced figures).
    """
    args = argumentParser().parse_args(argv)
    # Thousands of idle connections: the bench holds the client sockets,
    # its backend (a child: it inherits the limit) their other ends.
    raiseFileLimit()
    if args.tls:
        from splicetx.bench import tls

        return tls.main(tls.argumentsFromBench(args))
    bench = Bench(args)
    bench.configure()
    result = bench.run()
    paths = _report.write(result, args.out, drawChart=not args.no_chart)
    sys.stderr.write("wrote " + ", ".join(paths) + "\n")
    print(_report.markdown(result))
    return 0 if bench.runs else 1
