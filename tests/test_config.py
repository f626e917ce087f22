"""
Tests for L{splicetx._config.rinetd}: reading rinetd's configuration format.
"""

from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from splicetx._config.rinetd import (
    escapeEndpointValue,
    parseConfig,
    parseConfigFile,
)
from splicetx._config.values import ConfigError


def fakeResolve(host: str) -> str:
    """
    Resolve only C{localhost}, without touching the system resolver.
    """
    if host == "localhost":
        return "127.0.0.1"
    raise OSError(f"no such host {host}")


def parse(text: str):
    """
    Parse C{text} as file C{rinetd.conf} with L{fakeResolve}.
    """
    return parseConfig(text, "rinetd.conf", fakeResolve)


GOOD = """\
# rinetd.conf for tests
allow 127.0.0.*          # global allow
deny 127.0.0.66

0.0.0.0 8080 127.0.0.1 80
allow 127.0.0.1/32
deny 127.0.0.2

::1   8081   ::1   81   [src=::1]
127.0.0.1 8082 localhost 82/tcp [timeout=30]
localhost 8083 127.0.0.1 83

logfile /var/log/rinetd.log
pidlogfile /var/run/rinetd.pid
LogCommon
"""


class GoodConfigTests(SynchronousTestCase):
    """
    A valid file gives forwards, endpoint strings and rules.
    """

    def setUp(self) -> None:
        self.config = parse(GOOD)

    def test_forwards(self) -> None:
        """
        Each forward line becomes one L{Forward} with listen/connect strings.
        """
        got = [(f.lineNumber, f.listen, f.connect) for f in self.config.forwards]
        self.assertEqual(
            got,
            [
                (5, "tcp:8080:interface=0.0.0.0", "tcp:host=127.0.0.1:port=80"),
                (
                    9,
                    "tcp:8081:interface=\\:\\:1",
                    "tcp:host=\\:\\:1:port=81:bindAddress=\\:\\:1",
                ),
                (10, "tcp:8082:interface=127.0.0.1", "tcp:host=localhost:port=82"),
                (11, "tcp:8083:interface=127.0.0.1", "tcp:host=127.0.0.1:port=83"),
            ],
        )
        f = self.config.forwards[1]
        self.assertEqual(
            (f.bindAddress, f.bindPort, f.connectAddress, f.connectPort),
            ("::1", 8081, "::1", 81),
        )

    def test_endpointsParse(self) -> None:
        """
        Twisted's endpoint parsers read the strings back to the right values.
        """
        reactor = MemoryReactor()
        f = self.config.forwards[1]
        server = endpoints.serverFromString(reactor, f.listen)
        self.assertEqual((server._port, server._interface), (8081, "::1"))
        client = endpoints.clientFromString(reactor, f.connect)
        self.assertEqual(
            (client._host, client._port, client._bindAddress), ("::1", 81, ("::1", 0))
        )

    def test_rules(self) -> None:
        """
        Rules before any forward are global; rules after one belong to it.
        """
        acl0, acl1 = self.config.forwards[0].acl, self.config.forwards[1].acl
        self.assertEqual([r.text for r in self.config.globalACL.allow], ["127.0.0.*"])
        self.assertEqual([r.text for r in acl0.allow], ["127.0.0.1/32"])
        self.assertEqual([r.text for r in acl0.deny], ["127.0.0.2"])
        self.assertEqual((acl1.allow, acl1.deny), ((), ()))
        self.assertIs(acl1.outer, self.config.globalACL)
        self.assertTrue(acl0.isAllowed("127.0.0.1")[0])
        self.assertFalse(acl0.isAllowed("127.0.0.2")[0])
        self.assertFalse(acl0.isAllowed("127.0.0.3")[0])
        self.assertTrue(acl1.isAllowed("127.0.0.3")[0])
        self.assertFalse(acl1.isAllowed("127.0.0.66")[0])
        self.assertFalse(acl1.isAllowed("::1")[0])

    def test_logStatements(self) -> None:
        """
        logfile, pidlogfile and logcommon are kept and warned about.
        """
        c = self.config
        self.assertEqual(
            (c.logFile, c.pidFile, c.logCommon),
            ("/var/log/rinetd.log", "/var/run/rinetd.pid", True),
        )
        self.assertEqual(
            [w.split(":")[1] for w in c.warnings], ["10", "13", "14", "15"]
        )
        self.assertTrue(all(w.startswith("rinetd.conf:") for w in c.warnings))

    def test_serviceName(self) -> None:
        """
        Ports may be service names.
        """
        try:
            port = socket.getservbyname("http", "tcp")
        except OSError:
            self.skipTest("no services database")
        c = parse("127.0.0.1 http 127.0.0.1 http\n")
        self.assertEqual(c.forwards[0].bindPort, port)
        self.assertEqual(c.forwards[0].connect, f"tcp:host=127.0.0.1:port={port}")

    def test_noTrailingNewlineAndCRLF(self) -> None:
        """
        CRLF line ends and a missing final newline are fine.
        """
        c = parse("# x\r\n127.0.0.1 1 127.0.0.1 2\r\nallow ::1")
        self.assertEqual(c.forwards[0].acl.allow[0].text, "::1")

    def test_file(self) -> None:
        """
        L{parseConfigFile} reads a file and names it in errors.
        """
        fd, path = tempfile.mkstemp(suffix=".conf")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write("127.0.0.1 1 127.0.0.1 2\nbogus\n")
        e = self.assertRaises(ConfigError, parseConfigFile, path)
        self.assertEqual((e.filename, e.lineNumber), (path, 2))
        self.assertTrue(str(e).startswith(f"{path}:2: "))

    def test_missingFile(self) -> None:
        """
        An unreadable file is a L{ConfigError} with no line number.
        """
        e = self.assertRaises(ConfigError, parseConfigFile, "/nonexistent/rinetd.conf")
        self.assertEqual(
            str(e), "/nonexistent/rinetd.conf: cannot read: No such file or directory"
        )

    def test_escape(self) -> None:
        """
        Endpoint values escape backslash, colon and equals.
        """
        self.assertEqual(escapeEndpointValue("a:b=c\\d"), "a\\:b\\=c\\\\d")


#: (configuration text, line number, expected part of the message)
BAD = [
    ("127.0.0.1 8080 127.0.0.1\n", 1, "expected 'bindaddress bindport"),
    ("127.0.0.1 8080 127.0.0.1 80 90\n", 1, "got 5 fields"),
    ("# c\n127.0.0.1 0 127.0.0.1 80\n", 2, "bind port 0 out of range 1-65535"),
    ("127.0.0.1 8080 127.0.0.1 70000\n", 1, "connect port 70000 out of range"),
    ("127.0.0.1 8080 127.0.0.1 nosuchservice\n", 1, "unknown service name"),
    ("127.0.0.1 8080 127.0.0.1 80/udp\n", 1, "TCP and UDP cannot be mixed"),
    ("127.0.0.1 8080 127.0.0.1 80/sctp\n", 1, "unknown protocol 'sctp'"),
    ("127.0.0.1 -1 127.0.0.1 80\n", 1, "bad bind port '-1'"),
    ("999.0.0.1 8080 127.0.0.1 80\n", 1, "cannot resolve bind address '999.0.0.1'"),
    ("127.0.0.1 8080 bad_host! 80\n", 1, "bad connect address 'bad_host!'"),
    ("nowhere 8080 127.0.0.1 80\n", 1, "cannot resolve bind address 'nowhere'"),
    ("allow\n127.0.0.1 1 127.0.0.1 2\n", 1, "allow takes one address pattern, got 0"),
    ("deny 1.2.3.4 5.6.7.8\n", 1, "deny takes one address pattern, got 2"),
    ("allow 10.0.0.0/33\n", 1, "allow: bad address rule '10.0.0.0/33'"),
    ("127.0.0.1 1 127.0.0.1 2\ndeny 10.*/8\n", 2, "bad address pattern"),
    ("127.0.0.1 1 127.0.0.1 2 [foo=1]\n", 1, "unknown option 'foo'"),
    ("127.0.0.1 1 127.0.0.1 2 [src]\n", 1, "bad option 'src'"),
    (
        "127.0.0.1 1 127.0.0.1 2 [timeout=x]\n",
        1,
        "timeout: expected a number of seconds",
    ),
    ("127.0.0.1 1 127.0.0.1 2 [src=1.1.1.1\n", 1, "one [name=value,...] group"),
    ("[::1] 1 ::1 2\n", 1, "without brackets"),
    (
        "127.0.0.1 1 127.0.0.1 2\n127.0.0.1 1 127.0.0.1 3\n",
        2,
        "overlaps the forward on line 1",
    ),
    (
        "0.0.0.0 1 127.0.0.1 2\n127.0.0.1 1 127.0.0.1 3\n",
        2,
        "overlaps the forward on line 1",
    ),
    ("logfile\n127.0.0.1 1 127.0.0.1 2\n", 1, "logfile takes one path"),
    ("logcommon yes\n", 1, "logcommon takes no argument"),
    ("allow ::1 [x=y]\n", 1, "allow takes no [options]"),
    ("include /etc/other.conf\n", 1, "include is not supported"),
    ("# only comments\n\n", 0, "no forwards"),
]


class BadConfigTests(SynchronousTestCase):
    """
    Each bad configuration raises L{ConfigError} naming file, line and
    problem on one line.
    """

    def test_table(self) -> None:
        """
        Every entry of L{BAD} fails at the expected line with the expected
        message.
        """
        self.assertGreaterEqual(len(BAD), 12)
        for text, line, message in BAD:
            e = self.assertRaises(ConfigError, parse, text)
            self.assertEqual(e.lineNumber, line, text)
            self.assertIn(message, e.problem, text)
            prefix = f"rinetd.conf:{line}: " if line else "rinetd.conf: "
            self.assertTrue(str(e).startswith(prefix), str(e))
            self.assertNotIn("\n", str(e))

    def test_firstErrorWins(self) -> None:
        """
        With several problems, the first line is reported.
        """
        e = self.assertRaises(ConfigError, parse, "x\ny\n")
        self.assertEqual(e.lineNumber, 1)
