"""
Sample: testing a proxy built on splicetx with L{splicetx.testing}.

Runs unchanged under both runners:

    trial tests.test_testing_sample
    pytest tests/test_testing_sample.py

Each scenario gets a L{Loopback} on a fresh private reactor: real sockets on
127.0.0.1, an echo / sink / source backend, the proxy under test on an
ephemeral port, and byte-exact checks.  Nothing touches the global reactor,
so it does not matter whether pytest-twisted is installed.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol
from splicetx.testing import (
    Loopback,
    ReactorTestMixin,
    digest,
    makeReactorTests,
    payload,
    runLoopback,
    withLoopback,
)

MiB = 1 << 20


class RecordingFactory(SpliceProxyFactory):
    """
    The proxy under test, remembering each connection's L{RelayResult}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[Any] = []

    def relayFinished(self, proto: Any, result: Any) -> None:
        self.results.append(result)
        super().relayFinished(proto, result)


class TurnAway(SpliceProxyProtocol):
    """
    A proxy protocol that serves nobody.
    """

    def clientAccepted(self) -> bool:
        return False


class ProxySampleTests(SynchronousTestCase):
    """
    A proxy tested through real loopback connections.
    """

    def test_echoThroughProxy(self) -> None:
        """
        1 MiB sent through the proxy to an echo backend comes back byte for
        byte, and the kernel path moved it.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            factory = RecordingFactory(echo.endpoint, reactor=lb.reactor)
            proxy = lb.listen(factory)
            client = await lb.exchange(proxy, payload(MiB))
            return client, factory

        client, factory = runLoopback(scenario)
        self.assertTrue(client.received.matches(payload(MiB)))
        [result] = factory.results
        self.assertEqual((result.engine, result.reason), ("splice", "done"))
        self.assertEqual((result.bytesAToB, result.bytesBToA), (MiB, MiB))

    def test_downloadAndUpload(self) -> None:
        """
        A client reads 8 MiB from a source backend and sends 3 MiB to a sink
        backend through the proxy; both arrive exactly.
        """

        async def scenario(lb: Loopback) -> Any:
            source = lb.source(8 * MiB, seed=1)
            down = await lb.exchange(
                lb.listen(SpliceProxyFactory(source.endpoint, reactor=lb.reactor))
            )
            sink = lb.sink()
            await lb.exchange(
                lb.listen(SpliceProxyFactory(sink.endpoint, reactor=lb.reactor)),
                payload(3 * MiB, seed=2),
            )
            uploaded = await sink.received(0)
            return down.received.sha256, source.expected, uploaded

        downSha, expected, uploaded = runLoopback(scenario)
        self.assertEqual(downSha, digest(expected))
        self.assertTrue(uploaded.matches(payload(3 * MiB, seed=2)))

    def test_rejectedClient(self) -> None:
        """
        A client turned away by C{clientAccepted} is closed without a byte,
        and the backend never sees a connection.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            factory = SpliceProxyFactory(echo.endpoint, reactor=lb.reactor)
            factory.protocol = TurnAway
            client = await lb.exchange(lb.listen(factory), b"hello")
            return client, len(echo.connections)

        client, accepted = runLoopback(scenario)
        self.assertEqual((client.received.size, accepted), (0, 0))


class EveryReactorSample(ReactorTestMixin):
    """
    The same check on each reactor splicetx supports (epoll, poll, select,
    asyncio).
    """

    def test_echoThroughProxy(self) -> None:
        """
        Bytes sent through the proxy come back exactly, on this reactor.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            proxy = lb.listen(SpliceProxyFactory(echo.endpoint, reactor=lb.reactor))
            return await lb.exchange(proxy, payload(256 * 1024))

        client = self.runScenario(withLoopback(scenario))
        self.assertTrue(client.received.matches(payload(256 * 1024)))


globals().update(makeReactorTests(EveryReactorSample))
