"""
Tests of what deploy/ gives Prometheus and Grafana users: every metric the
Grafana dashboard and the alerting rules name is one a live C{twist
splice-proxy} exports (scraped from real processes, a single one with a
pool and a C{--workers} supervisor), the dashboard is importable with its
datasource as a variable, and C{promtool} accepts the rules and their unit
tests where it is installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    connectProxy,
    readAll,
    refusingPort,
    runAsync,
    sendAll,
)
from .test_ops_cli import Upstream

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy")
DASHBOARD = os.path.join(DEPLOY, "grafana-dashboard.json")
RULES = os.path.join(DEPLOY, "prometheus-rules.yml")
RULES_TESTS = os.path.join(DEPLOY, "prometheus-rules.test.yml")

#: Metric names in PromQL (splicetx's own and prometheus_client's process
#: series); label names and values never start so.
_NAME = re.compile(r"\b((?:splicetx|process)_[a-zA-Z0-9_]*[a-zA-Z0-9])\b")


def dashboardExpressions(dashboard: dict[str, Any]) -> list[str]:
    """
    Every PromQL text of a dashboard: its panels' targets and its variables'
    queries.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                elif key == "query" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard.get("panels"))
    walk(dashboard.get("templating"))
    return found


def referencedNames(texts: list[str]) -> set[str]:
    """
    The metric names in some PromQL (or a rules file, whose descriptions
    name metrics too).
    """
    return {m.group(1) for text in texts for m in _NAME.finditer(text)}


def exportedNames(exposition: str) -> set[str]:
    """
    The names a scrape exports: every sample's name, and for a family
    declared without samples yet (a labelled counter nothing has counted
    yet) the names its samples will have.
    """
    names = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name + s for s in suffixes.get(kind.strip(), ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def scrape(port: int) -> str:
    """
    GET /metrics in the Prometheus text format.
    """
    url = f"http://{LOOPBACK}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as f:
        return f.read().decode()


class DashboardTests(SynchronousTestCase):
    """
    The dashboard is JSON Grafana imports, with its Prometheus datasource
    a variable.
    """

    def setUp(self) -> None:
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)

    def test_datasourceVariable(self) -> None:
        """
        A C{datasource} variable of type prometheus, and every panel and
        target uses it (no datasource of the author's Grafana left in).
        """
        variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        panels = [p for p in self.dashboard["panels"] if p["type"] != "row"]
        self.assertGreater(len(panels), 10)
        for panel in panels:
            uses = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            for ds in uses:
                self.assertEqual(ds["uid"], "${datasource}", panel["title"])
        self.assertNotIn("__inputs", self.dashboard)
        self.assertIsNone(self.dashboard["id"])

    def test_layout(self) -> None:
        """
        Panel ids are unique and no two panels overlap on the grid.
        """
        panels = self.dashboard["panels"]
        ids = [p["id"] for p in panels]
        self.assertEqual(len(ids), len(set(ids)))
        cells: dict[tuple[int, int], str] = {}
        for p in panels:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, (p["title"], cells.get((x, y))))
                    cells[(x, y)] = p["title"]

    def test_coverage(self) -> None:
        """
        The dashboard charts what issue 26 asks: connections/s and live,
        bytes by direction and engine, fallbacks, refusals and failures,
        per-upstream health and failures, pipes, drain state.
        """
        names = referencedNames(dashboardExpressions(self.dashboard))
        for name in [
            "splicetx_connections_total",
            "splicetx_connections_active",
            "splicetx_bytes_total",
            "splicetx_copy_fallbacks_total",
            "splicetx_connections_refused_total",
            "splicetx_upstream_connect_failures_total",
            "splicetx_upstream_up",
            "splicetx_upstream_failures_total",
            "splicetx_pipes",
            "splicetx_draining",
        ]:
            self.assertIn(name, names)


class ExportedTests(SynchronousTestCase):
    """
    Every metric the dashboard and the rules name is exported by a live
    proxy.
    """

    def proxy(self, *args: str) -> ProxyProcess:
        p = ProxyProcess(
            [
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
                *args,
            ]
        )
        self.addCleanup(p.kill)
        return p

    def test_everyNameExported(self) -> None:
        """
        Scrape a proxy with a pool (one member refusing, so failover and
        per-upstream failures happen) after some traffic, and a C{--workers}
        supervisor: the union of their names holds every name the
        dashboard's queries and the rules file mention.
        """
        dead = refusingPort()
        self.addCleanup(dead.close)

        async def scenario() -> tuple[str, str]:
            up = await Upstream().start()
            pooled = self.proxy(
                "--connect",
                f"tcp:{LOOPBACK}:{dead.getsockname()[1]}",
                "--connect",
                f"tcp:{LOOPBACK}:{up.port}",
            )
            workers = self.proxy(
                "--connect", f"tcp:{LOOPBACK}:{up.port}", "--workers", "2"
            )
            port = await asyncio.to_thread(pooled.listeningPort)
            await asyncio.to_thread(workers.listeningPort)
            for _ in range(3):
                r, w = await connectProxy(port)
                await sendAll(w, b"hello")
                self.assertEqual(await readAll(r), b"ok")
                w.close()
            await asyncio.to_thread(pooled.waitForConnections, 3)
            texts = []
            for proxy in (pooled, workers):
                event = await asyncio.to_thread(
                    proxy.waitForEvent, lambda e: e.get("splicetxEvent") == "metrics"
                )
                texts.append(await asyncio.to_thread(scrape, int(event["port"])))
            up.server.close()
            return texts[0], texts[1]

        single, supervisor = runAsync(scenario(), 90)
        exported = exportedNames(single) | exportedNames(supervisor)
        with open(DASHBOARD) as f:
            wanted = referencedNames(dashboardExpressions(json.load(f)))
        with open(RULES) as f:
            wanted |= referencedNames([f.read()])
        self.assertGreater(len(wanted), 15)
        self.assertEqual(sorted(wanted - exported), [])
        # The traffic made real samples, not only declarations.
        for sample in [
            "splicetx_upstream_failures_total{",
            "splicetx_upstream_bytes_total{",
            "splicetx_bytes_total{",
            "splicetx_draining 0.0",
        ]:
            self.assertIn(sample, single)
        self.assertIn('splicetx_worker_starts_total{worker="1"} 1.0', supervisor)


class PromtoolTests(SynchronousTestCase):
    """
    C{promtool} (Debian package C{prometheus}) accepts the rules and their
    unit tests pass.
    """

    def promtool(self, *args: str) -> subprocess.CompletedProcess[str]:
        promtool = shutil.which("promtool")
        if promtool is None:
            raise SkipTest(
                "promtool is not installed (Debian/Ubuntu: apt-get install "
                "prometheus; .ci/run installs it)"
            )
        return subprocess.run(
            [promtool, *args],
            cwd=DEPLOY,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_checkRules(self) -> None:
        """
        C{promtool check rules} finds every rule valid.
        """
        result = self.promtool("check", "rules", os.path.basename(RULES))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout + result.stderr)

    def test_ruleUnitTests(self) -> None:
        """
        C{promtool test rules}: the alerts fire (and stay quiet) on the
        series of the unit tests.
        """
        result = self.promtool("test", "rules", os.path.basename(RULES_TESTS))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
