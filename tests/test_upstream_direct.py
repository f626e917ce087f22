# -*- test-case-name: tests.test_upstream_direct -*-
"""
The proxy's direct upstream connect for plain TCP (L{splicetx._proxy.upstream}'s
C{_DirectConnector} and C{_DirectClient}), over real loopback sockets on
every reactor: success, refusal, the connect timeout, and a client that
leaves while the upstream is still connecting.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from splicetx import CANCELLED, DONE
from splicetx._proxy.upstream import _DirectClient, _DirectConnector, _usesTwistedTCP
from splicetx._relay import transports as _transports
from splicetx.proxy import UPSTREAM_FAILED, SpliceProxyProtocol
from splicetx.testing import ReactorTestMixin, makeReactorTests

from ._cli_support import blackholePort
from .test_proxy import (
    LOOPBACK,
    EchoFactory,
    RecordingFactory,
    closedByProxy,
    connectClient,
    proxyTo,
    stopAll,
)


def _streamSocketClasses() -> frozenset[type]:
    return _transports._STREAM_SOCKET_CLASSES


class DirectConnectMixin(ReactorTestMixin):
    """
    A plain TCP upstream is connected by the direct path on every reactor.
    """

    scenarioTimeout = 20.0

    def test_connectsDirectly(self) -> None:
        """
        The upstream transport is a C{_DirectClient} driven by a
        C{_DirectConnector}, the splice engine takes it by the common path
        for Twisted's own socket transports, and bytes go both ways.
        """
        seen: list[Any] = []

        class Watch(SpliceProxyProtocol):
            def upstreamConnected(self, upstream: Any) -> None:
                seen.append(
                    (type(upstream.transport), type(upstream.transport.connector))
                )
                super().upstreamConnected(upstream)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(reactor, up.getHost().port)
            factory.protocol = Watch
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"y" * 5000)
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return result, client.digest(), _usesTwistedTCP(reactor)

        result, digest, direct = self.runScenario(scenario)
        self.assertTrue(direct)
        self.assertEqual(seen, [(_DirectClient, _DirectConnector)])
        self.assertIn(_DirectClient, _streamSocketClasses())
        self.assertEqual(result.engine, "splice")
        self.assertEqual(
            (result.reason, result.bytesAToB, result.bytesBToA), (DONE, 5000, 5000)
        )

    def test_refused(self) -> None:
        """
        A refused connection reaches C{upstreamFailed} as a
        C{ConnectionRefusedError}.
        """
        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind((LOOPBACK, 0))
        seen: list[Failure] = []

        class Watch(SpliceProxyProtocol):
            def upstreamFailed(self, reason: Failure) -> None:
                seen.append(reason)
                super().upstreamFailed(reason)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory = proxyTo(reactor, closed.getsockname()[1])
            factory.protocol = Watch
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            results = []
            for _ in range(2):
                done = factory.nextResult()
                client = connectClient(reactor, port)
                results.append((yield done))
                yield closedByProxy(client)
            yield stopAll([port])
            return results

        results = self.runScenario(scenario)
        self.assertEqual(len(seen), 2)
        self.assertTrue(all(f.check(ConnectionRefusedError) for f in seen))
        self.assertEqual([r.reason for r in results], [UPSTREAM_FAILED] * 2)

    def _blackhole(self) -> int:
        listener, fillers = blackholePort()
        self.addCleanup(listener.close)
        for f in fillers:
            self.addCleanup(f.close)
        return int(listener.getsockname()[1])

    def test_timeout(self) -> None:
        """
        An upstream that never answers fails after C{connectTimeout} with
        a detail that says so.
        """
        target = self._blackhole()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory = RecordingFactory(
                TCP4ClientEndpoint(reactor, LOOPBACK, target),
                reactor=reactor,
                connectTimeout=0.3,
            )
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            result = yield done
            yield closedByProxy(client)
            yield stopAll([port])
            return result

        result = self.runScenario(scenario)
        self.assertEqual(result.reason, UPSTREAM_FAILED)
        self.assertIn("timed out after 0.3 s", result.detail)

    def test_abortWhileConnecting(self) -> None:
        """
        A connection aborted while its upstream is still connecting (a
        drain's timeout does this) ends at once with the abort's reason;
        the attempt is stopped and its timer cancelled.
        """
        target = self._blackhole()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            factory = RecordingFactory(
                TCP4ClientEndpoint(reactor, LOOPBACK, target),
                reactor=reactor,
                connectTimeout=30,
            )
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield deferLater(reactor, 0.1, lambda: None)
            [proto] = factory.liveProtocols
            connecting = proto._connecting
            proto.abort(CANCELLED, "test")
            result = yield done
            yield client.lost
            yield stopAll([port])
            return (
                result,
                connecting,
                # The connect timer (30 s) is gone; the harness's own
                # (its scenario timeout, 20 s) is not ours to judge.
                [
                    c
                    for c in reactor.getDelayedCalls()
                    if c.active() and c.getTime() - reactor.seconds() > 25
                ],
            )

        result, connecting, pending = self.runScenario(scenario)
        self.assertEqual(result.reason, CANCELLED)
        self.assertIsInstance(connecting, _DirectConnector)
        self.assertIsNone(connecting.transport)
        self.assertEqual(pending, [])


globals().update(makeReactorTests(DirectConnectMixin))


class DirectConnectorTests(SynchronousTestCase):
    """
    Which reactors get the direct path.
    """

    def test_fakeReactorGetsConnectTCP(self) -> None:
        """
        A reactor whose C{connectTCP} is not Twisted's own (a fake) is not
        connected directly.
        """
        from twisted.internet.testing import MemoryReactor

        self.assertFalse(_usesTwistedTCP(MemoryReactor()))
