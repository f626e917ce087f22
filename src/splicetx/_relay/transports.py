# -*- test-case-name: tests.test_relay -*-
"""
Everything splicetx knows about Twisted's transports beyond their public
interfaces, in one place: which ones are plain stream sockets (and so can be
spliced or sendfile'd), where a transport hands its bytes to its protocol,
whether it is still connected, whether its write buffer is empty, whether it
can half-close, how to close it, and how to keep it quiet while the kernel
owns its socket.

These read attributes of C{twisted.internet.tcp.Connection} and
C{twisted.protocols.policies.ProtocolWrapper} that are not part of any
interface (C{dataBuffer}, C{_tempDataLen}, C{_writeDisconnected}, C{TLS},
C{wrappedProtocol} ...); when a Twisted release changes them, this is the
module to change.  It is below the relay and the engines and imports
neither.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IReactorFDSet, ISSLTransport, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from splicetx._relay.contract import CLOSED, IEngineHost, RelayUsageError
from splicetx._relay.runtime import LOG_RELAY

__all__ = ["spliceUnavailableReason"]

# The namespace the relay's log events always had.
_log = Logger(namespace=LOG_RELAY)


def _platformReason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"splice(2) is Linux-only (platform {sys.platform})"
    if not hasattr(os, "splice"):
        return "os.splice is unavailable (Python < 3.10)"
    return None


_PLATFORM_REASON = _platformReason()


def _streamSocketClasses() -> frozenset[type]:
    classes: set[type] = {tcp.Server, tcp.Client}
    try:
        from twisted.internet import unix
    except ImportError:  # pragma: no cover (platforms without AF_UNIX)
        pass
    else:
        classes.update((unix.Server, unix.Client))
    return frozenset(classes)


#: Twisted's transport classes whose socket is always a connected stream
#: socket: checked by exact type, so a subclass takes the general path.
_STREAM_SOCKET_CLASSES = _streamSocketClasses()


def addStreamSocketClass(cls: type) -> None:
    """
    Let transports of exactly C{cls} (a C{tcp.Client} or C{tcp.Server}
    subclass of splicetx's own, which changes nothing of how its socket is
    used) take the common path of L{spliceUnavailableReason} and
    L{deliveryPoint}.
    """
    global _STREAM_SOCKET_CLASSES
    _STREAM_SOCKET_CLASSES = _STREAM_SOCKET_CLASSES | {cls}


def spliceUnavailableReason(transport: object, reactor: object) -> str | None:
    """
    Tell why the splice engine cannot serve C{transport} on C{reactor}.

    @param transport: a connected transport.
    @param reactor: the reactor it runs on.
    @return: C{None} when it can, otherwise a short reason such as
        C{"TLS transport"}.
    """
    if _PLATFORM_REASON is not None:
        return _PLATFORM_REASON
    if not IReactorFDSet.providedBy(reactor):
        return f"reactor {type(reactor).__name__} does not provide IReactorFDSet"
    if type(transport) in _STREAM_SOCKET_CLASSES:
        # The common case: a stream socket by construction, TLS only if
        # startTLS() set the flag; the general checks are not needed.
        if transport.TLS:  # type: ignore[attr-defined]
            return "TLS transport"
    else:
        why = _notAPlainStreamSocket(transport)
        if why is not None:
            return why
    if getattr(transport, "_writeDisconnected", False) or getattr(
        transport, "_writeDisconnecting", False
    ):
        return "transport already half-closed"
    return None


def _notAPlainStreamSocket(transport: object) -> str | None:
    """
    Why C{transport}, of a class other than Twisted's own TCP/UNIX ones, is
    not a plain (non-TLS) stream socket transport, or C{None} when it is.
    """
    if isinstance(transport, ProtocolWrapper):
        if ISSLTransport.providedBy(transport) or hasattr(
            transport, "getPeerCertificate"
        ):
            return "TLS transport"
        return f"wrapped transport ({type(transport).__name__})"
    if not isinstance(transport, tcp.Connection):
        return f"not a socket transport ({type(transport).__name__})"
    if getattr(transport, "TLS", False) or ISSLTransport.providedBy(transport):
        return "TLS transport"
    sock = getattr(transport, "socket", None)
    if sock is None or sock.type != socket.SOCK_STREAM:
        return "not a stream socket"
    return None


def deliveryPoint(transport: Any) -> tuple[Any, str]:
    """
    Find the object and attribute through which C{transport} delivers bytes
    and connection events to its protocol.

    @raise RelayUsageError: when there is none.
    """
    if type(transport) in _STREAM_SOCKET_CLASSES and not transport.TLS:
        return transport, "protocol"
    if isinstance(transport, ProtocolWrapper):
        return transport, "wrappedProtocol"
    if getattr(transport, "TLS", False) and isinstance(
        getattr(transport, "protocol", None), ProtocolWrapper
    ):
        return transport.protocol, "wrappedProtocol"
    if hasattr(transport, "protocol"):
        return transport, "protocol"
    raise RelayUsageError(
        f"cannot relay {transport!r}: it has no protocol to take events from"
    )


def isConnected(transport: Any) -> bool:
    """
    Whether C{transport} is connected and not closing.
    """
    if getattr(transport, "disconnecting", False):
        return False
    if getattr(transport, "disconnected", False):
        return False
    return bool(getattr(transport, "connected", True))


def bufferEmpty(t: Any) -> bool:
    """
    Whether a C{tcp.Connection}'s write buffer is empty.
    """
    return not (len(t.dataBuffer) - t.offset + t._tempDataLen)


def canHalfClose(transport: Any) -> bool:
    """
    Whether C{loseWriteConnection} really half-closes this transport (a
    C{ProtocolWrapper} such as TLS forwards unknown attributes to the raw
    socket transport underneath, which would bypass TLS).
    """
    if isinstance(transport, ProtocolWrapper) or getattr(transport, "TLS", False):
        return False
    return callable(getattr(transport, "loseWriteConnection", None))


def socketOf(transport: Any) -> socket.socket:
    """
    The socket of a plain stream socket transport (one that
    L{spliceUnavailableReason} accepted).
    """
    sock: socket.socket = transport.socket
    return sock


def closeTransport(transport: ITransport, abort: bool) -> None:
    """
    Close C{transport} the public way (reset it when C{abort} and it can
    be); a failure is logged, not raised.
    """
    try:
        if abort and hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()
    except Exception:
        _log.failure("closing {transport!r} failed", transport=transport)


def closeNow(transport: Any, abort: bool) -> None:
    """
    Close a quiet socket transport at once: its write buffer is empty and it
    is not registered with the reactor (the splice engine owned its socket),
    so its own C{connectionLost} closes the socket and tells the protocol.
    This also works while the reactor shuts down.
    """
    # A clean close shares Twisted's own connectionDone failure, as
    # Twisted's transports do: no Failure to build per connection.
    transport.connectionLost(Failure(ConnectionAborted()) if abort else connectionDone)


def _noop(*args: object) -> None:
    return None


class _GuardedTransport:
    """
    Mixed in front of a relayed transport's class for the relay's duration
    (the instance's C{__class__} is swapped, and swapped back at the end):
    the methods that would re-register the socket with the reactor do
    nothing, writing raises, and closing ends the relay.  One class
    assignment each way, instead of shadowing a dozen methods per
    connection on the instance.

    The instance carries C{_splicetxGuard}: C{(host, side name)}.
    """

    #: The class the instance had before (set on each guarded class).
    _splicetxOriginal: type
    _splicetxGuard: tuple[IEngineHost | None, str]

    startReading = stopReading = startWriting = stopWriting = _noop
    pauseProducing = resumeProducing = _noop

    def write(self, *args: object) -> None:
        raise RuntimeError(
            f"transport {self._splicetxGuard[1]} ({self!r}) is being relayed by "
            "splicetx; write to it after the relay ends"
        )

    writeSequence = loseWriteConnection = write

    def loseConnection(self, *args: object) -> None:
        host, name = self._splicetxGuard
        if host is not None:
            host.ended(CLOSED, f"loseConnection() called on transport {name}", False)

    stopProducing = loseConnection

    def abortConnection(self) -> None:
        host, name = self._splicetxGuard
        if host is not None:
            host.ended(CLOSED, f"abortConnection() called on transport {name}", True)


_guardedClasses: dict[type, type] = {}


def _guardedClass(cls: type) -> type:
    """
    The guarded variant of transport class C{cls}: same name, module and
    interfaces, so C{repr}, C{isinstance} and C{providedBy} are unchanged.
    """
    guarded = _guardedClasses.get(cls)
    if guarded is None:
        guarded = type(
            cls.__name__,
            (_GuardedTransport, cls),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "_splicetxOriginal": cls,
            },
        )
        _guardedClasses[cls] = guarded
    return guarded


def guardTransport(transport: Any, host: IEngineHost, name: str) -> None:
    """
    Quiet C{transport}'s own re-registering and writing methods while the
    kernel owns its socket (see L{_GuardedTransport}); closing it ends the
    relay through C{host}.

    @param transport: the relayed socket transport.
    @param host: the relay to tell when the application closes it.
    @param name: its side's name, for messages.
    """
    transport._splicetxGuard = (host, name)
    transport.__class__ = _guardedClass(type(transport))


def unguardTransport(transport: Any) -> None:
    """
    Undo L{guardTransport}.
    """
    original = getattr(type(transport), "_splicetxOriginal", None)
    if original is not None:
        transport.__class__ = original
    transport.__dict__.pop("_splicetxGuard", None)
