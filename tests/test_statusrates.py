"""
Tests for L{splicetx._ops.statusrates} and the rates on the status page:
the ring of samples, the rates of a snapshot per listener and per upstream,
and the page's optional refresh.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from splicetx import PipePool, RelayResult
from splicetx._ops.metrics import ProxyMetrics
from splicetx._ops.status import ServiceStatus, SupervisorStatus, renderHTML
from splicetx._ops.statusrates import RateRing, applyRates
from splicetx._ops.statusweb import refreshSeconds

from .test_status import _Factory, _Proto, _Service


class RateRingTests(SynchronousTestCase):
    """
    L{RateRing} measures from the newest sample a window old, else the
    oldest, and keeps only the samples that can still be measured from.
    """

    def test_firstSample(self) -> None:
        """
        Without an earlier sample there is no interval and no rate.
        """
        ring = RateRing(window=5)
        self.assertEqual(ring.add(10.0, {"a": 3}), (None, {}))

    def test_fromStart(self) -> None:
        """
        A ring started at C{start} counts every counter from zero then.
        """
        ring = RateRing(start=0.0, window=5)
        self.assertEqual(ring.add(2.0, {"a": 4}), (2.0, {"a": 2.0}))

    def test_windowBase(self) -> None:
        """
        With samples every second, the rate covers the last window: from
        the newest sample at least a window old.
        """
        ring = RateRing(start=0.0, window=5)
        for t in range(1, 10):
            ring.add(float(t), {"a": t * 10})
        interval, rates = ring.add(10.0, {"a": 150})
        self.assertEqual(interval, 5.0)
        self.assertEqual(rates, {"a": (150 - 50) / 5})
        self.assertLessEqual(len(ring), 7)

    def test_resetAndNewKeys(self) -> None:
        """
        A counter that went down counts from zero (a reset); a new one too.
        """
        ring = RateRing(start=0.0, window=5)
        ring.add(5.0, {"a": 100})
        interval, rates = ring.add(10.0, {"a": 20, "b": 5})
        self.assertEqual((interval, rates), (5.0, {"a": 4.0, "b": 1.0}))

    def test_sameTick(self) -> None:
        """
        Two samples at one time keep the later figures and never divide by
        zero.
        """
        ring = RateRing(start=0.0, window=5)
        ring.add(5.0, {"a": 10})
        ring.add(5.0, {"a": 20})
        self.assertEqual(ring.add(10.0, {"a": 20}), (5.0, {"a": 0.0}))

    def test_bounded(self) -> None:
        """
        Polled faster than the ring holds, it keeps at most C{maxSamples}.
        """
        ring = RateRing(start=0.0, window=5, maxSamples=4)
        for i in range(1, 100):
            ring.add(i / 100, {"a": i})
        self.assertEqual(len(ring), 4)


class SnapshotRatesTests(SynchronousTestCase):
    """
    A snapshot's rates per listener and per upstream, from the ring its
    L{ServiceStatus} keeps.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = ProxyMetrics()
        self.proto = _Proto(40000, 100, 50, 1000)
        self.factory = _Factory("web", [self.proto], PipePool())
        service = _Service([self.factory], self.metrics)
        self.status = ServiceStatus(service, self.clock)

    def test_noEarlierSample(self) -> None:
        """
        A snapshot taken when the service started has no rates yet, and the
        page says when they come.
        """
        snap = self.status.snapshot()
        self.assertIsNone(snap["rateInterval"])
        self.assertIsNone(snap["listeners"][0]["rates"])
        self.assertIn("rates: from the next refresh", renderHTML(snap))

    def test_listenerRates(self) -> None:
        """
        Connections/s and bytes/s (finished and live relays' bytes) over
        the time since the last snapshot a window ago.
        """
        self.status.snapshot()
        self.clock.advance(5)
        for _ in range(10):
            self.metrics.connectionOpened("web")
        self.metrics.relayFinished(
            RelayResult("splice", 1000, 0, 1.0, "done", "closed", None), "web"
        )
        self.proto.relay.bytesAToB += 4000
        snap = self.status.snapshot()
        self.assertEqual(snap["rateInterval"], 5.0)
        rates = snap["listeners"][0]["rates"]
        self.assertEqual(rates["connections"], 2.0)
        self.assertEqual(
            rates["bytes"], {"client_to_upstream": 1000.0, "upstream_to_client": 0.0}
        )
        page = renderHTML(snap)
        self.assertIn('<b class="rate">2.00</b> connections/s', page)
        self.assertIn("1000 B/s", page)
        self.assertIn("rates over the last 5.0 s", page)

    def test_upstreamRates(self) -> None:
        """
        A pool member's connections/s, bytes/s (its finished connections'
        plus its live ones') and failed connects/s by reason; an upstream
        without counters of its own has no rates.
        """
        member = type("M", (), {"description": "a:1"})()
        self.proto.member = member  # as the fast path's connections have
        counts = {"total": 0, "refused": 0, "sent": 0}

        def upstreamStatus() -> list[dict[str, Any]]:
            return [
                {
                    "name": "a:1",
                    "health": "up",
                    "live": 1,
                    "total": counts["total"],
                    "failures": {"refused": counts["refused"]},
                    "bytes": {
                        "client_to_upstream": counts["sent"],
                        "upstream_to_client": 0,
                    },
                },
                {"name": "b:2", "health": "down"},
            ]

        self.factory.upstreamStatus = upstreamStatus  # type: ignore[attr-defined]
        first = self.status.snapshot()["listeners"][0]["upstreams"][0]
        self.assertEqual(first["bytes"]["client_to_upstream"], 100)
        self.clock.advance(10)
        counts.update(total=20, refused=5, sent=3000)
        self.proto.relay.bytesAToB += 2000
        snap = self.status.snapshot()
        a, b = snap["listeners"][0]["upstreams"]
        self.assertEqual(a["bytes"]["client_to_upstream"], 5100)
        self.assertEqual(
            a["rates"],
            {
                "connections": 2.0,
                "bytes": {"client_to_upstream": 500.0, "upstream_to_client": 0.0},
                "failures": {"refused": 0.5},
            },
        )
        self.assertIsNone(b["rates"])
        page = renderHTML(snap)
        self.assertIn("refused&nbsp;5 <small>(0.50/s)</small>", page)
        self.assertIn("500 B/s", page)

    def test_supervisorRates(self) -> None:
        """
        The supervisor takes rates of its merged snapshot: summed over the
        workers, with per-upstream failures merged.
        """
        service = type("S", (), {"count": 2, "running": True, "workers": None})()
        status = SupervisorStatus(service, self.metrics.registry, "/x", self.clock)

        def worker(total: int, refused: int) -> dict[str, Any]:
            return {
                "connectionsLive": 0,
                "listeners": [
                    {
                        "forward": "web",
                        "upstreams": [
                            {
                                "name": "a:1",
                                "total": total,
                                "failures": {"refused": refused},
                                "bytes": {"client_to_upstream": 0},
                            }
                        ],
                    }
                ],
            }

        status._merge([(0, 1, worker(0, 0), None), (1, 2, worker(0, 0), None)], {})
        self.clock.advance(5)
        snap = status._merge(
            [(0, 1, worker(10, 1), None), (1, 2, worker(15, 4), None)], {}
        )
        [upstream] = snap["listeners"][0]["upstreams"]
        self.assertEqual(upstream["failures"], {"refused": 5})
        self.assertEqual(upstream["rates"]["connections"], 5.0)
        self.assertEqual(upstream["rates"]["failures"], {"refused": 1.0})

    def test_applyRatesKeepsSnapshot(self) -> None:
        """
        L{applyRates} adds the rates and returns the snapshot it was given.
        """
        snap: dict[str, Any] = {"listeners": []}
        self.assertIs(applyRates(snap, RateRing(start=0.0), 1.0), snap)
        self.assertEqual(snap["rateInterval"], 1.0)


class RefreshTests(SynchronousTestCase):
    """
    The page reloads every 5 s by default, every N s with C{?refresh=N},
    never with C{?refresh=0}.
    """

    def request(self, *values: bytes) -> DummyRequest:
        request = DummyRequest([b""])
        if values:
            request.args[b"refresh"] = list(values)
        return request

    def test_choices(self) -> None:
        """
        The query picks the period, bounded; nonsense gives the default.
        """
        self.assertEqual(refreshSeconds(self.request()), 5)
        self.assertEqual(refreshSeconds(self.request(b"0")), 0)
        self.assertEqual(refreshSeconds(self.request(b"30")), 30)
        self.assertEqual(refreshSeconds(self.request(b"-3")), 0)
        self.assertEqual(refreshSeconds(self.request(b"99999")), 3600)
        self.assertEqual(refreshSeconds(self.request(b"soon")), 5)

    def test_page(self) -> None:
        """
        With refresh off the page has no refresh header and links the
        choices, marking the current one.
        """
        clock = Clock()
        status = ServiceStatus(_Service([]), clock)
        page = renderHTML(status.snapshot(), 0)
        self.assertNotIn("http-equiv", page)
        self.assertIn("refresh <b>off</b>", page)
        self.assertIn('<a href="status?refresh=5">5 s</a>', page)
        page = renderHTML(status.snapshot(), 2)
        self.assertIn('<meta http-equiv="refresh" content="2">', page)
