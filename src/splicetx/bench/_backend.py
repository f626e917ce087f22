"""
The bench's backend server: one process, on 127.0.0.1 only.

Echo connections (ping-pong, churn, idle) are served by one C{epoll} loop;
bulk connections are handed to a thread each that blocks in C{sendfile} or
C{splice}, so the backend spends almost no Python per byte and is not what
limits a proxy.  Run as C{python -m splicetx.bench._backend --file PATH}; it
prints its port on stdout and serves until stdin is closed or it is killed.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import threading

from splicetx._app.filelimit import raiseFileLimit
from splicetx.bench._wire import (
    COUNT,
    DOWNLOAD,
    ECHO,
    HEADER_SIZE,
    KEEPALIVE_REQUEST,
    REPLY,
    TLS_HANDSHAKE,
    UPLOAD,
    header,
    parseHeader,
    sendFor,
    sinkFrames,
)


class _EchoConn:
    __slots__ = ("sock", "head", "out", "reply", "got")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.out = b""
        # Mode R: the answer to each request, and the request bytes so far.
        self.reply: bytes | None = None
        self.got = 0


class Backend:
    """
    Serve the bench protocol (see L{splicetx.bench._wire}) on a listening
    socket.
    """

    def __init__(self, listener: socket.socket, path: str) -> None:
        self.listener = listener
        self.fileFD = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.fileSize = os.fstat(self.fileFD).st_size
        self.devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.sel = selectors.DefaultSelector()

    def serve(self) -> None:
        listener = self.listener
        listener.setblocking(False)
        sel = self.sel
        sel.register(listener, selectors.EVENT_READ, None)
        while True:
            for key, events in sel.select():
                conn = key.data
                if conn is None:
                    self._accept()
                elif events & selectors.EVENT_WRITE:
                    self._flush(conn)
                else:
                    self._read(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                print(f"backend: accept failed: {e}", file=sys.stderr)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(sock, selectors.EVENT_READ, _EchoConn(sock))

    def _close(self, conn: _EchoConn) -> None:
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _read(self, conn: _EchoConn) -> None:
        # Never read past the header: a bulk thread takes the socket after it.
        want = HEADER_SIZE - len(conn.head) if len(conn.head) < HEADER_SIZE else 1 << 16
        try:
            data = conn.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if not conn.head and data[0] == TLS_HANDSHAKE:
            # A ClientHello a proxy routed by: echo all of it (see _wire).
            conn.head = header(ECHO)
        if len(conn.head) < HEADER_SIZE:
            need = HEADER_SIZE - len(conn.head)
            conn.head += data[:need]
            data = data[need:]
            if len(conn.head) < HEADER_SIZE:
                return
            mode, param = parseHeader(conn.head)
            if mode in (UPLOAD, DOWNLOAD):
                self.sel.unregister(conn.sock)
                conn.sock.setblocking(True)
                threading.Thread(
                    target=self._bulk,
                    args=(conn.sock, mode, param),
                    daemon=True,
                ).start()
                return
            if mode == REPLY:
                conn.reply = b"r" * param
            elif mode != ECHO:
                self._close(conn)
                return
        if data and conn.reply is not None:
            conn.got += len(data)
            answers, conn.got = divmod(conn.got, KEEPALIVE_REQUEST)
            if answers:
                self._send(conn, conn.reply * answers)
        elif data:
            self._send(conn, data)

    def _send(self, conn: _EchoConn, data: bytes) -> None:
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._close(conn)
            return
        if n < len(data):
            conn.out = data[n:]
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _flush(self, conn: _EchoConn) -> None:
        data, conn.out = conn.out, b""
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        self._send(conn, data)

    def _bulk(self, sock: socket.socket, mode: bytes, param: int) -> None:
        try:
            if mode == UPLOAD:
                total = sinkFrames(sock, self.devnull)
                sock.sendall(COUNT.pack(total))
            else:
                sendFor(sock, self.fileFD, self.fileSize, param / 1000.0)
                sock.shutdown(socket.SHUT_WR)
            # Wait for the client to close first, so the close is clean.
            while sock.recv(1 << 16):
                pass
        except OSError as e:
            print(f"backend: bulk {mode!r} failed: {e}", file=sys.stderr)
        finally:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    """
    Run the backend; print the port it listens on.
    """
    p = argparse.ArgumentParser(prog="python -m splicetx.bench._backend")
    p.add_argument("--file", required=True, help="page-cached file to send from")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    # The other end of every idle connection a proxy holds is here.
    raiseFileLimit()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    print(listener.getsockname()[1], flush=True)
    backend = Backend(listener, args.file)
    # Exit when the bench goes away (its end of our stdin closes).
    threading.Thread(target=_exitOnStdinEOF, daemon=True).start()
    backend.serve()
    return 0


def _exitOnStdinEOF() -> None:
    try:
        while sys.stdin.buffer.read(1 << 10):
            pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
