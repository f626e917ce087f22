"""
Tests for the helpers in L{splicetx.testing} (backends, L{Loopback},
L{runLoopback}) and for the pytest plugin, whose samples in
docs/build-your-own.md are run in child processes under pytest and trial.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IPullProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx.proxy import SpliceProxyFactory
from splicetx.testing import (
    Backend,
    BackendConnection,
    Loopback,
    LoopbackClient,
    ReactorTestMixin,
    Tally,
    buildReactor,
    digest,
    makeReactorTests,
    payload,
    runLoopback,
    withLoopback,
)
from splicetx.testing._backends import Writer

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "build-your-own.md")


class PayloadTallyTests(SynchronousTestCase):
    """
    L{payload}, L{digest} and L{Tally}.
    """

    def test_payloadDeterministic(self) -> None:
        """
        The same size and seed give the same bytes; another seed does not.
        """
        self.assertEqual(payload(200000, 1), payload(200000, 1))
        self.assertNotEqual(payload(200000, 1), payload(200000, 2))
        self.assertEqual([len(payload(n)) for n in (0, 1, 9, 70000)], [0, 1, 9, 70000])
        self.assertRaises(ValueError, payload, -1)

    def test_payloadWindowsDiffer(self) -> None:
        """
        Two 64 KiB windows of a payload differ, so a swapped chunk changes
        the hash.
        """
        p = payload(4 << 16)
        self.assertNotEqual(p[: 1 << 16], p[1 << 16 : 2 << 16])

    def test_tally(self) -> None:
        """
        A L{Tally} counts, hashes and (with C{keep}) keeps the bytes.
        """
        t = Tally(keep=True)
        t.update(b"ab")
        t.update(b"c")
        self.assertEqual((t.size, t.data, t.sha256), (3, b"abc", digest(b"abc")))
        self.assertTrue(t.matches(b"abc"))
        self.assertFalse(t.matches(b"abd"))
        self.assertIsNone(Tally().data)

    def test_loopbackOnly(self) -> None:
        """
        Backends listen on loopback only.
        """
        self.assertRaises(ValueError, Backend, None, "echo", host="0.0.0.0")
        self.assertRaises(ValueError, Backend, None, "nope")


class InterfaceTests(SynchronousTestCase):
    """
    The helpers' protocols and producers provide the interfaces they
    declare.
    """

    def test_loopbackClient(self) -> None:
        """L{LoopbackClient} verifies as an L{IHalfCloseableProtocol}."""
        self.assertTrue(verifyObject(IHalfCloseableProtocol, LoopbackClient()))

    def test_backendConnection(self) -> None:
        """L{BackendConnection} verifies as an L{IHalfCloseableProtocol}."""
        conn = BackendConnection(SimpleNamespace(keep=False))  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IHalfCloseableProtocol, conn))

    def test_writer(self) -> None:
        """The chunked writer behind C{send} verifies as an L{IPullProducer}."""
        writer = Writer(StringTransport(), b"x", None)
        self.assertTrue(verifyObject(IPullProducer, writer))


class LoopbackTests(ReactorTestMixin):
    """
    L{Loopback} and its backends on each reactor.
    """

    def test_echo(self) -> None:
        """
        The echo backend returns exactly what it got, and its tallies agree.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            client = await lb.exchange(echo, 3 * MiB + 5)
            conn = await echo.connection(0)
            await conn.whenClosed()
            return client, conn

        client, conn = self.runScenario(withLoopback(scenario))
        self.assertTrue(client.received.matches(payload(3 * MiB + 5)))
        self.assertEqual(conn.received.sha256, conn.sent.sha256)
        self.assertEqual(conn.received.size, 3 * MiB + 5)

    def test_source(self) -> None:
        """
        A source sends exactly C{size} bytes of L{payload}C{(size, seed)} and
        closes; with C{halfClose} it waits for the client's end of stream
        and counts what the client sent.
        """

        async def scenario(lb: Loopback) -> Any:
            source = lb.source(2 * MiB, seed=4)
            down = await lb.exchange(source)
            half = lb.source(1000, seed=5, halfClose=True)
            client = await lb.connect(half, closeOnEOF=False)
            await client.whenEOF()
            await client.send(b"thanks", halfClose=True)
            await client.whenClosed()
            got = await half.received(0)
            return down, source.expected, client, got

        down, expected, client, got = self.runScenario(withLoopback(scenario))
        self.assertTrue(down.received.matches(expected))
        self.assertTrue(client.received.matches(payload(1000, 5)))
        self.assertTrue(got.matches(b"thanks"))

    def test_sink(self) -> None:
        """
        A sink hashes everything each connection sent.
        """

        async def scenario(lb: Loopback) -> Any:
            sink = lb.sink()
            await lb.exchange(sink, b"first")
            await lb.exchange(sink, payload(MiB))
            return [await sink.received(i) for i in (0, 1)]

        first, second = self.runScenario(withLoopback(scenario))
        self.assertTrue(first.matches(b"first"))
        self.assertTrue(second.matches(payload(MiB)))

    def test_closeCleansUp(self) -> None:
        """
        L{Loopback.close} leaves the reactor clean even with a client still
        connected through a proxy in the middle of a relay (the scenario
        runner checks that nothing is left registered).
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            proxy = lb.listen(SpliceProxyFactory(echo.endpoint, reactor=lb.reactor))
            client = await lb.connect(proxy)
            await client.send(b"x" * 1000)
            await client.whenReceived(1000)
            return client.received.size

        self.assertEqual(self.runScenario(withLoopback(scenario)), 1000)

    def test_ipv6(self) -> None:
        """
        A L{Loopback} on C{::1} works the same way.
        """

        def scenario(reactor: Any) -> Any:
            lb = Loopback(reactor, host="::1")
            echo = lb.echo()
            d = lb.exchange(echo, b"six")
            d.addCallback(lambda c: (c.received.data, echo.endpointString))
            return d.addBoth(lambda r: lb.close().addCallback(lambda _: r))

        data, endpoint = self.runScenario(scenario)
        self.assertEqual(data, b"six")
        self.assertTrue(endpoint.startswith("tcp6:[::1]:"))

    def test_scenarioFailureStillCloses(self) -> None:
        """
        When a scenario fails, its error comes out and the reactor is still
        clean (no L{ReactorUnclean} instead of the real error).
        """

        async def scenario(lb: Loopback) -> Any:
            lb.echo()
            raise ZeroDivisionError()

        self.assertRaises(ZeroDivisionError, self.runScenario, withLoopback(scenario))


globals().update(makeReactorTests(LoopbackTests))


class RunLoopbackTests(SynchronousTestCase):
    """
    L{runLoopback}.
    """

    def test_plainFunction(self) -> None:
        """
        A scenario may be a plain function returning a value.
        """
        self.assertEqual(runLoopback(lambda lb: lb.echo().port > 0), True)

    def test_reactorName(self) -> None:
        """
        The scenario runs on the reactor named.
        """
        kind = runLoopback(lambda lb: type(lb.reactor).__name__, "poll")
        self.assertEqual(kind, type(buildReactor("poll")).__name__)


def _samples() -> dict[str, str]:
    """
    The code blocks of docs/build-your-own.md marked C{<!-- sample: NAME -->}.
    """
    with open(DOC) as f:
        text = f.read()
    found = re.findall(r"<!-- sample: (\S+) -->\n```python\n(.*?)```", text, re.S)
    return dict(found)


class PluginTests(SynchronousTestCase):
    """
    The pytest plugin and the documented samples, each in a child process
    (pytest-twisted keeps the global reactor running for the rest of a
    session, so they must not share the suite's process).
    """

    def run_(self, args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_noReactorAtImport(self) -> None:
        """
        Importing the plugin (and splicetx.testing) installs no reactor.
        """
        out = self.run_(
            [
                "-c",
                "import sys, splicetx.testing._pytestplugin, splicetx.testing;"
                "assert 'twisted.internet.reactor' not in sys.modules",
            ],
            ROOT,
        )
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_documentedSamples(self) -> None:
        """
        The pytest sample passes under pytest (its fixtures come from the
        installed plugin) and the trial sample under trial and pytest.
        """
        samples = _samples()
        self.assertEqual(
            sorted(samples),
            [
                "hello_proxy.py",
                "test_hello_proxy.py",
                "test_pytest_sample.py",
                "test_sync_sample.py",
                "test_trial_sample.py",
            ],
        )
        tmp = tempfile.mkdtemp(prefix="splicetx-samples-")
        self.addCleanup(__import__("shutil").rmtree, tmp, True)
        for name, code in samples.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(code)
        # The six runs are independent (trial picks a free _trial_temp of
        # its own), so they run at once: most of each is Python starting.
        pytestQ = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
        with ThreadPoolExecutor(6) as pool:
            runs = {
                name: pool.submit(self.run_, args, tmp)
                for name, args in [
                    ("pytest", [*pytestQ, "test_pytest_sample.py"]),
                    ("pytestTrial", [*pytestQ, "test_trial_sample.py"]),
                    ("trial", ["-m", "twisted.trial", "test_trial_sample"]),
                    ("trialSync", ["-m", "twisted.trial", "test_sync_sample"]),
                    ("trialHello", ["-m", "twisted.trial", "test_hello_proxy"]),
                    ("pytestHello", [*pytestQ, "test_hello_proxy.py"]),
                ]
            }
        pytest = runs["pytest"].result()
        self.assertEqual(pytest.returncode, 0, pytest.stdout + pytest.stderr)
        self.assertIn("2 passed", pytest.stdout)
        pytest = runs["pytestTrial"].result()
        self.assertEqual(pytest.returncode, 0, pytest.stdout + pytest.stderr)
        trial = runs["trial"].result()
        self.assertEqual(trial.returncode, 0, trial.stdout + trial.stderr)
        self.assertIn("PASSED", trial.stdout)
        trial = runs["trialSync"].result()
        self.assertEqual(trial.returncode, 0, trial.stdout + trial.stderr)
        self.assertIn("PASSED (successes=1)", trial.stdout)
        # A user's own proxy and its test module, run from their directory.
        trial = runs["trialHello"].result()
        self.assertEqual(trial.returncode, 0, trial.stdout + trial.stderr)
        self.assertIn("PASSED (successes=3)", trial.stdout)
        pytest = runs["pytestHello"].result()
        self.assertEqual(pytest.returncode, 0, pytest.stdout + pytest.stderr)
        self.assertIn("3 passed", pytest.stdout)
