"""
Tests for L{splicetx._config.values}: one grammar of durations, sizes and
counts, and one error, for every flag and both configuration file formats.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.tap import Options
from splicetx._config.rinetd import parseConfig
from splicetx._config.toml import parseToml
from splicetx._config.values import (
    ConfigError,
    parseBandwidth,
    parseClientPrefix,
    parseCount,
    parseDuration,
    parseRate,
    parseSize,
)

LISTEN = ["--listen", "tcp:0:interface=127.0.0.1"]
UPSTREAMS = ["--connect", "tcp:127.0.0.1:1", "--connect", "tcp:127.0.0.1:2"]


def parse(*args: str) -> Options:
    """
    Parse C{twist splice-proxy} arguments into L{Options}, raising
    L{ConfigError} rather than exiting.
    """
    options = Options()
    options.exitOnUsageError = False
    options.parseOptions(list(args))
    return options


class GrammarTests(SynchronousTestCase):
    """
    The parsers themselves.
    """

    def test_durationUnits(self) -> None:
        """
        Durations take C{ms}, C{s}, C{m} and C{h}, any case, and numbers.
        """
        for text, seconds in [
            ("10", 10.0),
            ("1.5", 1.5),
            ("500ms", 0.5),
            ("500MS", 0.5),
            ("30s", 30.0),
            ("2m", 120.0),
            ("1h", 3600.0),
            (" 250 ms ", 0.25),
            (3, 3.0),
            (0.25, 0.25),
            ("0", 0.0),
        ]:
            self.assertEqual(parseDuration(text, "--x"), seconds, text)

    def test_durationErrors(self) -> None:
        """
        A bad duration is one line that names the option and the value.
        """
        for value, message in [
            ("ten", "--x: expected a number of seconds"),
            ("5 minutes", "--x: expected a number of seconds"),
            ("-1", "--x: must be zero or more"),
            ("inf", "--x: must be a finite number"),
            ("nan", "--x: must be a finite number"),
            (True, "--x: expected a number of seconds"),
        ]:
            e = self.assertRaises(ConfigError, parseDuration, value, "--x")
            self.assertIn(message, str(e))
            self.assertIn(repr(value), str(e))
            self.assertNotIn("\n", str(e))
        e = self.assertRaises(ConfigError, parseDuration, "0ms", "--y", True)
        self.assertIn("--y: must be positive", str(e))

    def test_sizes(self) -> None:
        """
        Sizes take K, M and G (powers of 1024) with or without B and i.
        """
        for text, size in [
            ("1024", 1024),
            ("1K", 1024),
            ("1k", 1024),
            ("1KB", 1024),
            ("1KiB", 1024),
            ("64kib", 65536),
            ("1M", 1 << 20),
            ("2G", 2 << 30),
            ("100B", 100),
            (4096, 4096),
        ]:
            self.assertEqual(parseSize(text, "--s"), size, text)
        for bad, message in [
            ("x", "expected a size in bytes"),
            ("1.5M", "expected a size in bytes"),
            ("0", "must be positive"),
            ("-5", "must be positive"),
        ]:
            e = self.assertRaises(ConfigError, parseSize, bad, "--s")
            self.assertIn(f"--s: {message}", str(e))
        e = self.assertRaises(ConfigError, parseSize, "256", "--m", 512)
        self.assertIn("--m: must be at least 512", str(e))

    def test_counts(self) -> None:
        """
        Counts are whole numbers of at least a minimum; TOML integers count.
        """
        self.assertEqual(parseCount("7", "--n", 0), 7)
        self.assertEqual(parseCount(7, "--n", 0), 7)
        for bad, message in [
            ("x", "expected a whole number"),
            ("1.5", "expected a whole number"),
            (True, "expected a whole number"),
            ("-1", "must be at least 0"),
        ]:
            e = self.assertRaises(ConfigError, parseCount, bad, "--n", 0)
            self.assertIn(f"--n: {message}", str(e))

    def test_rates(self) -> None:
        """
        Rates are N/s, N/m or N/h with an optional burst; the burst is one
        second's worth by default; zero and other text are refused, one
        line naming the option.
        """
        self.assertEqual(tuple(parseRate("5/s", "--r")), (5.0, 5))
        self.assertEqual(tuple(parseRate("5/s:20", "--r")), (5.0, 20))
        self.assertEqual(tuple(parseRate("120/m", "--r")), (2.0, 2))
        self.assertEqual(tuple(parseRate("36/h", "--r")), (0.01, 1))
        self.assertEqual(tuple(parseRate(" 0.5 / s ", "--r")), (0.5, 1))
        for bad, message in [
            ("5", "expected a rate like 5/s"),
            ("5/d", "expected a rate like 5/s"),
            (5, "expected a rate like 5/s"),
            ("-1/s", "expected a rate like 5/s"),
            ("0/s", "must be positive"),
            ("5/s:0", "the burst must be at least 1"),
        ]:
            e = self.assertRaises(ConfigError, parseRate, bad, "--r")
            self.assertIn(f"--r: {message}", str(e))
            self.assertNotIn("\n", str(e))

    def test_bandwidths(self) -> None:
        """
        Bandwidths are sizes per second (powers of 1024) or bytes.
        """
        for text, rate in [
            ("10MB/s", 10 << 20),
            ("500KiB/s", 500 << 10),
            ("1G/s", 1 << 30),
            ("4096", 4096),
            (4096, 4096),
        ]:
            self.assertEqual(parseBandwidth(text, "--b"), rate, text)
        for bad in ["fast", "0/s", "-1MB/s", "10MB/m"]:
            e = self.assertRaises(ConfigError, parseBandwidth, bad, "--b")
            self.assertIn("--b: expected bytes per second like 10MB/s", str(e))

    def test_clientPrefix(self) -> None:
        """
        A client prefix is IPv4,IPv6 prefix lengths in range.
        """
        self.assertEqual(parseClientPrefix("24,64"), (24, 64))
        self.assertEqual(parseClientPrefix("32, 128"), (32, 128))
        for bad in ["24", "33,128", "0,64", "24,129", "a,b", "24,64,1"]:
            e = self.assertRaises(ConfigError, parseClientPrefix, bad)
            self.assertIn("--client-prefix: expected IPv4,IPv6 prefix", str(e))

    @given(st.integers(min_value=0, max_value=10**6))
    def test_millisecondsAgree(self, ms: int) -> None:
        """
        C{Nms} is N thousandths of C{N/1000} seconds written plainly.
        """
        self.assertAlmostEqual(
            parseDuration(f"{ms}ms", "--x"), parseDuration(str(ms / 1000), "--x")
        )

    def test_errorLocations(self) -> None:
        """
        L{ConfigError} says file and line when it has them, and nests.
        """
        self.assertEqual(str(ConfigError("p")), "p")
        self.assertEqual(str(ConfigError("p", "f.conf")), "f.conf: p")
        self.assertEqual(str(ConfigError("p", "f.conf", 3)), "f.conf:3: p")
        self.assertEqual(
            str(ConfigError("p", "f.toml").within("forward[0]")),
            "f.toml: forward[0]: p",
        )


class EveryFlagTests(SynchronousTestCase):
    """
    C{500ms} means half a second on every duration flag.
    """

    def test_serviceDurations(self) -> None:
        """
        The service's duration flags all take units.
        """
        config = parse(
            *LISTEN,
            "--connect",
            "tcp:127.0.0.1:1",
            "--accept-proxy-protocol",
            "--connect-timeout",
            "500ms",
            "--idle-timeout",
            "500ms",
            "--half-close-timeout",
            "500ms",
            "--drain-timeout",
            "500ms",
            "--proxy-protocol-timeout",
            "500ms",
        ).proxyConfig
        self.assertEqual(
            (
                config.connectTimeout,
                config.idleTimeout,
                config.halfCloseTimeout,
                config.drainTimeout,
                config.proxyProtocolTimeout,
            ),
            (0.5,) * 5,
        )

    def test_poolDurations(self) -> None:
        """
        The pool and SNI duration flags take the same units.
        """
        (forward,) = parse(
            *LISTEN,
            *UPSTREAMS,
            "--fail-timeout",
            "500ms",
            "--failover-timeout",
            "500ms",
            "--health-check-interval",
            "500ms",
            "--health-check-timeout",
            "500ms",
            "--sni-timeout",
            "500ms",
        ).proxyConfig.forwards
        pool = forward.pool
        assert pool is not None and pool.healthCheck is not None
        self.assertEqual(
            (
                pool.failTimeout,
                pool.failoverTimeout,
                pool.healthCheck.interval,
                pool.healthCheck.timeout,
                forward.sniTimeout,
            ),
            (0.5,) * 5,
        )

    def test_upstreamOption(self) -> None:
        """
        An upstream's own C{fail-timeout=} takes units too.
        """
        (forward,) = parse(
            *LISTEN,
            "--connect",
            "tcp:127.0.0.1:1 fail-timeout=500ms",
            "--connect",
            "tcp:127.0.0.1:2",
        ).proxyConfig.forwards
        assert forward.pool is not None
        self.assertEqual(forward.pool.upstreams[0].failTimeout, 0.5)

    def test_sizesOnFlags(self) -> None:
        """
        Size flags share one grammar: C{--pipe-size 64KiB}, C{--sni-max-size 1K}.
        """
        options = parse(
            *LISTEN,
            "--connect",
            "tcp:127.0.0.1:1",
            "--pipe-size",
            "64KiB",
            "--sni-max-size",
            "1K",
        )
        self.assertEqual(options.proxyConfig.pipeSize, 65536)
        self.assertEqual(options.proxyConfig.forwards[0].sniMaxSize, 1024)

    def test_badDurationNamesFlag(self) -> None:
        """
        A bad duration on any flag is one line naming that flag.
        """
        for flag in ["--idle-timeout", "--fail-timeout", "--sni-timeout"]:
            e = self.assertRaises(ConfigError, parse, *LISTEN, *UPSTREAMS, flag, "soon")
            self.assertIn(f"{flag}: expected a number of seconds", str(e))


class FileFormatTests(SynchronousTestCase):
    """
    Both file formats read durations and sizes with the same grammar as the
    flags.
    """

    def test_rinetdDurations(self) -> None:
        """
        A rinetd forward's pool options take units.
        """
        config = parseConfig(
            "127.0.0.1 8080 127.0.0.1 81 [fail-timeout=500ms,"
            "health-check-interval=500ms,failover-timeout=500ms]\n"
            "upstream 127.0.0.1 82 [fail-timeout=500ms]\n",
            "f.conf",
        )
        pool = config.forwards[0].pool
        assert pool is not None and pool.healthCheck is not None
        self.assertEqual(
            (
                pool.failTimeout,
                pool.healthCheck.interval,
                pool.failoverTimeout,
                pool.upstreams[1].failTimeout,
            ),
            (0.5,) * 4,
        )

    def test_tomlDurations(self) -> None:
        """
        TOML takes the same text (C{"500ms"}) or a number of seconds.
        """
        for value in ['"500ms"', "0.5"]:
            text = (
                '[[forward]]\nlisten = "tcp:1"\n'
                'connect = ["tcp:a:1", {endpoint = "tcp:b:1", fail-timeout = '
                f"{value}}}]\nfail-timeout = {value}\nfailover-timeout = {value}\n"
                f"sni-timeout = {value}\nhealth-check = {{interval = {value}, "
                f"timeout = {value}}}\n"
            )
            (forward,) = parseToml(text).forwards
            pool = forward.pool
            assert pool is not None and pool.healthCheck is not None
            self.assertEqual(
                (
                    pool.failTimeout,
                    pool.failoverTimeout,
                    pool.upstreams[1].failTimeout,
                    pool.healthCheck.interval,
                    pool.healthCheck.timeout,
                    forward.sniTimeout,
                ),
                (0.5,) * 6,
                value,
            )

    def test_tomlSizes(self) -> None:
        """
        TOML sizes take the flags' text (C{"1K"}) or a number of bytes.
        """
        for value, size in [('"1K"', 1024), ("2048", 2048)]:
            text = (
                '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:a:1"\n'
                f"sni-max-size = {value}\n"
            )
            self.assertEqual(parseToml(text).forwards[0].sniMaxSize, size)

    def test_sameErrorEverywhere(self) -> None:
        """
        A bad duration is the same L{ConfigError} from a flag and from each
        file format, naming where.
        """
        flag = self.assertRaises(
            ConfigError, parse, *LISTEN, *UPSTREAMS, "--fail-timeout", "soon"
        )
        rinetd = self.assertRaises(
            ConfigError,
            parseConfig,
            "127.0.0.1 8080 127.0.0.1 81 [fail-timeout=soon]\n",
            "f.conf",
        )
        toml = self.assertRaises(
            ConfigError,
            parseToml,
            '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:a:1"\n'
            'fail-timeout = "soon"\n',
            "f.toml",
        )
        self.assertIn("--fail-timeout: expected a number of seconds", str(flag))
        self.assertIn(
            "f.conf:1: fail-timeout: expected a number of seconds", str(rinetd)
        )
        self.assertIn(
            "f.toml: forward[0].fail-timeout: expected a number of seconds", str(toml)
        )
