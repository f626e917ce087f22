"""
Helpers for the subprocess tests of C{twist splice-proxy}:
run the proxy as a child process with JSON logs, and asyncio loopback peers
to drive it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

LOOPBACK = "127.0.0.1"


def twistCommand(args: list[str], twistArgs: list[str] | None = None) -> list[str]:
    """
    The command line that runs C{twist splice-proxy} with this interpreter.
    """
    return [
        sys.executable,
        "-m",
        "twisted",
        "--log-format=json",
        *(twistArgs or []),
        "splice-proxy",
        *args,
    ]


class ProxyProcess:
    """
    A running C{twist splice-proxy} child whose JSON log events are parsed
    as they arrive.

    @ivar events: every log event so far (dicts).
    @ivar stderr: what the child wrote on standard error so far.
    """

    def __init__(
        self,
        args: list[str],
        twistArgs: list[str] | None = None,
        command: list[str] | None = None,
        **popenArgs: Any,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            command or twistCommand(args, twistArgs),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popenArgs,
        )
        self._threads = [
            threading.Thread(target=self._readEvents, daemon=True),
            threading.Thread(target=self._readErrors, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readEvents(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip().lstrip("\x1e")
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"unparsed": line}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _readErrors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr += line

    def waitForEvent(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """
        Wait for a log event matching C{predicate}.

        @raise AssertionError: on timeout or when the process exits first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching log event within {timeout} s; "
                        f"stderr={self.stderr!r}; events={self.events[-5:]!r}"
                    )
                if self.proc.poll() is not None and not self._threads[0].is_alive():
                    raise AssertionError(
                        f"proxy exited ({self.proc.returncode}) first; "
                        f"stderr={self.stderr!r}; events={self.events[-5:]!r}"
                    )
                self._cond.wait(min(left, 0.1))

    def listeningPort(self, timeout: float = 15.0) -> int:
        """
        The port of the first listening endpoint, once it is open and the
        reactor runs (so signals are handled).
        """
        event = self.waitForEvent(
            lambda e: e.get("splicetxEvent") == "listening", timeout
        )
        self.waitForEvent(lambda e: e.get("splicetxEvent") == "ready", timeout)
        return int(event["port"])

    def connections(self) -> list[dict[str, Any]]:
        """
        The per-connection log events so far.
        """
        with self._cond:
            return [e for e in self.events if e.get("splicetxEvent") == "connection"]

    def waitForConnections(
        self, count: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """
        Wait until C{count} connections have been logged.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.connections()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} connection events within {timeout} s: "
                    f"{found!r}; stderr={self.stderr!r}"
                )
            time.sleep(0.02)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """
        Wait for the exit status.

        @raise subprocess.TimeoutExpired: when it does not exit in time.
        """
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(2)
        return code

    def kill(self) -> None:
        """
        Kill the child (cleanup); safe to call twice.
        """
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._threads:
            t.join(2)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def runAsync(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """
    Run a coroutine on a fresh event loop, bounded by C{timeout}.
    """

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def waitUntil(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: when it does not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def readAll(reader: asyncio.StreamReader) -> bytes:
    """
    Read to end of stream.
    """
    chunks = []
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def sendAll(writer: asyncio.StreamWriter, data: bytes, eof: bool = True) -> None:
    """
    Write C{data} in 64 KiB pieces with flow control, then half-close.
    """
    for i in range(0, len(data), 1 << 16):
        writer.write(data[i : i + (1 << 16)])
        await writer.drain()
    if eof:
        writer.write_eof()


async def startServer(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    backlog: int = 1024,
) -> tuple[asyncio.AbstractServer, int]:
    """
    An asyncio server on loopback; returns it and its port.
    """
    server = await asyncio.start_server(handler, LOOPBACK, 0, backlog=backlog)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def echoChunks(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """
    Echo every chunk at once; half-close after the client's end of stream.
    """
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    except asyncio.CancelledError:
        # The test's loop is closing with this connection still open (a
        # proxy that timed it out, say).  Ending quietly spares Python
        # 3.11's StreamReaderProtocol a traceback about a cancelled task.
        pass
    finally:
        writer.close()


async def connectProxy(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def refusedSoon(port: int, tries: int = 50) -> bool:
    """
    Whether connecting to C{port} on the loopback is refused within C{tries}
    attempts, 20 ms apart (a draining proxy has closed its listener).
    """
    for _ in range(tries):
        try:
            _, w = await connectProxy(port)
            w.close()
        except ConnectionRefusedError:
            return True
        await asyncio.sleep(0.02)
    return False


async def closedWithin(reader: asyncio.StreamReader, timeout: float) -> bool:
    """
    Whether the connection ends (EOF or reset) within C{timeout} seconds,
    ignoring any bytes that still arrive.
    """

    async def untilClosed() -> bool:
        while True:
            try:
                if not await reader.read(1 << 16):
                    return True
            except (ConnectionError, OSError):
                return True

    try:
        return await asyncio.wait_for(untilClosed(), timeout)
    except asyncio.TimeoutError:
        return False


def refusingPort() -> socket.socket:
    """
    A bound loopback socket that does not listen: connections to its port
    are refused for as long as it is open.
    """
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    return s


def blackholePort() -> tuple[socket.socket, list[socket.socket]]:
    """
    A listening loopback socket whose accept queue is full, so that further
    SYNs are dropped and connection attempts hang (a timing-out upstream).
    """
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    s.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(s.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.05)
    return s, fillers


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU seconds used so far by process C{pid}.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def listenOverflows() -> int:
    """
    The host's C{TcpExt ListenOverflows} counter.
    """
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0
