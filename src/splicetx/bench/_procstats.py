"""
Figures for one process tree (a proxy and whatever it forks) from psutil:
CPU time (user and system apart), context switches, RSS and open fds; and
pinning process trees to one CPU for a load (L{pinned}).

CPU time is exact across forks: the root's own time, plus the time of the
children it has reaped (C{children_user}/C{children_system}), plus the time of
live descendants.  Context switches of a short-lived child are counted up to
the last sample that saw it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import attr


@attr.s(auto_attribs=True, slots=True)
class Snapshot:
    """
    One look at a process tree.
    """

    user: float = 0.0
    system: float = 0.0
    rss: int = 0
    fds: int = 0
    procs: int = 0
    ctx: dict[int, int] = attr.Factory(dict)


def _tree(pid: int) -> list[Any]:
    """
    The psutil processes of C{pid} and its descendants, C{pid} first;
    empty when psutil cannot see it.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def treePids(pid: int) -> list[int]:
    """
    Process C{pid} and its descendants (just C{[pid]} when psutil cannot
    see it).
    """
    return [p.pid for p in _tree(pid)] or [pid]


def snapshot(pid: int) -> Snapshot:
    """
    Sum the figures of process C{pid} and its descendants.
    """
    import psutil

    snap = Snapshot()
    procs = _tree(pid)
    for i, p in enumerate(procs):
        try:
            with p.oneshot():
                t = p.cpu_times()
                snap.user += t.user
                snap.system += t.system
                if i == 0:
                    snap.user += t.children_user
                    snap.system += t.children_system
                snap.rss += p.memory_info().rss
                snap.fds += p.num_fds()
                c = p.num_ctx_switches()
                snap.ctx[p.pid] = c.voluntary + c.involuntary
                snap.procs += 1
        except psutil.Error:
            continue
    return snap


class TreeMeter:
    """
    Measure a process tree over an interval: C{start()}, run the load,
    C{stop()}; a background thread samples peak RSS and fds meanwhile.
    """

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: Snapshot | None = None
        self._ctxFirst: dict[int, int] = {}
        self._ctxLast: dict[int, int] = {}
        self.peakRSS = 0
        self.peakFDs = 0

    def _take(self) -> Snapshot:
        assert self.pid is not None
        s = snapshot(self.pid)
        for pid, n in s.ctx.items():
            self._ctxFirst.setdefault(pid, 0 if self._first is not None else n)
            self._ctxLast[pid] = n
        self.peakRSS = max(self.peakRSS, s.rss)
        self.peakFDs = max(self.peakFDs, s.fds)
        return s

    def start(self) -> None:
        if self.pid is None:
            return
        self._first = None
        self._first = self._take()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def stop(self) -> dict[str, Any]:
        """
        End the interval.

        @return: C{user}, C{system} (CPU seconds), C{ctx} (context switches),
            C{peakRSS} (bytes), C{peakFDs}, C{procs}; empty without a process.
        """
        if self.pid is None or self._first is None:
            return {}
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        last = self._take()
        first = self._first
        ctx = sum(self._ctxLast[p] - self._ctxFirst[p] for p in self._ctxLast)
        return {
            "user": max(0.0, last.user - first.user),
            "system": max(0.0, last.system - first.system),
            "ctx": ctx,
            "peakRSS": self.peakRSS,
            "peakFDs": self.peakFDs,
            "procs": last.procs,
        }


def _allTasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


@contextlib.contextmanager
def pinned(pids: list[int], enabled: bool) -> Iterator[bool]:
    """
    Pin every thread of C{pids} (and the calling thread) to one CPU for the
    duration; restore afterwards.
    """
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield False
        return
    allowed = os.sched_getaffinity(0)
    cpu = {max(allowed)}
    saved: list[tuple[int, set[int]]] = []
    tids = [0]
    for pid in pids:
        tids += _allTasks(pid)
        try:
            import psutil

            for kid in psutil.Process(pid).children(recursive=True):
                tids += _allTasks(kid.pid)
        except Exception:
            pass
    for tid in tids:
        try:
            saved.append((tid, os.sched_getaffinity(tid)))
            os.sched_setaffinity(tid, cpu)
        except OSError:
            pass
    try:
        yield True
    finally:
        for tid, mask in saved:
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass


def cpuOfSelf() -> float:
    """
    CPU seconds (user and system) this process has used.
    """
    t = os.times()
    return t.user + t.system


def cpuOf(pid: int | None) -> float:
    """
    CPU seconds (user and system) of the process tree of C{pid} (0 for
    C{None}).
    """
    if pid is None:
        return 0.0
    s = snapshot(pid)
    return s.user + s.system
