# -*- test-case-name: tests.test_answers -*-
"""
C{reply}, C{refuse} and hooks that raise (L{splicetx._proxy.answers}), and
the upstreams of L{splicetx.testing} that refuse, hang or reset, over real
loopback sockets on private reactors.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from splicetx import RESET
from splicetx.pools import RoundRobin, Upstream, UpstreamPool
from splicetx.proxy import (
    IDLE_TIMEOUT,
    REJECTED,
    UPSTREAM_FAILED,
    SpliceProxyFactory,
    SpliceProxyProtocol,
)
from splicetx.testing import Loopback, payload, runLoopback


class Recorder:
    """
    An C{IProxyMetrics} stand-in that keeps the refusals.
    """

    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []

    def connectionOpened(self, forward: str = "default") -> None:
        pass

    def connectionClosed(self, forward: str = "default") -> None:
        pass

    def connectionRefused(self, reason: str, forward: str = "default") -> None:
        self.refused.append((reason, forward))

    def connectFailed(self, failure: Any, forward: str = "default") -> str:
        return "refused"

    def relayFinished(self, result: Any, forward: str = "default") -> None:
        pass


class RecordingFactory(SpliceProxyFactory):
    """
    Keeps each connection's result.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("metrics", Recorder())
        super().__init__(*args, **kwargs)
        self.results: list[Any] = []

    def relayFinished(self, proto: Any, result: Any) -> None:
        self.results.append(result)


class Greeter(SpliceProxyProtocol):
    """
    Reads a C{HELLO NAME} line: C{ok} goes to the factory's upstream,
    C{boom} raises, anything else is refused with a reply.
    """

    readsHandshake = True
    buffer = b""
    resetRefusals = False

    def handshakeReceived(self, data: bytes) -> None:
        self.buffer += data
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            return
        name = line.decode().partition(" ")[2]
        if name == "boom":
            raise ZeroDivisionError("boom")
        if name != "ok":
            if self.resetRefusals:
                return self.refuse("unknown_name", f"unknown name {name}", reset=True)
            return self.refuse("unknown_name", f"unknown name {name}", reply=b"NO\n")
        self.reply(b"OK\n")
        self.connectUpstream(self.factory.upstream, toUpstream=rest)


def proxyOf(lb: Loopback, upstream: Any, protocol: type = Greeter, **kw: Any) -> Any:
    factory = RecordingFactory(upstream, reactor=lb.reactor, **kw)
    factory.protocol = protocol
    return factory, lb.listen(factory)


async def ended(lb: Loopback, factory: Any, count: int = 1) -> None:
    """
    Wait until C{count} connections of C{factory} have ended.
    """
    while len(factory.results) < count:
        d: Deferred[None] = Deferred()
        lb.reactor.callLater(0.01, d.callback, None)
        await d


class RefuseTests(SynchronousTestCase):
    """
    C{refuse()} and C{reply()}.
    """

    def test_refuseWithReply(self) -> None:
        """
        A refusal writes its reply, closes cleanly, and is recorded as
        rejected with its detail and counted by its reason.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            factory, proxy = proxyOf(lb, echo.endpoint)
            client = await lb.exchange(proxy, b"HELLO mail\nmore")
            await ended(lb, factory)
            return client, factory, echo

        client, factory, echo = runLoopback(scenario)
        self.assertEqual(client.received.data, b"NO\n")
        self.assertTrue(client.lostReason.check(ConnectionDone))
        [result] = factory.results
        self.assertEqual(
            (result.reason, result.detail), (REJECTED, "unknown name mail")
        )
        self.assertEqual(factory.metrics.refused, [("unknown_name", "default")])
        self.assertEqual(echo.connections, [])

    def test_refuseReset(self) -> None:
        """
        C{refuse(reset=True)} resets the client connection.
        """

        class Resetting(Greeter):
            resetRefusals = True

        async def scenario(lb: Loopback) -> Any:
            factory, proxy = proxyOf(lb, lb.echo().endpoint, Resetting)
            client = await lb.connect(proxy)
            await client.send(b"HELLO mail\n")
            await client.whenClosed()
            await ended(lb, factory)
            return client, factory

        client, factory = runLoopback(scenario)
        self.assertTrue(client.lostReason.check(ConnectionLost))
        self.assertEqual(factory.results[0].reason, REJECTED)

    def test_replyThenRelay(self) -> None:
        """
        A reply reaches the client before the upstream's bytes, and the
        bytes past the handshake reach the upstream first.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            factory, proxy = proxyOf(lb, echo.endpoint)
            return await lb.exchange(proxy, b"HELLO ok\n" + payload(100000))

        client = runLoopback(scenario)
        self.assertTrue(client.received.matches(b"OK\n" + payload(100000)))

    def test_refuseOnceConnected(self) -> None:
        """
        Refused once the upstream is connected, the upstream connection is
        closed too and the refusal counted.
        """

        class Late(SpliceProxyProtocol):
            def upstreamConnected(self, upstream: Any) -> None:
                self.refuse("late", reply=b"late\n")

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            factory, proxy = proxyOf(lb, echo.endpoint, Late)
            client = await lb.exchange(proxy, b"x")
            await ended(lb, factory)
            connection = await echo.connection(0)
            await connection.whenClosed()
            return client, factory, connection

        client, factory, connection = runLoopback(scenario)
        self.assertEqual(client.received.data, b"late\n")
        self.assertTrue(connection.isClosed)
        self.assertEqual(factory.results[0].detail, "late")
        self.assertEqual(factory.metrics.refused, [("late", "default")])

    def test_refuseFromUpstreamFailed(self) -> None:
        """
        From C{upstreamFailed}, C{refuse} writes its reply and the
        connection keeps its reason (upstream failed), not counted as a
        refusal; the refusing upstream of L{Loopback.refusing} is down.
        """

        class Failing(SpliceProxyProtocol):
            def upstreamFailed(self, reason: Any) -> None:
                self.refuse("unused", reply=b"502\n")

        async def scenario(lb: Loopback) -> Any:
            factory, proxy = proxyOf(lb, lb.refusing().endpoint, Failing)
            client = await lb.exchange(proxy, b"x")
            await ended(lb, factory)
            return client, factory

        client, factory = runLoopback(scenario)
        self.assertEqual(client.received.data, b"502\n")
        self.assertEqual(factory.results[0].reason, UPSTREAM_FAILED)
        self.assertIn("refused", factory.results[0].detail)
        self.assertEqual(factory.metrics.refused, [])

    def test_wrongUse(self) -> None:
        """
        C{refuse} needs a reason and cannot reset after a reply; C{reply}
        takes bytes and is refused once the relay runs.
        """
        errors: list[Exception] = []

        class Wrong(SpliceProxyProtocol):
            def upstreamConnected(self, upstream: Any) -> None:
                for call in (
                    lambda: self.refuse(""),
                    lambda: self.refuse("x", reply=b"no", reset=True),
                    lambda: self.reply("text"),  # type: ignore[arg-type]
                ):
                    try:
                        call()
                    except Exception as e:
                        errors.append(e)
                self.startRelay()
                try:
                    self.reply(b"late")
                except RuntimeError as e:
                    errors.append(e)

        async def scenario(lb: Loopback) -> Any:
            factory, proxy = proxyOf(lb, lb.echo().endpoint, Wrong)
            return await lb.exchange(proxy, b"abc")

        client = runLoopback(scenario)
        self.assertEqual(client.received.data, b"abc")
        self.assertEqual(
            [type(e) for e in errors], [ValueError, ValueError, TypeError, RuntimeError]
        )

    def test_connectUpstreamToPool(self) -> None:
        """
        C{connectUpstream} takes a pool as well as an endpoint.
        """

        async def scenario(lb: Loopback) -> Any:
            echo = lb.echo()
            pool = UpstreamPool([Upstream(echo.endpoint)], RoundRobin())
            factory, proxy = proxyOf(lb, pool)
            client = await lb.exchange(proxy, b"HELLO ok\nvia pool")
            await ended(lb, factory)
            return client, pool

        client, pool = runLoopback(scenario)
        self.assertEqual(client.received.data, b"OK\nvia pool")
        self.assertEqual(pool.members[0].connections, 1)


class HookErrorTests(SynchronousTestCase):
    """
    A hook that raises ends its connection as an error.
    """

    def test_handshakeRaises(self) -> None:
        """
        An exception in C{handshakeReceived} ends the connection with
        reason error, its traceback logged once.
        """

        async def scenario(lb: Loopback) -> Any:
            factory, proxy = proxyOf(lb, lb.echo().endpoint)
            await lb.exchange(proxy, b"HELLO boom\n")
            await ended(lb, factory)
            return factory

        factory = runLoopback(scenario)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [result] = factory.results
        self.assertEqual(result.reason, "error")
        self.assertEqual(
            result.detail, "handshakeReceived() raised ZeroDivisionError: boom"
        )

    def test_clientAcceptedRaises(self) -> None:
        """
        An exception in C{clientAccepted} ends the connection as an error.
        """

        class Raising(SpliceProxyProtocol):
            def clientAccepted(self) -> bool:
                raise KeyError("who")

        async def scenario(lb: Loopback) -> Any:
            factory, proxy = proxyOf(lb, lb.echo().endpoint, Raising)
            await lb.exchange(proxy, b"x")
            await ended(lb, factory)
            return factory

        factory = runLoopback(scenario)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(factory.results[0].reason, "error")
        self.assertIn("clientAccepted()", factory.results[0].detail)


class TroubledUpstreamTests(SynchronousTestCase):
    """
    The silent and resetting upstreams of L{Loopback}.
    """

    def test_silent(self) -> None:
        """
        A silent upstream accepts and never answers: the idle timeout ends
        the connection.
        """

        async def scenario(lb: Loopback) -> Any:
            silent = lb.silent()
            factory, proxy = proxyOf(lb, silent.endpoint, SpliceProxyProtocol)
            factory.idleTimeout = 0.2
            client = await lb.connect(proxy)
            await client.send(b"anyone?")
            await client.whenClosed()
            await ended(lb, factory)
            return client, factory, silent

        client, factory, silent = runLoopback(scenario)
        self.assertEqual(client.received.size, 0)
        self.assertEqual(factory.results[0].reason, IDLE_TIMEOUT)
        self.assertEqual(len(silent.connections), 1)

    def test_resetting(self) -> None:
        """
        A resetting upstream sends its bytes, then resets: the connection
        ends with reason reset.
        """

        async def scenario(lb: Loopback) -> Any:
            upstream = lb.resetting(1 << 20)
            factory, proxy = proxyOf(lb, upstream.endpoint, SpliceProxyProtocol)
            client = await lb.connect(proxy)
            await client.whenClosed()
            await ended(lb, factory)
            return client, factory

        client, factory = runLoopback(scenario)
        self.assertEqual(factory.results[0].reason, RESET)
        self.assertLessEqual(client.received.size, 1 << 20)

    def test_refusingEndpoint(self) -> None:
        """
        The refusing port's endpoint is refused.
        """

        async def scenario(lb: Loopback) -> Any:
            refusing = lb.refusing()
            try:
                endpoint = TCP4ClientEndpoint(lb.reactor, "127.0.0.1", refusing.port)
                await endpoint.connect(Factory.forProtocol(Protocol))
            except Exception as e:
                return e, refusing.endpointString
            return None, None

        error, description = runLoopback(scenario)
        self.assertIn("refused", str(error).lower())
        self.assertTrue(description.startswith("tcp:127.0.0.1:"))
