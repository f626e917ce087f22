# -*- test-case-name: tests.test_sendfile -*-
"""
L{sendFile}: send a file, or a range of it, to a transport with
C{os.sendfile(2)} when the transport is a plain socket, and with Twisted's
C{FileSender} otherwise, behind one C{Deferred} contract.

How the kernel path drives the socket
=====================================

The sender never registers anything of its own with the reactor.  It is a
B{pull producer registered on the transport}, and the transport
(C{tcp.Connection}) stays the one object the reactor knows for the socket's
fd::

    registerProducer(sender)  -> resumeProducing #1: only startWriting()
    socket writable           -> Connection.doWrite: flushes the transport's
                                 own write buffer; once it is empty it calls
                                 stopWriting() and resumeProducing #2, ...
    resumeProducing #n (n>1)  -> os.sendfile(socket, file, offset, count)
                                 until the socket refuses (EAGAIN) or a
                                 per-event budget is spent, then
                                 startWriting() to be called again
    all sent / file ended     -> unregisterProducer(); the Deferred fires

Why this way rather than a descriptor of our own for the fd (the choice the
relay makes, see L{splicetx._relay.splice}): epoll and poll keep one object per fd
and would hand every read and write event of the socket to whichever object
was added last, and removing either one goes by fd number.  A descriptor of
our own would need the transport fully quiet (not reading, no producer, no
writes) for the whole transfer, but a file is usually sent by a protocol that
keeps reading (an HTTP server reading the next request).  Driving the
syscall through the transport's own C{doWrite} keeps reading, writing,
closing and reactor shutdown exactly as Twisted does them, costs one extra
empty C{send()} per writable event (negligible next to a C{sendfile} that
moves up to a socket buffer's worth), and is what therve's
C{sendfile-585} branch of Twisted did.  Bytes already written to the
transport go out first: C{sendfile} is only called from a
C{resumeProducing} that C{doWrite} makes after the buffer emptied.

Level-triggered reactors: the sender asks for writability (C{startWriting})
only after the socket refused data or the per-event budget ran out, and
C{doWrite} drops it again before calling back, so a slow reader costs no CPU.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IPullProducer,
    IPushProducer,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from zope.interface import implementer

from splicetx._relay.runtime import LOG_SENDFILE, defaultReactor
from splicetx._relay.transports import spliceUnavailableReason

__all__ = [
    "ZeroCopyFileSender",
    "sendFile",
    "sendFileUnavailableReason",
    "SENDFILE",
    "FILESENDER",
]

_log = Logger(namespace=LOG_SENDFILE)

#: L{ZeroCopyFileSender.engine} when C{os.sendfile} moved the bytes.
SENDFILE = "sendfile"
#: L{ZeroCopyFileSender.engine} when Twisted's C{FileSender} moved them.
FILESENDER = "filesender"

# Errors of a first sendfile call that mean "this file or socket cannot be
# used with sendfile": nothing moved, fall back to reading the file.
_FALLBACK_ERRNOS = frozenset(
    e
    for e in (
        errno.EINVAL,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.ESPIPE,
        errno.EBADF,
        errno.EOVERFLOW,
    )
)


def _fileno(fileObj: Any) -> int | None:
    try:
        fd = fileObj.fileno()
    except (AttributeError, OSError, ValueError):
        # io.UnsupportedOperation is both an OSError and a ValueError.
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def sendFileUnavailableReason(
    transport: object, fileObj: object, reactor: object
) -> str | None:
    """
    Tell why L{sendFile} cannot use C{os.sendfile} for C{fileObj} and
    C{transport} on C{reactor}.  The transport side is the same test the
    relay uses (L{splicetx.spliceUnavailableReason}): a plain TCP or UNIX
    stream socket, no TLS, a reactor with
    L{IReactorFDSet <twisted.internet.interfaces.IReactorFDSet>}, Linux.

    @return: C{None} when it can, else a short reason.
    """
    why = spliceUnavailableReason(transport, reactor)
    if why is not None:
        return why
    if not hasattr(os, "sendfile"):
        return "os.sendfile is unavailable"
    if _fileno(fileObj) is None:
        return f"file object has no file descriptor ({type(fileObj).__name__})"
    return None


class _RangeReader:
    """
    A file-like object for C{FileSender}: reads at most C{count} bytes of
    C{fileObj} (all of it for C{None}) and counts what it read.
    """

    def __init__(self, fileObj: Any, count: int | None) -> None:
        self._file = fileObj
        self._left = count
        self.read_bytes = 0

    def read(self, size: int) -> bytes:
        if self._left is not None:
            size = min(size, self._left)
        if size <= 0:
            return b""
        data = self._file.read(size)
        if data is None:  # a non-blocking raw file with nothing to read
            data = b""
        if isinstance(data, str):
            raise TypeError("sendFile needs a file opened in binary mode")
        self.read_bytes += len(data)
        if self._left is not None:
            self._left -= len(data)
        return data


def _isTLS(transport: Any) -> bool:
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    return (
        isinstance(transport, TLSMemoryBIOProtocol)
        or ISSLTransport.providedBy(transport)
        or bool(getattr(transport, "TLS", False))
    )


@implementer(IPushProducer)
class _ReactorPump:
    """
    Drive a pull producer as a streaming one from a given reactor.

    Twisted's TLS transport turns a pull producer into a push producer with
    the I{global} cooperator, which only runs on the global reactor; a file
    sent over TLS on any other reactor (a test's private one) would stall.
    This does the same job on the transport's own reactor.
    """

    def __init__(self, pull: Any, reactor: Any) -> None:
        self._pull = pull
        self._reactor = reactor
        self._paused = False
        self._stopped = False
        self._call: Any = None

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = self._reactor.callLater(0, self._run)

    def _run(self) -> None:
        self._call = None
        if not self._paused and not self._stopped:
            self._pull.resumeProducing()
            self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        if not self._stopped:
            self.halt()
            self._pull.stopProducing()

    def halt(self) -> None:
        self._stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None


@implementer(IConsumer)
class _PumpingConsumer:
    """
    The consumer C{FileSender} sees for a TLS transport: registers a
    L{_ReactorPump} around it instead of the pull producer itself.
    """

    def __init__(self, transport: Any, reactor: Any) -> None:
        self._transport = transport
        self._reactor = reactor
        self._pump: _ReactorPump | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if streaming:
            self._transport.registerProducer(producer, True)
            return
        self._pump = _ReactorPump(producer, self._reactor)
        self._transport.registerProducer(self._pump, True)
        self._pump.resumeProducing()

    def unregisterProducer(self) -> None:
        if self._pump is not None:
            self._pump.halt()
            self._pump = None
        self._transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._transport.write(data)


@implementer(IPullProducer)
class ZeroCopyFileSender:
    """
    Send a file, or a range of it, to a transport: with C{os.sendfile} when
    the transport is a plain socket (L{SENDFILE} engine), otherwise with
    Twisted's C{FileSender} (L{FILESENDER} engine).  Most code calls
    L{sendFile}; keep this object for a live L{bytesSent} count.

    The contract, the same for both engines:

      - Bytes already written to the transport are sent first.
      - Do not write to the transport, or register another producer on it,
        until the C{Deferred} has fired: this sender is the transport's
        (pull) producer meanwhile.  The transport keeps reading.
      - Backpressure: nothing is read from the file faster than the peer
        takes it; a slow reader costs no CPU.
      - C{transport.loseConnection()} during the transfer closes the
        connection after the file has been sent, as with any producer.
      - Cancelling the C{Deferred} stops the transfer at once; it fails with
        C{CancelledError}.  The transport stays open and usable, with a part
        of the range sent (L{bytesSent} says how much): close it if your
        protocol cannot recover from a short file.
      - When the connection is lost first, the C{Deferred} fails with
        C{ConnectionLost}.  A socket error during C{sendfile} (a reset)
        aborts the transport and fails the C{Deferred} with
        C{ConnectionLost}.
      - The file's position is not used; afterwards it is unspecified.

    @ivar bytesSent: bytes sent so far (handed to the kernel for the
        L{SENDFILE} engine, written to the transport for L{FILESENDER}).
    @ivar engine: L{SENDFILE} or L{FILESENDER} once started, else C{None}.
    @ivar fallbackReason: why L{FILESENDER} was used, or C{None}.
    @ivar sendfileCalls: number of C{os.sendfile} calls made (including ones
        refused with C{EAGAIN}), for tests and benchmarks.
    @ivar waits: how many times the socket took less than offered (or
        refused with C{EAGAIN}) and the sender waited for it to become
        writable.
    @cvar maxBytesPerEvent: the most bytes one writable event may send
        before other connections get their turn (fairness).
    """

    maxBytesPerEvent = 8 << 20

    def __init__(
        self,
        transport: Any,
        fileObj: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        reactor: Any | None = None,
        engine: str = "auto",
    ) -> None:
        """
        @param transport: a connected
            L{ITransport <twisted.internet.interfaces.ITransport>} that is
            also an L{IConsumer} (every Twisted stream transport is).
        @param fileObj: a file object opened in binary mode; C{os.sendfile}
            needs a real file descriptor (C{fileno()}) of a regular file,
            other file objects (C{BytesIO}, pipes) are read instead.
        @param offset: where in the file to start.
        @param count: how many bytes to send; C{None} (default) sends up to
            the end of the file.
        @param reactor: the reactor the transport runs on (default: the
            transport's C{reactor} attribute, else the global reactor); only
            used to decide whether C{os.sendfile} can be used.
        @param engine: C{"auto"} (default), or C{"filesender"} to force the
            userspace path (for comparisons).
        @raise ValueError: for a negative C{offset} or C{count}, or an
            unknown C{engine}.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, not {count}")
        if engine not in ("auto", FILESENDER):
            raise ValueError(f"engine must be 'auto' or {FILESENDER!r}, not {engine!r}")
        if reactor is None:
            reactor = getattr(transport, "reactor", None)
        self._reactor = defaultReactor(reactor)
        self._transport = transport
        self._file = fileObj
        self._offset = offset
        self._count = count
        self._engineChoice = engine
        self._position = offset
        self._deferred: Deferred[int] | None = None
        self._primed = False
        self._fileSender: FileSender | None = None
        self._consumer: _PumpingConsumer | None = None
        self._reader: _RangeReader | None = None
        self._sentBeforeFallback = 0
        self.engine: str | None = None
        self.fallbackReason: str | None = None
        self.sendfileCalls = 0
        self.waits = 0
        self._sendfileBytes = 0

    # -- public -------------------------------------------------------------

    @property
    def bytesSent(self) -> int:
        """
        Bytes sent so far.
        """
        if self._reader is not None:
            return self._sentBeforeFallback + self._reader.read_bytes
        return self._sendfileBytes

    def start(self) -> Deferred[int]:
        """
        Start sending.

        @return: a C{Deferred} firing with the number of bytes sent: C{count}
            (or the file's size past C{offset}), less when the file ended
            first.  See the class docstring for how it fails and how to
            cancel it.
        @raise RuntimeError: when called twice.
        """
        if self._deferred is not None:
            raise RuntimeError("ZeroCopyFileSender.start() was already called")
        d: Deferred[int] = Deferred(self._cancel)
        self._deferred = d
        if self._count == 0:
            self.engine = SENDFILE if self._engineChoice == "auto" else FILESENDER
            self._finish()
            return d
        why = (
            "engine='filesender' requested"
            if self._engineChoice == FILESENDER
            else sendFileUnavailableReason(self._transport, self._file, self._reactor)
        )
        try:
            if why is None:
                self.engine = SENDFILE
                self._outFd = self._transport.fileno()
                inFd = _fileno(self._file)
                assert inFd is not None  # sendFileUnavailableReason checked it
                self._inFd = inFd
                # Calls resumeProducing at once: see the module docstring.
                self._transport.registerProducer(self, False)
            else:
                self._startFileSender(why)
        except Exception:
            self._deferred = None
            d.errback()
        return d

    def __repr__(self) -> str:
        return (
            f"<ZeroCopyFileSender {self.engine or 'unstarted'} {self._file!r} -> "
            f"{self._transport!r} sent={self.bytesSent}>"
        )

    # -- IPullProducer (the sendfile engine) ---------------------------------

    def resumeProducing(self) -> None:
        """
        The transport's write buffer is empty and the socket is (probably)
        writable: send the next part of the file.
        """
        if self._deferred is None or self._fileSender is not None:
            return
        if not self._primed:
            # The call registerProducer makes at once: the transport may
            # still hold bytes.  Ask for a doWrite; its resumeProducing comes
            # once the buffer is empty.
            self._primed = True
            self._transport.startWriting()
            return
        self._sendSome()

    def pauseProducing(self) -> None:
        """
        Not called for pull producers.
        """

    def stopProducing(self) -> None:
        """
        The transport is closed: fail with C{ConnectionLost}.
        """
        self._fail(
            ConnectionLost(
                f"connection lost after {self.bytesSent} bytes of the file were sent"
            ),
            unregister=False,
        )

    # -- the sendfile engine --------------------------------------------------

    def _sendSome(self) -> None:
        budget = self.maxBytesPerEvent
        while True:
            if self._count is not None:
                want = min(budget, self._count - self._sendfileBytes)
                if want <= 0:
                    self._finish()
                    return
            else:
                want = budget
            try:
                self.sendfileCalls += 1
                n = os.sendfile(self._outFd, self._inFd, self._position, want)
            except BlockingIOError:
                self.waits += 1
                self._transport.startWriting()
                return
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _FALLBACK_ERRNOS and self._sendfileBytes == 0:
                    self._transport.unregisterProducer()
                    self._startFileSender(
                        f"sendfile failed before sending anything: {e.strerror}"
                    )
                    return
                self._socketError(e)
                return
            if n == 0:
                # End of file.
                self._finish()
                return
            self._position += n
            self._sendfileBytes += n
            budget -= n
            if n < want or budget <= 0:
                # The socket buffer is full (or the file ended, which the
                # next call will see), or this event had its share.
                if self._count is not None and self._sendfileBytes >= self._count:
                    self._finish()
                    return
                if n < want:
                    self.waits += 1
                self._transport.startWriting()
                return

    def _socketError(self, e: OSError) -> None:
        transport = self._transport
        self._fail(
            ConnectionLost(
                f"sendfile failed after {self.bytesSent} bytes: {e.strerror}"
            ),
            unregister=True,
        )
        if hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()

    # -- the FileSender engine ------------------------------------------------

    def _startFileSender(self, why: str) -> None:
        self.engine = FILESENDER
        self.fallbackReason = why
        self._sentBeforeFallback = self._sendfileBytes
        position = self._offset + self._sendfileBytes
        try:
            self._file.seek(position)
        except (AttributeError, OSError, ValueError):
            if position != 0:
                raise
        left = None if self._count is None else self._count - self._sendfileBytes
        self._reader = _RangeReader(self._file, left)
        fs = self._fileSender = FileSender()
        consumer: Any = self._transport
        if _isTLS(consumer) and hasattr(self._reactor, "callLater"):
            consumer = self._consumer = _PumpingConsumer(consumer, self._reactor)
        d = fs.beginFileTransfer(self._reader, consumer)
        d.addCallbacks(lambda _: self._finish(unregister=False), self._fileSenderLost)

    def _fileSenderLost(self, f: Any) -> None:
        self._fail(
            ConnectionLost(
                f"connection lost after {self.bytesSent} bytes of the file were sent"
            ),
            unregister=False,
        )

    # -- the end --------------------------------------------------------------

    def _finish(self, unregister: bool = True) -> None:
        d, self._deferred = self._deferred, None
        if d is None:
            return
        if unregister and self.engine == SENDFILE and self._count != 0:
            self._transport.unregisterProducer()
        self._release()
        d.callback(self.bytesSent)

    def _fail(self, exc: Exception, unregister: bool) -> None:
        d, self._deferred = self._deferred, None
        if d is None:
            return
        if unregister and getattr(self._transport, "producer", None) is self:
            self._transport.unregisterProducer()
        self._release()
        d.errback(exc)

    def _cancel(self, d: Deferred[int]) -> None:
        if self._deferred is None:
            return
        self._deferred = None
        fs = self._fileSender
        if fs is not None:
            # FileSender has no cancel: disarm it before taking it off.
            fs.deferred = None
        # While the transfer runs, this sender (or its FileSender) is the
        # transport's producer.
        if self._consumer is not None:
            self._consumer.unregisterProducer()
        else:
            self._transport.unregisterProducer()
        self._release()
        d.errback(CancelledError(f"sendFile cancelled after {self.bytesSent} bytes"))

    def _release(self) -> None:
        # Drop the file: the transport no longer refers to us once we are
        # unregistered, so nothing else keeps it alive.
        fs = self._fileSender
        if fs is not None:
            fs.file = None


def sendFile(
    transport: Any,
    fileObj: Any,
    offset: int = 0,
    count: int | None = None,
    *,
    reactor: Any | None = None,
) -> Deferred[int]:
    """
    Send C{count} bytes of C{fileObj} from C{offset} (to the end of the file
    when C{count} is C{None}) to C{transport}, zero-copy with
    C{os.sendfile(2)} when the transport is a plain TCP or UNIX socket
    (not TLS) on a reactor with
    L{IReactorFDSet <twisted.internet.interfaces.IReactorFDSet>}, otherwise
    with Twisted's L{FileSender}.

    Bytes already written to the transport go out first.  Do not write to
    the transport until the C{Deferred} fires; it keeps reading meanwhile.
    A slow reader holds the sender back.  See L{ZeroCopyFileSender} for
    the whole contract.

    @param transport: a connected stream transport.
    @param fileObj: a file opened in binary mode.
    @param offset: the first byte of the file to send.
    @param count: how many bytes (C{None}: up to the end of the file).
    @param reactor: the transport's reactor (default: C{transport.reactor}
        or the global one).
    @return: a C{Deferred} firing with the number of bytes sent (fewer than
        C{count} when the file is shorter).  It fails with
        C{ConnectionLost} when the connection is lost first, and with
        C{CancelledError} when cancelled (the transport then stays open).
    @raise ValueError: for a negative C{offset} or C{count}.
    """
    return ZeroCopyFileSender(
        transport, fileObj, offset, count, reactor=reactor
    ).start()
