"""
L{splicetx._pool.failover.Failover}: the one place where a client's tries
through a pool are decided, for the pool's Deferred connect and the lean
path's raw connects alike.  Logic only (a L{Clock}, no sockets): the
drivers are tested over real sockets in tests/test_pool.py and
tests/test_fastforward.py.
"""

from __future__ import annotations

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from splicetx._pool.failover import ALL_DOWN, ALL_FAILED, Failover
from splicetx._pool.pool import Upstream, UpstreamPool


def pool(n: int = 3, clock: Clock | None = None, **options: object) -> UpstreamPool:
    clock = clock or Clock()
    members = [
        Upstream(object(), f"10.0.0.{i}:80", clock=clock) for i in range(1, n + 1)
    ]
    return UpstreamPool(members, reactor=clock, **options)  # type: ignore[arg-type]


def refused() -> Failure:
    return Failure(error.ConnectionRefusedError())


class FailoverTests(SynchronousTestCase):
    def test_eachMemberOnce(self) -> None:
        """
        Every member is tried once, in the balancer's order, then it gives
        up with L{ALL_FAILED} naming each try.
        """
        p = pool()
        f = Failover(p, None, 0.0)
        seen = []
        while (chosen := f.next(0.0)) is not None:
            member, timeout = chosen
            self.assertIsNone(timeout)
            seen.append(member)
            f.failed(member, refused())
        self.assertEqual(
            sorted(m.description for m in seen), [m.description for m in p.members]
        )
        exc = f.exhausted()
        self.assertEqual(exc.reason, ALL_FAILED)
        self.assertEqual(len(exc.attempts), 3)
        self.assertIn("10.0.0.1:80 refused", exc.detail)

    def test_maxTries(self) -> None:
        """
        No more tries than the pool's C{maxTries}.
        """
        f = Failover(pool(maxTries=2), None, 0.0)
        for _ in range(2):
            chosen = f.next(0.0)
            assert chosen is not None
            f.failed(chosen[0], refused())
        self.assertIsNone(f.next(0.0))
        self.assertEqual(f.exhausted().reason, ALL_FAILED)

    def test_timeouts(self) -> None:
        """
        A try may take the pool's C{tryTimeout}, or what is left of its
        C{totalTimeout} when that is less; past the total, no more tries.
        """
        f = Failover(pool(tryTimeout=2.0, totalTimeout=5.0), None, 10.0)
        chosen = f.next(10.0)
        assert chosen is not None
        self.assertEqual(chosen[1], 2.0)
        f.failed(chosen[0], Failure(error.TimeoutError()))
        chosen = f.next(14.0)
        assert chosen is not None
        self.assertEqual(chosen[1], 1.0)
        f.failed(chosen[0], refused())
        self.assertIsNone(f.next(15.0))
        self.assertEqual(f.exhausted().reason, ALL_FAILED)

    def test_allDown(self) -> None:
        """
        With every member down and nothing tried: L{ALL_DOWN}.
        """
        p = pool(2)
        for m in p.members:
            m.healthy = False
        f = Failover(p, None, 0.0)
        self.assertIsNone(f.next(0.0))
        exc = f.exhausted()
        self.assertEqual(exc.reason, ALL_DOWN)
        self.assertIn("none tried", exc.detail)

    def test_passiveHealth(self) -> None:
        """
        A failed try counts against the member (nginx's C{max_fails}): the
        next client's failover skips it.
        """
        p = pool(2)
        f = Failover(p, None, 0.0)
        chosen = f.next(0.0)
        assert chosen is not None
        bad = chosen[0]
        f.failed(bad, refused())
        self.assertEqual(bad.failures["refused"], 1)
        self.assertFalse(bad.available())
        g = Failover(p, None, 0.0)
        chosen = g.next(0.0)
        assert chosen is not None
        self.assertIsNot(chosen[0], bad)

    def test_succeeded(self) -> None:
        """
        A try that connected counts one open connection on its member.
        """
        f = Failover(pool(1), None, 0.0)
        chosen = f.next(0.0)
        assert chosen is not None
        member = chosen[0]
        Failover.succeeded(member)
        self.assertEqual((member.active, member.connections), (1, 1))

    def test_zeroIsNoBound(self) -> None:
        """
        A C{tryTimeout} or C{totalTimeout} of 0 bounds nothing, as C{None}
        does (what the configuration makes of a 0): a try may take as long
        as the endpoint lets it, and the tries go on.
        """
        f = Failover(pool(tryTimeout=0, totalTimeout=0), None, 100.0)
        self.assertIsNone(f.deadline)
        chosen = f.next(1000.0)
        assert chosen is not None
        self.assertIsNone(chosen[1])
        g = Failover(pool(tryTimeout=0, totalTimeout=5.0), None, 0.0)
        chosen = g.next(1.0)
        assert chosen is not None
        self.assertEqual(chosen[1], 4.0)
