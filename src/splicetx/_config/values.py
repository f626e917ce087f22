# -*- test-case-name: tests.test_config_values -*-
"""
The one grammar of configuration values, and the one error every reader of
configuration raises.

Every flag of C{twist splice-proxy}, every rinetd bracket option and every
TOML key reads its value with these parsers, so C{500ms} means the same on
C{--idle-timeout}, C{fail-timeout=500ms} in a rinetd file and
C{fail-timeout = "500ms"} in a TOML file:

  - B{Durations} (L{parseDuration}): a number of seconds, with an optional
    unit C{ms}, C{s}, C{m} or C{h} (C{10}, C{1.5}, C{500ms}, C{30s}, C{2m},
    C{1h}); a TOML number is seconds.
  - B{Sizes} (L{parseSize}): a number of bytes with an optional C{K}, C{M}
    or C{G} (powers of 1024; C{KB}, C{KiB}, C{MB} ... are the same); a
    TOML integer is bytes.
  - B{Counts} (L{parseCount}): a whole number with a minimum; a TOML
    integer as it is.
  - B{Rates} (L{parseRate}): new events per second, minute or hour with an
    optional burst (C{5/s}, C{300/m}, C{5/s:20}).
  - B{Bandwidths} (L{parseBandwidth}): a size per second (C{10MB/s},
    C{500KiB/s}; powers of 1024, as sizes), or bytes per second.

Each parser returns the value or raises L{ConfigError}, whose C{str()} is
one line that names the option (or the file and line) at fault.  It is a
C{usage.UsageError}, so C{Options.parseOptions} prints it and exits with
L{EXIT_USAGE}; a reload logs it and keeps the running configuration.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from typing import Any

from twisted.python import usage

from splicetx._pool.resolver import MAX_VALIDITY
from splicetx._proxy.access import AccessControl
from splicetx._proxy.clientlimits import ConnectionRate
from splicetx._relay.tcpoptions import DEFAULT_KEEPALIVE, TCPKeepalive

__all__ = [
    "EXIT_USAGE",
    "ConfigError",
    "parseDuration",
    "parseSize",
    "parseCount",
    "parseRate",
    "parseBandwidth",
    "parseClientPrefix",
    "parseKeepalive",
    "parseResolveTTL",
    "parseProxyProtocolVersion",
    "parseWorkerCount",
    "parseAccessControl",
    "parseTrustedSources",
    "decodeEscapes",
    "defaultWorkerCount",
]

#: Exit status for bad command-line input (C{EX_USAGE}, as C{twist} uses).
EXIT_USAGE = 64


class ConfigError(usage.UsageError):
    """
    A configuration value, flag or file cannot be used; C{str()} is one
    line: C{FILE:LINE: problem}, C{FILE: problem} or C{problem}.

    @ivar problem: what is wrong, naming the option and the value.
    @ivar filename: the configuration file, or C{None} for the command line.
    @ivar lineNumber: the 1-based line in that file, or C{0} for none.
    """

    def __init__(
        self, problem: str, filename: str | None = None, lineNumber: int = 0
    ) -> None:
        self.problem = problem
        self.filename = filename
        self.lineNumber = lineNumber
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.filename is None:
            return self.problem
        if self.lineNumber:
            return f"{self.filename}:{self.lineNumber}: {self.problem}"
        return f"{self.filename}: {self.problem}"

    def within(self, where: str) -> ConfigError:
        """
        The same problem, said to be inside C{where} (e.g. C{"forward[1]"}).
        """
        return ConfigError(f"{where}: {self.problem}", self.filename, self.lineNumber)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_SIZE_SCALE = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parseDuration(value: Any, what: str, positive: bool = False) -> float:
    """
    Parse a duration: seconds, with an optional C{ms}, C{s}, C{m} or C{h}
    unit (C{10}, C{1.5}, C{500ms}, C{30s}, C{2m}, C{1h}), or a TOML number
    of seconds.

    @param value: what the user wrote (text, or an C{int}/C{float}).
    @param what: the option's name as the user knows it, for the message.
    @param positive: refuse zero too (by default zero is accepted; for most
        timeouts it means "never").
    @return: seconds, finite and not negative.
    @raise ConfigError: for anything else.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is not None:
            unit = (match.group(2) or "s").lower()
            seconds = float(match.group(1)) * _UNIT_SECONDS[unit]
        elif _isNumber(str(value)):
            seconds = float(str(value))
        else:
            raise ConfigError(
                f"{what}: expected a number of seconds (e.g. 10, 1.5, 500ms, 2m), "
                f"got {value!r}"
            )
    if not math.isfinite(seconds):
        raise ConfigError(f"{what}: must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (positive and seconds == 0):
        need = "positive" if positive else "zero or more"
        raise ConfigError(f"{what}: must be {need}, got {value!r}")
    return seconds


def _isNumber(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parseSize(value: Any, what: str, minimum: int = 1) -> int:
    """
    Parse a size in bytes, with an optional C{K}, C{M} or C{G} (powers of
    1024; C{KB}, C{KiB} ... too), or a TOML integer of bytes.

    @param value: what the user wrote.
    @param what: the option's name, for the message.
    @param minimum: the smallest size accepted.
    @return: the number of bytes.
    @raise ConfigError: for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value)) if isinstance(value, str) else None
        if match is None:
            if isinstance(value, str) and value.strip().startswith("-"):
                raise ConfigError(f"{what}: must be positive, got {value!r}")
            raise ConfigError(
                f"{what}: expected a size in bytes (e.g. 1048576 or 1M), got {value!r}"
            )
        size = int(match.group(1)) * _SIZE_SCALE.get((match.group(2) or "").lower(), 1)
    if size <= 0:
        raise ConfigError(f"{what}: must be positive, got {value!r}")
    if size < minimum:
        raise ConfigError(f"{what}: must be at least {minimum}, got {value!r}")
    return size


def parseCount(value: Any, what: str, minimum: int) -> int:
    """
    Parse a whole number of at least C{minimum}.

    @param value: what the user wrote (text, or a TOML integer).
    @param what: the option's name, for the message.
    @param minimum: the smallest value allowed.
    @raise ConfigError: for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    else:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigError(f"{what}: expected a whole number, got {value!r}")
        count = int(text)
    if count < minimum:
        raise ConfigError(f"{what}: must be at least {minimum}, got {value!r}")
    return count


_RATE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|sec|m|min|h|hour)\s*(?::\s*(\d+)\s*)?$",
    re.IGNORECASE,
)
_PER = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parseRate(value: Any, what: str) -> ConnectionRate:
    """
    Parse a rate of new events: C{N/s}, C{N/m} or C{N/h}, with an optional
    burst after a colon (C{5/s:20}); without one the burst is one second's
    worth (at least 1).

    @param value: what the user wrote.
    @param what: the option's name, for the message.
    @raise ConfigError: for anything else, or a zero rate or burst.
    """
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{what}: expected a rate like 5/s, 300/m or 5/s:20 (with a "
            f"burst), got {value!r}"
        )
    perSecond = float(match.group(1)) / _PER[match.group(2).lower()]
    if perSecond <= 0:
        raise ConfigError(f"{what}: must be positive, got {value!r}")
    burst = match.group(3)
    count = int(burst) if burst is not None else max(1, math.ceil(perSecond))
    if count < 1:
        raise ConfigError(f"{what}: the burst must be at least 1, got {value!r}")
    return ConnectionRate(perSecond, count)


def parseBandwidth(value: Any, what: str) -> int:
    """
    Parse a bandwidth: a size per second (C{10MB/s}, C{500KiB/s}, C{1G/s};
    powers of 1024, as L{parseSize}), or a number of bytes per second (a
    TOML integer too).

    @return: bytes per second, positive.
    @raise ConfigError: for anything else.
    """
    text = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower().endswith("/s"):
            text = text[:-2]
    try:
        return parseSize(text, what)
    except ConfigError:
        raise ConfigError(
            f"{what}: expected bytes per second like 10MB/s or 500KiB/s, got {value!r}"
        ) from None


def parseClientPrefix(value: Any, what: str = "--client-prefix") -> tuple[int, int]:
    """
    Parse C{V4,V6}: the prefix lengths of the network a client counts as
    (C{32,128}: each address; C{24,64}: a /24 or a /64).

    @raise ConfigError: for anything else.
    """
    parts = value.split(",") if isinstance(value, str) else []
    if len(parts) == 2 and all(re.fullmatch(r"\s*\d+\s*", p) for p in parts):
        v4, v6 = int(parts[0]), int(parts[1])
        if 0 < v4 <= 32 and 0 < v6 <= 128:
            return v4, v6
    raise ConfigError(
        f"{what}: expected IPv4,IPv6 prefix lengths like 32,128 or 24,64 "
        f"(1-32 and 1-128), got {value!r}"
    )


#: The largest values Linux takes for TCP_KEEPIDLE, TCP_KEEPINTVL and
#: TCP_KEEPCNT.
_KEEPALIVE_LIMITS = (32767, 32767, 127)


def parseResolveTTL(value: Any, what: str = "--resolve-ttl") -> float:
    """
    Parse the validity of an upstream name's resolution: a duration from 0
    (resolve at every connect) to L{MAX_VALIDITY
    <splicetx._pool.resolver.MAX_VALIDITY>}.

    @raise ConfigError: with one line for anything else.
    """
    seconds = parseDuration(value, what)
    if seconds > MAX_VALIDITY:
        raise ConfigError(
            f"{what}: at most {MAX_VALIDITY:g} seconds (1h), got {value!r} "
            "(a name that moves must be followed within that time)"
        )
    return seconds


def parseKeepalive(text: str, what: str = "--tcp-keepalive") -> TCPKeepalive | None:
    """
    Parse C{IDLE[:INTERVAL[:COUNT]]} (seconds, seconds, probes; the parts
    left out keep their defaults), or C{0}/C{off} for no keepalive.

    @raise ConfigError: for anything else.
    """
    t = text.strip().lower()
    if t in ("0", "off", "no", "none"):
        return None
    parts = t.split(":")
    values = [
        DEFAULT_KEEPALIVE.idle,
        DEFAULT_KEEPALIVE.interval,
        DEFAULT_KEEPALIVE.count,
    ]
    if len(parts) > 3:
        parts = []
    try:
        for i, part in enumerate(parts):
            values[i] = int(part)
    except ValueError:
        parts = []
    if not parts:
        raise ConfigError(
            f"{what}: expected IDLE[:INTERVAL[:COUNT]] (e.g. 60:10:6) "
            f"or 0 for off, got {text!r}"
        )
    for value, limit in zip(values, _KEEPALIVE_LIMITS, strict=True):
        if not 1 <= value <= limit:
            raise ConfigError(
                f"{what}: idle and interval must be 1 to 32767 s and "
                f"count 1 to 127, got {text!r}"
            )
    return TCPKeepalive(*values)


def parseProxyProtocolVersion(text: str, what: str = "--proxy-protocol") -> int:
    """
    Parse a PROXY protocol version: C{v1}/C{1} or C{v2}/C{2}.

    @raise ConfigError: for anything else.
    """
    v = text.strip().lower()
    if v in ("v1", "1"):
        return 1
    if v in ("v2", "2"):
        return 2
    raise ConfigError(f"{what}: expected v1 or v2, got {text!r}")


def defaultWorkerCount() -> int:
    """
    The number of CPUs this process may run on (a sensible C{--workers}).
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def parseWorkerCount(text: str, what: str = "--workers") -> int:
    """
    Parse a worker count: at least 1, or C{auto} (one per CPU this process
    may run on).

    @raise ConfigError: for anything else.
    """
    if text.strip().lower() == "auto":
        return defaultWorkerCount()
    return parseCount(text, what, 1)


def parseTrustedSources(
    rules: list[str], what: str = "--proxy-protocol-from"
) -> AccessControl:
    """
    Parse the networks whose PROXY header is believed.

    @raise ConfigError: for a rule that does not parse.
    """
    try:
        return AccessControl(rules)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None


def parseAccessControl(
    allow: list[str], deny: list[str], outer: AccessControl | None = None
) -> AccessControl:
    """
    Parse C{--allow} and C{--deny} rules.

    @raise ConfigError: naming the option of the first bad rule.
    """
    for which, rules in (("--allow", allow), ("--deny", deny)):
        try:
            AccessControl(rules)
        except ValueError as e:
            raise ConfigError(f"{which}: {e}") from None
    return AccessControl(allow, deny, outer=outer)


def decodeEscapes(text: str, what: str = "value") -> bytes:
    """
    The bytes of a text with C{\\r}, C{\\n}, C{\\t}, C{\\\\} and C{\\xHH}
    escapes, UTF-8 otherwise (C{--health-check-send}, C{-expect}).

    @raise ConfigError: for a bad escape.
    """
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as e:
        raise ConfigError(f"{what}: bad escape in {text!r}: {e}") from None
