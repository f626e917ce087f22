# -*- test-case-name: tests.test_mptcp -*-
"""
The C{mptcp:}/C{mptcp6:} endpoints (L{splicetx.endpoints}): their strings
through Twisted's plugin lookup, a proxy splicing over MPTCP on both sides
on every reactor, the kernel's own fallback for plain TCP peers, a kernel
that refuses MPTCP (simulated: logic without a kernel), and the real
C{twist splice-proxy} with a Python MPTCP client, C{mptcpize}, and a
network namespace where MPTCP is off.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx import DONE, spliceUnavailableReason
from splicetx._relay import mptcp as mptcpModule
from splicetx.endpoints import (
    IPPROTO_MPTCP,
    MPTCPClientEndpoint,
    MPTCPConnectError,
    MPTCPServerEndpoint,
    MPTCPUnavailableError,
    isMPTCP,
    mptcpUnavailableReason,
)
from splicetx.proxy import SpliceProxyFactory
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    blackholePort,
    echoChunks,
    readAll,
    runAsync,
    sendAll,
    twistCommand,
)
from ._harness import Peer, _clientFactory
from .test_proxy import Echo, EchoFactory, RecordingFactory, capturedEvents, stopAll

MiB = 1 << 20


def requireMPTCP(family: int = socket.AF_INET) -> None:
    """
    Skip, saying why, where this kernel cannot make MPTCP sockets.
    """
    reason = mptcpUnavailableReason(family)
    if reason is not None:
        raise SkipTest(f"no MPTCP here: {reason}")


def refuseMPTCP(test: SynchronousTestCase, code: int = errno.EPROTONOSUPPORT) -> None:
    """
    Make the endpoints' sockets fail as a kernel without MPTCP does, for
    the rest of C{test} (plain TCP sockets still work).
    """
    real = mptcpModule.openSocket

    def openSocket(family: int, proto: int) -> socket.socket:
        if proto == IPPROTO_MPTCP:
            raise OSError(code, os.strerror(code))
        return real(family, proto)

    test.patch(mptcpModule, "openSocket", openSocket)


def scratchDir(test: SynchronousTestCase) -> str:
    """
    A new directory, removed after C{test}.
    """
    path = tempfile.mkdtemp(prefix="splicetx-mptcp-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


def fallbackEvents(test: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    Collect the C{mptcp-fallback} log events for the rest of C{test}.
    """
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("splicetxEvent") == "mptcp-fallback":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class ParsingTests(SynchronousTestCase):
    """
    The endpoint strings, found through Twisted's plugin lookup.
    """

    def setUp(self) -> None:
        requireMPTCP()

    def test_serverStrings(self) -> None:
        """
        C{mptcp:} listens on IPv4 (or the IPv6 literal given), C{mptcp6:}
        on C{::}; port, interface and backlog are read.
        """
        four = serverFromString(None, "mptcp:8080:interface=127.0.0.1:backlog=7")
        six = serverFromString(None, "mptcp6:0")
        v6literal = serverFromString(None, r"mptcp:0:interface=\:\:1")
        self.assertIsInstance(four, MPTCPServerEndpoint)
        verifyObject(IStreamServerEndpoint, four)
        self.assertEqual(
            (four._port, four._interface, four._backlog, four.family),
            (8080, "127.0.0.1", 7, socket.AF_INET),
        )
        self.assertEqual((six._interface, six.family), ("::", socket.AF_INET6))
        self.assertEqual(v6literal.family, socket.AF_INET6)

    def test_clientStrings(self) -> None:
        """
        C{mptcp:HOST:PORT} takes C{timeout=} and C{bindAddress=};
        C{mptcp6:} resolves names to IPv6.
        """
        four = clientFromString(
            None, "mptcp:127.0.0.1:80:timeout=5:bindAddress=127.0.0.2"
        )
        six = clientFromString(None, "mptcp6:localhost:80")
        self.assertIsInstance(four, MPTCPClientEndpoint)
        verifyObject(IStreamClientEndpoint, four)
        self.assertEqual(
            (four._host, four._port, four._timeout, four._bindAddress, four._ipv6),
            ("127.0.0.1", 80, 5.0, ("127.0.0.2", 0), False),
        )
        self.assertEqual((six._host, six._ipv6), ("localhost", True))

    def test_badStrings(self) -> None:
        """
        Bad ports, values and arguments are refused while parsing.
        """
        for text in ("mptcp:70000", "mptcp:0:backlog=0", "mptcp:0:fallback=udp"):
            self.assertRaises(ValueError, serverFromString, None, text)
        self.assertRaises(
            ValueError, serverFromString, None, "mptcp6:0:interface=1.2.3.4"
        )
        for text in ("mptcp:127.0.0.1:0", "mptcp:h:1:timeout=-1"):
            self.assertRaises(ValueError, clientFromString, None, text)
        for text in ("mptcp:127.0.0.1", "mptcp:h:1:color=red", "mptcp:a:1:2"):
            self.assertRaises(TypeError, clientFromString, None, text)

    def test_commandLineStrings(self) -> None:
        """
        C{twist splice-proxy} gives C{mptcp:} listeners its default backlog
        and reads bracketed IPv6 literals in them.
        """
        from splicetx._config.endpoints import (
            clientEndpoint,
            serverEndpoint,
            withBacklog,
        )

        self.assertEqual(withBacklog("mptcp:8080", 1024), "mptcp:8080:backlog=1024")
        self.assertEqual(withBacklog("mptcp6:0:backlog=5", 1024), "mptcp6:0:backlog=5")
        server = serverEndpoint(None, "mptcp6:0:interface=[::1]")
        client = clientEndpoint(None, "mptcp6:[::1]:8080")
        self.assertEqual((server._interface, client._host), ("::1", "::1"))

    def test_pluginObjects(self) -> None:
        """
        The plugin module, from this tree, provides both parser interfaces
        for both prefixes.
        """
        from twisted.plugins import splicetx_mptcp

        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.assertTrue(
            splicetx_mptcp.__file__.startswith(here), splicetx_mptcp.__file__
        )
        for parser, prefix in (
            (splicetx_mptcp.mptcp, "mptcp"),
            (splicetx_mptcp.mptcp6, "mptcp6"),
        ):
            verifyObject(IStreamServerEndpointStringParser, parser)
            verifyObject(IStreamClientEndpointStringParserWithReactor, parser)
            self.assertEqual(parser.prefix, prefix)

    def test_pluginImportIsLight(self) -> None:
        """
        Importing the plugin module (as every plugin lookup does) imports
        neither splicetx nor a reactor.
        """
        code = (
            "import sys, twisted.plugins.splicetx_mptcp\n"
            "print(sorted(m for m in sys.modules if m.startswith('splicetx')"
            " or m == 'twisted.internet.reactor'))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        self.assertEqual(out.stdout.strip(), "[]")


class RefusedTests(SynchronousTestCase):
    """
    A kernel that refuses MPTCP sockets (simulated): a sentence saying why,
    or plain TCP with C{fallback=tcp}.
    """

    def test_parseSaysWhy(self) -> None:
        """
        The strings fail to parse with the kernel's reason and the way out;
        with C{fallback=tcp} they parse.
        """
        refuseMPTCP(self)
        e = self.assertRaises(MPTCPUnavailableError, serverFromString, None, "mptcp:80")
        self.assertEqual(e.errno, errno.EPROTONOSUPPORT)
        self.assertIn("Protocol not supported", str(e))
        self.assertIn("add :fallback=tcp", str(e))
        self.assertRaises(
            MPTCPUnavailableError, clientFromString, None, "mptcp:127.0.0.1:80"
        )
        self.assertIsInstance(
            serverFromString(None, "mptcp:80:fallback=tcp"), MPTCPServerEndpoint
        )
        self.assertIsInstance(
            clientFromString(None, "mptcp:127.0.0.1:80:fallback=TCP"),
            MPTCPClientEndpoint,
        )

    def test_reasons(self) -> None:
        """
        The sentence names the sysctl when it is 0, the missing kernel
        support when there is no sysctl, and IPv6 support for IPv6 alone.
        """
        tmp = scratchDir(self)
        sysctl = os.path.join(tmp, "enabled")
        with open(sysctl, "w") as f:
            f.write("0\n")
        self.patch(mptcpModule, "_SYSCTL", sysctl)
        refuseMPTCP(self, errno.ENOPROTOOPT)
        self.assertIn("net.mptcp.enabled = 0", mptcpUnavailableReason())
        self.assertIn("sysctl -w net.mptcp.enabled=1", mptcpUnavailableReason())
        self.patch(mptcpModule, "_SYSCTL", os.path.join(tmp, "missing"))
        self.assertIn("CONFIG_MPTCP)", mptcpUnavailableReason())
        with open(sysctl, "w") as f:
            f.write("1\n")
        self.patch(mptcpModule, "_SYSCTL", sysctl)
        refuseMPTCP(self, errno.EPROTONOSUPPORT)
        self.assertIn("CONFIG_MPTCP_IPV6", mptcpUnavailableReason(socket.AF_INET6))


class MPTCPRelayMixin(ReactorTestMixin):
    """
    A proxy between MPTCP peers, on real loopback sockets.
    """

    scenarioTimeout = 30.0

    def setUp(self) -> None:
        requireMPTCP()

    def test_spliceBothSides(self) -> None:
        """
        4 MiB go through a proxy listening and connecting over MPTCP and come
        back byte-exact; every socket speaks MPTCP and the splice engine ran.
        """
        data = payload(4 * MiB, seed=27)
        seen: dict[str, Any] = {}

        class RecordingEcho(Echo):
            def connectionMade(self) -> None:
                seen["upstream"] = isMPTCP(self.transport)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            echo.protocol = RecordingEcho
            up = yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(echo)
            factory = RecordingFactory(
                MPTCPClientEndpoint(reactor, LOOPBACK, up.getHost().port),
                reactor=reactor,
            )
            port = yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                factory
            )
            factory.addListeningPort(port)
            done = factory.nextResult()
            proxied: list[Any] = []
            original = factory.buildProtocol

            def build(addr: Any) -> Any:
                proxy = original(addr)
                proxied.append(proxy)
                return proxy

            factory.buildProtocol = build  # type: ignore[method-assign]
            client = Peer(reactor, "client")
            endpoint = MPTCPClientEndpoint(reactor, LOOPBACK, port.getHost().port)
            yield endpoint.connect(_clientFactory(client))
            seen["client"] = isMPTCP(client.transport)
            yield client.send(data)
            result = yield done
            yield client.lost
            [proxy] = proxied
            yield stopAll([up, port])
            return client.digest(), result, proxy

        received, result, proxy = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertEqual(seen, {"client": True, "upstream": True})
        self.assertEqual((result.reason, result.engine), (DONE, "splice"))
        self.assertEqual((result.bytesAToB, result.bytesBToA), (len(data), len(data)))
        self.assertIsNone(result.fallbackReason)

    def test_transportsCanSplice(self) -> None:
        """
        Both transports of an MPTCP connection are plain stream sockets to
        the splice engine.
        """

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            server = Peer(reactor, "server")
            f = protocol.Factory()
            f.buildProtocol = lambda addr: server  # type: ignore[method-assign]
            port = yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(f)
            client = Peer(reactor, "client")
            endpoint = MPTCPClientEndpoint(reactor, LOOPBACK, port.getHost().port)
            yield endpoint.connect(_clientFactory(client))
            yield server.made
            reasons = [
                spliceUnavailableReason(t, reactor)
                for t in (client.transport, server.transport)
            ]
            mp = [isMPTCP(client.transport), isMPTCP(server.transport)]
            client.transport.loseConnection()
            server.transport.loseConnection()
            yield server.lost
            yield client.lost
            yield port.stopListening()
            return reasons, mp

        reasons, mp = self.runScenario(scenario)
        self.assertEqual(reasons, [None, None])
        self.assertEqual(mp, [True, True])

    def test_fastPathListener(self) -> None:
        """
        An MPTCP listener forwarding to a TCP upstream takes the proxy's
        fast path (it accepts at the C level) and splices.
        """
        from splicetx._proxy.fastconn import FastConnection
        from splicetx._proxy.fastpath import fastPathRefusal

        data = payload(2 * MiB, seed=9)
        events, stop = capturedEvents()
        self.addCleanup(stop)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = reactor.listenTCP(0, EchoFactory(), interface=LOOPBACK)
            factory = SpliceProxyFactory(
                TCP4ClientEndpoint(reactor, LOOPBACK, up.getHost().port),
                reactor=reactor,
            )
            port = yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                factory
            )
            factory.addListeningPort(port)
            kinds: list[type] = []
            gate = factory._gate
            started = gate.connectionStarted
            gate.connectionStarted = lambda conn: (  # type: ignore[method-assign]
                kinds.append(type(conn)),
                started(conn),
            )
            client = Peer(reactor, "client")
            endpoint = MPTCPClientEndpoint(reactor, LOOPBACK, port.getHost().port)
            yield endpoint.connect(_clientFactory(client))
            yield client.send(data)
            yield client.lost
            while not events:
                yield deferLater(reactor, 0.01, lambda: None)
            yield stopAll([up, port])
            return client.digest(), fastPathRefusal(factory, port), kinds

        received, refusal, kinds = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertIsNone(refusal)
        self.assertEqual(kinds, [FastConnection])
        [event] = events
        self.assertEqual(
            (event["reason"], event["engine"], event["bytesClientToUpstream"]),
            (DONE, "splice", len(data)),
        )

    def test_plainPeersFallBack(self) -> None:
        """
        A plain TCP client of an MPTCP listener and an MPTCP connection to a
        plain TCP upstream work: the kernel falls back per connection, the
        sockets say so, and the relay still splices.
        """
        data = payload(MiB, seed=3)
        seen: dict[str, Any] = {}

        class RecordingEcho(Echo):
            def connectionMade(self) -> None:
                seen["upstream"] = isMPTCP(self.transport)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            echo.protocol = RecordingEcho
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = RecordingFactory(
                MPTCPClientEndpoint(reactor, LOOPBACK, up.getHost().port),
                reactor=reactor,
            )
            port = yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                factory
            )
            done = factory.nextResult()
            client = Peer(reactor, "client")
            reactor.connectTCP(LOOPBACK, port.getHost().port, _clientFactory(client))
            yield client.made
            seen["client"] = isMPTCP(client.transport)
            yield client.send(data)
            result = yield done
            yield client.lost
            yield stopAll([up, port])
            return client.digest(), result

        received, result = self.runScenario(scenario)
        self.assertEqual(received, digest(data))
        self.assertEqual(seen, {"client": False, "upstream": False})
        self.assertEqual((result.reason, result.engine), (DONE, "splice"))

    def test_refusedAndTimedOut(self) -> None:
        """
        A refused MPTCP connect fails with C{ConnectionRefusedError}; one
        that is cancelled before it completes leaves nothing registered.
        """
        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind((LOOPBACK, 0))

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            endpoint = MPTCPClientEndpoint(reactor, LOOPBACK, closed.getsockname()[1])
            failures = []
            try:
                yield endpoint.connect(_clientFactory(Peer(reactor)))
            except Exception as e:
                failures.append(e)
            # A loopback port whose accept queue is full drops the SYN: the
            # connect hangs until it is cancelled (no traffic leaves loopback).
            hole, fillers = blackholePort()
            self.addCleanup(hole.close)
            for filler in fillers:
                self.addCleanup(filler.close)
            d = MPTCPClientEndpoint(
                reactor, LOOPBACK, hole.getsockname()[1], timeout=5
            ).connect(_clientFactory(Peer(reactor)))
            d.cancel()
            try:
                yield d
            except Exception as e:
                failures.append(e)
            return failures

        refused, cancelled = self.runScenario(scenario)
        self.assertIsInstance(refused, ConnectionRefusedError)
        self.assertEqual(type(cancelled).__name__, "ConnectingCancelledError")


globals().update(makeReactorTests(MPTCPRelayMixin))


class RefusedKernelMixin(ReactorTestMixin):
    """
    The endpoints on a (simulated) kernel that refuses MPTCP sockets.
    """

    scenarioTimeout = 20.0

    def test_failWithReason(self) -> None:
        """
        Without C{fallback}, listening fails with C{CannotListenError}
        carrying the sentence, connecting with L{MPTCPConnectError}.
        """
        refuseMPTCP(self)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            errors = []
            try:
                yield MPTCPServerEndpoint(reactor, 0, interface=LOOPBACK).listen(
                    EchoFactory()
                )
            except CannotListenError as e:
                errors.append(e)
            try:
                yield MPTCPClientEndpoint(reactor, LOOPBACK, 9).connect(
                    _clientFactory(Peer(reactor))
                )
            except MPTCPConnectError as e:
                errors.append(e)
            return errors

        listenError, connectError = self.runScenario(scenario)
        self.assertIsInstance(listenError.socketError, MPTCPUnavailableError)
        self.assertIn("Protocol not supported", str(listenError))
        self.assertIn("cannot open an MPTCP socket: ", str(connectError))
        self.assertIn("add :fallback=tcp", str(connectError))

    def test_fallbackToTCP(self) -> None:
        """
        With C{fallback}, a proxy listens and connects with plain TCP,
        splices, and each endpoint logs why once.
        """
        refuseMPTCP(self)
        events = fallbackEvents(self)
        data = payload(MiB, seed=4)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            up = yield MPTCPServerEndpoint(
                reactor, 0, interface=LOOPBACK, fallback=True
            ).listen(EchoFactory())
            factory = RecordingFactory(
                MPTCPClientEndpoint(
                    reactor, LOOPBACK, up.getHost().port, fallback=True
                ),
                reactor=reactor,
            )
            port = yield MPTCPServerEndpoint(
                reactor, 0, interface=LOOPBACK, fallback=True
            ).listen(factory)
            results = []
            for _ in (1, 2):
                done = factory.nextResult()
                client = Peer(reactor, "client")
                reactor.connectTCP(
                    LOOPBACK, port.getHost().port, _clientFactory(client)
                )
                yield client.made
                yield client.send(data)
                result = yield done
                yield client.lost
                results.append((client.digest(), result))
            yield stopAll([up, port])
            return results

        results = self.runScenario(scenario)
        for received, result in results:
            self.assertEqual(received, digest(data))
            self.assertEqual((result.reason, result.engine), (DONE, "splice"))
        self.assertEqual(len(events), 3, events)
        self.assertEqual(
            {e["endpoint"].split()[0] for e in events},
            {"<MPTCPServerEndpoint", "<MPTCPClientEndpoint"},
        )
        for event in events:
            self.assertIn("(Protocol not supported)", event["reason"])
            self.assertEqual(event["log_level"].name, "warn")


globals().update(makeReactorTests(RefusedKernelMixin))


def mptcpSocket(family: int = socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)


def mptcpCounter(name: str) -> int:
    """
    One of the kernel's MPTCP counters (C{MPTcpExt} in
    C{/proc/net/netstat}, this network namespace).
    """
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("MPTcpExt:")]
    header, values = lines
    return int(values[header.index(name)])


class CommandTests(SynchronousTestCase):
    """
    The real C{twist splice-proxy} with C{mptcp:} on both sides.
    """

    def setUp(self) -> None:
        requireMPTCP()

    def proxy(self, args: list[str], **kwargs: Any) -> ProxyProcess:
        p = ProxyProcess(args, **kwargs)
        self.addCleanup(p.kill)
        return p

    def test_pythonClient(self) -> None:
        """
        A Python MPTCP client's 3 MiB go through C{--listen mptcp:} and
        C{--connect mptcp:} to an MPTCP echo server and back byte-exact; the
        connection's record says splice.
        """
        data = payload(3 * MiB, seed=8)

        async def scenario() -> Any:
            listener = mptcpSocket()
            listener.bind((LOOPBACK, 0))
            server = await asyncio.start_server(echoChunks, sock=listener)
            upPort = listener.getsockname()[1]
            proxy = self.proxy(
                [
                    "--listen",
                    f"mptcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"mptcp:{LOOPBACK}:{upPort}",
                ]
            )
            port = await asyncio.to_thread(proxy.listeningPort)
            # asyncio's sock_connect would look the address up with the
            # socket's protocol, which getaddrinfo does not know: connect
            # first, then hand the connected socket over.
            sock = mptcpSocket()
            await asyncio.to_thread(sock.connect, (LOOPBACK, port))
            speaks = isMPTCP(sock)
            r, w = await asyncio.open_connection(sock=sock)
            got, _ = await asyncio.gather(readAll(r), sendAll(w, data))
            w.close()
            server.close()
            await server.wait_closed()
            [record] = await asyncio.to_thread(proxy.waitForConnections, 1)
            return got, speaks, record

        got, speaks, record = runAsync(scenario())
        self.assertEqual(digest(got), digest(data))
        self.assertTrue(speaks)
        self.assertEqual(
            (record["engine"], record["bytesClientToUpstream"], record["reason"]),
            ("splice", len(data), DONE),
        )

    def test_mptcpizeCurl(self) -> None:
        """
        C{mptcpize run curl} fetches a file over MPTCP through C{--listen
        mptcp:} from a plain HTTP server; the proxy logs a spliced
        connection.
        """
        if shutil.which("mptcpize") is None or shutil.which("curl") is None:
            raise SkipTest("needs mptcpize (Debian package mptcpd) and curl")
        body = payload(MiB, seed=12)
        root = scratchDir(self)
        with open(os.path.join(root, "blob"), "wb") as f:
            f.write(body)
        http = subprocess.Popen(
            [sys.executable, "-m", "http.server", "0", "--bind", LOOPBACK],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(http.wait, 10)
        self.addCleanup(http.kill)
        assert http.stdout is not None
        line = http.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        httpPort = int(line.split(" port ")[1].split()[0])
        proxy = self.proxy(
            [
                "--listen",
                f"mptcp:0:interface={LOOPBACK}",
                "--connect",
                f"tcp:{LOOPBACK}:{httpPort}",
            ]
        )
        port = proxy.listeningPort()
        before = mptcpCounter("MPCapableSYNRX")
        out = subprocess.run(
            [
                "mptcpize",
                "run",
                "curl",
                "-sS",
                "--fail",
                f"http://{LOOPBACK}:{port}/blob",
            ],
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(digest(out.stdout), digest(body))
        # The proxy's listener saw an MPTCP SYN: curl spoke MPTCP.
        self.assertGreater(mptcpCounter("MPCapableSYNRX"), before)
        [record] = proxy.waitForConnections(1)
        self.assertEqual(
            (record["engine"], record["bytesUpstreamToClient"] >= len(body)),
            ("splice", True),
        )

    def test_kernelOff(self) -> None:
        """
        In a network namespace with C{net.mptcp.enabled = 0}, C{--listen
        mptcp:} and C{--connect mptcp:} exit 64 with one line naming the
        sysctl; C{fallback=tcp} starts.
        """
        if shutil.which("unshare") is None:
            raise SkipTest("needs unshare (util-linux)")
        prefix = [
            "unshare",
            "-n",
            "sh",
            "-c",
            'echo 0 > /proc/sys/net/mptcp/enabled && exec "$@"',
            "sh",
        ]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise SkipTest(f"cannot make a network namespace: {probe.stderr.strip()}")
        cases = [
            ["--listen", "mptcp:8989", "--connect", f"tcp:{LOOPBACK}:9"],
            ["--listen", "tcp:8989", "--connect", f"mptcp:{LOOPBACK}:9"],
        ]
        for args in cases:
            out = subprocess.run(
                [*prefix, *twistCommand(args)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            lines = out.stderr.strip().splitlines()
            self.assertEqual(out.returncode, 64, out.stderr)
            self.assertEqual(len(lines), 1, out.stderr)
            self.assertIn(
                "MPTCP is off in this kernel (net.mptcp.enabled = 0)", lines[0]
            )
            self.assertIn(args[1] if "mptcp" in args[1] else args[3], lines[0])

        proxy = self.proxy(
            [
                "--listen",
                f"mptcp:0:interface={LOOPBACK}:fallback=tcp",
                "--connect",
                f"tcp:{LOOPBACK}:9",
            ],
            command=[
                "unshare",
                "-n",
                "sh",
                "-c",
                "ip link set lo up 2>/dev/null; "
                'echo 0 > /proc/sys/net/mptcp/enabled && exec "$@"',
                "sh",
                *twistCommand(
                    [
                        "--listen",
                        f"mptcp:0:interface={LOOPBACK}:fallback=tcp",
                        "--connect",
                        f"tcp:{LOOPBACK}:9",
                    ]
                ),
            ],
        )
        event = proxy.waitForEvent(
            lambda e: e.get("splicetxEvent") == "mptcp-fallback", 20
        )
        self.assertIn("net.mptcp.enabled = 0", event["reason"])
        proxy.listeningPort()
