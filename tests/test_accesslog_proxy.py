# -*- test-case-name: tests.test_accesslog_proxy -*-
"""
The access log wired into the proxy: in process (a factory with an
L{AccessLog} over real sockets on every reactor, and the service that
closes it on stop) and as the real C{twist splice-proxy} with
C{--access-log} and C{--access-log-format}.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from splicetx import DONE
from splicetx._ops.accesslog import AccessLog
from splicetx.proxy import UPSTREAM_FAILED
from splicetx.testing import ReactorTestMixin, makeReactorTests

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    connectProxy,
    readAll,
    runAsync,
    startServer,
    twistCommand,
)
from .test_proxy import (
    EchoFactory,
    capturedEvents,
    closedByProxy,
    connectClient,
    proxyTo,
    stopAll,
)


class AccessLogProxyMixin(ReactorTestMixin):
    """
    A factory given an L{AccessLog} writes its records there and emits no
    C{twisted.logger} connection event.
    """

    scenarioTimeout = 20.0

    def test_recordsInsteadOfEvents(self) -> None:
        """
        A relayed connection gives one JSON record with the old event's
        fields (addresses, engine, byte counts, reason) and no Twisted event.
        """
        out = io.StringIO()
        events, stop = capturedEvents()
        self.addCleanup(stop)

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            log = AccessLog(out, "json", reactor=reactor, flushInterval=0)
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            factory = proxyTo(
                reactor, up.getHost().port, accessLog=log, logFields={"worker": 3}
            )
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"x" * 1000)
            result = yield done
            yield client.lost
            upPort = up.getHost().port
            yield stopAll([up, port])
            return result, upPort

        result, upPort = self.runScenario(scenario)
        self.assertEqual(events, [])
        [line] = out.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["splicetxEvent"], "connection")
        self.assertEqual(record["upstream"], f"{LOOPBACK}:{upPort}")
        self.assertTrue(record["client"].startswith(f"{LOOPBACK}:"))
        self.assertEqual(
            (
                record["reason"],
                record["engine"],
                record["bytesClientToUpstream"],
                record["bytesUpstreamToClient"],
                record["worker"],
                record["level"],
            ),
            (DONE, result.engine, 1000, 1000, 3, "info"),
        )

    def test_refusedIsWarn(self) -> None:
        """
        A refused upstream gives a C{warn} record, also with
        C{logNormalConnections} off.
        """
        import socket

        closed = socket.socket()
        self.addCleanup(closed.close)
        closed.bind((LOOPBACK, 0))
        out = io.StringIO()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            log = AccessLog(out, "text", reactor=reactor, flushInterval=0)
            factory = proxyTo(
                reactor,
                closed.getsockname()[1],
                accessLog=log,
                logNormalConnections=False,
            )
            port = reactor.listenTCP(0, factory, interface=LOOPBACK)
            done = factory.nextResult()
            client = connectClient(reactor, port)
            yield client.made
            result = yield done
            yield closedByProxy(client)
            yield stopAll([port])
            return result

        result = self.runScenario(scenario)
        self.assertEqual(result.reason, UPSTREAM_FAILED)
        [line] = out.getvalue().splitlines()
        self.assertIn("[splicetx.proxy#warn] ", line)
        self.assertIn(f": {UPSTREAM_FAILED} (", line)

    def test_serviceClosesOnStop(self) -> None:
        """
        The service writes the records to C{twist}'s log file in its JSON
        form (with the record separator) and flushes them when it stops.
        """
        from splicetx._app.service import SpliceProxyService
        from splicetx._config.model import Forward, ProxyConfig

        out = io.StringIO()

        @inlineCallbacks
        def scenario(reactor: Any) -> Any:
            echo = EchoFactory()
            up = reactor.listenTCP(0, echo, interface=LOOPBACK)
            forward = Forward(
                listens=[f"tcp:0:interface={LOOPBACK}"],
                connect=f"tcp:{LOOPBACK}:{up.getHost().port}",
            )
            service = SpliceProxyService(
                ProxyConfig(forwards=[forward], drainTimeout=5),
                reactor=reactor,
                handleSignals=False,
                logFile=out,
                logFormat="json",
            )
            service.startService()
            [port] = service.ports
            factory = service.factory
            client = connectClient(reactor, port)
            yield client.made
            yield client.send(b"ping")
            yield client.lost
            written = out.getvalue()
            yield service.stopService()
            yield up.stopListening()
            return written, factory

        before, factory = self.runScenario(scenario)
        self.assertEqual(factory.liveProtocols, set())
        self.assertTrue(factory.accessLog._closed)
        text = out.getvalue()
        self.assertTrue(text.startswith("\x1e"), text)
        records = [json.loads(r) for r in text.split("\x1e") if r.strip()]
        self.assertEqual([r["reason"] for r in records], [DONE])


globals().update(makeReactorTests(AccessLogProxyMixin))


class AccessLogCommandTests(SynchronousTestCase):
    """
    C{twist splice-proxy --access-log ... --access-log-format ...}.
    """

    def _tempPath(self, name: str = "access.log") -> str:
        directory = tempfile.mkdtemp(prefix="splicetx-accesslog-")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, name)

    def _relayOnce(self, args: list[str], twistArgs: list[str] | None = None) -> Any:
        """
        Start the proxy with C{args}, relay one connection, stop it with
        SIGTERM and return the process (its events, exit status).
        """

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read(100))
            await w.drain()
            w.close()

        async def scenario() -> ProxyProcess:
            server, uport = await startServer(echo)
            proxy = ProxyProcess(
                [
                    "--listen",
                    f"tcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"tcp:{LOOPBACK}:{uport}",
                    *args,
                ],
                twistArgs,
            )
            self.addCleanup(proxy.kill)
            port = await asyncio.to_thread(proxy.listeningPort)
            r, w = await connectProxy(port)
            w.write(b"hello")
            await w.drain()
            got = await readAll(r)
            w.close()
            self.assertEqual(got, b"hello")
            server.close()
            return proxy

        proxy = runAsync(scenario(), 30)
        proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "ready")
        # The client has closed, but on a loaded machine the proxy may not
        # have read its FIN yet: a SIGTERM then would end the connection by
        # the drain instead.  Wait (bounded) for the record first.
        path = args[args.index("--access-log") + 1] if "--access-log" in args else "-"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if path == "-":
                if proxy.connections():
                    break
            elif os.path.exists(path) and os.path.getsize(path) > 0:
                break
            time.sleep(0.02)
        proxy.signal()
        self.assertEqual(proxy.wait(30), 0)
        return proxy

    def test_defaultIntoTwistsJSON(self) -> None:
        """
        Without C{--access-log}, the records go into C{twist}'s JSON log
        stream as compact records that its reader parses, all written
        before the drain's last line.
        """
        proxy = self._relayOnce([])
        [event] = proxy.connections()
        self.assertEqual(event["reason"], "done")
        self.assertEqual(event["bytesClientToUpstream"], 5)
        self.assertNotIn("log_format", event)
        # Flushed when the drain ends, before the line that says so.
        kinds = [e.get("splicetxEvent") for e in proxy.events]
        self.assertLess(kinds.index("connection"), kinds.index("drained"))

    def test_fileJSON(self) -> None:
        """
        C{--access-log FILE} writes one plain JSON object per line there
        (JSON by default: a file is not a terminal), nothing in twist's log.
        """
        path = self._tempPath()
        proxy = self._relayOnce(["--access-log", path])
        self.assertEqual(proxy.connections(), [])
        with open(path) as f:
            [line] = f.read().splitlines()
        record = json.loads(line)
        self.assertEqual(
            (
                record["splicetxEvent"],
                record["reason"],
                record["bytesUpstreamToClient"],
            ),
            ("connection", "done", 5),
        )

    def test_fileText(self) -> None:
        """
        C{--access-log-format text} writes the classic text line.
        """
        path = self._tempPath()
        self._relayOnce(["--access-log", path, "--access-log-format", "text"])
        with open(path) as f:
            [line] = f.read().splitlines()
        self.assertIn("[splicetx.proxy#info] 127.0.0.1:", line)
        self.assertIn(": done (", line)
        self.assertIn("5 bytes up, 5 bytes down", line)

    def test_stdout(self) -> None:
        """
        C{--access-log -} writes to standard output; shared with twist's
        JSON log there, the records carry its record separator.
        """
        proxy = self._relayOnce(["--access-log", "-", "--access-log-format", "json"])
        [event] = proxy.connections()
        self.assertEqual((event["reason"], event["level"]), ("done", "info"))

    def test_badPath(self) -> None:
        """
        An access log that cannot be opened ends the command with one line
        and status 64.
        """
        missing = os.path.join(self._tempPath("missing"), "no", "such", "access.log")
        run = subprocess.run(
            twistCommand(
                ["--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1"]
                + ["--access-log", missing]
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(run.returncode, 64, run.stderr)
        [line] = run.stderr.splitlines()
        self.assertIn("--access-log", line)
        self.assertNotIn("Traceback", run.stderr)

    def test_badFormat(self) -> None:
        """
        An unknown C{--access-log-format} ends the command with one line
        and status 64.
        """
        run = subprocess.run(
            twistCommand(
                ["--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1"]
                + ["--access-log-format", "xml"]
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(run.returncode, 64, run.stderr)
        [line] = run.stderr.splitlines()
        self.assertIn("--access-log-format", line)
