"""
Turn the bench's raw runs into medians and ranges, ratios against the
baselines, the project's performance targets, and the three outputs: C{results.json},
C{results.md} and C{results.png}.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

from splicetx.bench._figures import cell as _cell
from splicetx.bench._figures import fmt as _fmt
from splicetx.bench._figures import med

#: Load ids in display order, with a description.
LOAD_TITLES = {
    "bulk-1-up": "bulk, 1 stream, upload (client to backend)",
    "bulk-1-down": "bulk, 1 stream, download (backend to client)",
    "bulk-8-up": "bulk, 8 streams, upload",
    "bulk-8-down": "bulk, 8 streams, download",
    "latency": "1 KiB ping-pong",
    "churn": "connection churn (open, 100 B echo, the backend closes, close)",
    "keepalive": "keep-alive requests (100 B request, 1 KiB response)",
    "idle": "idle connections",
    "underbulk": "1 KiB ping-pong under bulk",
}


def _shown(argv: list[str]) -> list[str]:
    """
    A command line as a reader would type it: this machine's interpreter
    path becomes C{python3}.
    """
    return ["python3" if a == sys.executable else a for a in argv]


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict]]]:
    """
    Median, min, max and count of every numeric figure, per proxy and load.
    """
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        per = values.setdefault(run["proxy"], {}).setdefault(run["load"], {})
        for key, v in run.items():
            if key in ("proxy", "load", "rep") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                per.setdefault(key, []).append(float(v))
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for proxy, loads in values.items():
        for load, metrics in loads.items():
            for key, vs in metrics.items():
                out.setdefault(proxy, {}).setdefault(load, {})[key] = {
                    "median": statistics.median(vs),
                    "min": min(vs),
                    "max": max(vs),
                    "n": len(vs),
                }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def targets(summary: dict, splice: str) -> list[dict[str, Any]]:
    """
    Evaluate the project's performance targets for the splice engine at its
    default settings (C{splice}).  Informational only: the bench never fails
    on them.
    """
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher: bool, unit: str):
        if value is None:
            return
        met = value >= goal if higher else value <= goal
        out.append(
            {
                "target": name,
                "value": value,
                "goal": goal,
                "higherIsBetter": higher,
                "unit": unit,
                "met": met,
            }
        )

    for d in ("up", "down"):
        load8, load1 = f"bulk-8-{d}", f"bulk-1-{d}"
        add(
            f"{load8}: throughput vs portforward",
            _ratio(
                med(summary, splice, load8, "gbps"),
                med(summary, "portforward", load8, "gbps"),
            ),
            2.3,
            True,
            "x",
        )
        add(
            f"{load8}: CPU-s/GB vs portforward",
            _ratio(
                med(summary, splice, load8, "cpuPerGB"),
                med(summary, "portforward", load8, "cpuPerGB"),
            ),
            0.25,
            False,
            "x",
        )
        add(
            f"{load1}: throughput vs portforward",
            _ratio(
                med(summary, splice, load1, "gbps"),
                med(summary, "portforward", load1, "gbps"),
            ),
            1.8,
            True,
            "x",
        )
        add(
            f"{load8}: share of direct throughput",
            _ratio(
                med(summary, splice, load8, "gbps"),
                med(summary, "direct", load8, "gbps"),
            ),
            0.65,
            True,
            "",
        )
        for load in (load1, load8):
            add(
                f"{load}: CPU-s/GB vs copy engine",
                _ratio(
                    med(summary, splice, load, "cpuPerGB"),
                    med(summary, "copy", load, "cpuPerGB"),
                ),
                0.5,
                False,
                "x",
            )
    add(
        "latency p50 vs portforward",
        _ratio(
            med(summary, splice, "latency", "p50us"),
            med(summary, "portforward", "latency", "p50us"),
        ),
        1.0,
        False,
        "x",
    )
    add(
        "churn conns/s vs portforward (aim: 2x)",
        _ratio(
            med(summary, splice, "churn", "connsPerSec"),
            med(summary, "portforward", "churn", "connsPerSec"),
        ),
        1.0,
        True,
        "x",
    )
    add(
        "idle: RSS per connection held",
        med(summary, splice, "idle", "rssPerConnKiB"),
        2.5,
        False,
        " KiB",
    )
    add(
        "idle: fds per connection held",
        med(summary, splice, "idle", "fdsPerConn"),
        2.0,
        False,
        " fds",
    )
    from splicetx.bench import _underbulk

    for name, value, goal, higher, unit in _underbulk.targets(summary, splice):
        add(name, value, goal, higher, unit)
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def _times(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def markdown(result: dict[str, Any]) -> str:
    """
    Render the Markdown report.
    """
    meta = result["meta"]
    summary = result["summary"]
    proxies = [p for p in result["proxies"] if p in summary]
    labels = {p: d["label"] for p, d in result["proxies"].items()}
    lines = [
        "# splicetx bench results",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- When: {meta['started']} ({meta['elapsed']:.0f} s)",
        f"- Machine: {meta['machine']}",
        f"- Software: {meta['software']}",
        f"- splicetx launched with: {meta['launcher']}",
        f"- splicetx core: {meta.get('core', 'pure Python')} (a `-pure` "
        "proxy runs the pure-Python one: SPLICETX_NO_EXTENSIONS=1)",
        f"- Load generator: {meta['generator']}",
        f"- Repetitions: {meta['reps']} (proxies interleaved, in a shuffled "
        "order of each repetition's own"
        + (
            "; each repetition in a fresh process of each proxy"
            if meta.get("freshProcess")
            else "; one process of each proxy for all"
        )
        + "); cells show median (min–max) when there is more than one.",
        "- CPU, context switches, RSS and fds are the proxy's process tree "
        "(psutil); direct has no proxy process.",
        "",
    ]
    skipped = result.get("skipped", {})
    if skipped:
        lines.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        lines.append("")
    strace = result.get("strace", {})
    bulkLoads = [lo for lo in LOAD_TITLES if lo.startswith("bulk")]
    for load in bulkLoads:
        if not any(load in summary.get(p, {}) for p in proxies):
            continue
        lines += [
            f"## {LOAD_TITLES[load]}",
            "",
            "| proxy | Gbit/s | % of direct | × portforward | CPU-s/GB | "
            "user / sys | CPU × portforward | ctx switches/GB | peak RSS MiB | "
            "peak fds |" + (" syscalls/GB |" if strace else ""),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            + ("---:|" if strace else ""),
        ]
        for p in proxies:
            if load not in summary[p]:
                continue
            g = med(summary, p, load, "gbps")
            cpu = med(summary, p, load, "cpuPerGB")
            row = [
                f"**{p}**",
                _cell(summary, p, load, "gbps"),
                _pct(_ratio(g, med(summary, "direct", load, "gbps"))),
                _times(_ratio(g, med(summary, "portforward", load, "gbps"))),
                _cell(summary, p, load, "cpuPerGB", 3),
                f"{_fmt(med(summary, p, load, 'cpuUserPerGB'), 3)} / "
                f"{_fmt(med(summary, p, load, 'cpuSysPerGB'), 3)}",
                _times(_ratio(cpu, med(summary, "portforward", load, "cpuPerGB"))),
                _fmt(med(summary, p, load, "ctxPerGB"), 0),
                _fmt(med(summary, p, load, "peakRSSMiB"), 1),
                _fmt(med(summary, p, load, "peakFDs"), 0),
            ]
            if strace:
                st = strace.get(p, {})
                row.append(_fmt(st.get("syscallsPerGB"), 0))
            lines.append("| " + " | ".join(row) + " |")
        gen = [
            v
            for v in (med(summary, p, load, "genCPUPerGB") for p in proxies)
            if v is not None
        ]
        if gen:
            lines += [
                "",
                f"Load generator (client + backend) CPU-s/GB: "
                f"{_fmt(min(gen), 3)}–{_fmt(max(gen), 3)}.",
            ]
        lines.append("")

    if any("latency" in summary.get(p, {}) for p in proxies):
        lines += [
            "## 1 KiB ping-pong latency",
            "",
            "Client, backend and proxy pinned to one CPU"
            if meta.get("pinned")
            else "Not pinned.",
            "",
            "| proxy | p50 µs | p99 µs | added p50 µs vs direct | × portforward p50 "
            "| proxy CPU µs per round trip |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        d50 = med(summary, "direct", "latency", "p50us")
        for p in proxies:
            if "latency" not in summary[p]:
                continue
            p50 = med(summary, p, "latency", "p50us")
            added = None if p50 is None or d50 is None else p50 - d50
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"**{p}**",
                        _cell(summary, p, "latency", "p50us", 1),
                        _cell(summary, p, "latency", "p99us", 1),
                        _fmt(added, 1),
                        _times(
                            _ratio(p50, med(summary, "portforward", "latency", "p50us"))
                        ),
                        _fmt(med(summary, p, "latency", "cpuUsPerOp"), 1),
                    ]
                )
                + " |"
            )
        lines.append("")

    if any("churn" in summary.get(p, {}) for p in proxies):
        lines += [
            "## Connection churn",
            "",
            f"{meta.get('churnWorkers', 4)} client threads, each: open, 100 B "
            "echo, the backend closes, the client closes once the proxy passed "
            "that on (so no proxy's connects meet the TIME_WAIT sockets an "
            "earlier run left).",
            "",
            "| proxy | conns/s | × portforward | failures | proxy CPU µs per conn "
            "| of which user |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in proxies:
            if "churn" not in summary[p]:
                continue
            c = med(summary, p, "churn", "connsPerSec")
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"**{p}**",
                        _cell(summary, p, "churn", "connsPerSec", 0),
                        _times(
                            _ratio(
                                c, med(summary, "portforward", "churn", "connsPerSec")
                            )
                        ),
                        _fmt(med(summary, p, "churn", "failures"), 0),
                        _fmt(med(summary, p, "churn", "cpuUsPerOp"), 1),
                        _fmt(med(summary, p, "churn", "cpuUserUsPerOp"), 1),
                    ]
                )
                + " |"
            )
        lines.append("")

    lines += preambleSection(summary, proxies, meta, result["proxies"])

    lines += keepaliveSection(summary, proxies, meta)

    lines += idleSection(summary, proxies, meta)

    from splicetx.bench import _underbulk

    lines += _underbulk.markdownLines(summary, proxies, meta)

    # (Not the limited ones: their rows are in the bulk and churn tables.)
    sweep = [
        p
        for p in proxies
        if p.startswith("splice-") and not result["proxies"][p].get("extraArgs")
    ]
    loadsHere = [lo for lo in bulkLoads if any(lo in summary.get(p, {}) for p in sweep)]
    if sweep and loadsHere:
        lines += [
            "## Pipe-size sweep (splice engine)",
            "",
            "| proxy | "
            + " | ".join(f"{lo} Gbit/s | {lo} CPU-s/GB" for lo in loadsHere)
            + " |",
            "|---|" + "---:|---:|" * len(loadsHere),
        ]
        for p in sweep + [p for p in ("plainloop",) if p in proxies]:
            cells = []
            for lo in loadsHere:
                cells += [
                    _fmt(med(summary, p, lo, "gbps")),
                    _fmt(med(summary, p, lo, "cpuPerGB"), 3),
                ]
            lines.append(f"| **{p}** | " + " | ".join(cells) + " |")
        lines.append("")

    if result.get("targets"):
        lines += [
            f"## Targets, for {result['meta']['spliceDefault']}",
            "",
            "| target | measured | goal | met |",
            "|---|---:|---:|:---:|",
        ]
        for t in result["targets"]:
            unit = t["unit"]
            v = f"{t['value']:.2f}{unit}" if unit else _pct(t["value"])
            goal = (">= " if t["higherIsBetter"] else "<= ") + (
                f"{t['goal']:.2f}{unit}" if unit else _pct(t["goal"])
            )
            lines.append(
                f"| {t['target']} | {v} | {goal} | {'yes' if t['met'] else 'NO'} |"
            )
        lines.append("")

    if strace:
        lines += [
            "## System calls (`--strace`, a separate untimed run of "
            f"{meta.get('straceLoad')})",
            "",
            "| proxy | syscalls/GB | top calls (count/GB) |",
            "|---|---:|---|",
        ]
        for p, st in strace.items():
            if "error" in st:
                lines.append(f"| **{p}** | — | {st['error']} |")
                continue
            top = ", ".join(f"{k} {_fmt(v, 0)}" for k, v in st["topPerGB"])
            lines.append(f"| **{p}** | {_fmt(st['syscallsPerGB'], 0)} | {top} |")
        lines.append("")

    for load, byProxy in (result.get("perf") or {}).items():
        lines += [
            f"## Where the CPU goes (`--perf`, a separate untimed run of {load})",
            "",
            "Share of the proxy's CPU samples (perf record -e cpu-clock): in the "
            "kernel (system calls and the network stack they drive), in the "
            "Python interpreter, and in other code (C extensions, libc, a C "
            "proxy's own code).",
            "",
            "| proxy | kernel | Python interpreter | other | top symbols |",
            "|---|---:|---:|---:|---|",
        ]
        for p, pf in byProxy.items():
            if "error" in pf:
                lines.append(f"| **{p}** | — | — | — | {pf['error']} |")
                continue
            top = ", ".join(f"{k} {v:.0f} %" for k, v in pf["topSymbols"][:4])
            lines.append(
                f"| **{p}** | {pf['kernel']:.0f} % | {pf['python']:.0f} % "
                f"| {pf['other']:.0f} % | {top} |"
            )
        lines.append("")

    lines += ["## Proxies", ""]
    for p, d in result["proxies"].items():
        how = f" — `{' '.join(_shown(d['argv']))}`" if d.get("argv") else ""
        lines.append(f"- **{p}**: {labels[p]}{how}")
        idle = meta.get("idleArgv", {}).get(p)
        if idle:
            lines.append(f"  - for the idle load: `{' '.join(_shown(idle))}`")
    errors = result.get("errors", [])
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {e}" for e in errors[:30]]
    lines.append("")
    return "\n".join(lines)


def idleSection(summary: dict, proxies: list[str], meta: dict) -> list[str]:
    """
    The idle table: RSS and fds per idle connection held, and how long a
    fresh connection takes meanwhile (empty without that load).
    """
    if not any("idle" in summary.get(p, {}) for p in proxies):
        return []
    n = meta.get("idleConns")
    lines = [
        "## Idle connections",
        "",
        f"{n} connections opened (each proven with a 100 B echo) and held, "
        "on a proxy process started for this load alone in each repetition "
        f"(after {meta.get('idleWarmup', 20)} warm-up connections) and "
        "stopped after it; RSS and fds "
        "per connection are the process tree's growth over the baseline "
        "taken just before, divided by the connections held. Meanwhile "
        f"{meta.get('idleFresh', 50)} new connections, one after another: "
        "connect + 100 B echo, in ms (a proxy that serves none of 5 in a "
        "row is not tried further). splicetx and HAProxy were allowed "
        f"{meta.get('idleMaxConnections')} connections for this load "
        "(`--max-connections`, `maxconn`).",
        "",
        "| proxy | conns held | RSS KiB per conn | fds per conn | failures "
        "| fresh conn p50 ms | fresh conn max ms | fds left after close |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in proxies:
        if "idle" not in summary[p]:
            continue
        fresh = med(summary, p, "idle", "freshFailures")
        freshFailed = f" (fresh: {_fmt(fresh, 0)})" if fresh else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    f"**{p}**",
                    _fmt(med(summary, p, "idle", "conns"), 0),
                    _cell(summary, p, "idle", "rssPerConnKiB", 2),
                    _cell(summary, p, "idle", "fdsPerConn", 2),
                    _fmt(med(summary, p, "idle", "failures"), 0) + freshFailed,
                    _cell(summary, p, "idle", "freshP50Ms", 2),
                    _cell(summary, p, "idle", "freshMaxMs", 2),
                    _fmt(med(summary, p, "idle", "fdsLeft"), 0),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def preambleSection(
    summary: dict, proxies: list[str], meta: dict, described: dict
) -> list[str]:
    """
    The churn of the preamble configurations (a PROXY header, an SNI
    route) beside the plain forward and HAProxy, CPU per connection as a
    multiple of the plain forward's (empty without them).
    """
    plain = meta.get("spliceDefault", "splice-1m")
    withPreamble = [
        p
        for p in proxies
        if described.get(p, {}).get("preamble") and "churn" in summary[p]
    ]
    if not withPreamble:
        return []
    base = med(summary, plain, "churn", "cpuUsPerOp")
    lines = [
        "## Connection churn with a preamble",
        "",
        "The churn above, each client first sending a PROXY v1 line or v2 "
        "header, or a TLS ClientHello whose server name routes it (the "
        "backend echoes the ClientHello too; no TLS is spoken).",
        "",
        f"| proxy | preamble | conns/s | proxy CPU µs per conn | CPU × {plain} |",
        "|---|---|---:|---:|---:|",
    ]
    rows = [p for p in (plain, "haproxy") if p in proxies and "churn" in summary[p]]
    for p in rows + withPreamble:
        cpu = med(summary, p, "churn", "cpuUsPerOp")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"**{p}**",
                    described.get(p, {}).get("preamble") or "none",
                    _cell(summary, p, "churn", "connsPerSec", 0),
                    _fmt(cpu, 1),
                    _times(_ratio(cpu, base)),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def keepaliveSection(summary: dict, proxies: list[str], meta: dict) -> list[str]:
    """
    The keep-alive table: requests per second and proxy CPU per request,
    with the plain loop as the yardstick (empty without that load).
    """
    if not any("keepalive" in summary.get(p, {}) for p in proxies):
        return []
    lines = [
        "## Keep-alive requests",
        "",
        f"{meta.get('keepaliveConns', 50)} connections kept open, each with one "
        "100 B request outstanding, answered with 1 KiB.",
        "",
        "| proxy | requests/s | × plainloop | failures | proxy CPU µs per request "
        "| of which user |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in proxies:
        if "keepalive" not in summary[p]:
            continue
        r = med(summary, p, "keepalive", "requestsPerSec")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"**{p}**",
                    _cell(summary, p, "keepalive", "requestsPerSec", 0),
                    _times(
                        _ratio(
                            r, med(summary, "plainloop", "keepalive", "requestsPerSec")
                        )
                    ),
                    _fmt(med(summary, p, "keepalive", "failures"), 0),
                    _fmt(med(summary, p, "keepalive", "cpuUsPerOp"), 1),
                    _fmt(med(summary, p, "keepalive", "cpuUserUsPerOp"), 1),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def chart(result: dict[str, Any], path: str) -> None:
    """
    Draw throughput and CPU/GB per proxy for the bulk loads, and the
    pipe-size sweep, into a PNG (matplotlib, Agg backend).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    proxies = [p for p in result["proxies"] if p in summary]
    loads = [
        lo
        for lo in LOAD_TITLES
        if lo.startswith("bulk") and any(lo in summary.get(p, {}) for p in proxies)
    ]
    bulkProxies = [p for p in proxies if any(lo in summary[p] for lo in loads)]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    width = 0.8 / max(1, len(loads))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    ax = axes[0]
    for i, lo in enumerate(loads):
        xs, ys, lo_, hi_ = [], [], [], []
        for j, p in enumerate(bulkProxies):
            s = summary[p].get(lo, {}).get("gbps")
            if s is None:
                continue
            xs.append(j + i * width)
            ys.append(s["median"])
            lo_.append(s["median"] - s["min"])
            hi_.append(s["max"] - s["median"])
        ax.bar(xs, ys, width, yerr=[lo_, hi_], label=lo, color=colors[i % len(colors)])
    ax.set_xticks([j + width * (len(loads) - 1) / 2 for j in range(len(bulkProxies))])
    ax.set_xticklabels(bulkProxies, rotation=35, ha="right")
    ax.set_ylabel("Gbit/s (median, min–max)")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)

    ax = axes[1]
    cpuProxies = [p for p in bulkProxies if p != "direct"]
    for i, lo in enumerate(loads):
        xs, us, ss = [], [], []
        for j, p in enumerate(cpuProxies):
            u = summary[p].get(lo, {}).get("cpuUserPerGB")
            s = summary[p].get(lo, {}).get("cpuSysPerGB")
            if u is None or s is None:
                continue
            xs.append(j + i * width)
            us.append(u["median"])
            ss.append(s["median"])
        c = colors[i % len(colors)]
        ax.bar(xs, us, width, color=c, label=f"{lo} user")
        ax.bar(xs, ss, width, bottom=us, color=c, alpha=0.45, hatch="//")
    ax.set_xticks([j + width * (len(loads) - 1) / 2 for j in range(len(cpuProxies))])
    ax.set_xticklabels(cpuProxies, rotation=35, ha="right")
    ax.set_ylabel("proxy CPU seconds per GB (solid user, hatched system)")
    ax.set_title("CPU per byte (lower is better)")
    ax.legend(fontsize=8)

    ax = axes[2]
    sweep = sorted(
        (result["proxies"][p]["pipeSize"], p)
        for p in proxies
        # One process per pipe size: the --workers rows are not part of it.
        if p.startswith("splice-")
        and result["proxies"][p].get("pipeSize")
        and not result["proxies"][p].get("workers")
        and not result["proxies"][p].get("extraArgs")
    )
    if sweep:
        ax2 = ax.twinx()
        sizes = [s >> 10 for s, _ in sweep]
        for i, lo in enumerate(loads):
            g = [med(summary, p, lo, "gbps") for _, p in sweep]
            c = [med(summary, p, lo, "cpuPerGB") for _, p in sweep]
            col = colors[i % len(colors)]
            ax.plot(sizes, g, "o-", color=col, label=f"{lo} Gbit/s")
            ax2.plot(sizes, c, "s--", color=col, alpha=0.7, label=f"{lo} CPU-s/GB")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s} KiB" for s in sizes])
        ax.set_xlabel("pipe size")
        ax.set_ylabel("Gbit/s (solid)")
        ax2.set_ylabel("CPU-s/GB (dashed)")
        ax.legend(fontsize=7, loc="upper left")
        ax2.legend(fontsize=7, loc="upper right")
    ax.set_title("Pipe-size sweep, splice engine")
    fig.suptitle(
        f"splicetx bench — {result['meta']['machine']} — "
        f"{result['meta']['reps']} repetition(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict[str, Any], outDir: str, drawChart: bool = True) -> list[str]:
    """
    Write C{results.json}, C{results.md} and (unless told not to) C{results.png}
    into C{outDir}.

    @return: the paths written.
    """
    os.makedirs(outDir, exist_ok=True)
    paths = []
    p = os.path.join(outDir, "results.json")
    with open(p, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False)
    paths.append(p)
    p = os.path.join(outDir, "results.md")
    with open(p, "w") as f:
        f.write(markdown(result))
    paths.append(p)
    if drawChart:
        p = os.path.join(outDir, "results.png")
        chart(result, p)
        paths.append(p)
    return paths
