# -*- test-case-name: tests.test_userproxy -*-
"""
A user's own proxy, in a module outside the repository, run by
C{twist splice-proxy --protocol} as a real subprocess with real clients:
its own options, drain on SIGTERM, a refusal in C{/metrics} and
C{/status.json}, C{--workers 2} and a SIGHUP reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    connectProxy,
    readAll,
    refusedSoon,
    runAsync,
    sendAll,
    startServer,
    twistCommand,
)

#: The user's module: a line protocol with options of its own.
GREETING_PROXY = textwrap.dedent(
    '''
    """
    HELLO NAME: go to the upstream named NAME, answer a greeting, relay.
    """

    from twisted.internet.endpoints import clientFromString
    from twisted.python import usage

    from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol


    class GreetingOptions(usage.Options):
        optParameters = [["greeting", None, "OK", "The answer to a known name."]]

        def __init__(self):
            super().__init__()
            self["route"] = {}

        def opt_route(self, text):
            """NAME=ENDPOINT: HELLO NAME goes to ENDPOINT (repeatable)."""
            name, sep, where = text.partition("=")
            if not sep:
                raise usage.UsageError(f"--route: expected NAME=ENDPOINT, not {text!r}")
            self["route"][name] = where


    class Plain(SpliceProxyProtocol):
        """Chooses nothing itself: it needs --connect."""


    class GreetingProxy(SpliceProxyProtocol):
        readsHandshake = True
        commandLineOptions = GreetingOptions
        buffer = b""

        def handshakeReceived(self, data):
            self.buffer += data
            line, newline, rest = self.buffer.partition(b"\\n")
            if not newline:
                return
            name = line.decode("ascii", "replace").removeprefix("HELLO ").strip()
            routes = self.factory.options["route"]
            if name == "default" and self.factory.upstream is not None:
                endpoint = self.factory.upstream
            elif name in routes:
                endpoint = clientFromString(self.factory.reactor, routes[name])
            else:
                reply = b"NO " + name.encode("ascii", "replace") + b"\\n"
                return self.refuse("unknown_name", f"unknown name {name}", reply=reply)
            self.connectUpstream(endpoint, toUpstream=rest)

        def upstreamConnected(self, upstream):
            self.reply(self.factory.options["greeting"].encode() + b"\\n")
            self.startRelay()


    class Announce(SpliceProxyProtocol):
        """Says FACTORY once the upstream is connected, then relays."""

        def upstreamConnected(self, upstream):
            self.reply(b"FACTORY\\n")
            self.startRelay()


    class AnnouncingFactory(SpliceProxyFactory):
        protocol = Announce
    '''
)

#: A script of the user's that builds its own service around the class.
SERVICE_SCRIPT = textwrap.dedent(
    """
    import sys

    from twisted.internet import reactor

    from greeting_proxy import GreetingProxy
    from splicetx.service import proxyService

    listen, upstream = sys.argv[1:]
    service = proxyService(
        ["--listen", listen, "--route", "up=" + upstream, "--greeting", "HI"],
        protocol=GreetingProxy,
    )
    service.startService()
    reactor.run()
    """
)

PROTOCOL = "greeting_proxy.GreetingProxy"
DEADLINE = 20.0


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


async def digestUpstream(tag: bytes = b"") -> tuple[Any, int]:
    """
    A loopback upstream that reads to the end and answers C{tag} and the
    SHA-256 of what it read.
    """

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            w.write(tag + digest(await readAll(r)))
            w.write_eof()
            await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    return await startServer(handle)


async def hello(port: int, name: str, data: bytes = b"") -> bytes:
    """
    Say C{HELLO name}, send C{data}, half-close and read to the end.
    """
    r, w = await connectProxy(port)
    try:
        await sendAll(w, f"HELLO {name}\n".encode() + data)
        return await readAll(r)
    finally:
        w.close()


def getJSON(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=10) as f:
        return json.load(f) if path.endswith(".json") else f.read().decode()


class _UserProxyTestCase(SynchronousTestCase):
    """
    Writes the user's module into its own directory, outside the
    repository, and starts proxies with that directory on C{PYTHONPATH}.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, True)
        with open(os.path.join(self.directory, "greeting_proxy.py"), "w") as f:
            f.write(GREETING_PROXY)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [self.directory, *filter(None, [os.environ.get("PYTHONPATH")])]
        )

    def proxy(self, *args: str) -> ProxyProcess:
        p = ProxyProcess(
            ["--protocol", PROTOCOL, *args], env=self.env, cwd=self.directory
        )
        self.addCleanup(p.kill)
        return p

    def twist(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            twistCommand(list(args)),
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
        )


class CommandLineTests(_UserProxyTestCase):
    """
    The class's options join the command line.
    """

    def test_helpListsClassOptions(self) -> None:
        """
        C{--help} with C{--protocol} lists the class's own options.
        """
        done = self.twist("--protocol", PROTOCOL, "--help")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("--route=", done.stdout)
        self.assertIn("The answer to a known name.", done.stdout)

    def test_badValues(self) -> None:
        """
        A module not found, a name that is not a class or not a protocol
        subclass, and a bad value of the class's own option: one line,
        exit status 64.
        """
        listen = ["--listen", f"tcp:0:interface={LOOPBACK}"]
        rows = [
            (["--protocol", "nowhere.Proxy"], "no module named 'nowhere'"),
            (["--protocol", "greeting_proxy.usage"], "not a class but module"),
            (
                ["--protocol", "greeting_proxy.GreetingOptions"],
                "not a subclass of SpliceProxyProtocol",
            ),
            (["--protocol", PROTOCOL, "--route", "x"], "expected NAME=ENDPOINT"),
            (["--factory", PROTOCOL], "not a subclass of SpliceProxyFactory"),
            (["--protocol", "greeting_proxy.Plain"], "--connect is required"),
        ]
        # All six processes at once: each is independent, and most of each
        # one's time is Python starting.
        procs = [
            subprocess.Popen(
                twistCommand([*listen, *args]),
                env=self.env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args, _ in rows
        ]
        for proc in procs:
            self.addCleanup(proc.wait)
            self.addCleanup(proc.kill)
        for (args, message), proc in zip(rows, procs, strict=True):
            _, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 64, (args, err))
            [line] = err.splitlines()
            self.assertIn(message, line)


class ServeTests(_UserProxyTestCase):
    """
    One process: drain, refusals in the metrics and the status page.
    """

    def test_drainAndRefusal(self) -> None:
        """
        An unknown name is refused with the class's reply and counted by
        reason in C{/metrics} and C{/status.json}; a transfer in flight
        when SIGTERM arrives completes, new connections are refused, and
        the process exits with status 0.
        """
        data = os.urandom(1 << 20)
        seen: dict[str, Any] = {}

        async def scenario() -> ProxyProcess:
            server, uport = await digestUpstream()
            proxy = self.proxy(
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--route",
                f"up=tcp:{LOOPBACK}:{uport}",
                "--greeting",
                "WELCOME",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
                "--drain-timeout",
                "10",
            )
            port = await asyncio.to_thread(proxy.listeningPort)
            metricsPort = proxy.waitForEvent(
                lambda e: e.get("splicetxEvent") == "metrics"
            )["port"]
            seen["refusal"] = await hello(port, "nobody", b"ignored")
            await asyncio.to_thread(proxy.waitForConnections, 1)
            seen["metrics"] = await asyncio.to_thread(getJSON, metricsPort, "/metrics")
            seen["status"] = await asyncio.to_thread(
                getJSON, metricsPort, "/status.json"
            )
            r, w = await connectProxy(port)
            w.write(b"HELLO up\n")
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            for i, chunk in enumerate(chunks):
                w.write(chunk)
                await w.drain()
                if i == 0:
                    proxy.signal(signal.SIGTERM)
                    seen["refused"] = await refusedSoon(port)
                await asyncio.sleep(0.03)
            w.write_eof()
            seen["reply"] = await readAll(r)
            w.close()
            server.close()
            return proxy

        proxy = runAsync(scenario(), 60)
        self.assertEqual(proxy.wait(DEADLINE), 0)
        self.assertEqual(seen["refusal"], b"NO nobody\n")
        self.assertIn('reason="unknown_name"} 1.0', seen["metrics"])
        [listener] = seen["status"]["listeners"]
        self.assertEqual(listener["refused"], {"unknown_name": 1})
        self.assertTrue(seen["refused"])
        self.assertEqual(seen["reply"], b"WELCOME\n" + digest(data))
        records = proxy.connections()
        rejected = [e for e in records if e["reason"] == "rejected"]
        self.assertEqual([e["detail"] for e in rejected], ["unknown name nobody"])
        [done] = [e for e in records if e["bytesClientToUpstream"] == len(data)]
        self.assertEqual(done["reason"], "done")
        drained = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "drained")
        self.assertEqual(drained["aborted"], 0)


class WorkersTests(_UserProxyTestCase):
    """
    C{--workers 2} with the user's class.
    """

    def test_workers(self) -> None:
        """
        Both workers run the class (with its options); connections spread
        over them, the supervisor's C{/metrics} counts their refusals, and
        SIGTERM ends everything with status 0.
        """

        async def scenario() -> tuple[Any, ...]:
            server, uport = await digestUpstream()
            proxy = self.proxy(
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--route",
                f"up=tcp:{LOOPBACK}:{uport}",
                "--workers",
                "2",
                "--metrics",
                f"tcp:0:interface={LOOPBACK}",
            )
            port = (
                await asyncio.to_thread(
                    proxy.waitForEvent,
                    lambda e: e.get("splicetxEvent") == "listening",
                    DEADLINE,
                )
            )["port"]
            for index in (0, 1):
                await asyncio.to_thread(
                    proxy.waitForEvent,
                    lambda e, i=index: (
                        e.get("splicetxEvent") == "ready" and e.get("worker") == i
                    ),
                    DEADLINE,
                )
            answers = await asyncio.gather(
                *(hello(port, "up", b"%d" % i) for i in range(20)),
                hello(port, "nobody"),
            )
            events = await asyncio.to_thread(proxy.waitForConnections, 21)
            metricsPort = proxy.waitForEvent(
                lambda e: e.get("splicetxEvent") == "metrics"
            )["port"]
            metrics = await asyncio.to_thread(getJSON, metricsPort, "/metrics")
            server.close()
            proxy.signal(signal.SIGTERM)
            return proxy, answers, events, metrics

        proxy, answers, events, metrics = runAsync(scenario(), 90)
        expected = [b"OK\n" + digest(b"%d" % i) for i in range(20)]
        self.assertEqual(answers, [*expected, b"NO nobody\n"])
        self.assertEqual(len({e["pid"] for e in events}), 2)
        self.assertIn('reason="unknown_name"} 1.0', metrics)
        self.assertEqual(proxy.wait(DEADLINE), 0)


class ReloadTests(_UserProxyTestCase):
    """
    SIGHUP with the user's class.
    """

    def test_reload(self) -> None:
        """
        A SIGHUP reload gives the class's forward its new default upstream
        (C{--config}'s) and opens a new forward served by the class too.
        """
        path = os.path.join(self.directory, "rinetd.conf")

        def write(*lines: str) -> None:
            with open(path + ".new", "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(path + ".new", path)

        async def scenario() -> tuple[Any, ...]:
            a, aport = await digestUpstream(b"A")
            b, bport = await digestUpstream(b"B")
            ports = []
            for _ in range(2):
                s, p = await startServer(lambda r, w: None)
                s.close()
                await s.wait_closed()
                ports.append(p)
            first, second = ports
            write(f"{LOOPBACK} {first} {LOOPBACK} {aport}")
            proxy = self.proxy("--config", path)
            await asyncio.to_thread(
                proxy.waitForEvent, lambda e: e.get("splicetxEvent") == "ready"
            )
            before = await hello(first, "default", b"x")
            write(
                f"{LOOPBACK} {first} {LOOPBACK} {bport}",
                f"{LOOPBACK} {second} {LOOPBACK} {aport}",
            )
            proxy.signal(signal.SIGHUP)
            event = await asyncio.to_thread(
                proxy.waitForEvent, lambda e: e.get("splicetxEvent") == "reload"
            )
            after = await hello(first, "default", b"x")
            added = await hello(second, "default", b"x")
            refused = await hello(second, "nobody")
            a.close()
            b.close()
            return proxy, before, event, after, added, refused

        proxy, before, event, after, added, refused = runAsync(scenario(), 60)
        self.assertEqual(before, b"OK\nA" + digest(b"x"))
        self.assertEqual((event.get("added"), event.get("changed")), (1, 1))
        self.assertEqual(after, b"OK\nB" + digest(b"x"))
        self.assertEqual(added, b"OK\nA" + digest(b"x"))
        self.assertEqual(refused, b"NO nobody\n")
        proxy.signal(signal.SIGTERM)
        self.assertEqual(proxy.wait(DEADLINE), 0)


class FactoryAndServiceTests(_UserProxyTestCase):
    """
    C{--factory} runs the user's factory class, and C{proxyService()} gives
    a script of the user's the same service.
    """

    def test_factoryClass(self) -> None:
        """
        C{--factory} serves with the factory's own protocol.
        """
        data = os.urandom(100000)

        async def scenario() -> tuple[bytes, ProxyProcess]:
            server, uport = await digestUpstream()
            proxy = ProxyProcess(
                [
                    "--factory",
                    "greeting_proxy.AnnouncingFactory",
                    "--listen",
                    f"tcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"tcp:{LOOPBACK}:{uport}",
                ],
                env=self.env,
                cwd=self.directory,
            )
            self.addCleanup(proxy.kill)
            port = await asyncio.to_thread(proxy.listeningPort)
            r, w = await connectProxy(port)
            await sendAll(w, data)
            got = await readAll(r)
            w.close()
            server.close()
            return got, proxy

        got, proxy = runAsync(scenario(), 40)
        self.assertEqual(got, b"FACTORY\n" + digest(data))
        proxy.signal(signal.SIGTERM)
        self.assertEqual(proxy.wait(DEADLINE), 0)

    def test_proxyService(self) -> None:
        """
        A script that starts C{proxyService(..., protocol=...)} itself serves
        the class with its options and drains to status 0 on SIGTERM.
        """
        script = os.path.join(self.directory, "run_service.py")
        with open(script, "w") as f:
            f.write(SERVICE_SCRIPT)
        probe = socket.socket()
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
        probe.close()
        data = os.urandom(100000)

        async def scenario() -> tuple[bytes, subprocess.Popen[bytes]]:
            server, uport = await digestUpstream()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    script,
                    f"tcp:{port}:interface={LOOPBACK}",
                    f"tcp:{LOOPBACK}:{uport}",
                ],
                env=self.env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self.addCleanup(lambda: proc.poll() is None and proc.kill())
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    got = await hello(port, "up", data)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
            server.close()
            return got, proc

        got, proc = runAsync(scenario(), 40)
        self.assertEqual(got, b"HI\n" + digest(data))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(
            proc.wait(DEADLINE), 0, proc.stderr.read() if proc.stderr else ""
        )
