# -*- test-case-name: tests.test_core -*-
"""
Which core carries the relay's hot loop: the compiled one
(C{splicetx._relay._ccore}, a small C extension built at install when a
compiler is at hand) or the pure-Python reference
(docs/design-decisions.md, "A compiled core, optional").

One behaviour, two speeds: L{splicetx._relay.socketloop},
L{splicetx._relay.direction}, L{splicetx._pool.sni} and
L{splicetx._proxy.proxyheader} each hold both
implementations and take the one chosen here.  C{SPLICETX_NO_EXTENSIONS=1}
in the environment forces the pure one (the convention of aiohttp, yarl
and frozenlist); without the built extension the pure one runs too, and
L{describe} says why.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "COMPILED",
    "PURE",
    "available",
    "current",
    "describe",
    "setupDirection",
    "use",
]

#: The names of the two cores, as the log, C{/status.json} and the bench
#: report give them.
COMPILED = "compiled"
PURE = "pure"

_ext: Any = None
_why = ""
#: What this module takes from the compiled core: an extension built from
#: older sources (a checkout's stale build) lacks some, and is not used.
_FUNCTIONS = (
    "dispatch",
    "move",
    "accept",
    "turn",
    "interest",
    "client_hello",
    "proxy_header",
    "setup",
    "setup_direction",
)

try:
    _ext = importlib.import_module("splicetx._relay._ccore")
except ImportError as e:  # no compiler at install, or a pure wheel
    _why = f"compiled core not built: {e}"
else:
    _missing = [name for name in _FUNCTIONS if not hasattr(_ext, name)]
    if _missing:
        _ext = None
        _why = (
            "compiled core out of date (it has no "
            + ", ".join(_missing)
            + "): reinstall splicetx to rebuild it"
        )

_forced = os.environ.get("SPLICETX_NO_EXTENSIONS", "") not in ("", "0")

#: The compiled functions in use, or C{None} while the pure core runs.
dispatch: Callable[..., int] | None = None
move: Callable[..., tuple[int, int, int]] | None = None
#: A non-blocking accept of an IPv4 or IPv6 listening socket
#: (L{splicetx._proxy.fastpath.FastForwarder.accept}), compiled, or C{None}.
accept: Callable[[int], tuple[int, Any] | None] | None = None
#: C{Direction.readable}'s small-message turn, compiled, or C{None}.
turn: Callable[..., int] | None = None
#: A loop member's new interest told to its socket loop's set
#: (L{splicetx._relay.socketloop.LoopMember}), compiled, or C{None}.
interest: Callable[[Any, bool, bool], None] | None = None
#: The common case of reading a TLS ClientHello, compiled, or C{None}
#: (L{splicetx._pool.sni.ClientHelloReader} uses it).
clientHello: Callable[[bytes, int], tuple[Any, ...] | None] | None = None
#: The common case of reading a PROXY protocol header, compiled, or C{None}
#: (L{splicetx._proxy.proxyheader.parseProxyHeader} uses it).
proxyHeader: Callable[[bytes, bool, bool], tuple[Any, ...] | None] | None = None


def available() -> bool:
    """
    Whether the compiled core is built and importable.
    """
    return _ext is not None


def current() -> str:
    """
    The core that runs now: L{COMPILED} or L{PURE}.
    """
    return COMPILED if move is not None else PURE


def describe() -> str:
    """
    One line for the start log: which core runs, and why the pure one when
    it does.
    """
    if move is not None:
        return "compiled (splicetx._relay._ccore)"
    if _ext is not None:
        return (
            "pure Python (SPLICETX_NO_EXTENSIONS is set)"
            if _forced
            else ("pure Python (chosen by the program)")
        )
    return f"pure Python ({_why})"


def setupDirection(direction: type, namespace: dict[str, Any]) -> None:
    """
    Tell the compiled core (when built) the direction class whose turn
    C{dispatch} runs itself, and the module namespace holding the
    constants it passes (C{BULK_READ}, C{PIECE}, C{SMALL_WINDOW},
    C{monotonicNow}).

    @param direction: L{splicetx._relay.direction.Direction}.
    @param namespace: its module's C{globals()}.
    """
    if _ext is not None:
        _ext.setup_direction(direction, namespace)


def use(compiled: bool) -> None:
    """
    Run the compiled core (C{True}) or the pure one, for every relay of
    the process from now on; the tests run the relay's tests under both.

    @raise RuntimeError: C{compiled} while the extension is not built.
    """
    global dispatch, move, accept, turn, interest, clientHello, proxyHeader
    if compiled and _ext is None:
        raise RuntimeError(f"no compiled core: {_why}")
    if compiled:
        from splicetx._relay.pipes import PipePool, UnreservedPipes

        # The pool classes whose take() the compiled turn may defer (their
        # exact classes: a subclass may take otherwise), and the clock it
        # may read itself.
        _ext.setup(PipePool, UnreservedPipes, time.monotonic)
    dispatch = _ext.dispatch if compiled else None
    move = _ext.move if compiled else None
    accept = _ext.accept if compiled else None
    turn = _ext.turn if compiled else None
    interest = _ext.interest if compiled else None
    clientHello = _ext.client_hello if compiled else None
    proxyHeader = _ext.proxy_header if compiled else None


use(_ext is not None and not _forced)
