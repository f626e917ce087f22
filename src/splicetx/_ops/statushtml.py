# -*- test-case-name: tests.test_status -*-
"""
The HTML of the C{/status} page (L{splicetx._ops.status}): one self-contained
document, no script and no external assets, every value escaped with
C{html.escape}.  It reloads itself every L{REFRESH_SECONDS} seconds by
default (a C{<meta http-equiv="refresh">}: no script), every C{N} seconds
with C{?refresh=N}, never with C{?refresh=0}; the page links the choices.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["renderHTML", "REFRESH_SECONDS", "REFRESH_CHOICES", "MAX_REFRESH"]

#: Seconds between reloads of the page, by default.
REFRESH_SECONDS = 5

#: The reload periods the page links to (0: off).
REFRESH_CHOICES = (0, 2, 5, 30)

#: The longest reload period C{?refresh=} takes, in seconds.
MAX_REFRESH = 3600

CLIENT_TO_UPSTREAM = "client_to_upstream"
UPSTREAM_TO_CLIENT = "upstream_to_client"


def _emptyBytes() -> dict[str, dict[str, int]]:
    return {CLIENT_TO_UPSTREAM: {}, UPSTREAM_TO_CLIENT: {}}


def _bytesText(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _secondsText(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _bytesCell(n: int) -> str:
    return f'<td class="n" title="{int(n)} bytes">{_e(_bytesText(n))}</td>'


def _reasons(table: Mapping[str, int]) -> str:
    if not table:
        return "-"
    return ", ".join(
        f"{_e(k)}&nbsp;{int(v)}"
        for k, v in sorted(table.items(), key=lambda kv: -kv[1])
    )


def _rateText(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.0f}"


def _bytesRateText(value: float | None) -> str:
    if value is None:
        return "-"
    return _bytesText(int(value)) + "/s"


def _rates(table: Mapping[str, Any] | None, key: str) -> Any:
    return None if table is None else table.get(key)


def _failures(counts: Mapping[str, int] | None, rates: Mapping[str, Any] | None) -> str:
    """
    An upstream's failed connects by reason, each with its rate.
    """
    if counts is None:
        return "-"
    if not counts:
        return "0"
    per = (rates or {}).get("failures") or {}
    return ", ".join(
        f"{_e(k)}&nbsp;{int(v)}"
        + (f" <small>({_e(_rateText(per[k]))}/s)</small>" if per.get(k) else "")
        for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _intervalText(snap: Mapping[str, Any]) -> str:
    interval = snap.get("rateInterval")
    if interval is None:
        return "rates: from the next refresh"
    return f"rates over the last {_secondsText(interval)}"


def _refreshLinks(refresh: int) -> str:
    choices = []
    for n in REFRESH_CHOICES:
        text = "off" if n == 0 else f"{n} s"
        if n == refresh:
            choices.append(f"<b>{text}</b>")
        else:
            choices.append(f'<a href="status?refresh={n}">{text}</a>')
    return "refresh " + " ".join(choices)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f6f7f9}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#555;margin-bottom:1em}.meta b{color:#1d2330}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;
margin-bottom:.6em}
th,td{padding:.3em .7em;border-bottom:1px solid #e4e6ea;text-align:left;
vertical-align:top}
th{background:#eef0f3;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
.card{background:#fff;box-shadow:0 1px 2px #0002;padding:.6em 1em;margin-bottom:1em}
.card table{box-shadow:none;display:inline-table;vertical-align:top;
margin:.6em 1.2em 0 0}
.card h2{margin:.2em 0 .3em}code{font-size:.95em}small{color:#666}
"""


def renderHTML(snap: Mapping[str, Any], refresh: int = REFRESH_SECONDS) -> str:
    """
    Render a snapshot as the C{/status} page (every value escaped).

    @param snap: a snapshot from L{ServiceStatus.snapshot
        <splicetx._ops.status.ServiceStatus.snapshot>} (or the supervisor's).
    @param refresh: seconds between reloads; C{0}: the page does not reload.
    @return: the HTML document.
    """
    p = snap["process"]
    serving = p.get("serving")
    state = (
        '<span class="ok">serving</span>'
        if serving
        else '<span class="bad">draining</span>'
    )
    role = p.get("role")
    if role == "worker":
        role = f"worker {p.get('worker')}"
    elif role == "supervisor":
        role = f"supervisor of {p.get('workers')} workers"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        (f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""),
        '<meta name="viewport" content="width=device-width">',
        f"<title>splicetx status — pid {_e(p.get('pid'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>splicetx status</h1>",
        '<div class="meta">',
        f"{state} · version <b>{_e(p.get('version'))}</b> · pid "
        f"<b>{_e(p.get('pid'))}</b> ({_e(role)}) · up "
        f"<b>{_e(_secondsText(p.get('uptime')))}</b> · "
        f"<b>{int(snap.get('connectionsLive') or 0)}</b> live connection(s) · "
        f"{_e(p.get('reactor'))}, Python {_e(p.get('python'))} · "
        f'<a href="status.json">JSON</a> · <a href="metrics">metrics</a> · '
        f"{_refreshLinks(refresh)} · {_e(_intervalText(snap))}",
        "</div>",
    ]
    workers = snap.get("workers") or []
    if workers:
        out.append("<h2>Workers</h2><table><tr><th>worker</th><th>pid</th>")
        out.append("<th>uptime</th><th>live</th><th>starts</th><th>status</th></tr>")
        for w in workers:
            ok = w.get("reachable")
            status = (
                '<span class="ok">ok</span>'
                if ok
                else '<span class="bad">unreachable</span> '
                f"<small>{_e(w.get('error'))}</small>"
            )
            out.append(
                f"<tr><td>{_e(w.get('index'))}</td><td>{_e(w.get('pid'))}</td>"
                f"<td>{_e(_secondsText(w.get('uptime')))}</td>"
                f'<td class="n">{_e(w.get("live"))}</td>'
                f'<td class="n">{_e(w.get("starts"))}</td><td>{status}</td></tr>'
            )
        out.append("</table>")
    out.append("<h2>Listeners</h2>")
    listeners = snap.get("listeners") or []
    if not listeners:
        out.append("<p>No listener.</p>")
    for lst in listeners:
        addresses = ", ".join(_e(a) for a in lst.get("addresses") or []) or "-"
        draining = ' <span class="bad">draining</span>' if lst.get("draining") else ""
        out.append('<div class="card">')
        rates = lst.get("rates")
        byteRates = _rates(rates, "bytes")
        out.append(
            f"<h2><code>{_e(lst.get('forward'))}</code>{draining}</h2>"
            f"<div>listening on <b>{addresses}</b> · "
            f"<b>{int(lst.get('live') or 0)}</b> live, "
            f"<b>{int(lst.get('total') or 0)}</b> accepted · "
            f'<b class="rate">{_e(_rateText(_rates(rates, "connections")))}</b> '
            "connections/s · "
            f"<b>{_e(_bytesRateText(_rates(byteRates, CLIENT_TO_UPSTREAM)))}</b> "
            "client → upstream, "
            f"<b>{_e(_bytesRateText(_rates(byteRates, UPSTREAM_TO_CLIENT)))}</b> "
            "upstream → client · max "
            f"{_e(lst.get('maxConnections') or 'unlimited')}</div>"
        )
        out.append(
            "<table><tr><th>upstream</th><th>health</th><th>live</th>"
            "<th>total</th><th>connections/s</th><th>client → upstream</th>"
            "<th>upstream → client</th><th>connect failures</th></tr>"
        )
        for u in lst.get("upstreams") or []:
            health = u.get("health")
            cls = "ok" if health in ("up", "healthy") else "bad" if health else ""
            ur = u.get("rates")
            ub = _rates(ur, "bytes")
            out.append(
                f"<tr><td><code>{_e(u.get('name'))}</code></td>"
                f'<td class="{cls}">{_e(health or "not checked")}</td>'
                f'<td class="n">{_e(u.get("live"))}</td>'
                f'<td class="n">{_e(u.get("total"))}</td>'
                f'<td class="n">{_e(_rateText(_rates(ur, "connections")))}</td>'
                f'<td class="n">'
                f"{_e(_bytesRateText(_rates(ub, CLIENT_TO_UPSTREAM)))}</td>"
                f'<td class="n">'
                f"{_e(_bytesRateText(_rates(ub, UPSTREAM_TO_CLIENT)))}</td>"
                f"<td>{_failures(u.get('failures'), ur)}</td></tr>"
            )
        out.append("</table>")
        b = lst.get("bytes") or _emptyBytes()
        engines = sorted(set(b[CLIENT_TO_UPSTREAM]) | set(b[UPSTREAM_TO_CLIENT]))
        out.append(
            "<table><tr><th>bytes</th><th>client → upstream</th>"
            "<th>upstream → client</th></tr>"
        )
        for engine in engines or ["splice"]:
            out.append(
                f"<tr><td>{_e(engine)}</td>"
                + _bytesCell(b[CLIENT_TO_UPSTREAM].get(engine, 0))
                + _bytesCell(b[UPSTREAM_TO_CLIENT].get(engine, 0))
                + "</tr>"
            )
        out.append("</table>")
        out.append(
            "<table>"
            "<tr><th>copy fallbacks</th>"
            f"<td>{_reasons(lst.get('fallbacks') or {})}</td></tr>"
            f"<tr><th>refused</th><td>{_reasons(lst.get('refused') or {})}</td></tr>"
            "<tr><th>upstream connect failures</th>"
            f"<td>{_reasons(lst.get('connectFailures') or {})}</td></tr>"
            f"<tr><th>ended</th><td>{_reasons(lst.get('endings') or {})}</td></tr>"
            "</table></div>"
        )
    pipes = snap.get("pipes")
    if pipes:
        out.append(
            "<h2>Kernel pipes</h2><table><tr><th>in use</th><th>reserved</th>"
            "<th>idle</th><th>created</th><th>max</th><th>size</th></tr>"
            f'<tr><td class="n">{_e(pipes.get("inUse"))}</td>'
            f'<td class="n">{_e(pipes.get("reserved"))}</td>'
            f'<td class="n">{_e(pipes.get("idle"))}</td>'
            f'<td class="n">{_e(pipes.get("created"))}</td>'
            f'<td class="n">{_e(pipes.get("max"))}</td>'
            f"<td>{_e(_bytesText(int(pipes.get('size') or 0)))}</td></tr></table>"
        )
    rows = snap.get("connections") or []
    withWorker = any("worker" in r for r in rows)
    out.append(
        f"<h2>Live connections <small>({len(rows)} of "
        f"{int(snap.get('connectionsLive') or 0)}, busiest first, at most "
        f"{int(snap.get('connectionsLimit') or 0)})</small></h2>"
    )
    if rows:
        out.append(
            "<table><tr><th>client</th><th>upstream</th><th>listener</th>"
            + ("<th>worker</th>" if withWorker else "")
            + "<th>engine</th><th>client → upstream</th>"
            "<th>upstream → client</th><th>age</th></tr>"
        )
        for r in rows:
            engine = r.get("engine") or r.get("state")
            out.append(
                f"<tr><td><code>{_e(r.get('client'))}</code></td>"
                f"<td><code>{_e(r.get('upstream'))}</code></td>"
                f"<td><code>{_e(r.get('forward'))}</code></td>"
                + (f'<td class="n">{_e(r.get("worker"))}</td>' if withWorker else "")
                + f"<td>{_e(engine)}</td>"
                + _bytesCell(r.get("bytesClientToUpstream", 0))
                + _bytesCell(r.get("bytesUpstreamToClient", 0))
                + f'<td class="n">{_e(_secondsText(r.get("age")))}</td></tr>'
            )
        out.append("</table>")
    else:
        out.append("<p>None.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)
