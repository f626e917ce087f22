"""
Tests for L{splicetx._proxy.access}: allow/deny rules with rinetd's precedence.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from splicetx._proxy.access import AccessControl, normaliseAddress, parseRule


class NormaliseTests(SynchronousTestCase):
    """
    L{normaliseAddress} accepts the address forms a proxy sees.
    """

    def test_forms(self) -> None:
        """
        Strings, C{ipaddress} objects and Twisted addresses all normalise.
        """
        want = ipaddress.ip_address("10.1.2.3")
        self.assertEqual(normaliseAddress("10.1.2.3"), want)
        self.assertEqual(normaliseAddress(want), want)
        self.assertEqual(normaliseAddress(IPv4Address("TCP", "10.1.2.3", 5)), want)

    def test_mapped(self) -> None:
        """
        IPv4-mapped IPv6 addresses become IPv4.
        """
        self.assertEqual(
            normaliseAddress(IPv6Address("TCP", "::ffff:10.1.2.3", 5)),
            ipaddress.ip_address("10.1.2.3"),
        )
        self.assertEqual(
            normaliseAddress(ipaddress.ip_address("::ffff:127.0.0.1")),
            ipaddress.ip_address("127.0.0.1"),
        )

    def test_zone(self) -> None:
        """
        An IPv6 zone index is dropped.
        """
        self.assertEqual(
            normaliseAddress("fe80::1%eth0"), ipaddress.ip_address("fe80::1")
        )

    def test_notIP(self) -> None:
        """
        Non-IP addresses give C{None}.
        """
        self.assertIsNone(normaliseAddress(UNIXAddress(b"/tmp/s")))
        self.assertIsNone(normaliseAddress("example.com"))
        self.assertIsNone(normaliseAddress(None))


class RuleTests(SynchronousTestCase):
    """
    L{parseRule} accepts CIDR, addresses and rinetd wildcard patterns.
    """

    def test_cidrAndAddress(self) -> None:
        """
        A single address is a /32 or /128 network; host bits are tolerated.
        """
        self.assertEqual(str(parseRule("127.0.0.1").network), "127.0.0.1/32")
        self.assertEqual(str(parseRule("::1").network), "::1/128")
        self.assertEqual(str(parseRule("10.1.2.3/8").network), "10.0.0.0/8")

    def test_mappedRule(self) -> None:
        """
        A rule written as an IPv4-mapped network is an IPv4 network.
        """
        self.assertEqual(str(parseRule("::ffff:10.0.0.0/104").network), "10.0.0.0/8")

    def test_pattern(self) -> None:
        """
        rinetd wildcards match the textual address.
        """
        rule = parseRule("192.168.2.*")
        self.assertTrue(rule.matches(ipaddress.ip_address("192.168.2.77")))
        self.assertFalse(rule.matches(ipaddress.ip_address("192.168.3.1")))
        self.assertTrue(parseRule("10.0.0.?").matches(ipaddress.ip_address("10.0.0.7")))
        self.assertFalse(
            parseRule("10.0.0.?").matches(ipaddress.ip_address("10.0.0.17"))
        )

    def test_bad(self) -> None:
        """
        Malformed rules raise L{ValueError} naming the rule.
        """
        for text in [
            "",
            "10.0.0.0/33",
            "300.1.1.1",
            "host.example",
            "10.*/8",
            "1.2.3.[4]",
        ]:
            e = self.assertRaises(ValueError, parseRule, text)
            self.assertNotIn("\n", str(e))
            if text:
                self.assertIn(repr(text), str(e))


class PrecedenceTests(SynchronousTestCase):
    """
    L{AccessControl.isAllowed} follows rinetd: allow rules (if any) must
    match, and deny wins.
    """

    def test_noRules(self) -> None:
        """
        With no rules everyone is allowed.
        """
        acl = AccessControl()
        self.assertTrue(acl.empty)
        self.assertEqual(acl.isAllowed("203.0.113.5"), (True, "no rules"))

    def test_allowOnly(self) -> None:
        """
        With allow rules, only matching clients are allowed.
        """
        acl = AccessControl(allow=["127.0.0.0/8", "::1"])
        self.assertEqual(
            acl.isAllowed("127.0.0.1"), (True, "127.0.0.1 allowed by rule 127.0.0.0/8")
        )
        self.assertTrue(acl.isAllowed("::1")[0])
        self.assertEqual(
            acl.isAllowed("10.0.0.1"),
            (False, "10.0.0.1 not matched by any allow rule"),
        )

    def test_denyOnly(self) -> None:
        """
        With only deny rules, everyone but the matching clients is allowed.
        """
        acl = AccessControl(deny=["10.0.0.0/8"])
        self.assertEqual(
            acl.isAllowed("10.9.9.9"), (False, "10.9.9.9 denied by rule 10.0.0.0/8")
        )
        self.assertEqual(
            acl.isAllowed("11.0.0.1"), (True, "11.0.0.1 matched no deny rule")
        )

    def test_denyWins(self) -> None:
        """
        A client matching both an allow and a deny rule is refused, whatever
        the order the rules were given in.
        """
        a = AccessControl(allow=["10.0.0.0/8"], deny=["10.0.0.5"])
        self.assertEqual(
            a.isAllowed("10.0.0.5"), (False, "10.0.0.5 denied by rule 10.0.0.5")
        )
        self.assertTrue(a.isAllowed("10.0.0.6")[0])
        self.assertFalse(a.isAllowed("11.0.0.6")[0])

    def test_mappedClient(self) -> None:
        """
        An IPv4 client seen through a dual-stack socket matches IPv4 rules.
        """
        acl = AccessControl(allow=["127.0.0.0/8"])
        self.assertTrue(acl.isAllowed(IPv6Address("TCP", "::ffff:127.0.0.1", 1))[0])
        acl = AccessControl(deny=["127.0.0.1"])
        self.assertFalse(acl.isAllowed("::ffff:127.0.0.1")[0])

    def test_familiesDoNotCross(self) -> None:
        """
        An IPv6 rule never matches an IPv4 client and vice versa.
        """
        acl = AccessControl(allow=["::/0"])
        self.assertFalse(acl.isAllowed("127.0.0.1")[0])
        self.assertTrue(acl.isAllowed("::1")[0])
        acl = AccessControl(allow=["0.0.0.0/0"])
        self.assertFalse(acl.isAllowed("::1")[0])

    def test_notIP(self) -> None:
        """
        A non-IP client is refused when allow rules exist, allowed otherwise.
        """
        unix = UNIXAddress(b"/tmp/s")
        self.assertFalse(AccessControl(allow=["127.0.0.1"]).isAllowed(unix)[0])
        self.assertTrue(AccessControl(deny=["127.0.0.1"]).isAllowed(unix)[0])

    def test_outer(self) -> None:
        """
        Outer (global) rules must allow the client too, and are checked first.
        """
        glob = AccessControl(deny=["10.0.0.0/8"])
        acl = AccessControl(allow=["10.0.0.0/8", "192.168.0.0/16"], outer=glob)
        self.assertFalse(acl.empty)
        self.assertEqual(
            acl.isAllowed("10.1.1.1"), (False, "10.1.1.1 denied by rule 10.0.0.0/8")
        )
        self.assertTrue(acl.isAllowed("192.168.1.1")[0])
        self.assertFalse(acl.isAllowed("172.16.0.1")[0])
        self.assertFalse(AccessControl(outer=glob).empty)
        self.assertTrue(AccessControl(outer=AccessControl()).empty)

    def test_badRule(self) -> None:
        """
        A bad rule fails at construction.
        """
        self.assertRaises(ValueError, AccessControl, allow=["nope"])


class VerdictCacheTests(SynchronousTestCase):
    """
    L{AccessControl.isAllowed} remembers verdicts by host text; a
    remembered verdict is the one the rules give, whatever form the address
    comes in, and the memory is bounded.
    """

    def test_sameVerdictEveryForm(self) -> None:
        acl = AccessControl(allow=["10.0.0.0/8"], deny=["10.0.13.0/24"])
        for _ in range(2):
            self.assertEqual(
                acl.isAllowed("10.1.2.3"), (True, "10.1.2.3 allowed by rule 10.0.0.0/8")
            )
            self.assertEqual(
                acl.isAllowed(IPv4Address("TCP", "10.0.13.1", 5)),
                (False, "10.0.13.1 denied by rule 10.0.13.0/24"),
            )
            self.assertEqual(
                acl.isAllowed(ipaddress.ip_address("10.0.13.1")),
                (False, "10.0.13.1 denied by rule 10.0.13.0/24"),
            )
            self.assertFalse(acl.isAllowed("192.0.2.1")[0])
            self.assertFalse(acl.isAllowed(UNIXAddress(None))[0])

    def test_bounded(self) -> None:
        acl = AccessControl(allow=["10.0.0.0/8"])
        for i in range(5000):
            self.assertTrue(acl.isAllowed(f"10.0.{i // 250}.{i % 250}")[0])
        self.assertLessEqual(len(acl._verdicts), 4096)
