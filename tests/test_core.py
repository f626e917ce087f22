# -*- test-case-name: tests.test_core -*-
"""
The choice of relay core (L{splicetx._relay.core}) and the compiled core's
two functions on real sockets, pipes and C{epoll} sets: what each returns
for every outcome the pure-Python reference handles.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx._relay import core

from ._cores import otherCore


def _ext():
    """
    The compiled core's module, or skip.
    """
    if not core.available():
        raise SkipTest(f"the compiled core is not built: {core.describe()}")
    import importlib

    return importlib.import_module("splicetx._relay._ccore")


def _coreIn(env: dict[str, str]) -> str:
    """
    What C{core.describe()} says in a fresh interpreter with C{env} added.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from splicetx._relay import core; print(core.current(), core.describe())",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


class ChoiceTests(SynchronousTestCase):
    """
    Which core runs, and switching it.
    """

    def test_environmentForcesPure(self) -> None:
        """
        C{SPLICETX_NO_EXTENSIONS=1} runs the pure core, and says why.
        """
        self.assertEqual(
            _coreIn({"SPLICETX_NO_EXTENSIONS": "1"}),
            "pure pure Python (SPLICETX_NO_EXTENSIONS is set)",
        )

    def test_defaultIsCompiledWhenBuilt(self) -> None:
        """
        Without the variable, the compiled core runs when it is built.
        """
        _ext()
        self.assertEqual(
            _coreIn({"SPLICETX_NO_EXTENSIONS": ""}),
            "compiled compiled (splicetx._relay._ccore)",
        )

    def test_staleBuildNotUsed(self) -> None:
        """
        A compiled core built from older sources (one of the functions the
        relay takes missing) is not used: the pure core runs, and says why.
        """
        _ext()
        # The extension is loaded by hand, before the package (whose import
        # imports the core) is.
        code = (
            "import glob, os, sys, types, importlib.util as u\n"
            "top = os.path.dirname(u.find_spec('splicetx').origin)\n"
            "path = glob.glob(os.path.join(top, '_relay', '_ccore*.so'))[0]\n"
            "spec = u.spec_from_file_location('splicetx._relay._ccore', path)\n"
            "real = u.module_from_spec(spec)\n"
            "spec.loader.exec_module(real)\n"
            "stale = types.ModuleType(real.__name__)\n"
            "stale.__dict__.update({k: v for k, v in vars(real).items()"
            " if k != 'accept'})\n"
            "sys.modules[real.__name__] = stale\n"
            "from splicetx._relay import core\n"
            "print(core.current(), core.describe())\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(
            result.stdout.strip(),
            "pure pure Python (compiled core out of date (it has no accept): "
            "reinstall splicetx to rebuild it)",
        )

    def test_use(self) -> None:
        """
        L{core.use} switches both functions, and L{core.current} follows.
        """
        _ext()
        before = core.current() == core.COMPILED
        self.addCleanup(core.use, before)
        core.use(False)
        self.assertEqual(
            (core.current(), core.move, core.dispatch), ("pure", None, None)
        )
        core.use(True)
        self.assertEqual(core.current(), "compiled")
        self.assertIsNotNone(core.move)
        self.assertIsNotNone(core.dispatch)

    def test_otherCore(self) -> None:
        """
        The test helper's other core is never the one running.
        """
        self.assertNotEqual(otherCore(), core.current())


class MoveTests(SynchronousTestCase):
    """
    C{move(srcfd, pipeWrite, pipeRead, dstfd, count, piece)} on a socket
    pair each side and a pipe between.
    """

    def setUp(self) -> None:
        self.ext = _ext()
        self.src, self.srcPeer = socket.socketpair()
        self.dst, self.dstPeer = socket.socketpair()
        for s in (self.src, self.dst):
            s.setblocking(False)
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        for c in (self.src, self.srcPeer, self.dst, self.dstPeer):
            self.addCleanup(c.close)
        self.addCleanup(os.close, self.r)
        self.addCleanup(os.close, self.w)

    def move(self, count: int = 65536, piece: int = 1 << 18) -> tuple[int, int, int]:
        return self.ext.move(
            self.src.fileno(), self.w, self.r, self.dst.fileno(), count, piece
        )

    def test_moves(self) -> None:
        """
        Bytes read from the source are written to the destination at once.
        """
        self.srcPeer.sendall(b"hello")
        self.assertEqual(self.move(), (5, 0, 0))
        self.assertEqual(self.dstPeer.recv(10), b"hello")

    def test_drained(self) -> None:
        """
        Nothing to read: C{(-1, 0, EAGAIN)}.
        """
        self.assertEqual(self.move(), (-1, 0, errno.EAGAIN))

    def test_endOfStream(self) -> None:
        """
        The peer's FIN: C{(0, 0, 0)}.
        """
        self.srcPeer.shutdown(socket.SHUT_WR)
        self.assertEqual(self.move(), (0, 0, 0))

    def test_countBounds(self) -> None:
        """
        At most C{count} bytes are read.
        """
        self.srcPeer.sendall(b"abcdef")
        self.assertEqual(self.move(count=4), (4, 0, 0))
        self.assertEqual(self.dstPeer.recv(10), b"abcd")

    def test_pieceLeftToCaller(self) -> None:
        """
        More than C{piece} bytes: read, not written (the caller writes in
        pieces).
        """
        self.srcPeer.sendall(b"x" * 100)
        self.assertEqual(self.move(piece=10), (100, 100, 0))
        self.assertEqual(os.read(self.r, 200), b"x" * 100)

    def test_destinationFull(self) -> None:
        """
        A destination that takes part (or none) of it: the rest stays in the
        pipe, and EAGAIN is reported when it took nothing.
        """
        self.dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            while True:
                self.dst.send(b"f" * 65536)
        except BlockingIOError:
            pass
        self.srcPeer.sendall(b"y" * 1000)
        self.assertEqual(self.move(), (1000, 1000, errno.EAGAIN))

    def test_destinationGone(self) -> None:
        """
        A destination whose peer is gone: the write's errno.
        """
        self.dstPeer.close()
        self.srcPeer.sendall(b"z")
        n, left, err = self.move()
        self.assertEqual((n, left), (1, 1))
        self.assertIn(err, (errno.EPIPE, errno.ECONNRESET))

    def test_badSource(self) -> None:
        """
        A source that is not a socket's descriptor: its errno, no exception.
        """
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)
        self.assertEqual(
            self.ext.move(fd, self.w, self.r, self.dst.fileno(), 10, 10),
            (-1, 0, errno.EBADF),
        )

    def test_badArguments(self) -> None:
        """
        Wrong arguments raise, as a Python function's would.
        """
        self.assertRaises(TypeError, self.ext.move, 1, 2, 3)
        self.assertRaises(TypeError, self.ext.move, "a", 2, 3, 4, 5, 6)
        self.assertRaises(OverflowError, self.ext.move, 1 << 40, 2, 3, 4, 5, 6)
        self.assertRaises(ValueError, self.ext.move, 1, 2, 3, 4, -1, 6)


class AcceptTests(SynchronousTestCase):
    """
    C{accept(fd)}: C{accept4} with the new descriptor non-blocking, and the
    address as C{socket.accept()} gives it.
    """

    def setUp(self) -> None:
        self.ext = _ext()

    def listener(self, family: int, host: str) -> socket.socket:
        server = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind((host, 0))
        server.listen(8)
        server.setblocking(False)
        return server

    def connect(self, server: socket.socket) -> socket.socket:
        client = socket.create_connection(server.getsockname()[:2], timeout=5)
        self.addCleanup(client.close)
        return client

    def accepted(self, server: socket.socket) -> tuple[int, object]:
        # The connection is queued by the time connect() returns (loopback);
        # select says so for certain.
        select.select([server], [], [], 5)
        got = self.ext.accept(server.fileno())
        self.assertIsNotNone(got)
        fd, addr = got
        self.addCleanup(os.close, fd)
        return fd, addr

    def test_nothingWaiting(self) -> None:
        """
        With no client waiting it returns C{None} (no exception).
        """
        server = self.listener(socket.AF_INET, "127.0.0.1")
        self.assertIsNone(self.ext.accept(server.fileno()))

    def test_ipv4(self) -> None:
        """
        An IPv4 client: C{(host, port)}, as C{socket.accept()} says, on a
        non-blocking, close-on-exec descriptor.
        """
        server = self.listener(socket.AF_INET, "127.0.0.1")
        client = self.connect(server)
        fd, addr = self.accepted(server)
        self.assertEqual(addr, client.getsockname())
        flags = os.get_blocking(fd), os.get_inheritable(fd)
        self.assertEqual(flags, (False, False))
        # A socket object over it in non-blocking mode, without FIONBIO.
        sock = socket.socket(
            socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0, os.dup(fd)
        )
        self.addCleanup(sock.close)
        self.assertEqual((sock.type, sock.gettimeout()), (socket.SOCK_STREAM, 0.0))
        with self.assertRaises(BlockingIOError):
            sock.recv(1)

    def test_ipv6(self) -> None:
        """
        An IPv6 client: C{(host, port, flowinfo, scope_id)}, as
        C{socket.accept()} says.
        """
        if not socket.has_ipv6:
            raise SkipTest("no IPv6 in this Python")
        try:
            server = self.listener(socket.AF_INET6, "::1")
        except OSError as e:
            raise SkipTest(f"no IPv6 loopback here: {e}")
        client = self.connect(server)
        fd, addr = self.accepted(server)
        self.assertEqual(addr, client.getsockname())
        self.assertFalse(os.get_blocking(fd))

    def test_errors(self) -> None:
        """
        Other failures raise C{OSError} with their C{errno}, as
        C{socket.accept()} does: a socket that does not listen, a closed
        descriptor.
        """
        idle = socket.socket()
        self.addCleanup(idle.close)
        with self.assertRaises(OSError) as caught:
            self.ext.accept(idle.fileno())
        self.assertEqual(caught.exception.errno, errno.EINVAL)
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with self.assertRaises(OSError) as caught:
            self.ext.accept(r)
        self.assertEqual(caught.exception.errno, errno.EBADF)


class _Side:
    def __init__(self, calls: list[str], name: str, fail: bool = False) -> None:
        self.calls = calls
        self.name = name
        self.fail = fail

    def readable(self) -> None:
        self.calls.append(f"{self.name} readable")
        if self.fail:
            raise RuntimeError("boom")

    def writable(self) -> None:
        self.calls.append(f"{self.name} writable")


class _Member:
    def __init__(
        self, fd: int, calls: list[str], name: str, fail: bool = False
    ) -> None:
        self.fd = fd
        self.reading = True
        self.writing = False
        self.source = self.sink = _Side(calls, name, fail)


class _LoopLike:
    _fd = -1


class DispatchTests(SynchronousTestCase):
    """
    C{dispatch(epfd, members, maxevents, readEvents, writeEvents, failed)}.
    """

    def setUp(self) -> None:
        self.ext = _ext()
        self.ep = select.epoll()
        self.addCleanup(self.ep.close)
        self.calls: list[str] = []
        self.pairs = [socket.socketpair() for _ in range(3)]
        for a, b in self.pairs:
            self.addCleanup(a.close)
            self.addCleanup(b.close)

    def dispatch(self, members: dict, failed: list) -> int:
        return self.ext.dispatch(
            self.ep.fileno(),
            members,
            64,
            select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP,
            select.EPOLLOUT | select.EPOLLERR,
            failed,
        )

    def test_readyMembers(self) -> None:
        """
        Each ready member that reads hears C{readable}; one that writes and
        can hears C{writable}; one that is not ready hears nothing.
        """
        members = {}
        for i, (a, _b) in enumerate(self.pairs):
            m = _Member(a.fileno(), self.calls, str(i))
            members[m.fd] = m
            self.ep.register(m.fd, select.EPOLLIN | select.EPOLLOUT)
        members[self.pairs[1][0].fileno()].writing = True
        self.pairs[0][1].send(b"x")
        self.assertEqual(self.dispatch(members, []), 3)
        self.assertEqual(sorted(self.calls), ["0 readable", "1 writable"])

    def test_unknownFd(self) -> None:
        """
        An event for a descriptor that is no member is passed over.
        """
        a, b = self.pairs[0]
        self.ep.register(a.fileno(), select.EPOLLIN)
        b.send(b"x")
        self.assertEqual(self.dispatch({}, []), 1)
        self.assertEqual(self.calls, [])

    def test_failure(self) -> None:
        """
        A member whose call raises is put in C{failed} and the exception
        propagates.
        """
        a, b = self.pairs[0]
        m = _Member(a.fileno(), self.calls, "0", fail=True)
        self.ep.register(m.fd, select.EPOLLIN)
        b.send(b"x")
        failed: list = []
        self.assertRaises(RuntimeError, self.dispatch, {m.fd: m}, failed)
        self.assertEqual(failed, [m])

    def _loopOf(self) -> _LoopLike:
        """
        What C{dispatch} reads of a L{SocketLoop} given in place of a
        descriptor: its C{_fd}.
        """
        loop = _LoopLike()
        loop._fd = self.ep.fileno()
        return loop

    def _readyReaders(self, count: int) -> dict:
        members = {}
        for i, (a, _b) in enumerate(self.pairs[:count]):
            m = _Member(a.fileno(), self.calls, str(i))
            members[m.fd] = m
            self.ep.register(m.fd, select.EPOLLIN)
        return members

    def test_loopPollsAgain(self) -> None:
        """
        Given the loop, C{dispatch} polls again while the last poll found
        events: bytes that arrive during a member's call are handled in the
        same call, and the count is of every event handled.
        """
        members = self._readyReaders(2)
        (a0, b0), (a1, b1) = self.pairs[:2]
        first = members[a0.fileno()]

        def readable() -> None:
            self.calls.append("0 readable")
            a0.recv(10)
            if len(self.calls) == 1:
                b1.send(b"y")

        first.source.readable = readable  # type: ignore[method-assign]
        second = members[a1.fileno()]

        def drain() -> None:
            self.calls.append("1 readable")
            a1.recv(10)

        second.source.readable = drain  # type: ignore[method-assign]
        b0.send(b"x")
        n = self.ext.dispatch(
            self._loopOf(), members, 64, select.EPOLLIN, select.EPOLLOUT, []
        )
        self.assertEqual((n, self.calls), (2, ["0 readable", "1 readable"]))

    def test_loopBound(self) -> None:
        """
        Given the loop, C{maxevents} bounds the events of all its polls.
        """
        members = self._readyReaders(3)
        for _a, b in self.pairs:
            b.send(b"x")
        n = self.ext.dispatch(
            self._loopOf(), members, 2, select.EPOLLIN, select.EPOLLOUT, []
        )
        # Nothing is read: every poll would find all three again.
        self.assertEqual((n, len(self.calls)), (2, 2))

    def test_loopClosedDuringTurn(self) -> None:
        """
        Given the loop, a member's call that closes the set (C{_fd} -1)
        ends the turn: the closed descriptor is not polled again.
        """
        members = self._readyReaders(1)
        a, b = self.pairs[0]
        loop = self._loopOf()
        m = members[a.fileno()]

        def closeSet() -> None:
            self.calls.append("closed")
            loop._fd = -1

        m.source.readable = closeSet  # type: ignore[method-assign]
        b.send(b"x")
        n = self.ext.dispatch(loop, members, 64, select.EPOLLIN, select.EPOLLOUT, [])
        self.assertEqual((n, self.calls), (1, ["closed"]))

    def test_closedEpoll(self) -> None:
        """
        A closed set: C{OSError}, as C{epoll.poll} raises.
        """
        fd = self.ep.fileno()
        self.ep.close()
        self.assertRaises(OSError, self.ext.dispatch, fd, {}, 8, 1, 4, [])
