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
    ECHO_THEN_CLOSE,
    HEADER_SIZE,
    KEEPALIVE_REQUEST,
    REPLY,
    TLS_RECORD_HEADER,
    TLS_RECORD_TYPES,
    UPLOAD,
    parseHeader,
    sendFor,
    sinkFrames,
)


class _EchoConn:
    __slots__ = ("sock", "head", "out", "reply", "got", "left")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # What came before the header was complete (TLS records, the
        # header's first bytes); None once the header is read.
        self.head: bytearray | None = bytearray()
        self.out = b""
        # Mode R: the answer to each request, and the request bytes so far.
        self.reply: bytes | None = None
        self.got = 0
        # Mode Q: the bytes still to echo before the backend closes.
        self.left: int | None = None


def _headWant(head: bytearray) -> int:
    """
    How many bytes to read next before the header is complete: never past
    the header (a bulk thread takes the socket after it) nor past the TLS
    record being read.
    """
    if head and head[0] in TLS_RECORD_TYPES:
        if len(head) < TLS_RECORD_HEADER:
            return TLS_RECORD_HEADER - len(head)
        return TLS_RECORD_HEADER + int.from_bytes(head[3:5], "big") - len(head)
    return HEADER_SIZE - len(head)


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
        head = conn.head
        want = 1 << 16 if head is None else _headWant(head)
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
        if head is not None:
            head += data
            data = self._takeHead(conn, head)
            if data is None:
                return
        if not data:
            return
        if conn.reply is not None:
            conn.got += len(data)
            answers, conn.got = divmod(conn.got, KEEPALIVE_REQUEST)
            if answers:
                self._send(conn, conn.reply * answers)
        elif conn.left is not None:
            data = data[: conn.left]
            conn.left -= len(data)
            self._send(conn, data)
        else:
            self._send(conn, data)

    def _takeHead(self, conn: _EchoConn, head: bytearray) -> bytes | None:
        """
        Echo the whole TLS records at the front of C{head}, then read the
        header once it is complete.

        @return: the bytes after the header, or C{None} while the header is
            incomplete or when the connection went elsewhere (closed, or
            handed to a bulk thread).
        """
        while head and head[0] in TLS_RECORD_TYPES:
            if len(head) < TLS_RECORD_HEADER:
                return None
            end = TLS_RECORD_HEADER + int.from_bytes(head[3:5], "big")
            if len(head) < end:
                return None
            self._send(conn, bytes(head[:end]))
            del head[:end]
        if len(head) < HEADER_SIZE:
            return None
        conn.head = None
        mode, param = parseHeader(bytes(head[:HEADER_SIZE]))
        if mode in (UPLOAD, DOWNLOAD):
            self.sel.unregister(conn.sock)
            conn.sock.setblocking(True)
            threading.Thread(
                target=self._bulk,
                args=(conn.sock, mode, param),
                daemon=True,
            ).start()
            return None
        if mode == REPLY:
            conn.reply = b"r" * param
        elif mode == ECHO_THEN_CLOSE:
            conn.left = param
            if not param:
                self._close(conn)
                return None
        elif mode != ECHO:
            self._close(conn)
            return None
        return bytes(head[HEADER_SIZE:])

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
        elif conn.left == 0:
            # Mode Q: all echoed; the backend closes first.
            self._close(conn)

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
