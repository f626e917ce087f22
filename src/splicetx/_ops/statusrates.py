# -*- test-case-name: tests.test_status -*-
"""
Rates for the status page (L{splicetx._ops.status}): connections/s,
bytes/s and failed connects/s over the last few seconds, per listener and
per upstream.

A snapshot already holds every counter a rate needs (accepted connections,
bytes by direction including the live relays' bytes, connections made to
and failed connects of each upstream).  L{RateRing} keeps a few earlier
samples of those counters, one taken at each snapshot, and L{applyRates}
divides the change since a sample at least L{RATE_WINDOW} seconds old
(else the oldest kept) by the time between them.  So nothing runs on a
timer, a process nobody polls still pays nothing, and the rates are the
same for a single process and for a supervisor (which applies them to its
merged snapshot).  The ring starts with an all-zero sample when the process
starts serving, so the first snapshot has rates too: averaged since the
start, and C{rateInterval} says over how long.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RATE_WINDOW", "MAX_SAMPLES", "RateRing", "applyRates", "counters"]

#: The shortest span a rate covers when samples allow, in seconds: the
#: page's refresh period, so each reload shows the rates since the last.
RATE_WINDOW = 5.0

#: At most this many samples are kept (when polled faster than
#: C{MAX_SAMPLES / RATE_WINDOW} per second, rates cover less than the
#: window, never less than the time between two polls).
MAX_SAMPLES = 64

CLIENT_TO_UPSTREAM = "client_to_upstream"
UPSTREAM_TO_CLIENT = "upstream_to_client"
_DIRECTIONS = (CLIENT_TO_UPSTREAM, UPSTREAM_TO_CLIENT)


class RateRing:
    """
    Samples of a snapshot's counters, oldest first, each C{(time,
    {key: value})}.

    @ivar window: see L{RATE_WINDOW}.
    @ivar maxSamples: see L{MAX_SAMPLES}.
    """

    def __init__(
        self,
        start: float | None = None,
        window: float = RATE_WINDOW,
        maxSamples: int = MAX_SAMPLES,
    ) -> None:
        """
        @param start: when the counters were all zero (the process started
            serving), on the clock later samples use; C{None}: no such
            sample, the first snapshot has no rates.
        @param window: see L{window}.
        @param maxSamples: see L{maxSamples}.
        """
        self.window = window
        self.maxSamples = max(2, maxSamples)
        self._samples: deque[tuple[float, dict[Any, float]]] = deque()
        if start is not None:
            self._samples.append((start, {}))

    def __len__(self) -> int:
        return len(self._samples)

    def _base(self, now: float) -> tuple[float, dict[Any, float]] | None:
        """
        The sample to measure from: the newest at least L{window} seconds
        old, else the oldest one older than C{now}.
        """
        chosen = None
        for sample in self._samples:
            if now - sample[0] >= self.window:
                chosen = sample
            else:
                break
        if chosen is None and self._samples and self._samples[0][0] < now:
            chosen = self._samples[0]
        return chosen

    def add(
        self, now: float, values: Mapping[Any, float]
    ) -> tuple[float | None, dict[Any, float]]:
        """
        Record a sample and give the rates since the base sample.

        A counter missing from the base counts from zero (a listener or an
        upstream added since); one that went down was reset (a reload made
        its upstream anew) and counts from zero too, as Prometheus's
        C{rate()} does.

        @param now: the sample's time, in seconds.
        @param values: the counters now, by key.
        @return: the interval the rates cover (C{None} when there is no
            earlier sample) and the rate of every key of C{values}, per
            second.
        """
        base = self._base(now)
        rates: dict[Any, float] = {}
        interval = None
        if base is not None:
            interval = now - base[0]
            before = base[1]
            for key, value in values.items():
                delta = value - before.get(key, 0)
                if delta < 0:
                    delta = value
                rates[key] = delta / interval
        samples = self._samples
        if samples and samples[-1][0] >= now:
            # Two snapshots in one clock tick: keep the later figures.
            samples.pop()
        samples.append((now, dict(values)))
        # A sample older than one that is already a window old can never
        # be the base again.
        while len(samples) > 1 and now - samples[1][0] >= self.window:
            samples.popleft()
        while len(samples) > self.maxSamples:
            samples.popleft()
        return interval, rates


def _sumBytes(table: Mapping[str, Any] | None, direction: str) -> int:
    return sum(int(n) for n in ((table or {}).get(direction) or {}).values())


def _upstreamKey(listener: Mapping[str, Any], upstream: Mapping[str, Any]) -> tuple:
    return (listener.get("forward"), upstream.get("pool"), upstream.get("name"))


def counters(snap: Mapping[str, Any]) -> Iterator[tuple[Any, float]]:
    """
    The counters of a snapshot that rates are taken of, by key.

    @param snap: a snapshot (L{splicetx._ops.status.ServiceStatus.snapshot}).
    @return: C{(key, value)} pairs.
    """
    for listener in snap.get("listeners") or []:
        forward = listener.get("forward")
        yield ("listener", forward, "connections"), float(listener.get("total") or 0)
        for direction in _DIRECTIONS:
            value = _sumBytes(listener.get("bytes"), direction)
            yield ("listener", forward, direction), float(value)
        for upstream in listener.get("upstreams") or []:
            key = _upstreamKey(listener, upstream)
            if upstream.get("total") is not None:
                yield (*key, "connections"), float(upstream["total"])
            table = upstream.get("bytes")
            if table is not None:
                for direction in _DIRECTIONS:
                    yield (*key, direction), float(table.get(direction) or 0)
            for reason, n in (upstream.get("failures") or {}).items():
                yield (*key, "failures", reason), float(n)


def applyRates(snap: dict[str, Any], ring: RateRing, now: float) -> dict[str, Any]:
    """
    Sample a snapshot's counters into C{ring} and write the rates into it:
    C{rateInterval} at the top, C{rates} in each listener and upstream
    (C{None} when there is no earlier sample, or for an upstream without
    counters of its own).  See C{docs/status.md}.

    @param snap: the snapshot, changed in place.
    @param ring: this process's L{RateRing}.
    @param now: the time on the ring's clock.
    @return: C{snap}.
    """
    interval, rates = ring.add(now, dict(counters(snap)))
    snap["rateInterval"] = None if interval is None else round(interval, 3)
    for listener in snap.get("listeners") or []:
        forward = listener.get("forward")
        if interval is None:
            listener["rates"] = None
        else:
            listener["rates"] = {
                "connections": _r(rates.get(("listener", forward, "connections"))),
                "bytes": {
                    d: _r(rates.get(("listener", forward, d))) for d in _DIRECTIONS
                },
            }
        for upstream in listener.get("upstreams") or []:
            upstream["rates"] = _upstreamRates(
                _upstreamKey(listener, upstream), upstream, interval, rates
            )
    return snap


def _upstreamRates(
    key: tuple, upstream: Mapping[str, Any], interval: float | None, rates: Any
) -> dict[str, Any] | None:
    if interval is None or upstream.get("total") is None:
        return None
    out: dict[str, Any] = {
        "connections": _r(rates.get((*key, "connections"))),
        "bytes": None,
        "failures": {
            reason: _r(rates.get((*key, "failures", reason)))
            for reason in sorted(upstream.get("failures") or {})
        },
    }
    if upstream.get("bytes") is not None:
        out["bytes"] = {d: _r(rates.get((*key, d))) for d in _DIRECTIONS}
    return out


def _r(value: float | None) -> float:
    return 0.0 if value is None else round(value, 3)
