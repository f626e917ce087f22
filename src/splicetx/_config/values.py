# -*- test-case-name: tests.test_cli_errors -*-
"""
Parsers for the values of C{twist splice-proxy} options: sizes, counts,
seconds, PROXY protocol versions, worker counts and access rules.

Each parser either returns the converted value or raises L{_Exit}, a
C{usage.UsageError} whose one-line message already names the option at
fault (C{Options.parseOptions} prints it and exits with L{EXIT_USAGE}).
"""

from __future__ import annotations

import math
import os

from twisted.python import usage

from splicetx._proxy.access import AccessControl
from splicetx._relay.tcpoptions import DEFAULT_KEEPALIVE, TCPKeepalive

__all__ = ["EXIT_USAGE"]

#: Exit status for bad command-line input (C{EX_USAGE}, as C{twist} uses).
EXIT_USAGE = 64

_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class _Exit(usage.UsageError):
    """
    A usage error that already names the option at fault.
    """


def defaultWorkerCount() -> int:
    """
    The number of CPUs this process may run on (a sensible C{--workers}).
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def _size(option: str, text: str) -> int:
    """
    Parse a size in bytes, with an optional C{K}, C{M} or C{G} suffix
    (C{KB}, C{KiB} ... too).

    @param option: the option's name, for the message.
    @param text: what the user wrote.
    @return: the number of bytes, positive.
    @raise _Exit: for anything else.
    """
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = 1
    if t and t[-1] in _SIZE_SUFFIXES:
        scale = _SIZE_SUFFIXES[t[-1]]
        t = t[:-1]
    try:
        value = int(t) * scale
    except ValueError:
        raise _Exit(
            f"--{option}: expected a size in bytes (e.g. 1048576 or 1M), got {text!r}"
        )
    if value <= 0:
        raise _Exit(f"--{option}: must be positive, got {text!r}")
    return value


def _count(option: str, text: str, minimum: int) -> int:
    """
    Parse a whole number of at least C{minimum}.

    @param option: the option's name, for the message.
    @param text: what the user wrote.
    @param minimum: the smallest value allowed.
    @raise _Exit: for anything else.
    """
    try:
        value = int(text.strip())
    except ValueError:
        raise _Exit(f"--{option}: expected a whole number, got {text!r}")
    if value < minimum:
        raise _Exit(f"--{option}: must be at least {minimum}, got {text!r}")
    return value


def _seconds(option: str, text: str, positive: bool = False) -> float:
    """
    Parse a finite number of seconds, zero or more (or more than zero).

    @param option: the option's name, for the message.
    @param text: what the user wrote.
    @param positive: refuse zero too.
    @raise _Exit: for anything else.
    """
    try:
        value = float(text.strip())
    except ValueError:
        raise _Exit(f"--{option}: expected a number of seconds, got {text!r}")
    if not math.isfinite(value):
        raise _Exit(f"--{option}: must be a finite number of seconds, got {text!r}")
    if value < 0 or (positive and value == 0):
        need = "positive" if positive else "zero or more"
        raise _Exit(f"--{option}: must be {need}, got {text!r}")
    return value


#: The largest values Linux takes for TCP_KEEPIDLE, TCP_KEEPINTVL and
#: TCP_KEEPCNT.
_KEEPALIVE_LIMITS = (32767, 32767, 127)


def _tcpKeepalive(text: str) -> TCPKeepalive | None:
    """
    Parse C{--tcp-keepalive}: C{IDLE[:INTERVAL[:COUNT]]} (seconds, seconds,
    probes; the parts left out keep their defaults) or C{0}/C{off} for none.

    @raise _Exit: for anything else.
    """
    t = text.strip().lower()
    if t in ("0", "off", "no", "none"):
        return None
    parts = t.split(":")
    default = (
        DEFAULT_KEEPALIVE.idle,
        DEFAULT_KEEPALIVE.interval,
        DEFAULT_KEEPALIVE.count,
    )
    if len(parts) > 3:
        parts = []
    values = list(default)
    try:
        for i, part in enumerate(parts):
            values[i] = int(part)
    except ValueError:
        parts = []
    if not parts:
        raise _Exit(
            f"--tcp-keepalive: expected IDLE[:INTERVAL[:COUNT]] (e.g. 60:10:6) "
            f"or 0 for off, got {text!r}"
        )
    for value, limit in zip(values, _KEEPALIVE_LIMITS, strict=True):
        if not 1 <= value <= limit:
            raise _Exit(
                f"--tcp-keepalive: idle and interval must be 1 to 32767 s and "
                f"count 1 to 127, got {text!r}"
            )
    return TCPKeepalive(*values)


def _trustedSources(rules: list[str]) -> AccessControl:
    """
    Parse the C{--proxy-protocol-from} networks.

    @raise _Exit: for a rule that does not parse.
    """
    try:
        return AccessControl(rules)
    except ValueError as e:
        raise _Exit(f"--proxy-protocol-from: {e}")


def _proxyProtocolVersion(text: str) -> int:
    """
    Parse the C{--proxy-protocol} version: C{v1}/C{1} or C{v2}/C{2}.

    @raise _Exit: for anything else.
    """
    v = text.strip().lower()
    if v in ("v1", "1"):
        return 1
    if v in ("v2", "2"):
        return 2
    raise _Exit(f"--proxy-protocol: expected v1 or v2, got {text!r}")


def _workerCount(text: str) -> int:
    """
    Parse C{--workers}: a count of at least 1, or C{auto} (one per CPU this
    process may run on).

    @raise _Exit: for anything else.
    """
    if text.strip().lower() == "auto":
        return defaultWorkerCount()
    return _count("workers", text, 1)


def _badRule(rules: list[str]) -> bool:
    """
    Whether one of C{rules} is not a valid access rule (to tell which of
    C{--allow} and C{--deny} a C{ValueError} came from).
    """
    try:
        AccessControl(rules)
    except ValueError:
        return True
    return False


def _accessControl(allow: list[str], deny: list[str]) -> AccessControl:
    """
    Parse the C{--allow} and C{--deny} rules.

    @raise _Exit: naming the option of the first bad rule.
    """
    try:
        return AccessControl(allow, deny)
    except ValueError as e:
        which = "--allow" if _badRule(allow) else "--deny"
        raise _Exit(f"{which}: {e}")
