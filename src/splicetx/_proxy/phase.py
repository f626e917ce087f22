# -*- test-case-name: tests.test_proxy -*-
"""
The phases of one proxied connection (L{splicetx.proxy.SpliceProxyProtocol})
and the one check that refuses an action called in the wrong phase.

A connection moves forward only::

    READING_HEADER -> ADMITTING -> HANDSHAKE or CHOOSING -> CONNECTING
        -> CONNECTED -> RELAYING -> FINISHED

From any phase before C{RELAYING} it may go to C{CLOSING} (its end is
decided: refused, upstream failed, idle timeout, aborted) and from there to
C{FINISHED}; from any phase to C{FINISHED} when the client leaves.
C{READING_HEADER} only happens when the factory accepts the PROXY protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Container

__all__ = ["Phase", "requirePhase"]


class Phase(enum.Enum):
    """
    Where one proxied connection is in its life.  Each value is the phrase
    that ends the error message of an action called in that phase.
    """

    #: Reading the PROXY protocol header a load balancer sends first.
    READING_HEADER = "while the PROXY protocol header is read"
    #: Applying the access rules and C{clientAccepted()}.
    ADMITTING = "while the client is admitted"
    #: C{readsHandshake}: the client's bytes go to C{handshakeReceived()}.
    HANDSHAKE = "during the handshake"
    #: Waiting for C{chooseUpstream()} (possibly a Deferred).
    CHOOSING = "while the upstream is chosen"
    #: The upstream connection attempt is in flight.
    CONNECTING = "while the upstream is connecting"
    #: The upstream is connected; C{startRelay()} has not been called.
    CONNECTED = "once the upstream is connected"
    #: The relay runs.
    RELAYING = "once the relay started"
    #: The end is decided; waiting for the client connection to close.
    CLOSING = "once the connection is closing"
    #: C{relayFinished()} has run (or is running).
    FINISHED = "after the connection ended"


def requirePhase(phase: Phase, allowed: Container[Phase], action: str) -> None:
    """
    Refuse an action called in the wrong phase.

    @param phase: the connection's phase now.
    @param allowed: the phases the action may be called in.
    @param action: the action's name, for the message, e.g. C{"startRelay"}.
    @raise RuntimeError: when C{phase} is not in C{allowed}.
    """
    if phase not in allowed:
        raise RuntimeError(f"{action}() cannot be called {phase.value}")
