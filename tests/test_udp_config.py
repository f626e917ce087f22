# -*- test-case-name: tests.test_udp_config -*-
"""
UDP forwards as the command line, rinetd files and TOML files write them:
what they read into, and the one-line errors for what a UDP forward cannot
be.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.tap import Options
from splicetx._config.rinetd import parseConfig
from splicetx._config.toml import parseToml
from splicetx._config.values import ConfigError


def _options(*args: str) -> Options:
    options = Options()
    options.exitOnUsageError = False
    options.parseOptions(list(args))
    return options


class CommandLineTests(SynchronousTestCase):
    """
    C{--listen udp:...} with C{--connect udp:...}.
    """

    def test_udpForward(self) -> None:
        """
        A udp: forward with the UDP options reads into the model.
        """
        config = _options(
            "--listen",
            "udp:5353:interface=127.0.0.1",
            "--connect",
            "udp:127.0.0.1:53",
            "--udp-idle-timeout",
            "30s",
            "--udp-max-sessions",
            "100",
        ).proxyConfig
        self.assertTrue(config.forwards[0].isUDP)
        self.assertIsNone(config.forwards[0].pool)
        self.assertEqual((config.udpIdleTimeout, config.udpMaxSessions), (30.0, 100))

    def test_defaults(self) -> None:
        """
        The defaults: 60 s idle, 10,000 sessions.
        """
        config = _options(
            "--listen", "udp:5353", "--connect", "udp:127.0.0.1:53"
        ).proxyConfig
        self.assertEqual((config.udpIdleTimeout, config.udpMaxSessions), (60.0, 10000))

    def test_poolBalancesBySourceByDefault(self) -> None:
        """
        Several UDP upstreams make a pool hashed by client address unless
        C{--balance} says otherwise.
        """
        args = ["--listen", "udp:5353", "--connect", "udp:127.0.0.1:53"]
        args += ["--connect", "udp:127.0.0.2:53 weight=2"]
        pool = _options(*args).proxyConfig.forwards[0].pool
        assert pool is not None
        self.assertEqual(pool.balance, "source")
        self.assertEqual([u.weight for u in pool.upstreams], [1, 2])
        pool = _options(*args, "--balance", "roundrobin").proxyConfig.forwards[0].pool
        assert pool is not None
        self.assertEqual(pool.balance, "roundrobin")

    def test_refused(self) -> None:
        """
        Mixed UDP and TCP, UDP with --workers, SNI routes, health checks,
        the PROXY protocol and bad UDP values are one-line errors.
        """
        cases = {
            ("--listen", "udp:5353", "--connect", "tcp:127.0.0.1:53"): "udp: upstreams",
            ("--listen", "tcp:5353", "--connect", "udp:127.0.0.1:53"): "udp: endpoints",
            (
                "--listen",
                "udp:5353",
                "--listen",
                "tcp:5354",
                "--connect",
                "udp:127.0.0.1:53",
            ): "udp: endpoints",
            (
                "--listen",
                "udp:5353",
                "--connect",
                "udp:127.0.0.1:53",
                "--workers",
                "2",
            ): "--workers",
            (
                "--listen",
                "udp:5353",
                "--connect",
                "udp:127.0.0.1:53",
                "--proxy-protocol",
                "v2",
            ): "--proxy-protocol",
            (
                "--listen",
                "udp:5353",
                "--connect",
                "udp:127.0.0.1:53",
                "--health-check-interval",
                "5",
            ): "health checks",
            (
                "--listen",
                "udp:5353",
                "--connect",
                "udp:127.0.0.1:53",
                "--udp-idle-timeout",
                "0",
            ): "--udp-idle-timeout",
            (
                "--listen",
                "udp:5353",
                "--connect",
                "udp:127.0.0.1:53",
                "--udp-max-sessions",
                "0",
            ): "--udp-max-sessions",
            ("--listen", "udp:5353:interface=nowhere", "--connect", "udp:h:1"): (
                "interface must be an IP address"
            ),
            ("--listen", "udp:5353", "--connect", "udp:127.0.0.1"): "port",
        }
        for args, expected in cases.items():
            with self.assertRaises(ConfigError, msg=args) as caught:
                _options(*args)
            self.assertIn(expected, str(caught.exception), args)
            self.assertNotIn("\n", str(caught.exception))


class RinetdTests(SynchronousTestCase):
    """
    rinetd's C{/udp} ports.
    """

    def test_udpForward(self) -> None:
        """
        C{PORT/udp} on both ports makes a UDP forward; C{[timeout=N]} is its
        session idle timeout, as in rinetd; a TCP forward on the same port
        does not overlap it.
        """
        config = parseConfig(
            "127.0.0.1 5353/udp 127.0.0.1 53/udp [timeout=15]\n"
            "upstream 127.0.0.2 53\n"
            "127.0.0.1 5353 127.0.0.1 53\n"
        )
        udp, tcp = config.forwards
        self.assertEqual(udp.listens, ("udp:5353:interface=127.0.0.1",))
        self.assertTrue(udp.isUDP)
        self.assertFalse(tcp.isUDP)
        self.assertEqual(udp.udpIdleTimeout, 15.0)
        assert udp.pool is not None
        self.assertEqual(udp.pool.balance, "source")
        self.assertEqual(
            [u.endpoint for u in udp.pool.upstreams],
            ["udp:host=127.0.0.1:port=53", "udp:host=127.0.0.2:port=53"],
        )

    def test_mixedRefused(self) -> None:
        """
        A UDP bind port with a TCP connect port is refused, naming the line.
        """
        for line in ("1.2.3.4 53/udp 127.0.0.1 53", "1.2.3.4 53/udp 127.0.0.1 53/tcp"):
            with self.assertRaises(ConfigError) as caught:
                parseConfig("# x\n" + line, "f.conf")
            self.assertTrue(str(caught.exception).startswith("f.conf:2: "))


class TomlTests(SynchronousTestCase):
    """
    TOML forwards on C{udp:} endpoints.
    """

    def test_udpForward(self) -> None:
        """
        A TOML UDP forward with a pool and its own idle timeout.
        """
        (forward,) = parseToml(
            "[[forward]]\n"
            'listen = "udp:5353"\n'
            'connect = ["udp:127.0.0.1:53", "udp:127.0.0.2:53"]\n'
            'udp-idle-timeout = "2m"\n'
        ).forwards
        self.assertTrue(forward.isUDP)
        self.assertEqual(forward.udpIdleTimeout, 120.0)
        assert forward.pool is not None
        self.assertEqual(forward.pool.balance, "source")
