# -*- test-case-name: tests.test_resolver -*-
"""
The one cache of upstream host names: every connect to a name (a C{tcp:NAME:PORT}
upstream, a subclass's L{TCPTarget <splicetx._pool.target.TCPTarget>}) asks
L{NameCache.resolve}, so a name costs one resolver round trip (a thread hop
with Twisted's default C{getaddrinfo} resolver) per validity period, not one
per connection.

What it keeps (docs/design-decisions.md, "Upstream names"): the addresses of
a name for L{NameCache.validity} seconds (C{--resolve-ttl}, default
L{DEFAULT_VALIDITY}); C{getaddrinfo} does not say a record's TTL, so the
validity is ours, bounded by L{MAX_VALIDITY}, the way nginx's C{resolver
valid=} overrides a record's TTL.  Once it has passed, the next connect
resolves again: an upstream name that moves is followed within one validity.
At most L{MAX_NAMES} names are kept (the least recently used goes first).
Concurrent lookups of one name share one resolver call.  A failed lookup is
not kept: it fails the connects that waited for it, logged once with the
name and the resolver's reason, and the next connect asks again.

The resolver is the reactor's C{nameResolver} (C{IHostnameResolver}, which
honours C{/etc/hosts} and the system's configuration) unless one is given.
"""

from __future__ import annotations

import socket
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IResolutionReceiver
from twisted.logger import Logger
from zope.interface import implementer

from splicetx._relay.runtime import LOG_PROXY

__all__ = [
    "DEFAULT_VALIDITY",
    "MAX_NAMES",
    "MAX_VALIDITY",
    "NameCache",
    "Resolved",
    "cacheFor",
]

_log = Logger(namespace=LOG_PROXY)

#: The address types to ask the resolver for, by address family (0: any).
_TYPES: dict[int, Any] = {
    0: None,
    socket.AF_INET: [IPv4Address],
    socket.AF_INET6: [IPv6Address],
}
_KIND = {0: "address", socket.AF_INET: "IPv4 address", socket.AF_INET6: "IPv6 address"}

#: Seconds a name's addresses are used before it is resolved again.
DEFAULT_VALIDITY = 30.0
#: The longest validity C{--resolve-ttl} accepts (one hour).
MAX_VALIDITY = 3600.0
#: Names kept at most; the least recently used is dropped first.
MAX_NAMES = 1024

#: C{(family, host)} pairs, in the resolver's order: C{socket.AF_INET} or
#: C{socket.AF_INET6} and the address literal.
Resolved = tuple[tuple[int, str], ...]


@implementer(IResolutionReceiver)
class _Receiver:
    """
    Collects one resolution's addresses for L{NameCache}.
    """

    __slots__ = ("cache", "key", "addresses")

    def __init__(self, cache: NameCache, key: tuple[str, int]) -> None:
        self.cache = cache
        self.key = key
        self.addresses: list[tuple[int, str]] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, IPv6Address):
            entry = (socket.AF_INET6, address.host)
        elif isinstance(address, IPv4Address):
            entry = (socket.AF_INET, address.host)
        else:
            return
        if entry not in self.addresses:
            self.addresses.append(entry)

    def resolutionComplete(self) -> None:
        self.cache._complete(self.key, tuple(self.addresses))


class NameCache:
    """
    Host name to addresses, for L{validity} seconds each, for one reactor.
    See the module docstring.

    @ivar validity: seconds a resolution is used (0: every connect resolves;
        concurrent ones still share one lookup).
    @ivar maxNames: names kept at most.
    @ivar lookups: resolver calls made (for tests and the curious).
    """

    def __init__(
        self,
        reactor: Any,
        resolver: Any = None,
        validity: float = DEFAULT_VALIDITY,
        maxNames: int = MAX_NAMES,
    ) -> None:
        """
        @param reactor: its clock (C{seconds()}) and, unless C{resolver} is
            given, its C{nameResolver}.
        @param resolver: an C{IHostnameResolver}, or C{None}: the reactor's.
        @param validity: see L{validity}.
        @param maxNames: see L{maxNames}.
        """
        # Weakly: the registry below is keyed weakly on the reactor.
        self._reactor: Callable[[], Any] = weakref.ref(reactor)
        self._resolver = resolver
        self.validity = validity
        self.maxNames = maxNames
        self.lookups = 0
        self._entries: OrderedDict[tuple[str, int], tuple[float, Resolved]] = (
            OrderedDict()
        )
        self._pending: dict[tuple[str, int], list[Deferred[Resolved]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(
        self, host: str, family: int = 0, validity: float | None = None
    ) -> Resolved | None:
        """
        The addresses of C{host} if a resolution within L{validity} holds
        them, without asking the resolver (what a caller that must not wait
        tries first).

        @param host: a host name.
        @param family: C{socket.AF_INET} or C{socket.AF_INET6} for addresses
            of that family only (a C{tcp:} or C{tcp6:} upstream), C{0}: both.
        @param validity: the caller's own validity (a forward's
            C{resolve-ttl}), or C{None}: L{validity}.
        @return: a non-empty L{Resolved}, or C{None}.
        """
        if validity is None:
            validity = self.validity
        key = (host.lower(), family)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._reactor().seconds() - entry[0] >= validity:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def resolve(
        self, host: str, family: int = 0, validity: float | None = None
    ) -> Deferred[Resolved]:
        """
        The addresses of C{host}: from the cache while valid, else from one
        resolver call shared by everyone asking meanwhile.

        @param host: a host name.
        @param family: C{socket.AF_INET} or C{socket.AF_INET6} for addresses
            of that family only (a C{tcp:} or C{tcp6:} upstream), C{0}: both.
        @param validity: see L{cached}.
        @return: a L{Deferred} firing with a non-empty L{Resolved}, or
            failing with C{DNSLookupError} (the name and the reason).
        """
        found = self.cached(host, family, validity)
        if found is not None:
            return succeed(found)
        key = (host.lower(), family)
        d: Deferred[Resolved] = Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(d)
            return d
        self._pending[key] = [d]
        self.lookups += 1
        resolver = self._resolver
        if resolver is None:
            resolver = self._reactor().nameResolver
        try:
            resolver.resolveHostName(
                _Receiver(self, key),
                host,
                0,
                _TYPES[family],
            )
        except Exception as e:
            self._failed(key, f"{type(e).__name__}: {e}")
        return d

    def _complete(self, key: tuple[str, int], addresses: Resolved) -> None:
        if not addresses:
            kind = _KIND[key[1]]
            self._failed(key, f"no {kind} found")
            return
        # Kept even with a validity of 0: another forward's may be longer.
        entries = self._entries
        entries[key] = (self._reactor().seconds(), addresses)
        entries.move_to_end(key)
        while len(entries) > self.maxNames:
            entries.popitem(last=False)
        for d in self._pending.pop(key, []):
            d.callback(addresses)

    def _failed(self, key: tuple[str, int], why: str) -> None:
        waiting = self._pending.pop(key, [])
        _log.warn(
            "cannot resolve upstream name {name}: {why} ({count} connect(s) fail)",
            name=key[0],
            why=why,
            count=len(waiting),
        )
        for d in waiting:
            d.errback(DNSLookupError(f"cannot resolve {key[0]}: {why}"))


_caches: weakref.WeakKeyDictionary[Any, NameCache] = weakref.WeakKeyDictionary()


def cacheFor(reactor: Any) -> NameCache:
    """
    The L{NameCache} of C{reactor}, made when first asked for: the one
    cache every upstream name of the process goes through.

    @param reactor: the reactor the connects run on.
    """
    cache = _caches.get(reactor)
    if cache is None:
        cache = _caches[reactor] = NameCache(reactor)
    return cache
