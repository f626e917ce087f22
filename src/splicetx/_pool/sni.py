# -*- test-case-name: tests.test_sni -*-
"""
Route TLS by server name without terminating TLS: read the client's
ClientHello, take the name of its C{server_name} extension (SNI, RFC 6066),
choose the upstream by it, then deliver the ClientHello bytes first and
splice the rest -- what HAProxy's C{req.ssl_sni} and nginx's C{ssl_preread}
do.

L{ClientHelloReader} is incremental: feed it what the client sends, as it
arrives, until it returns a L{ClientHello} (it may span several TLS records
and any number of TCP segments)::

    reader = ClientHelloReader()
    def dataReceived(self, data):
        hello = reader.feed(data)       # may raise ClientHelloError
        if hello is None:
            return                      # need more; the caller bounds the wait
        target = router.route(hello.serverName)
        self.connectUpstream(target, toUpstream=reader.buffered)

It reads only the record layer and the ClientHello, checking every length,
and raises L{ClientHelloError} whose C{reason} is L{NOT_TLS} (the first bytes
are not a TLS handshake record: plain HTTP, SSLv2, PROXY protocol...),
L{MALFORMED} (a length or field that does not add up) or L{OVERSIZED} (the
ClientHello is longer than C{maxSize}, 16 KiB by default).  The caller bounds
the time it waits and uses L{TIMEOUT} for the log.

L{SNIRouter} maps server names to targets (endpoints, pools, anything):
exact names, and wildcards C{*.example.com} with nginx's C{server_name}
semantics -- C{*.example.com} matches C{www.example.com} and
C{a.b.example.com} but not C{example.com}; an exact name beats any wildcard,
and a longer wildcard beats a shorter one.  Names compare case-insensitively,
without a trailing dot, and non-ASCII names in the routes are IDNA-encoded
(C{xn--...}) as clients send them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attr

from splicetx._relay import core as _core

__all__ = [
    "ClientHello",
    "ClientHelloError",
    "ClientHelloReader",
    "SNIRouter",
    "parseClientHello",
    "normaliseServerName",
    "NOT_TLS",
    "MALFORMED",
    "OVERSIZED",
    "TIMEOUT",
    "DEFAULT_MAX_SIZE",
]

#: L{ClientHelloError.reason}: the client does not speak TLS.
NOT_TLS = "not TLS"
#: L{ClientHelloError.reason}: the ClientHello or its records are malformed.
MALFORMED = "malformed ClientHello"
#: L{ClientHelloError.reason}: the ClientHello is longer than allowed.
OVERSIZED = "oversized ClientHello"
#: The reason for the log when the client was too slow sending it.
TIMEOUT = "ClientHello timeout"

#: The default bound on the ClientHello's length: 16 KiB (a real one is
#: 200-2000 bytes; post-quantum key shares make it ~1.8 KiB).
DEFAULT_MAX_SIZE = 16384

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_MAX_RECORD = 16384 + 256  # TLSPlaintext bound, with TLSCiphertext slack
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_HOST_NAME = 0


class ClientHelloError(ValueError):
    """
    What the client sent is not an acceptable ClientHello.

    @ivar reason: L{NOT_TLS}, L{MALFORMED} or L{OVERSIZED}.
    @ivar detail: what exactly, for the log.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@attr.s(frozen=True, auto_attribs=True)
class ClientHello:
    """
    What routing needs from a ClientHello.

    @ivar serverName: the SNI host name, lower-cased, without a trailing
        dot; C{None} when the client sent none.
    @ivar alpn: the ALPN protocol names offered, in order (may be empty).
    @ivar legacyVersion: the C{legacy_version} field, e.g. C{0x0303}.
    @ivar length: the handshake message's length in bytes.
    """

    serverName: str | None
    alpn: tuple[bytes, ...] = ()
    legacyVersion: int = 0x0303
    length: int = 0


class _Cursor:
    """
    Reads big-endian fields from C{data[pos:end]}, raising L{MALFORMED} on
    any overrun.  A vector's cursor shares its parent's bytes (no slice is
    copied or viewed until a field is taken whole).
    """

    __slots__ = ("data", "pos", "end", "what")

    def __init__(
        self, data: bytes | memoryview, what: str, pos: int = 0, end: int = -1
    ) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end < 0 else end
        self.what = what

    def left(self) -> int:
        return self.end - self.pos

    def _overrun(self, n: int, what: str) -> ClientHelloError:
        return ClientHelloError(
            MALFORMED, f"{what} overruns the {self.what} ({n} > {self.left()})"
        )

    def take(self, n: int, what: str) -> memoryview:
        pos = self.pos
        end = pos + n
        if end > self.end:
            raise self._overrun(n, what)
        self.pos = end
        return memoryview(self.data)[pos:end]

    def skip(self, n: int, what: str) -> None:
        end = self.pos + n
        if end > self.end:
            raise self._overrun(n, what)
        self.pos = end

    def uint(self, size: int, what: str) -> int:
        pos = self.pos
        end = pos + size
        if end > self.end:
            raise self._overrun(size, what)
        self.pos = end
        data = self.data
        if size == 1:
            return data[pos]
        if size == 2:
            return data[pos] << 8 | data[pos + 1]
        return int.from_bytes(data[pos:end], "big")

    def vector(self, lengthSize: int, what: str) -> _Cursor:
        n = self.uint(lengthSize, f"{what} length")
        pos = self.pos
        end = pos + n
        if end > self.end:
            raise self._overrun(n, what)
        self.pos = end
        return _Cursor(self.data, what, pos, end)


def normaliseServerName(name: str) -> str:
    """
    The form server names are compared in: IDNA-encoded, lower-case, no
    trailing dot.

    @param name: a host name (or a route pattern).
    @return: the normalised name.
    @raise ValueError: for an empty name or one IDNA cannot encode.
    """
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty server name")
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"bad server name {name!r}: {e}") from None
    return name.lower()


_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _isHostName(name: str) -> bool:
    """
    Whether a normalised name is a host name by RFC 1123: dot-separated
    labels of letters, digits and inner hyphens, 1 to 63 long, 253 in all.
    """
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


#: A byte no host name has: a control, space, DEL or non-ASCII byte.
_UNPRINTABLE = re.compile(rb"[^\x21-\x7e]")


def _hostName(raw: memoryview) -> str:
    data = bytes(raw)
    if not data:
        raise ClientHelloError(MALFORMED, "empty server name")
    if _UNPRINTABLE.search(data) is not None:
        raise ClientHelloError(MALFORMED, f"bad server name {data[:64]!r}")
    name = data.decode("ascii").lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or ".." in name or name.startswith("."):
        raise ClientHelloError(MALFORMED, f"bad server name {data[:64]!r}")
    return name


def parseClientHello(body: bytes | memoryview) -> ClientHello:
    """
    Parse the body of a ClientHello handshake message (after its 4-byte
    handshake header).

    @param body: the message body.
    @return: the L{ClientHello}.
    @raise ClientHelloError: with reason L{MALFORMED}.
    """
    c = _Cursor(body, "ClientHello")
    version = c.uint(2, "legacy_version")
    if version >> 8 != 3:
        raise ClientHelloError(MALFORMED, f"legacy_version 0x{version:04x}")
    c.skip(32, "random")
    session = c.vector(1, "legacy_session_id")
    if session.left() > 32:
        raise ClientHelloError(MALFORMED, "legacy_session_id longer than 32")
    suites = c.vector(2, "cipher_suites")
    if suites.left() < 2 or suites.left() % 2:
        raise ClientHelloError(MALFORMED, f"{suites.left()} bytes of cipher_suites")
    compression = c.vector(1, "legacy_compression_methods")
    if compression.left() < 1:
        raise ClientHelloError(MALFORMED, "no compression methods")
    serverName: str | None = None
    alpn: tuple[bytes, ...] = ()
    if c.left():
        extensions = c.vector(2, "extensions")
        if c.left():
            raise ClientHelloError(MALFORMED, f"{c.left()} bytes after the extensions")
        seen: set[int] = set()
        # The extensions are walked in place (what vector() does, without a
        # cursor for each one routing does not read).
        raw = extensions.data
        pos = extensions.pos
        end = extensions.end
        while pos < end:
            if pos + 2 > end:
                raise extensions._overrun(2, "extension type")
            kind = raw[pos] << 8 | raw[pos + 1]
            pos += 2
            extensions.pos = pos
            if pos + 2 > end:
                raise extensions._overrun(2, f"extension {kind} length")
            n = raw[pos] << 8 | raw[pos + 1]
            pos += 2
            extensions.pos = pos
            if pos + n > end:
                raise extensions._overrun(n, f"extension {kind}")
            start = pos
            pos += n
            if kind in seen:
                raise ClientHelloError(MALFORMED, f"extension {kind} twice")
            seen.add(kind)
            if kind == _EXT_SERVER_NAME:
                what = f"extension {kind}"
                serverName = _serverName(_Cursor(raw, what, start, pos))
            elif kind == _EXT_ALPN:
                alpn = _alpn(_Cursor(raw, f"extension {kind}", start, pos))
    return ClientHello(serverName, alpn, version, len(body))


def _serverName(data: _Cursor) -> str | None:
    names = data.vector(2, "server_name_list")
    if data.left():
        raise ClientHelloError(MALFORMED, "bytes after the server_name_list")
    if not names.left():
        raise ClientHelloError(MALFORMED, "empty server_name_list")
    found: str | None = None
    while names.left():
        nameType = names.uint(1, "name_type")
        raw = names.vector(2, "server name")
        if nameType == _HOST_NAME:
            if found is not None:
                raise ClientHelloError(MALFORMED, "two host names")
            found = _hostName(raw.take(raw.left(), "host_name"))
    return found


def _alpn(data: _Cursor) -> tuple[bytes, ...]:
    names = data.vector(2, "protocol_name_list")
    if data.left():
        raise ClientHelloError(MALFORMED, "bytes after the protocol_name_list")
    out = []
    while names.left():
        name = names.vector(1, "protocol name")
        if not name.left():
            raise ClientHelloError(MALFORMED, "empty ALPN protocol name")
        out.append(bytes(name.take(name.left(), "protocol name")))
    return tuple(out)


class ClientHelloReader:
    """
    Accumulates what a client sends until its ClientHello is complete (see
    the module docstring).

    @ivar maxSize: the longest ClientHello accepted, in bytes of handshake
        message; also, twice this bounds the bytes buffered (records may
        carry the message in very small pieces).
    @ivar hello: the L{ClientHello} once complete, else C{None}.
    """

    def __init__(self, maxSize: int = DEFAULT_MAX_SIZE) -> None:
        """
        @param maxSize: see the instance variable; > 0.
        @raise ValueError: for C{maxSize} <= 0.
        """
        if maxSize <= 0:
            raise ValueError(f"maxSize must be > 0, not {maxSize!r}")
        self.maxSize = maxSize
        self.hello: ClientHello | None = None
        self._raw = bytearray()
        self._pos = 0  # start of the next record in _raw
        self._handshake = bytearray()
        self._failed: ClientHelloError | None = None

    @property
    def buffered(self) -> bytes:
        """
        Every byte fed so far: what the upstream must get first.
        """
        return bytes(self._raw)

    def feed(self, data: bytes) -> ClientHello | None:
        """
        Add bytes received from the client.

        @param data: the bytes just received.
        @return: C{None} while more bytes are needed, then the
            L{ClientHello} (and the same again if called after it is
            complete, without looking at more bytes, which are only kept in
            L{buffered}).
        @raise ClientHelloError: when the bytes are not a valid, acceptable
            ClientHello (and again on every later call).
        """
        fast = _core.clientHello
        if fast is not None and not self._raw:
            # The compiled core reads the common case (the first bytes hold
            # one record with a whole, valid ClientHello) with the same
            # result, and leaves everything else, refusals included, to
            # the reader below (docs/design-decisions.md, "The PROXY header
            # and the ClientHello, compiled").
            found = fast(data, self.maxSize)
            if found is not None:
                self._raw += data
                self._pos = 5 + 4 + found[3]
                self.hello = ClientHello(*found)
                return self.hello
        self._raw += data
        if self.hello is not None:
            return self.hello
        if self._failed is not None:
            raise self._failed
        try:
            return self._advance()
        except ClientHelloError as e:
            self._failed = e
            raise

    def _advance(self) -> ClientHello | None:
        raw = self._raw
        if self._pos == 0 and raw:
            if raw[0] != _HANDSHAKE:
                raise ClientHelloError(
                    NOT_TLS, f"first byte 0x{raw[0]:02x} is not a TLS handshake"
                )
            if len(raw) > 1 and raw[1] != 3:
                raise ClientHelloError(NOT_TLS, f"record version major {raw[1]}")
        while len(raw) - self._pos >= 5:
            kind, major = raw[self._pos], raw[self._pos + 1]
            length = int.from_bytes(raw[self._pos + 3 : self._pos + 5], "big")
            if kind != _HANDSHAKE:
                raise ClientHelloError(
                    MALFORMED, f"record type {kind} before the ClientHello ended"
                )
            if major != 3:
                raise ClientHelloError(MALFORMED, f"record version major {major}")
            if length == 0 or length > _MAX_RECORD:
                raise ClientHelloError(MALFORMED, f"record length {length}")
            end = self._pos + 5 + length
            if len(raw) < end:
                # Judge the handshake header as soon as it is here, so that
                # an oversized or foreign message fails without waiting.
                if len(self._handshake) < 4:
                    start = self._pos + 5
                    self._checkHeader(self._handshake + raw[start : start + 4])
                break
            self._handshake += raw[self._pos + 5 : end]
            self._pos = end
            hello = self._handshakeDone()
            if hello is not None:
                return hello
        self._checkBuffered()
        return None

    def _checkBuffered(self) -> None:
        if len(self._raw) > 2 * self.maxSize + 5:
            raise ClientHelloError(
                OVERSIZED, f"more than {2 * self.maxSize} bytes without a ClientHello"
            )

    def _checkHeader(self, hs: bytes | bytearray) -> int | None:
        """
        Check the handshake header at the start of C{hs}.

        @return: the message length, or C{None} while fewer than 4 bytes
            are here.
        """
        if not hs:
            return None
        if hs[0] != _CLIENT_HELLO:
            raise ClientHelloError(
                MALFORMED, f"handshake type {hs[0]}, not ClientHello"
            )
        if len(hs) < 4:
            return None
        length = int.from_bytes(hs[1:4], "big")
        if length > self.maxSize:
            raise ClientHelloError(
                OVERSIZED, f"ClientHello of {length} bytes (limit {self.maxSize})"
            )
        return length

    def _handshakeDone(self) -> ClientHello | None:
        hs = self._handshake
        length = self._checkHeader(hs)
        if length is None or len(hs) < 4 + length:
            return None
        if len(hs) > 4 + length:
            raise ClientHelloError(
                MALFORMED, "a record carries bytes after the ClientHello"
            )
        self.hello = parseClientHello(bytes(hs[4:]))
        self._handshake = bytearray()
        return self.hello


class SNIRouter:
    """
    Chooses a target by server name (see the module docstring for the
    matching rules).

    @ivar default: the target for names no route matches and for clients
        without SNI (C{None}: refuse them).
    """

    def __init__(
        self,
        routes: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        default: Any = None,
    ) -> None:
        """
        @param routes: C{(pattern, target)} pairs or a mapping; see L{add}.
        @param default: see the instance variable.
        @raise ValueError: see L{add}.
        """
        self.default = default
        self._exact: dict[str, Any] = {}
        self._wildcards: dict[str, Any] = {}
        items = routes.items() if isinstance(routes, Mapping) else routes
        for pattern, target in items:
            self.add(pattern, target)

    def add(self, pattern: str, target: Any) -> None:
        """
        Add a route.

        @param pattern: a host name (C{www.example.com}) or a wildcard
            (C{*.example.com}).
        @param target: what L{route} returns for names it matches.
        @raise ValueError: for a malformed pattern (a C{*} anywhere but a
            leading C{*.}, an empty name) or a pattern given twice.
        """
        original = pattern
        wildcard = pattern.startswith("*.")
        if wildcard:
            pattern = pattern[2:]
        name = normaliseServerName(pattern)
        if not _isHostName(name):
            raise ValueError(
                f"bad server name pattern {original!r}: use a host name "
                f"(letters, digits and hyphens in dot-separated labels of at "
                f"most 63, RFC 1123) or *.domain"
            )
        table = self._wildcards if wildcard else self._exact
        if name in table:
            raise ValueError(f"server name {original!r} is routed twice")
        table[name] = target

    def match(self, serverName: str | None) -> tuple[str, Any] | None:
        """
        The route a server name matches.

        @param serverName: a name as L{ClientHello.serverName} gives it (any
            case and a trailing dot are accepted too), or C{None}.
        @return: C{(pattern, target)}, or C{None} when no route matches.
        """
        if not serverName:
            return None
        exact = self._exact.get(serverName)
        if exact is not None:
            # A name as the ClientHello gives it is in normal form already.
            return serverName, exact
        try:
            name = normaliseServerName(serverName)
        except ValueError:
            return None
        if name in self._exact:
            return name, self._exact[name]
        if self._wildcards:
            dot = name.find(".")
            while dot != -1:
                suffix = name[dot + 1 :]
                if suffix in self._wildcards:
                    return f"*.{suffix}", self._wildcards[suffix]
                dot = name.find(".", dot + 1)
        return None

    def route(self, serverName: str | None) -> Any:
        """
        The target for a server name.

        @param serverName: see L{match}.
        @return: the matching route's target, else L{default} (which may be
            C{None}: refuse).
        """
        found = self.match(serverName)
        return self.default if found is None else found[1]

    def routes(self) -> list[tuple[str, Any]]:
        """
        Every route as C{(pattern, target)}, exact names first, then
        wildcards (C{*.example.com}), without L{default}.
        """
        wildcards = [(f"*.{name}", t) for name, t in self._wildcards.items()]
        return [*self._exact.items(), *wildcards]

    def targets(self) -> list[Any]:
        """
        Every route's target (exact names first, then wildcards), without
        L{default}.
        """
        return [*self._exact.values(), *self._wildcards.values()]
