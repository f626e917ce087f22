"""
Tests for L{splicetx.sendFile} / L{splicetx.ZeroCopyFileSender}: real
loopback sockets on every reactor (the sendfile engine, its fallbacks,
backpressure, cancellation) and fake transports (the FileSender engine).
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import io
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IPullProducer, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from splicetx import ZeroCopyFileSender, sendFile, sendFileUnavailableReason
from splicetx._relay.sendfile import (
    FILESENDER,
    SENDFILE,
    _PumpingConsumer,
    _ReactorPump,
)
from splicetx.testing import (
    Loopback,
    LoopbackClient,
    ReactorTestMixin,
    makeReactorTests,
    payload,
    withLoopback,
)

MiB = 1 << 20

_files: dict[int, str] = {}
_tmpdir: list[str] = []


def _dataFile(size: int) -> str:
    """
    A file of C{size} deterministic bytes, made once per test process.
    """
    if size not in _files:
        if not _tmpdir:
            _tmpdir.append(tempfile.mkdtemp(prefix="splicetx-sendfile-"))
            atexit.register(shutil.rmtree, _tmpdir[0], True)
        path = os.path.join(_tmpdir[0], f"{size}.bin")
        with open(path, "wb") as f:
            left, seed = size, 0
            while left > 0:
                chunk = payload(min(left, MiB), seed)
                f.write(chunk)
                left -= len(chunk)
                seed += 1
        _files[size] = path
    return _files[size]


def _sha(
    path: str, offset: int = 0, count: int | None = None, extra: bytes = b""
) -> tuple[str, int]:
    """
    SHA-256 and length of C{extra} followed by C{count} bytes of C{path}
    from C{offset}.
    """
    h = hashlib.sha256(extra)
    n = len(extra)
    with open(path, "rb") as f:
        f.seek(offset)
        left = count
        while left is None or left > 0:
            chunk = f.read(MiB if left is None else min(MiB, left))
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest(), n


class _Spec:
    """
    What the file server does for its (single) connection, and what
    happened.
    """

    def __init__(self, path: str | None = None, **kw: Any) -> None:
        self.path = path
        self.fileObj: Any = kw.pop("fileObj", None)
        self.offset = kw.pop("offset", 0)
        self.count = kw.pop("count", None)
        self.header = kw.pop("header", b"")
        self.trailer = kw.pop("trailer", b"")
        self.loseEarly = kw.pop("loseEarly", False)
        self.closeAfter = kw.pop("closeAfter", True)
        assert not kw, kw
        self.sender: ZeroCopyFileSender | None = None
        self.deferred: Deferred[int] | None = None
        self.outcome: Deferred[list[Any]] = Deferred()
        self.protocol: Any = None


class _FileServer(Protocol):
    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def connectionMade(self) -> None:
        spec = self.spec
        spec.protocol = self
        if spec.header:
            self.transport.write(spec.header)
        f = spec.fileObj if spec.fileObj is not None else open(spec.path, "rb")
        self.file = f
        spec.sender = ZeroCopyFileSender(self.transport, f, spec.offset, spec.count)
        spec.deferred = spec.sender.start()
        if spec.loseEarly:
            self.transport.loseConnection()
        spec.deferred.addBoth(self._done)

    def _done(self, result: Any) -> None:
        self.file.close()
        if not isinstance(result, Failure) or result.check(CancelledError):
            if self.spec.trailer:
                self.transport.write(self.spec.trailer)
            if self.spec.closeAfter:
                self.transport.loseConnection()
        self.spec.outcome.callback([result])


def _factory(spec: _Spec) -> Factory:
    f = Factory()
    f.protocol = lambda: _FileServer(spec)  # type: ignore[assignment]
    f.buildProtocol = lambda addr: _FileServer(spec)  # type: ignore[method-assign]
    return f


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def _until(reactor: Any, condition: Any, limit: float = 20.0) -> None:
    waited = 0.0
    while not condition():
        if waited > limit:
            raise AssertionError("condition not reached")
        await _sleep(reactor, 0.005)
        waited += 0.005


class SendFileTests(ReactorTestMixin):
    """
    L{sendFile} over real loopback sockets.
    """

    def _serve(self, spec: _Spec, clientPaused: bool = False) -> Any:
        """
        Serve C{spec} to one loopback client; return (client, spec).
        """

        async def scenario(lb: Loopback) -> Any:
            listener = lb.listen(_factory(spec))
            client = await lb.connect(listener, keep=False)
            await client.whenClosed()
            (result,) = await spec.outcome
            return client, spec, result

        return self.runScenario(withLoopback(scenario))

    def _checkWhole(self, size: int, **kw: Any) -> None:
        path = _dataFile(size)
        spec = _Spec(path, **kw)
        client, spec, result = self._serve(spec)
        sha, n = _sha(path, spec.offset, spec.count, extra=spec.header)
        self.assertEqual(result, n - len(spec.header))
        self.assertEqual((client.received.size, client.received.sha256), (n, sha))
        self.assertEqual(spec.sender.engine, SENDFILE)
        self.assertIsNone(spec.sender.fallbackReason)

    def test_emptyFile(self) -> None:
        """
        A 0-byte file sends nothing and fires with 0.
        """
        self._checkWhole(0)

    def test_oneByte(self) -> None:
        """
        A 1-byte file arrives intact through sendfile.
        """
        self._checkWhole(1)

    def test_oneMiB(self) -> None:
        """
        A 1 MiB file arrives byte-exact through sendfile.
        """
        self._checkWhole(MiB)

    def test_64MiB(self) -> None:
        """
        A 64 MiB file arrives byte-exact (more than socket buffers hold, so
        the sender waits for writability many times).
        """
        self._checkWhole(64 * MiB)

    def test_range(self) -> None:
        """
        C{offset} and C{count} send exactly that range.
        """
        self._checkWhole(MiB, offset=12345, count=300001)

    def test_rangePastEnd(self) -> None:
        """
        A C{count} past the end of the file sends up to the end and fires
        with the number of bytes actually sent.
        """
        path = _dataFile(MiB)
        spec = _Spec(path, offset=MiB - 1000, count=5000)
        client, spec, result = self._serve(spec)
        self.assertEqual(result, 1000)
        self.assertEqual(client.received.sha256, _sha(path, MiB - 1000)[0])

    def test_offsetAtEnd(self) -> None:
        """
        An C{offset} at the end of the file sends nothing.
        """
        spec = _Spec(_dataFile(MiB), offset=MiB)
        client, spec, result = self._serve(spec)
        self.assertEqual((result, client.received.size), (0, 0))

    def test_bufferedBytesFirst(self) -> None:
        """
        Bytes written to the transport before the file (here 2 MiB, more
        than one write can flush) arrive first, in order.
        """
        self._checkWhole(4 * MiB, header=payload(2 * MiB, 7))

    def test_loseConnectionDuringTransfer(self) -> None:
        """
        C{loseConnection()} right after starting closes the connection only
        once the whole file was sent.
        """
        path = _dataFile(4 * MiB)
        spec = _Spec(path, loseEarly=True, closeAfter=False)
        client, spec, result = self._serve(spec)
        self.assertEqual(result, 4 * MiB)
        self.assertEqual(client.received.sha256, _sha(path)[0])

    def test_slowReader(self) -> None:
        """
        A reader that stops reading holds the sender back: it stops at what
        the socket buffers hold, makes no further sendfile calls while
        waiting (no busy loop), and finishes byte-exact once reading
        resumes.
        """
        size = 32 * MiB
        path = _dataFile(size)
        spec = _Spec(path)

        async def scenario(lb: Loopback) -> Any:
            listener = lb.listen(_factory(spec))
            client = await lb.connect(listener, keep=False)
            client.transport.pauseProducing()
            await _until(lb.reactor, lambda: spec.sender and spec.sender.waits >= 1)
            await _sleep(lb.reactor, 0.1)
            calls, sent = spec.sender.sendfileCalls, spec.sender.bytesSent
            await _sleep(lb.reactor, 0.3)
            stalled = (spec.sender.sendfileCalls - calls, spec.sender.bytesSent - sent)
            fired = spec.outcome.called
            client.transport.resumeProducing()
            await client.whenClosed()
            (result,) = await spec.outcome
            return client, result, stalled, fired, sent

        client, result, stalled, fired, sent = self.runScenario(withLoopback(scenario))
        self.assertFalse(fired)
        self.assertLess(sent, size)
        self.assertEqual(stalled, (0, 0))
        self.assertEqual(result, size)
        self.assertEqual(client.received.sha256, _sha(path)[0])

    def test_cancel(self) -> None:
        """
        Cancelling stops the transfer at once with L{CancelledError}; the
        transport stays usable: what is written next follows the part of the
        file that was sent, byte-exact.
        """
        size = 64 * MiB
        path = _dataFile(size)
        spec = _Spec(path, trailer=b"TRAILER")

        async def scenario(lb: Loopback) -> Any:
            listener = lb.listen(_factory(spec))
            client = await lb.connect(listener, keep=False)
            client.transport.pauseProducing()
            await _until(lb.reactor, lambda: spec.sender and spec.sender.waits >= 1)
            spec.deferred.cancel()
            sentAtCancel = spec.sender.bytesSent
            (result,) = await spec.outcome
            producer = spec.protocol.transport.producer
            client.transport.resumeProducing()
            await client.whenClosed()
            return client, result, sentAtCancel, producer

        client, result, sent, producer = self.runScenario(withLoopback(scenario))
        self.assertIsInstance(result, Failure)
        result.trap(CancelledError)
        self.assertIsNone(producer)
        self.assertLess(0, sent)
        self.assertLess(sent, size)
        sha, n = _sha(path, 0, sent)
        expected = hashlib.sha256()
        with open(path, "rb") as f:
            expected.update(f.read(sent))
        expected.update(b"TRAILER")
        self.assertEqual(client.received.size, sent + len(b"TRAILER"))
        self.assertEqual(client.received.sha256, expected.hexdigest())

    def test_peerGoesAway(self) -> None:
        """
        When the peer aborts mid-transfer the L{Deferred} fails with
        L{ConnectionLost}.
        """
        spec = _Spec(_dataFile(64 * MiB))

        async def scenario(lb: Loopback) -> Any:
            listener = lb.listen(_factory(spec))
            client = await lb.connect(listener, keep=False)
            client.transport.pauseProducing()
            await _until(lb.reactor, lambda: spec.sender and spec.sender.waits >= 1)
            client.transport.abortConnection()
            return await spec.outcome

        (result,) = self.runScenario(withLoopback(scenario))
        self.assertIsInstance(result, Failure)
        result.trap(ConnectionLost)

    def test_fallbackNoFileno(self) -> None:
        """
        A file object without a file descriptor (C{BytesIO}) is sent with
        L{FileSender} over the same socket, range and count included.
        """
        data = payload(MiB + 3, 5)
        spec = _Spec(fileObj=io.BytesIO(data), offset=10, count=MiB - 7)
        client, spec, result = self._serve(spec)
        self.assertEqual(spec.sender.engine, FILESENDER)
        self.assertIn("no file descriptor", spec.sender.fallbackReason)
        self.assertEqual(result, MiB - 7)
        self.assertTrue(client.received.size == MiB - 7)
        self.assertEqual(
            client.received.sha256, hashlib.sha256(data[10 : 10 + MiB - 7]).hexdigest()
        )

    def test_fallbackOnEINVAL(self) -> None:
        """
        When the first sendfile call fails with C{EINVAL} (a file system
        without sendfile support), the rest goes through L{FileSender},
        byte-exact.
        """
        real = os.sendfile

        def refuse(*a: Any) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        self.patch(os, "sendfile", refuse)
        path = _dataFile(MiB)
        spec = _Spec(path, offset=5, count=MiB - 10)
        client, spec, result = self._serve(spec)
        self.assertIsNot(os.sendfile, real)
        self.assertEqual(spec.sender.engine, FILESENDER)
        self.assertIn("sendfile failed", spec.sender.fallbackReason)
        self.assertEqual(result, MiB - 10)
        self.assertEqual(client.received.sha256, _sha(path, 5, MiB - 10)[0])

    def test_fallbackTLS(self) -> None:
        """
        A TLS transport is served by L{FileSender}: the bytes arrive
        decrypted and byte-exact.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        serverOptions, clientOptions = _tlsOptions()
        path = _dataFile(MiB)
        spec = _Spec(path, offset=100, count=MiB - 200)

        async def scenario(lb: Loopback) -> Any:
            listener = lb.listen(
                TLSMemoryBIOFactory(serverOptions, False, _factory(spec))
            )
            client = LoopbackClient(keep=False)
            lb.reactor.connectTCP(
                "127.0.0.1",
                listener.port,
                TLSMemoryBIOFactory(clientOptions, True, _ClientF(client)),
            )
            await client.whenClosed()
            (result,) = await spec.outcome
            return client, result

        client, result = self.runScenario(withLoopback(scenario))
        self.assertEqual(spec.sender.engine, FILESENDER)
        self.assertEqual(spec.sender.fallbackReason, "TLS transport")
        self.assertEqual(result, MiB - 200)
        self.assertEqual(client.received.sha256, _sha(path, 100, MiB - 200)[0])


class _ClientF(ClientFactory):
    def __init__(self, proto: Any) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> Any:
        return self.proto


_tls: list[Any] = []


def _tlsOptions() -> tuple[Any, Any]:
    if not _tls:
        from twisted.internet import ssl

        key = ssl.KeyPair.generate(size=2048)
        cert = key.selfSignedCert(1, CN="localhost")
        _tls.append(cert.options())
        _tls.append(ssl.CertificateOptions())
    return _tls[0], _tls[1]


globals().update(makeReactorTests(SendFileTests))


class FakeTransportTests(SynchronousTestCase):
    """
    L{sendFile} with a fake transport (the L{FileSender} engine) and the
    argument checks.
    """

    def _pump(self, t: StringTransport, limit: int = 10000) -> None:
        while t.producer is not None and limit:
            t.producer.resumeProducing()
            limit -= 1

    def test_stringTransportWholeFile(self) -> None:
        """
        A L{StringTransport} gets the whole file through L{FileSender}.
        """
        t = StringTransport()
        data = payload(100000, 3)
        sender = ZeroCopyFileSender(t, io.BytesIO(data), reactor=MemoryReactor())
        d = sender.start()
        self._pump(t)
        self.assertEqual(self.successResultOf(d), len(data))
        self.assertEqual(t.value(), data)
        self.assertEqual(sender.engine, FILESENDER)
        self.assertIn("not a socket transport", sender.fallbackReason)

    def test_stringTransportRange(self) -> None:
        """
        A range of a real file reaches a fake transport exactly.
        """
        path = _dataFile(MiB)
        t = StringTransport()
        with open(path, "rb") as f:
            d = sendFile(t, f, 1000, 50000, reactor=MemoryReactor())
            self._pump(t)
            self.assertEqual(self.successResultOf(d), 50000)
            f.seek(1000)
            self.assertEqual(t.value(), f.read(50000))

    def test_cancelFakeTransport(self) -> None:
        """
        Cancelling unregisters the producer and fails with
        L{CancelledError}; nothing more is written.
        """
        t = StringTransport()
        sender = ZeroCopyFileSender(
            t, io.BytesIO(payload(200000)), reactor=MemoryReactor()
        )
        d = sender.start()
        t.producer.resumeProducing()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertIsNone(t.producer)
        self.assertEqual(len(t.value()), sender.bytesSent)
        self.assertLess(sender.bytesSent, 200000)

    def test_lostFakeTransport(self) -> None:
        """
        When the consumer stops the producer (connection lost) the
        L{Deferred} fails with L{ConnectionLost}.
        """
        t = StringTransport()
        d = sendFile(t, io.BytesIO(payload(200000)), reactor=MemoryReactor())
        t.producer.stopProducing()
        self.failureResultOf(d, ConnectionLost)

    def test_zeroCount(self) -> None:
        """
        C{count=0} fires with 0 at once and registers nothing.
        """
        t = StringTransport()
        d = sendFile(t, io.BytesIO(b"abc"), count=0, reactor=MemoryReactor())
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIsNone(t.producer)

    def test_badArguments(self) -> None:
        """
        Negative offsets and counts and unknown engines are refused.
        """
        t = StringTransport()
        self.assertRaises(ValueError, sendFile, t, io.BytesIO(), -1)
        self.assertRaises(ValueError, sendFile, t, io.BytesIO(), 0, -1)
        self.assertRaises(
            ValueError, ZeroCopyFileSender, t, io.BytesIO(), engine="splice"
        )

    def test_startTwice(self) -> None:
        """
        L{ZeroCopyFileSender.start} may be called only once.
        """
        sender = ZeroCopyFileSender(
            StringTransport(), io.BytesIO(b""), reactor=MemoryReactor()
        )
        sender.start()
        self.assertRaises(RuntimeError, sender.start)

    def test_interface(self) -> None:
        """
        L{ZeroCopyFileSender} is an L{IPullProducer}.
        """
        sender = ZeroCopyFileSender(
            StringTransport(), io.BytesIO(b""), reactor=MemoryReactor()
        )
        self.assertTrue(verifyObject(IPullProducer, sender))

    def test_tlsPumpInterfaces(self) -> None:
        """
        The pump that drives a file over TLS is an L{IPushProducer}, and the
        consumer it registers through is an L{IConsumer}.
        """
        reactor = MemoryReactor()
        sender = ZeroCopyFileSender(StringTransport(), io.BytesIO(b""), reactor=reactor)
        self.assertTrue(verifyObject(IPushProducer, _ReactorPump(sender, reactor)))
        self.assertTrue(
            verifyObject(IConsumer, _PumpingConsumer(StringTransport(), reactor))
        )

    def test_unavailableReasons(self) -> None:
        """
        L{sendFileUnavailableReason} names the transport or the file that
        rules sendfile out.
        """
        self.assertIn(
            "not a socket transport",
            sendFileUnavailableReason(StringTransport(), io.BytesIO(), MemoryReactor()),
        )
