"""
Tests for L{splicetx._config.pools} (the upstream argument syntax),
L{splicetx._config.toml} (the TOML file format) and the pool builders of
L{splicetx._app.poolservice}.
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.poolservice import buildHealthChecker, buildPool, buildRouter
from splicetx._config.model import HealthCheckSpec, PoolSpec, UpstreamSpec
from splicetx._config.pools import (
    groupRoutes,
    parseRouteSNI,
    parseUpstream,
    poolSpecFromOptions,
)
from splicetx._config.toml import parseToml
from splicetx._config.values import ConfigError, decodeEscapes, parseDuration
from splicetx._pool.balance import LeastConnections, SourceHash


class UpstreamSyntaxTests(SynchronousTestCase):
    """
    L{parseUpstream}: an endpoint string and trailing nginx-style options.
    """

    def test_plain(self) -> None:
        """
        An endpoint alone has weight 1 and the pool's passive defaults.
        """
        self.assertEqual(
            parseUpstream("tcp:10.0.0.1:80"), UpstreamSpec("tcp:10.0.0.1:80", 1)
        )

    def test_options(self) -> None:
        """
        Trailing options set weight, max-fails and fail-timeout.
        """
        self.assertEqual(
            parseUpstream(
                "tcp:host=a:port=80  weight=3 max-fails=0 fail-timeout=500ms"
            ),
            UpstreamSpec("tcp:host=a:port=80", 3, 0, 0.5),
        )

    def test_endpointKeepsColonOptions(self) -> None:
        """
        Endpoint fields separated by C{:} (even C{timeout=}) stay in the
        endpoint; words that are not pool options stay too.
        """
        self.assertEqual(
            parseUpstream("tcp:a:80:timeout=3 weight=2").endpoint, "tcp:a:80:timeout=3"
        )
        self.assertEqual(
            parseUpstream("unix:/tmp/my sock weight=2"),
            UpstreamSpec("unix:/tmp/my sock", 2),
        )

    def test_errors(self) -> None:
        """
        Bad weights, repeated options and a missing endpoint are one-line
        errors.
        """
        for text in [
            "tcp:a:80 weight=0",
            "tcp:a:80 weight=x",
            "tcp:a:80 weight=1 weight=2",
            "tcp:a:80 max-fails=-1",
            "tcp:a:80 fail-timeout=0",
            "weight=2",
            "",
        ]:
            with self.subTest(text):
                with self.assertRaises(ConfigError) as caught:
                    parseUpstream(text)
                self.assertNotIn("\n", str(caught.exception))

    def test_seconds(self) -> None:
        """
        Durations take C{ms}, C{s} and C{m} suffixes.
        """
        self.assertEqual(parseDuration("10", "x", positive=True), 10.0)
        self.assertEqual(parseDuration("250ms", "x", positive=True), 0.25)
        self.assertEqual(parseDuration("2m", "x", positive=True), 120.0)
        self.assertEqual(parseDuration(3, "x", positive=True), 3.0)
        self.assertEqual(parseDuration("0", "x"), 0.0)
        for bad in ["0", "-1", "ten", "nan", True]:
            with self.assertRaises(ConfigError):
                parseDuration(bad, "x", positive=True)

    def test_escapes(self) -> None:
        """
        Health-check strings take backslash escapes.
        """
        self.assertEqual(decodeEscapes(r"PING\r\n"), b"PING\r\n")
        self.assertEqual(decodeEscapes(r"\x00é"), b"\x00\xc3\xa9")


class OptionsTests(SynchronousTestCase):
    """
    L{poolSpecFromOptions}: pool options given as strings.
    """

    def test_defaults(self) -> None:
        """
        No options: round robin, nginx's passive defaults, no active checks.
        """
        spec = poolSpecFromOptions([UpstreamSpec("tcp:a:1")], {})
        self.assertEqual(spec, PoolSpec((UpstreamSpec("tcp:a:1"),)))

    def test_all(self) -> None:
        """
        Every option is read, with escapes in the health-check strings.
        """
        options = {
            "balance": "source",
            "max-fails": "3",
            "fail-timeout": "20s",
            "connect-tries": "2",
            "failover-timeout": "7",
            "health-check-interval": "5",
            "health-check-timeout": "1",
            "health-check-rise": "1",
            "health-check-fall": "4",
            "health-check-send": r"PING\r\n",
            "health-check-expect": "+PONG",
        }
        spec = poolSpecFromOptions([UpstreamSpec("tcp:a:1")], options)
        self.assertEqual(
            (spec.balance, spec.maxFails, spec.failTimeout, spec.maxTries),
            ("source", 3, 20.0, 2),
        )
        self.assertEqual(spec.failoverTimeout, 7.0)
        self.assertEqual(
            spec.healthCheck, HealthCheckSpec(5.0, 1.0, 1, 4, b"PING\r\n", b"+PONG")
        )

    def test_errors(self) -> None:
        """
        Bad values name the option, with the given prefix.
        """
        ups = [UpstreamSpec("tcp:a:1")]
        for options, expected in [
            ({"balance": "fastest"}, "--balance: unknown 'fastest'"),
            ({"max-fails": "x"}, "--max-fails"),
            ({"health-check-interval": "-1"}, "--health-check-interval"),
            ({"health-check-rise": "2"}, "--health-check-rise needs"),
        ]:
            with self.subTest(expected):
                with self.assertRaises(ConfigError) as caught:
                    poolSpecFromOptions(ups, options, "--")
                self.assertIn(expected, str(caught.exception))
        with self.assertRaises(ConfigError):
            poolSpecFromOptions([], {})

    def test_intervalZero(self) -> None:
        """
        C{health-check-interval} 0 means no active checks.
        """
        spec = poolSpecFromOptions(
            [UpstreamSpec("tcp:a:1")], {"health-check-interval": "0"}
        )
        self.assertIsNone(spec.healthCheck)


class RouteSyntaxTests(SynchronousTestCase):
    """
    L{parseRouteSNI} and L{groupRoutes}.
    """

    def test_parse(self) -> None:
        """
        C{NAME=UPSTREAM}, the upstream with options.
        """
        self.assertEqual(
            parseRouteSNI("*.example.com=tcp:10.0.0.5:443 weight=2"),
            ("*.example.com", UpstreamSpec("tcp:10.0.0.5:443", 2)),
        )

    def test_bad(self) -> None:
        """
        A missing C{=}, name or endpoint, or a bad pattern, is refused.
        """
        for text in ["tcp:1.2.3.4:443", "=tcp:a:1", "a.example=", "www.*.com=tcp:a:1"]:
            with self.subTest(text):
                with self.assertRaises(ConfigError):
                    parseRouteSNI(text)

    def test_group(self) -> None:
        """
        The same name (in any case) given twice makes one pool of two.
        """
        routes = [
            parseRouteSNI("A.example=tcp:a:1"),
            parseRouteSNI("*.b.example=tcp:b:1"),
            parseRouteSNI("a.example.=tcp:c:1"),
        ]
        grouped = groupRoutes(routes)
        self.assertEqual([p for p, _ in grouped], ["A.example", "*.b.example"])
        self.assertEqual([u.endpoint for u in grouped[0][1]], ["tcp:a:1", "tcp:c:1"])


SAMPLE = r"""
[defaults]
balance = "leastconn"
fail-timeout = "30s"

[[forward]]
name = "web"
listen = "tcp:8080:interface=127.0.0.1"
connect = [
    "tcp:127.0.0.1:8081",
    { endpoint = "tcp:127.0.0.1:8082", weight = 3, max-fails = 2 },
]
health-check = { interval = 5, rise = 1, send = "PING\r\n", expect = "+PONG" }
allow = ["127.0.0.0/8"]

[[forward]]
listen = ["tcp:8443", "tcp6:8443"]
balance = "source"
connect = "tcp:127.0.0.1:9000"
sni-timeout = 3

[forward.route-sni]
"www.example.com" = "tcp:127.0.0.1:9001"
"*.example.com" = ["tcp:127.0.0.1:9002", "tcp:127.0.0.1:9003 weight=2"]
"api.example.com" = { connect = ["tcp:127.0.0.1:9004"], balance = "random" }
"""


class TomlTests(SynchronousTestCase):
    """
    L{parseToml}: per-forward pools in TOML.
    """

    def test_sample(self) -> None:
        """
        The documented example parses into forwards, pools and routes, with
        the defaults applied.
        """
        web, tls = parseToml(SAMPLE).forwards
        self.assertEqual(web.name, "web")
        self.assertEqual(web.listens, ("tcp:8080:interface=127.0.0.1",))
        assert web.pool is not None
        self.assertEqual(web.pool.balance, "leastconn")
        self.assertEqual(web.pool.failTimeout, 30.0)
        self.assertEqual(
            web.pool.upstreams,
            (
                UpstreamSpec("tcp:127.0.0.1:8081"),
                UpstreamSpec("tcp:127.0.0.1:8082", 3, 2),
            ),
        )
        self.assertEqual(
            web.pool.healthCheck,
            HealthCheckSpec(5.0, rise=1, send=b"PING\r\n", expect=b"+PONG"),
        )
        assert web.acl is not None
        self.assertEqual([r.text for r in web.acl.allow], ["127.0.0.0/8"])
        self.assertEqual(tls.name, "forward-1")
        self.assertEqual(tls.listens, ("tcp:8443", "tcp6:8443"))
        self.assertEqual(tls.sniTimeout, 3.0)
        patterns = [p for p, _ in tls.routes]
        self.assertEqual(
            patterns, ["www.example.com", "*.example.com", "api.example.com"]
        )
        wild = tls.routes[1][1]
        self.assertEqual(wild.balance, "source")
        self.assertEqual([u.weight for u in wild.upstreams], [1, 2])
        self.assertEqual(tls.routes[2][1].balance, "random")

    def test_unknownKey(self) -> None:
        """
        A key the format does not have is an error that names it.
        """
        text = '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:a:1"\nidle-timeout = 60\n'
        with self.assertRaises(ConfigError) as caught:
            parseToml(text)
        self.assertIn("idle-timeout", str(caught.exception))

    def test_errors(self) -> None:
        """
        Invalid files are one-line errors that say where.
        """
        cases = {
            "not TOML": "[[forward]\n",
            "no [[forward]]": "",
            "'listen' is required": '[[forward]]\nconnect = "tcp:a:1"\n',
            "needs 'connect'": '[[forward]]\nlisten = "tcp:1"\n',
            "forward[0].connect[1]: upstream 'tcp:b:1': weight": (
                '[[forward]]\nlisten = "tcp:1"\n'
                'connect = ["tcp:a:1", "tcp:b:1 weight=0"]\n'
            ),
            "forward[0].balance": (
                '[[forward]]\nlisten="tcp:1"\nconnect="tcp:a:1"\nbalance="x"\n'
            ),
            "'interval' is required": (
                '[[forward]]\nlisten="tcp:1"\nconnect="tcp:a:1"\nhealth-check={rise=1}\n'
            ),
            "used twice": (
                '[[forward]]\nname="a"\nlisten="tcp:1"\nconnect="tcp:a:1"\n'
                '[[forward]]\nname="a"\nlisten="tcp:2"\nconnect="tcp:a:1"\n'
            ),
            "routed twice": (
                '[[forward]]\nlisten="tcp:1"\n[forward.route-sni]\n'
                '"a.example"="tcp:a:1"\n"A.example."="tcp:b:1"\n'
            ),
        }
        for expected, text in cases.items():
            with self.subTest(expected):
                with self.assertRaises(ConfigError) as caught:
                    parseToml(text)
                self.assertIn(expected, str(caught.exception))
                self.assertNotIn("\n", str(caught.exception))


class BuilderTests(SynchronousTestCase):
    """
    The builders make working objects from the specs.
    """

    def test_buildPool(self) -> None:
        """
        L{buildPool} makes members from the endpoint strings, with the pool's
        passive defaults unless a member sets its own.
        """
        clock = Clock()
        spec = PoolSpec(
            (
                UpstreamSpec("tcp:127.0.0.1:1", 2),
                UpstreamSpec("tcp:127.0.0.1:2", 1, 5, 1.0),
            ),
            balance="leastconn",
            maxFails=3,
            failTimeout=20,
            maxTries=2,
            failoverTimeout=9,
        )
        pool = buildPool(spec, lambda s: clientFromString(clock, s), "web", 4.0, clock)
        a, b = pool.members
        self.assertEqual(
            (a.description, a.weight, a.maxFails, a.failTimeout),
            ("tcp:127.0.0.1:1", 2, 3, 20.0),
        )
        self.assertEqual((b.maxFails, b.failTimeout), (5, 1.0))
        self.assertIsInstance(pool.balancer, LeastConnections)
        self.assertEqual(
            (pool.name, pool.maxTries, pool.tryTimeout, pool.totalTimeout),
            ("web", 2, 4.0, 9),
        )

    def test_buildCheckerAndRouter(self) -> None:
        """
        L{buildHealthChecker} probes the pool's members; L{buildRouter} maps
        names to pools with the default for the rest.
        """
        clock = Clock()
        spec = PoolSpec((UpstreamSpec("tcp:127.0.0.1:1"),), balance="source")
        pool = buildPool(spec, lambda s: clientFromString(clock, s), reactor=clock)
        self.assertIsInstance(pool.balancer, SourceHash)
        checker = buildHealthChecker(pool, HealthCheckSpec(2.0, fall=4), clock)
        self.assertEqual(checker.upstreams, pool.members)
        self.assertEqual((checker.interval, checker.fall), (2.0, 4))
        other = buildPool(spec, lambda s: clientFromString(clock, s), reactor=clock)
        router = buildRouter([("*.example.com", other)], pool)
        self.assertIs(router.route("a.example.com"), other)
        self.assertIs(router.route("b.example.org"), pool)
