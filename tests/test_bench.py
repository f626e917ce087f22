"""
Tests for C{python -m splicetx.bench}: the bench runs end to end in its quick
mode and writes its three outputs, and its pure helpers compute what they
claim.  Nothing here looks at how fast anything is.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

import splicetx
from splicetx.bench import (
    _cli,
    _loadgen,
    _proxies,
    _report,
    _tracing,
    _underbulk,
    _wire,
)

SPLICE = _proxies.defaultSpliceName(splicetx.DEFAULT_PIPE_SIZE)
PROXIES = ("direct", SPLICE, "copy")

_ran: dict[str, object] = {}


def _runBench(out: str, *arguments: str) -> subprocess.CompletedProcess:
    """
    Run C{python -m splicetx.bench --quick ARGUMENTS --out OUT}.
    """
    return subprocess.run(
        [sys.executable, "-m", "splicetx.bench", "--quick", *arguments, "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _quickRun() -> tuple[str, subprocess.CompletedProcess]:
    """
    Run the bench once per test process (quick mode, three proxies) and
    share the result between the tests that read it.
    """
    if not _ran:
        out = tempfile.mkdtemp(prefix="splicetx-test-bench-")
        atexit.register(shutil.rmtree, out, True)
        proc = _runBench(out, "--proxies", ",".join(PROXIES))
        _ran["out"], _ran["proc"] = out, proc
    return _ran["out"], _ran["proc"]  # type: ignore[return-value]


class PreambleChurnTests(SynchronousTestCase):
    """
    The churn of the preamble configurations runs: every client's preamble
    is read, its echo comes back, and the report has their table.
    """

    def test_churnWithPreambles(self) -> None:
        """
        A quick churn run of the plain forward and the PROXY v1, v2 and SNI
        configurations completes connections without failures.
        """
        out = tempfile.mkdtemp(prefix="splicetx-test-bench-")
        self.addCleanup(shutil.rmtree, out, True)
        names = [SPLICE, f"{SPLICE}-proxy1", f"{SPLICE}-proxy2", f"{SPLICE}-sni"]
        proc = _runBench(
            out,
            "--loads",
            "churn",
            "--churn-seconds",
            "0.3",
            "--no-chart",
            "--proxies",
            ",".join(names),
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(os.path.join(out, "results.json")) as f:
            result = json.load(f)
        self.assertEqual(result["skipped"], {})
        for name in names:
            churn = result["summary"][name]["churn"]
            self.assertGreater(churn["conns"]["median"], 0, name)
            self.assertEqual(churn["failures"]["median"], 0, name)
        self.assertEqual(result["proxies"][f"{SPLICE}-sni"]["preamble"], "sni")
        with open(os.path.join(out, "results.md")) as f:
            md = f.read()
        self.assertIn("## Connection churn with a preamble", md)
        self.assertIn(f"| **{SPLICE}-proxy2** | proxy-v2 |", md)


class FreshProcessTests(SynchronousTestCase):
    """
    C{--fresh-process}: each repetition after the first runs in a new
    process of each proxy.
    """

    def test_aProcessPerRepetition(self) -> None:
        """
        Two repetitions of one proxy run in two processes (two logs, two
        listening ports), both measured, and the report says so.
        """
        out = tempfile.mkdtemp(prefix="splicetx-test-fresh-")
        self.addCleanup(shutil.rmtree, out, True)
        proc = _runBench(
            out,
            "--reps",
            "2",
            "--loads",
            "latency",
            "--proxies",
            SPLICE,
            "--fresh-process",
            "--no-chart",
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        with open(os.path.join(out, "results.json")) as f:
            result = json.load(f)
        self.assertTrue(result["meta"]["freshProcess"])
        runs = [r for r in result["runs"] if r["proxy"] == SPLICE]
        self.assertEqual(sorted(r["rep"] for r in runs), [0, 1])
        self.assertEqual([r.get("error") for r in runs], [None, None])
        logs = [
            f
            for f in os.listdir(os.path.join(out, "logs"))
            if f.startswith(f"{SPLICE}-") and f.endswith(".log")
        ]
        self.assertEqual(len(logs), 2, logs)
        with open(os.path.join(out, "results.md")) as f:
            self.assertIn("each repetition in a fresh process", f.read())


class BackendTests(SynchronousTestCase):
    """
    The bench's backend, a real subprocess on loopback: what churn relies
    on (mode C{Q}: echo, then the backend closes first) and the TLS
    records it echoes before the header.
    """

    def setUp(self) -> None:
        source = tempfile.NamedTemporaryFile(prefix="splicetx-test-backend-")
        self.addCleanup(source.close)
        source.write(b"x" * 4096)
        source.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splicetx.bench._backend", "--file", source.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.addCleanup(self.proc.wait, 10)
        self.addCleanup(self.proc.stdin.close)
        self.addCleanup(self.proc.stdout.close)
        self.port = int(self.proc.stdout.readline())

    def exchange(self, data: bytes, expect: int) -> tuple[bytes, bool]:
        """
        Send C{data}, read C{expect} bytes back, then see whether the
        backend closed: C{(bytes, closed)}.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            got = _wire.recvExactly(s, expect)
            s.settimeout(0.5)
            try:
                closed = s.recv(1) == b""
            except TimeoutError:
                closed = False
            return got, closed

    def test_echoThenClose(self) -> None:
        """
        Mode C{Q<n>} echoes C{n} bytes and then the backend closes: the
        client reads its end of stream.
        """
        payload = os.urandom(100)
        got, closed = self.exchange(
            _wire.header(_wire.ECHO_THEN_CLOSE, len(payload)) + payload, 100
        )
        self.assertEqual(got, payload)
        self.assertTrue(closed)

    def test_echoStaysOpen(self) -> None:
        """
        Mode C{E} echoes and leaves the connection open.
        """
        got, closed = self.exchange(_wire.header(_wire.ECHO) + b"ping", 4)
        self.assertEqual(got, b"ping")
        self.assertFalse(closed)

    def test_clientHelloBeforeHeader(self) -> None:
        """
        A ClientHello ahead of the header (what an SNI-routing proxy passes
        on) comes back whole, then the header's mode applies.
        """
        hello = _wire.preambleBytes("sni")
        self.assertIn(hello[0], _wire.TLS_RECORD_TYPES)
        got, closed = self.exchange(
            hello + _wire.header(_wire.ECHO_THEN_CLOSE, 3) + b"abc",
            len(hello) + 3,
        )
        self.assertEqual(got, hello + b"abc")
        self.assertTrue(closed)

    def test_churnLeavesNoTimeWaitAtTheClient(self) -> None:
        """
        A direct churn run leaves no TIME_WAIT socket on its client address:
        the backend closed first.
        """
        result = _loadgen.churn(self.port, 0.3, 2)
        self.assertGreater(result["conns"], 0)
        self.assertEqual(result["failures"], 0, result["error"])
        out = subprocess.run(
            ["ss", "-Htan", "state", "time-wait", "src", result["source"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.assertEqual(out.strip(), "")


class QuickBenchTests(SynchronousTestCase):
    """
    C{python -m splicetx.bench --quick} runs and writes its outputs.
    """

    def test_exitsCleanly(self) -> None:
        """
        The quick bench exits with status 0.
        """
        _, proc = _quickRun()
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])

    def test_writesThreeFiles(self) -> None:
        """
        results.json, results.md and a real PNG results.png are written.
        """
        out, _ = _quickRun()
        for name in ("results.json", "results.md", "results.png"):
            path = os.path.join(out, name)
            self.assertTrue(os.path.exists(path), name)
            self.assertGreater(os.path.getsize(path), 0, name)
        with open(os.path.join(out, "results.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_jsonHasFiguresForDirectAndSplicetx(self) -> None:
        """
        The JSON summary holds bulk throughput for direct and splicetx, and
        the splicetx proxy figures (CPU per GB) that direct cannot have.
        """
        out, _ = _quickRun()
        with open(os.path.join(out, "results.json")) as f:
            result = json.load(f)
        summary = result["summary"]
        for name in PROXIES:
            self.assertIn(name, summary)
            self.assertGreater(summary[name]["bulk-8-up"]["gbps"]["median"], 0)
        self.assertGreater(summary[SPLICE]["bulk-8-up"]["cpuPerGB"]["median"], 0)
        self.assertNotIn("cpuPerGB", summary["direct"]["bulk-8-up"])
        for load in ("latency", "churn", "idle", "keepalive"):
            self.assertIn(load, summary[SPLICE])
        keepalive = summary[SPLICE]["keepalive"]
        self.assertGreater(keepalive["requestsPerSec"]["median"], 0)
        self.assertGreater(keepalive["cpuUsPerOp"]["median"], 0)
        # Churn clients connected from a loopback address of each run's own.
        sources = [r["source"] for r in result["runs"] if r["load"] == "churn"]
        self.assertEqual(len(sources), len(PROXIES))
        self.assertEqual(len(set(sources)), len(sources))
        self.assertTrue(all(ipaddress.ip_address(a).is_loopback for a in sources))
        self.assertEqual(result["proxies"][SPLICE]["engine"], "splice")
        self.assertIn(result["proxies"][SPLICE]["launcher"], ("cli", "standin"))

    def test_idleOnAFreshProxy(self) -> None:
        """
        The idle load ran on a splicetx process of its own, allowed the idle
        connections plus headroom, and has per-connection figures and
        fresh-connection times for every rep.
        """
        out, _ = _quickRun()
        with open(os.path.join(out, "results.json")) as f:
            result = json.load(f)
        meta = result["meta"]
        self.assertEqual(meta["idleMaxConnections"], meta["idleConns"] + 100)
        idle = [r for r in result["runs"] if r["load"] == "idle"]
        self.assertEqual({r["proxy"] for r in idle}, {SPLICE, "copy"})
        for r in idle:
            self.assertEqual(r["conns"], meta["idleConns"], r)
            self.assertAlmostEqual(r["fdsPerConn"], 2.0, delta=0.1)
            self.assertGreater(r["freshP50Ms"], 0)
            self.assertGreaterEqual(r["freshMaxMs"], r["freshP50Ms"])
            self.assertEqual(r["freshFailures"], 0)
            self.assertEqual(r["freshTries"], 50)
        argv = meta["idleArgv"][SPLICE]
        self.assertNotEqual(argv, result["proxies"][SPLICE]["argv"])
        if result["proxies"][SPLICE]["launcher"] == "cli":
            self.assertEqual(
                argv[argv.index("--max-connections") + 1],
                str(meta["idleMaxConnections"]),
            )
            self.assertNotIn("--max-connections", result["proxies"][SPLICE]["argv"])
        with open(os.path.join(out, "results.md")) as f:
            self.assertIn("fresh conn p50 ms", f.read())

    def test_markdownHasRows(self) -> None:
        """
        The Markdown report has table rows for direct and splicetx.
        """
        out, _ = _quickRun()
        with open(os.path.join(out, "results.md")) as f:
            md = f.read()
        self.assertIn("| **direct** |", md)
        self.assertIn(f"| **{SPLICE}** |", md)
        self.assertIn("## bulk, 8 streams, upload", md)

    def test_progressOnStderr(self) -> None:
        """
        A progress bar is written to stderr and ends with "done".
        """
        _, proc = _quickRun()
        self.assertIn("[###", proc.stderr)
        self.assertIn("done in", proc.stderr)


class HelperTests(SynchronousTestCase):
    """
    The bench's pure helpers.
    """

    def test_repetitionOrder(self) -> None:
        """
        Every repetition runs every proxy once, in an order of its own that
        a rerun repeats; no proxy always follows the same neighbour.
        """
        names = ["direct", "a", "b", "c", "d", "e", "f", "g"]
        orders = [_cli.repetitionOrder(names, rep) for rep in range(5)]
        for order in orders:
            self.assertEqual(sorted(order), sorted(names))
        self.assertEqual(orders, [_cli.repetitionOrder(names, r) for r in range(5)])
        afterDirect = {
            order[order.index("direct") + 1]
            for order in orders
            if order[-1] != "direct"
        }
        self.assertGreater(len(afterDirect), 1, orders)

    def test_churnSources(self) -> None:
        """
        Each churn run gets a loopback source address of its own.
        """
        sources = [_loadgen.churnSource() for _ in range(300)]
        self.assertEqual(len(set(sources)), 300)
        for source in sources:
            self.assertTrue(ipaddress.ip_address(source).is_loopback, source)

    def test_headerRoundTrip(self) -> None:
        """
        A connection header is 16 bytes and parses back to mode and parameter.
        """
        h = _wire.header(_wire.DOWNLOAD, 2500)
        self.assertEqual(len(h), _wire.HEADER_SIZE)
        self.assertEqual(_wire.parseHeader(h), (_wire.DOWNLOAD, 2500))

    def test_maxConnectionsOnlyWhenAsked(self) -> None:
        """
        C{twist splice-proxy} gets C{--max-connections} and HAProxy a
        C{maxconn} of that many (with C{maxpipes} to fit) only when the
        command is asked for that many connections.
        """
        specs = {s.name: s for s in _proxies.allSpecs(splicetx.DEFAULT_PIPE_SIZE)}
        work = tempfile.mkdtemp(prefix="splicetx-test-cmd-")
        self.addCleanup(shutil.rmtree, work, True)
        plain = _proxies.command(specs[SPLICE], 1000, 2000, "cli", work)
        self.assertNotIn("--max-connections", plain)
        wide = _proxies.command(specs[SPLICE], 1000, 2000, "cli", work, 9100)
        self.assertEqual(wide[wide.index("--max-connections") + 1], "9100")
        self.assertNotIn(
            "--max-connections",
            _proxies.command(specs[SPLICE], 1000, 2000, "standin", work, 9100),
        )
        for port, many in ((1001, None), (1002, 9100)):
            argv = _proxies.command(specs["haproxy"], port, 2000, "cli", work, many)
            with open(argv[-1]) as f:
                cfg = f.read()
            self.assertEqual("    maxconn 9100\n" in cfg, many is not None, cfg)
            self.assertEqual("maxpipes" in cfg, many is not None, cfg)

    def test_preambleCommands(self) -> None:
        """
        The preamble configurations read what their clients send first:
        splicetx with C{--accept-proxy-protocol} (its peers trusted) or
        C{--route-sni} to the backend, HAProxy with C{accept-proxy} or a
        C{req.ssl_sni} rule; the general-path variants add
        C{--no-fast-path}.
        """
        specs = {s.name: s for s in _proxies.allSpecs(splicetx.DEFAULT_PIPE_SIZE)}
        work = tempfile.mkdtemp(prefix="splicetx-test-cmd-")
        self.addCleanup(shutil.rmtree, work, True)
        proxy1 = _proxies.command(
            specs[f"{SPLICE}-proxy1"], 1000, 2000, "standin", work
        )
        self.assertIn("--accept-proxy-protocol", proxy1)
        self.assertEqual(
            proxy1[proxy1.index("--proxy-protocol-from") + 1], "127.0.0.0/8"
        )
        self.assertNotIn("--no-fast-path", proxy1)
        sni = _proxies.command(specs[f"{SPLICE}-sni-general"], 1000, 2000, "cli", work)
        self.assertEqual(
            sni[sni.index("--route-sni") + 1], f"{_wire.SNI_NAME}=tcp:127.0.0.1:2000"
        )
        self.assertIn("--no-fast-path", sni)
        self.assertNotIn("--connect", sni)
        configs = {}
        for name in ("haproxy-proxy2", "haproxy-sni"):
            argv = _proxies.command(specs[name], 1001, 2000, "cli", work)
            with open(argv[-1]) as f:
                configs[name] = f.read()
        self.assertIn("bind 127.0.0.1:1001 accept-proxy\n", configs["haproxy-proxy2"])
        self.assertIn(f"req.ssl_sni -i {_wire.SNI_NAME}", configs["haproxy-sni"])

    def test_reactorCommands(self) -> None:
        """
        The splicetx proxies run C{twist splice-proxy} at its default
        reactor (L{splicetx.reactor}), but the C{-epoll} one, which names
        Twisted's own; C{twist portforward} runs on Twisted's epoll.
        """
        specs = {s.name: s for s in _proxies.allSpecs(splicetx.DEFAULT_PIPE_SIZE)}
        work = tempfile.mkdtemp(prefix="splicetx-test-cmd-")
        self.addCleanup(shutil.rmtree, work, True)

        def reactors(name: str) -> list[str]:
            argv = _proxies.command(specs[name], 1000, 2000, "cli", work)
            return [a for a in argv if a.startswith("--reactor")]

        self.assertEqual(reactors(SPLICE), [])
        self.assertEqual(reactors(f"{SPLICE}-epoll"), ["--reactor=epoll"])
        self.assertEqual(reactors("portforward"), ["--reactor=epoll"])

    def test_limitCommands(self) -> None:
        """
        The limits configurations run the CLI (even with the stand-in
        launcher) with their options: limits per client for churn beside
        the plain proxy, a binding bandwidth for bulk; neither is part of
        the pipe-size sweep.
        """
        specs = {s.name: s for s in _proxies.allSpecs(splicetx.DEFAULT_PIPE_SIZE)}
        work = tempfile.mkdtemp(prefix="splicetx-test-cmd-")
        self.addCleanup(shutil.rmtree, work, True)
        limits = _proxies.command(
            specs[f"{SPLICE}-limits"], 1000, 2000, "standin", work
        )
        self.assertIn("splice-proxy", limits)
        self.assertIn("--client-max-connections", limits)
        self.assertIn("--client-bandwidth", limits)
        self.assertIn("churn", specs[f"{SPLICE}-limits"].loads)
        bw = _proxies.command(specs[f"{SPLICE}-bw"], 1000, 2000, "standin", work)
        self.assertEqual(bw[bw.index("--connection-bandwidth") + 1], "256MiB/s")
        self.assertEqual(specs[f"{SPLICE}-bw"].loads, ("bulk",))

    def test_preambleBytes(self) -> None:
        """
        The PROXY preambles are the headers splicetx's own parser reads
        (the claimed client, nothing after them); the SNI one is a
        ClientHello naming the bench's server name.
        """
        from splicetx._pool.sni import ClientHelloReader
        from splicetx._proxy.proxyheader import parseProxyHeader

        for kind, version in (("proxy-v1", 1), ("proxy-v2", 2)):
            header = parseProxyHeader(_wire.preambleBytes(kind))
            assert header is not None
            self.assertEqual(
                (header.version, header.source.host, header.rest),
                (version, "192.0.2.1", b""),
            )
        hello = ClientHelloReader().feed(_wire.preambleBytes("sni"))
        assert hello is not None
        self.assertEqual(hello.serverName, _wire.SNI_NAME)
        self.assertEqual(_wire.preambleBytes(None), b"")

    def test_openIdleStopsWhenNoneAnswer(self) -> None:
        """
        Against a listener that never answers, L{_loadgen.openIdle} gives
        up after its first batch (each batch has a deadline of its own)
        instead of trying every connection asked for.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        socks, failures, error = _loadgen.openIdle(
            listener.getsockname()[1], 300, batch=10, batchSeconds=0.3
        )
        self.assertEqual(socks, [])
        self.assertEqual(failures, 10)
        self.assertIsNotNone(error)

    def test_freshConnectionsGiveUp(self) -> None:
        """
        L{_loadgen.freshConnections} stops trying after its failures in a
        row, and reports no times when none succeeded.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens: every connect is refused
        got = _loadgen.freshConnections(port, tries=50, giveUpAfter=3)
        self.assertEqual((got["freshTries"], got["freshFailures"]), (3, 3))
        self.assertNotIn("freshP50Ms", got)
        self.assertIn("ConnectionRefusedError", got["freshError"])

    def test_summarizeMedianAndRange(self) -> None:
        """
        summarize() gives median, min, max and count per proxy, load and
        figure, and ignores non-numeric fields.
        """
        runs = [
            {"proxy": "p", "load": "l", "rep": i, "gbps": v, "error": None}
            for i, v in enumerate([3.0, 1.0, 2.0])
        ]
        s = _report.summarize(runs)
        self.assertEqual(
            s["p"]["l"]["gbps"], {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
        )
        self.assertNotIn("error", s["p"]["l"])

    def test_targetsCompareAgainstBaselines(self) -> None:
        """
        targets() computes ratios against portforward and direct and says
        whether each goal is met.
        """

        def one(v: float) -> dict:
            return {"median": v, "min": v, "max": v, "n": 1}

        summary = {
            "direct": {"bulk-8-up": {"gbps": one(10.0)}},
            "portforward": {"bulk-8-up": {"gbps": one(2.0), "cpuPerGB": one(2.0)}},
            "s": {"bulk-8-up": {"gbps": one(6.0), "cpuPerGB": one(0.4)}},
        }
        got = {t["target"]: t for t in _report.targets(summary, "s")}
        tp = got["bulk-8-up: throughput vs portforward"]
        self.assertAlmostEqual(tp["value"], 3.0)
        self.assertTrue(tp["met"])
        share = got["bulk-8-up: share of direct throughput"]
        self.assertAlmostEqual(share["value"], 0.6)
        self.assertFalse(share["met"])
        self.assertTrue(got["bulk-8-up: CPU-s/GB vs portforward"]["met"])

    def test_parseStrace(self) -> None:
        """
        parseStrace() reads call counts from an strace -c summary, with and
        without an errors column, and skips the total line.
        """
        text = (
            "% time     seconds  usecs/call     calls    errors syscall\n"
            "------ ----------- ----------- --------- --------- ----------------\n"
            " 80.00    0.008000           4      2000       500 splice\n"
            " 20.00    0.002000           2      1000           epoll_wait\n"
            "------ ----------- ----------- --------- --------- ----------------\n"
            "100.00    0.010000           3      3000       500 total\n"
        )
        fd, path = tempfile.mkstemp(suffix=".strace")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.assertEqual(
            _tracing.parseStrace(path), {"splice": 2000, "epoll_wait": 1000}
        )

    def test_parsePerfReport(self) -> None:
        """
        parsePerfReport() reads shares by DSO and by symbol, marks kernel
        symbols, and skips comments.
        """
        byDso = (
            "# Samples: 14K of event 'cpu-clock'\n"
            "#\n"
            "    54.60%  libpython3.11.so.1.0\n"
            "    42.17%  [kernel.kallsyms]\n"
            "     2.43%  libc.so.6\n"
        )
        self.assertEqual(
            _tracing.parsePerfReport(byDso, "dso"),
            {
                "libpython3.11.so.1.0": 54.6,
                "[kernel.kallsyms]": 42.17,
                "libc.so.6": 2.43,
            },
        )
        bySym = (
            "    36.04%  [k] _raw_spin_unlock_irqrestore\n"
            "     2.20%  [.] _PyEval_EvalFrameDefault\n"
        )
        self.assertEqual(
            _tracing.parsePerfReport(bySym, "sym"),
            {
                "_raw_spin_unlock_irqrestore (kernel)": 36.04,
                "_PyEval_EvalFrameDefault": 2.2,
            },
        )

    def test_classifyDso(self) -> None:
        """
        The kernel, the interpreter (shared library or static binary) and
        everything else are told apart.
        """
        got = [
            _tracing.classifyDso(d)
            for d in (
                "[kernel.kallsyms]",
                "libpython3.11.so.1.0",
                "/usr/bin/python3.11",
                "libc.so.6",
                "_socket.cpython-311-x86_64-linux-gnu.so",
                "[vdso]",
            )
        ]
        self.assertEqual(got, ["kernel", "python", "python", "other", "other", "other"])


def _perfCannotRecord() -> str | None:
    """
    Why C{perf record} cannot sample on this machine (not installed, or
    the kernel refuses it), or C{None} when it can.
    """
    if shutil.which("perf") is None:
        return None
    probe = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-D", "-1"]
        + ["-o", os.devnull, "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return " ".join(probe.stderr.split())[-200:] or "perf record failed"
    return None


def runBenchOnce(
    case: SynchronousTestCase,
    option: str,
    proxy: str,
    env: dict[str, str] | None = None,
) -> dict:
    """
    Run a quick 8-stream upload through C{proxy} with C{option} (C{--perf},
    C{--strace}); return its JSON, plus its Markdown as C{"markdown"}.
    """
    out = tempfile.mkdtemp(prefix="splicetx-test-bench-")
    case.addCleanup(shutil.rmtree, out, True)
    proc = subprocess.run(
        [sys.executable, "-m", "splicetx.bench", "--quick", option]
        + ["--proxies", proxy, "--loads", "bulk", "--streams", "8"]
        + ["--directions", "up", "--no-chart", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    case.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    with open(os.path.join(out, "results.json")) as f:
        result: dict = json.load(f)
    with open(os.path.join(out, "results.md")) as f:
        result["markdown"] = f.read()
    return result


class PerfOptionTests(SynchronousTestCase):
    """
    C{--perf} says where one proxy's CPU went, or, without perf installed,
    says that it was skipped and why.
    """

    def test_perf(self) -> None:
        why = _perfCannotRecord()
        if why is not None:
            self.skipTest(f"perf is installed but cannot record here: {why}")
        result = runBenchOnce(self, "--perf", SPLICE)
        if shutil.which("perf") is None:
            self.assertIn("--perf", result["skipped"])
            self.assertEqual(result["perf"], {})
            return
        shares = result["perf"]["bulk-8-up"][SPLICE]
        self.assertNotIn("error", shares)
        total = shares["kernel"] + shares["python"] + shares["other"]
        # perf rounds each share to 0.01 %; trial's assertAlmostEqual has no delta.
        self.assertLessEqual(abs(total - 100.0), 1.0, total)
        self.assertTrue(shares["topSymbols"])
        self.assertIn("## Where the CPU goes", result["markdown"])

    def test_perfFails(self) -> None:
        """
        When perf cannot sample (here a stand-in C{perf} that prints an
        error and exits), the run still completes and the report carries
        perf's own words instead of figures.
        """
        bin = tempfile.mkdtemp(prefix="splicetx-test-fakeperf-")
        self.addCleanup(shutil.rmtree, bin, True)
        fake = os.path.join(bin, "perf")
        with open(fake, "w") as f:
            f.write(
                "#!/bin/sh\necho 'perf_event_open: permission denied' >&2\nexit 1\n"
            )
        os.chmod(fake, 0o755)
        env = dict(os.environ, PATH=bin + os.pathsep + os.environ.get("PATH", ""))
        result = runBenchOnce(self, "--perf", SPLICE, env)
        self.assertEqual(
            result["perf"]["bulk-8-up"][SPLICE],
            {
                "error": "perf did not start sampling "
                "(perf_event_open: permission denied)"
            },
        )


def _cannotAttach() -> str | None:
    """
    Why C{strace -p} cannot attach here to a process that is not its child
    (Yama's ptrace_scope, a container without ptrace), or C{None} when it
    can: the bench attaches to proxies it did not start under strace.
    """
    target = subprocess.Popen(["sleep", "30"])
    try:
        probe = subprocess.run(
            ["timeout", "-s", "INT", "1", "strace", "-q", "-o", os.devnull]
            + ["-p", str(target.pid)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        target.kill()
        target.wait()
    if probe.returncode == 124:  # still attached when timeout interrupted it
        return None
    why = " ".join(probe.stderr.split())[-200:] or f"exit {probe.returncode}"
    return f"strace cannot attach to a process here: {why}"


class StraceOptionTests(SynchronousTestCase):
    """
    C{--strace} counts the system calls of a proxy's whole process tree,
    the C{--workers} supervisor's workers included.
    """

    def test_workers(self) -> None:
        if shutil.which("strace") is None:
            self.skipTest("strace is not installed (Debian: strace)")
        why = _cannotAttach()
        if why is not None:
            self.skipTest(why)
        workers = SPLICE + "-w2"
        counted = runBenchOnce(self, "--strace", workers)["strace"][workers]
        self.assertNotIn("error", counted)
        self.assertIn("splice", dict(counted["topPerGB"]))
        self.assertGreater(counted["syscallsPerGB"], 0)


class UnderbulkTests(SynchronousTestCase):
    """
    The "latency under bulk" load: its run in the quick bench and its pure
    helpers.
    """

    def test_quickRunHasUnderbulk(self) -> None:
        """
        The quick run measures the ping alone and under bulk, and the bulk
        with and without it, for direct and splicetx (not the copy engine).
        """
        out, _ = _quickRun()
        with open(os.path.join(out, "results.json")) as f:
            summary = json.load(f)["summary"]
        for name in ("direct", SPLICE):
            figures = summary[name][_underbulk.FAMILY]
            for key in ("aloneP99us", "busyP99us", "bulkGbps", "bulkPingGbps"):
                self.assertGreater(figures[key]["median"], 0, (name, key))
        self.assertNotIn(_underbulk.FAMILY, summary["copy"])
        with open(os.path.join(out, "results.md")) as f:
            self.assertIn("## Latency under bulk", f.read())

    def test_percentiles(self) -> None:
        """
        percentiles() gives p50, p99 and p99.9 in µs from nanosecond samples.
        """
        got = _underbulk.percentiles([i * 1000 for i in range(1, 1001)])
        self.assertEqual(
            got, {"p50us": 501.0, "p99us": 991.0, "p999us": 1000.0, "count": 1000}
        )
        self.assertEqual(_underbulk.percentiles([]), {"count": 0})

    def test_applies(self) -> None:
        """
        The load runs for direct, the default splice engine (one process),
        the plain loop, portforward and HAProxy, and for nothing else.
        """
        specs = {s.name: s for s in _proxies.allSpecs(splicetx.DEFAULT_PIPE_SIZE)}
        runs = {n for n, s in specs.items() if _underbulk.applies(s, SPLICE)}
        self.assertEqual(
            runs, {"direct", SPLICE, "plainloop", "portforward", "haproxy"}
        )

    def test_targets(self) -> None:
        """
        targets() checks the ping's p99 under bulk (≤ 1 ms), its growth over
        the ping alone (≤ 2×) and the bulk's share with the ping (≥ 0.95).
        """

        def one(v: float) -> dict:
            return {"median": v, "min": v, "max": v, "n": 1}

        summary = {
            "s": {
                "underbulk": {
                    "busyP99us": one(800.0),
                    "p99Growth": one(3.0),
                    "bulkShare": one(0.97),
                }
            }
        }
        got = {t["target"]: t for t in _report.targets(summary, "s")}
        self.assertTrue(got["underbulk: ping p99 under bulk (µs)"]["met"])
        self.assertFalse(got["underbulk: ping p99 under bulk vs alone"]["met"])
        self.assertTrue(got["underbulk: bulk rate with the ping vs without"]["met"])
