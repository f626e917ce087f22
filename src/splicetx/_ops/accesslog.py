"""
The access log: one line per finished connection, written without going
through C{twisted.logger}.

A proxied connection that lasts a millisecond cannot afford Twisted's log
pipeline for its one event: building the event, the publisher and filter
observers, C{formatEvent}'s format-string parsing, C{formatTime}'s time-zone
object and a C{flush()} per event cost about a quarter of such a
connection's CPU.  L{AccessLog} formats the same fields itself (the
timestamp once a second), keeps the lines in a buffer and writes them in
one C{write} at most L{AccessLog.flushInterval} seconds after the first
one, or when the buffer is full, or on L{AccessLog.flush} (the service
calls it when it stops).  nginx's C{access_log ... buffer= flush=} is the
model.

Two forms:

  - C{text}: the line C{twist}'s text log observer would have written for
    the event, C{2026-12-01T10:00:00+0000 [splicetx.proxy#info] 127.0.0.1:5000
    -> 127.0.0.1:8080: done (both sides closed); engine splice, 100 bytes up,
    100 bytes down, 0.001 s} (a copied connection says why after its engine:
    C{engine copy (the client uses TLS)});
  - C{json}: one compact JSON object per line with the fields only (about
    300 bytes), C{{"time": ..., "level": "info", "splicetxEvent":
    "connection", "client": ..., ...}}; written into C{twist}'s own JSON log
    stream, each record starts with the C{RS} character (U+001E) as
    C{twist}'s records do, so C{twisted.logger.eventsFromJSONLogFile} and
    C{jq --seq} read the mixed stream.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

from zope.interface import implementer

from splicetx._proxy.interfaces import IAccessLog
from splicetx._relay.runtime import defaultReactor

__all__ = ["AccessLog", "ACCESS_LOG_FORMATS"]

#: The forms an access log can be written in.
ACCESS_LOG_FORMATS = ("text", "json")

#: The namespace of the access log's lines (the one the Twisted event had).
NAMESPACE = "splicetx.proxy"

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _makeDumps() -> Any:
    """
    C{_encoder.encode} for a record (a flat dict of text, numbers and
    C{None}).  C{JSONEncoder.encode} builds the C encoder anew on every
    call (about a quarter of a record's cost); where the C accelerator
    exists, it is built once here with C{encode}'s own arguments.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encoder.encode
    # No circular-reference markers: a record is flat, and a dict of
    # markers kept across calls would keep an entry an encoding error left.
    encodeOnce = make(
        None,
        _encoder.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def dumps(record: dict[str, Any]) -> str:
        return "".join(encodeOnce(record, 0))

    return dumps


_dumps = _makeDumps()


@implementer(IAccessLog)
class AccessLog:
    """
    A buffered writer of connection records.

    @ivar outFile: the text file the lines go to.
    @ivar format: C{"text"} or C{"json"}.
    @ivar recordSeparator: written before each JSON record (C{""} or
        C{"\\x1e"}).
    @ivar flushInterval: the longest a line waits in the buffer, seconds.
    @ivar bufferSize: characters buffered before a write regardless of time.
    @ivar extraFields: fields added to every JSON record (e.g. a worker's
        C{pid} and C{worker} index), or C{None}.
    """

    __slots__ = (
        "outFile",
        "format",
        "recordSeparator",
        "flushInterval",
        "bufferSize",
        "extraFields",
        "_reactor",
        "_lines",
        "_size",
        "_flushCall",
        "_second",
        "_stamp",
        "_closed",
    )

    def __init__(
        self,
        outFile: IO[str],
        format: str = "text",
        *,
        reactor: Any = None,
        recordSeparator: str = "",
        flushInterval: float = 0.1,
        bufferSize: int = 64 * 1024,
        extraFields: dict[str, Any] | None = None,
    ) -> None:
        """
        @param outFile: see L{outFile}.
        @param format: see L{format}.
        @param reactor: schedules the delayed write (default: the global
            reactor, looked up when first needed).
        @param recordSeparator: see L{recordSeparator}.
        @param flushInterval: see L{flushInterval}; C{0} writes every line
            at once.
        @param bufferSize: see L{bufferSize}.
        @param extraFields: see L{extraFields}.
        @raise ValueError: for an unknown format.
        """
        if format not in ACCESS_LOG_FORMATS:
            raise ValueError(
                f"unknown access log format {format!r}; use "
                + " or ".join(ACCESS_LOG_FORMATS)
            )
        self.outFile = outFile
        self.format = format
        self.recordSeparator = recordSeparator
        self.flushInterval = flushInterval
        self.bufferSize = bufferSize
        self.extraFields = extraFields or None
        self._reactor = reactor
        self._lines: list[str] = []
        self._size = 0
        self._flushCall: Any = None
        self._second = -1
        self._stamp = ""
        self._closed = False

    def connection(
        self,
        warn: bool,
        client: str,
        upstream: str,
        engine: str,
        bytesClientToUpstream: int,
        bytesUpstreamToClient: int,
        duration: float,
        reason: str,
        detail: str,
        fallbackReason: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """
        Record one finished connection.

        @param warn: C{True} for a connection that did not end normally (the
            line's level is C{warn}, else C{info}).
        @param client: the client's address, as text.
        @param upstream: the upstream's address or endpoint, as text.
        @param engine: C{"splice"}, C{"copy"} or C{"none"}.
        @param bytesClientToUpstream: bytes relayed from the client.
        @param bytesUpstreamToClient: bytes relayed to the client.
        @param duration: seconds the connection lasted.
        @param reason: how it ended (a L{RelayResult} reason).
        @param detail: the human-readable explanation.
        @param fallbackReason: why the copy engine ran, or C{None}.
        @param extra: more fields for the JSON form (e.g. C{peer}, C{alpn}).
        """
        if self._closed:
            return
        now = time.time()
        level = "warn" if warn else "info"
        if self.format == "text":
            if fallbackReason is not None:
                engine = f"{engine} ({fallbackReason})"
            line = (
                f"{self._timestamp(now)} [{NAMESPACE}#{level}] {client} -> "
                f"{upstream}: {reason} ({detail}); engine {engine}, "
                f"{bytesClientToUpstream} bytes up, {bytesUpstreamToClient} "
                f"bytes down, {duration:.3f} s\n"
            )
        else:
            record: dict[str, Any] = {
                "time": round(now, 6),
                "level": level,
                "splicetxEvent": "connection",
                "client": client,
                "upstream": upstream,
                "engine": engine,
                "bytesClientToUpstream": bytesClientToUpstream,
                "bytesUpstreamToClient": bytesUpstreamToClient,
                "duration": round(duration, 6),
                "reason": reason,
                "detail": detail,
                "fallbackReason": fallbackReason,
            }
            if self.extraFields:
                record.update(self.extraFields)
            if extra:
                record.update(extra)
            line = self.recordSeparator + _dumps(record) + "\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.bufferSize or not self.flushInterval:
            self.flush()
        elif self._flushCall is None:
            self._reactor = defaultReactor(self._reactor)
            self._flushCall = self._reactor.callLater(self.flushInterval, self.flush)

    def flush(self) -> None:
        """
        Write the buffered lines now (one C{write} and one C{flush}).  A
        file that refuses (a full disk, a closed pipe) loses those lines,
        never the connection or the process.
        """
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self.outFile.write(text)
            self.outFile.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """
        Write what is buffered and stop recording: later records are
        dropped, and no timer is left behind.
        """
        self.flush()
        self._closed = True

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
        return self._stamp

    def __repr__(self) -> str:
        name = getattr(self.outFile, "name", self.outFile)
        return f"<AccessLog {self.format} to {name!r}, {len(self._lines)} buffered>"
