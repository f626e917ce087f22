# -*- test-case-name: tests.test_proxy -*-
"""
The relay's words for the ends of a proxied connection, in the proxy's.

L{splicetx.relay} joins two transports it calls C{A} and C{B}, and says so
in its L{RelayResult}: C{"B finished sending and A cannot be half-closed
(TLS)"}, C{"A->B: write to B failed: EPIPE (Broken pipe)"}, a fallback
C{"transport A: TLS transport"}.  A proxy always gives it the client as
C{A} and the upstream as C{B}, so before a result reaches the proxy's
record, metrics or L{relayFinished
<splicetx._proxy.protocol.SpliceProxyProtocol.relayFinished>},
L{inProxyWords} rewrites those phrases: C{"the upstream finished sending
and the client's TLS connection cannot be half-closed"}, C{"client to
upstream: writing to the upstream failed: EPIPE (Broken pipe)"}, C{"the
client uses TLS"}.

The relay's phrases are matched where they are made (L{splicetx._relay}'s
C{copy}, C{direction}, C{relay}, C{splice} and C{transports} modules), and
only there: a peer's error message that happens to contain a capital C{A}
is left as it is.
"""

from __future__ import annotations

import re
from typing import overload

__all__ = ["inProxyWords"]

_SIDES = {"A": "client", "B": "upstream"}
_DIRECTIONS = {"A->B": "client to upstream", "B->A": "upstream to client"}


def _halfClose(m: re.Match[str]) -> str:
    return (
        f"the {_SIDES[m[1]]} finished sending and the {_SIDES[m[2]]}'s TLS "
        "connection cannot be half-closed"
    )


def _directionFailed(m: re.Match[str]) -> str:
    verb = "reading from" if m[2] == "read from" else "writing to"
    return f"{_DIRECTIONS[m[1]]}: {verb} the {_SIDES[m[3]]} failed: "


def _unavailable(m: re.Match[str]) -> str:
    side = _SIDES[m[1]]
    if m[2] == "TLS transport":
        return f"the {side} uses TLS"
    return f"the {side} cannot be spliced: {m[2]}"


#: (pattern, replacement) in the order tried; the first that matches wins.
_PHRASES: list[tuple[re.Pattern[str], object]] = [
    (
        re.compile(
            r"^([AB]) finished sending and ([AB]) cannot be half-closed \(TLS\)"
        ),
        _halfClose,
    ),
    (
        re.compile(r"^(A->B|B->A): (read from|write to) ([AB]) failed: "),
        _directionFailed,
    ),
    (
        re.compile(r"^(A->B|B->A): splice into ([AB]) "),
        lambda m: f"{_DIRECTIONS[m[1]]}: splice into the {_SIDES[m[2]]} ",
    ),
    (re.compile(r"^(A->B|B->A): "), lambda m: f"{_DIRECTIONS[m[1]]}: "),
    (
        re.compile(r"^transport ([AB]) closed the connection$"),
        lambda m: f"the {_SIDES[m[1]]} closed the connection",
    ),
    (
        re.compile(r"^transport ([AB]) lost: "),
        lambda m: f"the {_SIDES[m[1]]} connection was lost: ",
    ),
    (
        re.compile(
            r"^(loseConnection|abortConnection)\(\) called on transport ([AB])$"
        ),
        lambda m: (
            f"the proxy {'closed' if m[1] == 'loseConnection' else 'aborted'} "
            f"the {_SIDES[m[2]]} connection"
        ),
    ),
    (
        # A socket error (an errno name first).
        re.compile(r"^transport ([AB]): (?=E[A-Z0-9]+\b)"),
        lambda m: f"the {_SIDES[m[1]]} connection: ",
    ),
    # Why a transport cannot be spliced (a fallback reason).
    (re.compile(r"^transport ([AB]): (.*)$", re.S), _unavailable),
    (re.compile(r"^engine='copy' requested$"), lambda m: "the copy engine was chosen"),
]


@overload
def inProxyWords(text: str) -> str: ...


@overload
def inProxyWords(text: None) -> None: ...


def inProxyWords(text: str | None) -> str | None:
    """
    A relay's C{detail} or C{fallbackReason} with its C{A} and C{B} named
    as the proxy's client and upstream (see the module docstring).

    @param text: what the relay said, or C{None}.
    @return: the same in the proxy's words; text the relay did not phrase
        that way is returned unchanged.
    """
    if text is None or ("A" not in text and "B" not in text and "engine=" not in text):
        return text
    for pattern, replace in _PHRASES:
        found = pattern.search(text)
        if found is not None:
            return replace(found) + text[found.end() :]  # type: ignore[operator]
    return text
