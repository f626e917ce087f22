"""
The one fake of direction-level tests: a real socket as a
L{Direction <splicetx._relay.direction.Direction>} uses it (C{fd}, C{name},
C{sock}, C{engine}, C{source}, C{sink}, start/stop reading and writing), its
changes of interest recorded instead of made with a reactor.
"""

from __future__ import annotations

import socket
from typing import Any


class RecordedEndpoint:
    """
    One side of a direction under test.

    @ivar calls: the interest changes asked for, in order (C{"startReading"},
        C{"stopWriting"}, ...).
    """

    def __init__(self, sock: socket.socket, name: str, engine: Any = None) -> None:
        sock.setblocking(False)
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.name = name
        self.source: Any = None
        self.sink: Any = None
        self.calls: list[str] = []

    def startReading(self) -> None:
        self.calls.append("startReading")

    def stopReading(self) -> None:
        self.calls.append("stopReading")

    def startWriting(self) -> None:
        self.calls.append("startWriting")

    def stopWriting(self) -> None:
        self.calls.append("stopWriting")
