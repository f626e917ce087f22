"""
Tests for L{splicetx._ops.accesslog}: the buffered connection log.

These are logic tests (no kernel in them): a L{Clock} drives the delayed
write and a L{StringIO} stands for the file; the real-socket proxy tests
check that the lines come out of C{twist splice-proxy}.
"""

from __future__ import annotations

import io
import json

from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventsFromJSONLogFile, formatEventAsClassicLogText
from twisted.trial.unittest import SynchronousTestCase

from splicetx._ops.accesslog import AccessLog

_FIELDS = dict(
    client="127.0.0.1:5000",
    upstream="127.0.0.1:8080",
    engine="splice",
    bytesClientToUpstream=100,
    bytesUpstreamToClient=2000,
    duration=0.0123,
    reason="done",
    detail="both sides closed",
    fallbackReason=None,
)


class _CountingFile(io.StringIO):
    """
    A text file that counts its C{write} calls.
    """

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class AccessLogTests(SynchronousTestCase):
    """
    L{AccessLog} writes one record per connection, buffered.
    """

    def test_textMatchesTwistedsLine(self) -> None:
        """
        The text form is the line C{twist}'s text observer wrote for the
        old log event, timestamp included.
        """
        out = io.StringIO()
        log = AccessLog(out, "text", reactor=Clock(), flushInterval=0)
        log.connection(False, **_FIELDS)
        line = out.getvalue()
        stamp = line.split(" ", 1)[0]
        import time

        when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        expected = formatEventAsClassicLogText(
            {
                "log_format": "{client} -> {upstream}: {reason} ({detail}); "
                "engine {engine}, {bytesClientToUpstream} bytes up, "
                "{bytesUpstreamToClient} bytes down, {duration:.3f} s",
                "log_time": when,
                "log_namespace": "splicetx.proxy",
                "log_level": LogLevel.info,
                **_FIELDS,
            }
        )
        self.assertEqual(line, expected)

    def test_warnLevel(self) -> None:
        """
        A connection that did not end normally is written at C{warn}.
        """
        out = io.StringIO()
        log = AccessLog(out, "text", reactor=Clock(), flushInterval=0)
        log.connection(True, **{**_FIELDS, "reason": "reset"})
        self.assertIn("[splicetx.proxy#warn] 127.0.0.1:5000 -> ", out.getvalue())
        self.assertIn(": reset (", out.getvalue())

    def test_jsonCompact(self) -> None:
        """
        The JSON form is one object per line with the connection's fields,
        the extra fields, and nothing of Twisted's event baggage.
        """
        out = io.StringIO()
        log = AccessLog(
            out, "json", reactor=Clock(), flushInterval=0, extraFields={"pid": 7}
        )
        log.connection(False, **_FIELDS, extra={"alpn": "h2"})
        (line,) = out.getvalue().splitlines()
        record = json.loads(line)
        for key, value in _FIELDS.items():
            self.assertEqual(record[key], value, key)
        self.assertEqual(record["splicetxEvent"], "connection")
        self.assertEqual(record["level"], "info")
        self.assertEqual((record["pid"], record["alpn"]), (7, "h2"))
        self.assertFalse([k for k in record if k.startswith("log_")])
        self.assertLess(len(line), 400)

    def test_jsonAsTheStandardEncoder(self) -> None:
        """
        The encoder built once writes what C{json.dumps} with the same
        settings writes: text outside ASCII as itself, quotes and control
        characters escaped, large integers and non-finite floats; a record
        that fails to encode leaves the next one unharmed.
        """
        out = io.StringIO()
        log = AccessLog(out, "json", reactor=Clock(), flushInterval=0)
        fields = {
            **_FIELDS,
            "client": 'caf\u00e9 "\n\x01',
            "bytesClientToUpstream": 2**70,
            "duration": float("inf"),
        }
        with self.assertRaises(TypeError):
            log.connection(False, **fields, extra={"odd": object()})
        log.connection(False, **fields, extra={"nested": {"a": [1, None]}})
        (line,) = out.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(
            line,
            json.dumps(record, separators=(",", ":"), ensure_ascii=False),
        )
        self.assertEqual(record["client"], 'caf\u00e9 "\n\x01')
        self.assertIn("caf\u00e9", line)
        self.assertEqual(record["nested"], {"a": [1, None]})

    def test_jsonInTwistsStream(self) -> None:
        """
        With the record separator, Twisted's own JSON log reader reads the
        records.
        """
        out = io.StringIO()
        log = AccessLog(
            out, "json", reactor=Clock(), flushInterval=0, recordSeparator="\x1e"
        )
        log.connection(False, **_FIELDS)
        log.connection(True, **{**_FIELDS, "reason": "error"})
        out.seek(0)
        events = list(eventsFromJSONLogFile(out))
        self.assertEqual([e["reason"] for e in events], ["done", "error"])

    def test_buffered(self) -> None:
        """
        Lines wait for C{flushInterval} and then go out in one write.
        """
        clock = Clock()
        out = _CountingFile()
        log = AccessLog(out, "text", reactor=clock, flushInterval=0.1)
        for _ in range(5):
            log.connection(False, **_FIELDS)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.1)
        self.assertEqual(out.getvalue().count("\n"), 5)
        self.assertEqual(out.writes, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fullBufferWrites(self) -> None:
        """
        A full buffer is written at once, without waiting for the timer.
        """
        out = io.StringIO()
        log = AccessLog(out, "text", reactor=Clock(), bufferSize=300)
        log.connection(False, **_FIELDS)
        log.connection(False, **_FIELDS)
        self.assertEqual(out.getvalue().count("\n"), 2)

    def test_closeFlushes(self) -> None:
        """
        C{close} writes what is buffered, cancels the timer and drops later
        records.
        """
        clock = Clock()
        out = io.StringIO()
        log = AccessLog(out, "json", reactor=clock)
        log.connection(False, **_FIELDS)
        log.close()
        log.connection(False, **_FIELDS)
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_brokenFile(self) -> None:
        """
        A file that refuses the write loses the lines, and nothing raises.
        """
        out = io.StringIO()
        out.close()
        log = AccessLog(out, "text", reactor=Clock(), flushInterval=0)
        log.connection(False, **_FIELDS)
        log.flush()
        self.assertIn("0 buffered", repr(log))

    def test_unknownFormat(self) -> None:
        """
        An unknown format is refused by name.
        """
        e = self.assertRaises(ValueError, AccessLog, io.StringIO(), "xml")
        self.assertIn("'xml'", str(e))
