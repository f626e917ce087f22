"""
splicetx: a Twisted-native, zero-copy TCP relay.

L{relay} pairs two connected transports; when both are plain sockets on Linux
the kernel moves the bytes with C{splice(2)}, otherwise a userspace copy with
the same guarantees runs.
"""

from splicetx._core import (
    CANCELLED,
    CLOSED,
    DONE,
    ERROR,
    RESET,
    RelayResult,
    RelayUsageError,
)
from splicetx._pipes import DEFAULT_PIPE_SIZE, PipePool
from splicetx._relay import Relay, relay
from splicetx._sendfile import (
    ZeroCopyFileSender,
    sendFile,
    sendFileUnavailableReason,
)
from splicetx._transports import spliceUnavailableReason
from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol

__version__ = "0.1.0"

__all__ = [
    "relay",
    "Relay",
    "RelayResult",
    "RelayUsageError",
    "PipePool",
    "DEFAULT_PIPE_SIZE",
    "spliceUnavailableReason",
    "sendFile",
    "sendFileUnavailableReason",
    "ZeroCopyFileSender",
    "SpliceProxyFactory",
    "SpliceProxyProtocol",
    "DONE",
    "RESET",
    "ERROR",
    "CANCELLED",
    "CLOSED",
    "__version__",
]
