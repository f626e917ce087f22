# -*- test-case-name: tests.test_logrotate -*-
"""
SIGUSR1 reopens C{twist}'s log file and the C{--access-log} file, for
logrotate (L{splicetx._app.logfiles}): as real C{twist splice-proxy}
processes, alone and with C{--workers}, whose files are moved away while
they run; and the reopening itself on files of this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.logfiles import reopenFile, reopenFiles
from splicetx._app.supervisor import SpliceProxySupervisorService
from splicetx._config.model import Forward, ProxyConfig

from ._cli_support import LOOPBACK, ProxyProcess, runAsync
from .test_ops_cli import Upstream, exchange


def fileEvents(path: str) -> list[dict[str, Any]]:
    """
    The JSON records in a log file so far: C{twist}'s events (each line
    starts with the record separator) and the access log's records.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        line = line.strip().lstrip("\x1e")
        if line:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
    return events


def waitForEvents(
    path: str,
    predicate: Callable[[dict[str, Any]], bool],
    count: int = 1,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """
    Wait until C{path} holds C{count} records matching C{predicate}.

    @raise AssertionError: on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in fileEvents(path) if predicate(e)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(found)} of {count} records in {path} within {timeout} s: "
                f"{fileEvents(path)[-5:]!r}"
            )
        time.sleep(0.05)


def kind(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("splicetxEvent") == name


class RotateTests(SynchronousTestCase):
    """
    Move both files away, send SIGUSR1: the old files keep what came
    before, new files at the same names get what comes after.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="splicetx-rotate-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.log = os.path.join(self.directory, "proxy.log")
        self.access = os.path.join(self.directory, "access.log")

    def rotate(self, *extra: str, workers: int = 0) -> dict[str, Any]:
        """
        Run a proxy logging to files, relay one connection, rotate both
        files, send SIGUSR1, relay another, stop it.

        @return: the records of every file and the clients' addresses.
        """

        async def scenario() -> dict[str, Any]:
            up = await Upstream().start()
            proxy = ProxyProcess(
                [
                    "--listen",
                    f"tcp:0:interface={LOOPBACK}",
                    "--connect",
                    f"tcp:{LOOPBACK}:{up.port}",
                    "--access-log",
                    self.access,
                    *extra,
                ],
                twistArgs=["--log-file", self.log],
            )
            self.addCleanup(proxy.kill)
            ready = "supervisor-ready" if workers else "ready"
            await asyncio.to_thread(waitForEvents, self.log, kind(ready))
            if workers:
                await asyncio.to_thread(waitForEvents, self.log, kind("ready"), workers)
            listening = next(e for e in fileEvents(self.log) if kind("listening")(e))
            port = int(listening["port"])
            self.assertEqual(await exchange(port, b"one"), b"ok")
            await asyncio.to_thread(waitForEvents, self.access, kind("connection"))
            os.rename(self.log, self.log + ".1")
            os.rename(self.access, self.access + ".1")
            proxy.signal(signal.SIGUSR1)
            await asyncio.to_thread(
                waitForEvents, self.log, kind("reopened"), max(workers, 1)
            )
            self.assertEqual(await exchange(port, b"two"), b"ok")
            await asyncio.to_thread(waitForEvents, self.access, kind("connection"))
            proxy.signal(signal.SIGTERM)
            code = await asyncio.to_thread(proxy.wait, 60)
            up.server.close()
            return {
                "code": code,
                "stderr": proxy.stderr,
                "log.1": fileEvents(self.log + ".1"),
                "log": fileEvents(self.log),
                "access.1": fileEvents(self.access + ".1"),
                "access": fileEvents(self.access),
                "received": up.received,
                "pid": proxy.pid,
            }

        return runAsync(scenario(), 120)

    def test_oneProcess(self) -> None:
        """
        twist's log file and the access log are both reopened: the rotated
        files hold the first connection and the start-up, the new ones the
        second connection, the reopened line and the drain.
        """
        out = self.rotate()
        self.assertEqual(out["code"], 0, out["stderr"])
        self.assertEqual(out["received"], [b"one", b"two"])
        [first] = out["access.1"]
        [second] = out["access"]
        self.assertNotEqual(first["client"], second["client"])
        self.assertEqual(
            (first["bytesClientToUpstream"], second["bytesClientToUpstream"]), (3, 3)
        )
        old = [e.get("splicetxEvent") for e in out["log.1"]]
        new = [e.get("splicetxEvent") for e in out["log"]]
        self.assertIn("ready", old)
        self.assertNotIn("reopened", old)
        self.assertEqual(new[0], "reopened")
        self.assertIn("drained", new)
        [reopened] = [e for e in out["log"] if kind("reopened")(e)]
        self.assertEqual(reopened["files"], [self.log, self.access])

    def test_workers(self) -> None:
        """
        With --workers 2 the supervisor passes SIGUSR1 on: both workers
        reopen twist's log file and the access log.
        """
        out = self.rotate("--workers", "2", workers=2)
        self.assertEqual(out["code"], 0, out["stderr"])
        self.assertEqual(out["received"], [b"one", b"two"])
        [first] = out["access.1"]
        [second] = out["access"]
        self.assertNotEqual(first["client"], second["client"])
        reopened = [e for e in out["log"] if kind("reopened")(e)]
        workers = [e for e in reopened if e["pid"] != out["pid"]]
        self.assertEqual(len({e["pid"] for e in workers}), 2)
        for e in workers:
            self.assertEqual(e["files"], [self.log, self.access])
        # The supervisor reopened twist's log too: its event is in the new file.
        [own] = [e for e in reopened if e["pid"] == out["pid"]]
        self.assertEqual(own["files"], [self.log])
        passed = [
            e
            for e in out["log.1"] + out["log"]
            if kind("reopened")(e) and e["pid"] == out["pid"]
        ]
        self.assertEqual([e["workers"] for e in passed], [2])


class ReopenTests(SynchronousTestCase):
    """
    L{reopenFile} and the supervisor's L{reopenLogs
    <SpliceProxySupervisorService.reopenLogs>} on files of this process.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="splicetx-reopen-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "x.log")

    def test_reopenInPlace(self) -> None:
        """
        The same file object writes to a new file at the old name, with the
        old file's permissions; the moved file keeps what was written
        before.
        """
        f = open(self.path, "a", encoding="utf-8")
        self.addCleanup(f.close)
        os.chmod(self.path, 0o640)
        f.write("before\n")
        os.rename(self.path, self.path + ".1")
        f.write("buffered\n")
        self.assertEqual(reopenFile(f), self.path)
        f.write("after\n")
        f.flush()
        with open(self.path + ".1") as old, open(self.path) as new:
            self.assertEqual(
                (old.read(), new.read()), ("before\nbuffered\n", "after\n")
            )
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)

    def test_notAFile(self) -> None:
        """
        Standard output, a pipe and C{None} are left alone.
        """
        read, write = os.pipe()
        pipe = os.fdopen(write, "w")
        self.addCleanup(os.close, read)
        self.addCleanup(pipe.close)
        self.assertEqual(
            [reopenFile(sys.stdout), reopenFile(pipe), reopenFile(None)],
            [None, None, None],
        )

    def test_cannotReopen(self) -> None:
        """
        When the name cannot be opened again, the error is logged and the
        old file is still written to.
        """
        sub = os.path.join(self.directory, "gone")
        os.mkdir(sub)
        path = os.path.join(sub, "x.log")
        f = open(path, "a", encoding="utf-8")
        self.addCleanup(f.close)
        os.rename(sub, sub + ".1")
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(reopenFiles([f]), [])
        f.write("still\n")
        f.flush()
        with open(os.path.join(sub + ".1", "x.log")) as old:
            self.assertEqual(old.read(), "still\n")
        self.assertEqual(
            [e.get("splicetxEvent") for e in events if "splicetxEvent" in e],
            ["reopen-failed", "reopened"],
        )

    def test_supervisorPassesOn(self) -> None:
        """
        The supervisor reopens its own log file and asks its workers to
        reopen theirs.
        """

        class Workers:
            asked = 0

            def reopenLogs(self) -> int:
                self.asked += 1
                return 3

        f = open(self.path, "a", encoding="utf-8")
        self.addCleanup(f.close)
        config = ProxyConfig(
            forwards=[Forward(listens=["tcp:0"], connect="tcp:127.0.0.1:9")],
            workers=3,
        )
        service = SpliceProxySupervisorService(config, [], logFile=f)
        service.workers = workers = Workers()
        os.rename(self.path, self.path + ".1")
        self.assertEqual(service.reopenLogs(), [self.path])
        self.assertEqual(workers.asked, 1)
        self.assertTrue(os.path.exists(self.path))
