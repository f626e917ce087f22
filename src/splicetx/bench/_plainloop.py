"""
The yardstick: a minimal single-threaded Python C{epoll} loop that relays
TCP through C{splice(2)} with 1 MiB pipes, without Twisted.

It is what the reference figures of rules 8 and 12 in
C{docs/design-decisions.md} were measured with (about 70 % of direct
throughput at about 0.25 CPU-s/GB on a 2-core machine), so the bench can tell
how much the Twisted integration costs on top of the kernel path.
Deliberately small: level-triggered, one pipe per direction made when the
connection is accepted, at most a few pipe-fulls per event, upstream connect
is blocking (instant on loopback).  Run as C{python -m
splicetx.bench._plainloop --listen PORT --connect PORT [--pipe-size N]}.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import select
import socket
import sys

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ROUNDS = 4


class _Dir:
    __slots__ = ("src", "dst", "r", "w", "size", "inPipe", "done")

    def __init__(self, src: socket.socket, dst: socket.socket, size: int) -> None:
        self.src = src
        self.dst = dst
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, _F_SETPIPE_SZ, size)
        except OSError:
            pass
        self.size = fcntl.fcntl(self.w, 1032)  # F_GETPIPE_SZ
        self.inPipe = 0
        self.done = False


class _Conn:
    __slots__ = ("a", "b", "ab", "ba", "masks", "closed")

    def __init__(self, a: socket.socket, b: socket.socket, size: int) -> None:
        self.a = a
        self.b = b
        self.ab = _Dir(a, b, size)
        self.ba = _Dir(b, a, size)
        self.masks = {a.fileno(): 0, b.fileno(): 0}
        self.closed = False


class PlainLoop:
    """
    Accept on C{listener}, connect each client to C{upstream}, splice both
    ways.
    """

    def __init__(
        self, listener: socket.socket, upstream: tuple[str, int], pipeSize: int
    ) -> None:
        self.listener = listener
        self.upstream = upstream
        self.pipeSize = pipeSize
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}

    def run(self) -> None:
        lfd = self.listener.fileno()
        self.listener.setblocking(False)
        self.ep.register(lfd, _IN)
        conns = self.conns
        while True:
            try:
                events = self.ep.poll()
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == lfd:
                    self.accept()
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                self.event(conn, fd, ev)

    def accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                print(f"plainloop: accept: {e}", file=sys.stderr)
                return
            try:
                b = socket.create_connection(self.upstream, timeout=10)
            except OSError as e:
                print(f"plainloop: connect: {e}", file=sys.stderr)
                a.close()
                continue
            a.setblocking(False)
            b.setblocking(False)
            try:
                conn = _Conn(a, b, self.pipeSize)
            except OSError as e:
                print(f"plainloop: pipe: {e}", file=sys.stderr)
                a.close()
                b.close()
                continue
            for s in (a, b):
                self.conns[s.fileno()] = conn
                self.ep.register(s.fileno(), 0)
            self.update(conn)

    def event(self, conn: _Conn, fd: int, ev: int) -> None:
        if fd == conn.a.fileno():
            out, inc = conn.ab, conn.ba
        else:
            out, inc = conn.ba, conn.ab
        try:
            if ev & select.EPOLLERR:
                raise ConnectionResetError(errno.ECONNRESET, "socket error")
            if ev & _OUT and inc.inPipe:
                self.pump(inc)
            if ev & (_IN | select.EPOLLHUP) and not out.done and not out.inPipe:
                self.fill(out)
        except OSError:
            self.close(conn)
            return
        if conn.ab.done and conn.ba.done:
            self.close(conn)
        else:
            self.update(conn)

    def fill(self, d: _Dir) -> None:
        for _ in range(_ROUNDS):
            try:
                n = os.splice(d.src.fileno(), d.w, d.size, flags=_FLAGS)
            except BlockingIOError:
                return
            if not n:
                d.done = True
                d.dst.shutdown(socket.SHUT_WR)
                return
            d.inPipe = n
            self.pump(d)
            if d.inPipe or n < d.size:
                return

    def pump(self, d: _Dir) -> None:
        while d.inPipe:
            try:
                m = os.splice(d.r, d.dst.fileno(), d.inPipe, flags=_FLAGS)
            except BlockingIOError:
                return
            d.inPipe -= m

    def update(self, conn: _Conn) -> None:
        for sock, out, inc in ((conn.a, conn.ab, conn.ba), (conn.b, conn.ba, conn.ab)):
            mask = 0
            if not out.done and not out.inPipe:
                mask |= _IN
            if inc.inPipe:
                mask |= _OUT
            fd = sock.fileno()
            if conn.masks[fd] != mask:
                conn.masks[fd] = mask
                self.ep.modify(fd, mask)

    def close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        for s in (conn.a, conn.b):
            fd = s.fileno()
            self.conns.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            s.close()
        for d in (conn.ab, conn.ba):
            os.close(d.r)
            os.close(d.w)


def main(argv: list[str] | None = None) -> int:
    """
    Run the plain loop until killed.
    """
    p = argparse.ArgumentParser(prog="python -m splicetx.bench._plainloop")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--connect", type=int, required=True)
    p.add_argument("--pipe-size", type=int, default=1 << 20)
    args = p.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.listen))
    listener.listen(4096)
    PlainLoop(listener, ("127.0.0.1", args.connect), args.pipe_size).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
