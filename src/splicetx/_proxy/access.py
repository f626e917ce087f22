# -*- test-case-name: tests.test_acl -*-
"""
Client access control: allow and deny rules over client addresses.

Precedence is rinetd's, so a rinetd configuration means the same thing here:

  1. When there is at least one B{allow} rule, a client must match one of
     them; otherwise it is refused ("not matched by any allow rule").
  2. A client that matches any B{deny} rule is refused, even when an allow
     rule matched too: B{deny wins}.
  3. With no rules at all, every client is allowed.

The order in which rules are written does not matter.  Rules nest: an
L{AccessControl} may have an C{outer} one (rinetd's global rules around a
forward's own rules) which must allow the client as well; it is checked
first.

A rule is either a network in CIDR notation (C{10.0.0.0/8}, C{2001:db8::/32})
or a single address (C{127.0.0.1}, C{::1}), or, for rinetd compatibility, a
pattern with C{*} and C{?} wildcards matched against the textual address
(C{192.168.2.*}).  IPv4-mapped IPv6 addresses (C{::ffff:10.1.2.3}, what a
dual-stack listener reports for an IPv4 client) are treated as the IPv4
address they map, both in rules and in clients, so C{10.0.0.0/8} covers them.
A client that has no IP address (a UNIX socket) matches no rule.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable

from splicetx._pool.addresses import IPAddress, normaliseAddress

__all__ = ["AccessControl", "AccessRule", "parseRule", "normaliseAddress"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_PATTERN = re.compile(r"^[0-9A-Fa-f.:*?]+$")
#: How many verdicts an L{AccessControl} keeps (then it starts over).
_VERDICTS = 4096


class AccessRule:
    """
    One allow or deny rule: a network or a rinetd wildcard pattern.

    @ivar text: the rule as written.
    @ivar network: the network it covers, or C{None} for a pattern.
    """

    __slots__ = ("text", "network", "_regex")

    def __init__(
        self, text: str, network: IPNetwork | None, regex: re.Pattern[str] | None
    ):
        self.text = text
        self.network = network
        self._regex = regex

    def matches(self, ip: IPAddress) -> bool:
        """
        Tell whether C{ip} (already normalised) is covered by this rule.
        """
        if self.network is not None:
            return ip.version == self.network.version and ip in self.network
        assert self._regex is not None
        return self._regex.match(str(ip)) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccessRule):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"AccessRule({self.text!r})"


def parseRule(text: str) -> AccessRule:
    """
    Parse one rule.

    @param text: C{"10.0.0.0/8"}, C{"::1"}, C{"192.168.*.*"} and so on.
        Host bits set under the prefix are accepted (C{10.1.2.3/8} means
        C{10.0.0.0/8}).
    @raise ValueError: with a one-line message when C{text} is neither an
        address, a network nor a wildcard pattern.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty address rule")
    if "*" in text or "?" in text:
        if "/" in text or not _PATTERN.match(text):
            raise ValueError(f"bad address pattern {text!r}")
        regex = re.compile(fnmatch.translate(text.lower()))
        return AccessRule(text, None, regex)
    try:
        network: IPNetwork = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise ValueError(f"bad address rule {text!r}: {e}") from None
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.subnet_of(_MAPPED)
    ):
        network = ipaddress.IPv4Network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96)
        )
    return AccessRule(text, network, None)


class AccessControl:
    """
    Allow and deny rules with rinetd's precedence (see the module docstring).

    @ivar allow: the allow rules.
    @ivar deny: the deny rules.
    @ivar outer: rules that must allow a client first (e.g. the global rules
        of a configuration file), or C{None}.
    """

    def __init__(
        self,
        allow: Iterable[str | AccessRule] = (),
        deny: Iterable[str | AccessRule] = (),
        outer: AccessControl | None = None,
    ) -> None:
        """
        @param allow: allow rules (strings are parsed with L{parseRule}).
        @param deny: deny rules.
        @param outer: see L{outer}.
        @raise ValueError: for a rule that does not parse.
        """
        self.allow = tuple(
            r if isinstance(r, AccessRule) else parseRule(r) for r in allow
        )
        self.deny = tuple(
            r if isinstance(r, AccessRule) else parseRule(r) for r in deny
        )
        self.outer = outer
        #: Verdicts by host text: a listener's peers are few (a balancer's
        #: addresses), and parsing one into an C{ipaddress} object costs
        #: more than the rest of a PROXY header's checks (the rules never
        #: change after construction, so neither does a verdict).
        self._verdicts: dict[object, tuple[bool, str]] = {}

    @property
    def description(self) -> str:
        """
        The rules as an operator wrote them, for a log line: C{"allow
        10.0.0.0/8, ::1; deny 10.0.13.0/24"}, the outer rules first (C{"...;
        then allow ..."}), or C{"none"}.
        """
        own = "; ".join(
            f"{kind} {', '.join(r.text for r in rules)}"
            for kind, rules in (("allow", self.allow), ("deny", self.deny))
            if rules
        )
        if self.outer is None or self.outer.empty:
            return own or "none"
        return f"{self.outer.description}; then {own or 'none'}"

    @property
    def empty(self) -> bool:
        """
        C{True} when no rule (here or outside) could refuse anyone.
        """
        own = not self.allow and not self.deny
        return own and (self.outer is None or self.outer.empty)

    def isAllowed(self, address: object) -> tuple[bool, str]:
        """
        Decide whether a client may connect.

        @param address: the client's address (see L{normaliseAddress}).
        @return: C{(allowed, reason)}, the reason a short phrase for a log
            line naming the rule that decided, e.g. C{(False, "denied by
            rule 10.0.0.0/8")}.
        """
        key = getattr(address, "host", address)
        if type(key) is not str:
            return self._decide(address)
        verdicts = self._verdicts
        verdict = verdicts.get(key)
        if verdict is None:
            if len(verdicts) >= _VERDICTS:
                verdicts.clear()
            verdict = verdicts[key] = self._decide(key)
        return verdict

    def _decide(self, address: object) -> tuple[bool, str]:
        """
        L{isAllowed}'s verdict, not cached.
        """
        if self.outer is not None:
            ok, reason = self.outer.isAllowed(address)
            if not ok:
                return ok, reason
        if not self.allow and not self.deny:
            return True, "no rules"
        ip = normaliseAddress(address)
        if ip is None:
            if self.allow:
                return False, "not an IP address, no allow rule can match"
            return True, "not an IP address, no deny rule can match"
        allowedBy = None
        if self.allow:
            for rule in self.allow:
                if rule.matches(ip):
                    allowedBy = rule
                    break
            else:
                return False, f"{ip} not matched by any allow rule"
        for rule in self.deny:
            if rule.matches(ip):
                return False, f"{ip} denied by rule {rule.text}"
        if allowedBy is not None:
            return True, f"{ip} allowed by rule {allowedBy.text}"
        return True, f"{ip} matched no deny rule"

    def __repr__(self) -> str:
        return (
            f"AccessControl(allow={[r.text for r in self.allow]!r}, "
            f"deny={[r.text for r in self.deny]!r}, outer={self.outer!r})"
        )
