"""
Reading the bench's summary table: the median of one figure, and the
cells of the Markdown tables (C{median (min–max)}).  Shared by the report
(L{splicetx.bench._report}) and the loads that add tables of their own.
"""

from __future__ import annotations

__all__ = ["med", "cell", "fmt"]


def med(summary: dict, proxy: str, load: str, metric: str) -> float | None:
    """
    The median of one figure, or C{None} when it was not measured.
    """
    try:
        return summary[proxy][load][metric]["median"]
    except KeyError:
        return None


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def cell(summary: dict, proxy: str, load: str, metric: str, digits: int = 2) -> str:
    try:
        s = summary[proxy][load][metric]
    except KeyError:
        return "—"
    if s["n"] > 1:
        return (
            f"{fmt(s['median'], digits)} "
            f"({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"
        )
    return fmt(s["median"], digits)
