# -*- test-case-name: tests.test_resolver -*-
"""
A TCP upstream named by host and port, connected without a thread hop:
L{TCPTarget}, the endpoint C{--connect tcp:NAME:PORT} becomes and what a
proxy subclass passes to C{connectUpstream} (public in
L{splicetx.endpoints}).

An address literal is connected at once (no resolver at all; Twisted's
C{HostnameEndpoint} sends even C{127.0.0.1} through C{getaddrinfo} in a
thread).  A name goes through the process's one L{NameCache
<splicetx._pool.resolver.NameCache>}, and its addresses are tried in the
resolver's order until one connects.  The lean path recognises a target by
its L{TCPTarget.literal} (an address it can connect raw) or, for a name, by
L{TCPTarget.cached}.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._pool.resolver import NameCache, Resolved, cacheFor

__all__ = ["TCPTarget"]


@implementer(IStreamClientEndpoint)
class TCPTarget:
    """
    An C{IStreamClientEndpoint} for C{(host, port)}: an IP literal connects
    directly, a name through the reactor's L{NameCache}.

    @ivar host: the host name or address literal, as given.
    @ivar port: the port.
    @ivar timeout: seconds one connect may take (Twisted's C{timeout}).
    @ivar bindAddress: C{(host, port)} to bind before connecting, or C{None}.
    @ivar family: resolve a name to addresses of this family only
        (C{socket.AF_INET} for C{tcp:}, C{socket.AF_INET6} for C{tcp6:}), or
        C{0}: both, in the resolver's order (as C{HostnameEndpoint}).
    @ivar validity: seconds a resolution of the name is used (a forward's
        C{resolve-ttl}), or C{None}: the cache's own (C{--resolve-ttl}).
    @ivar literal: C{(family, (address, port))} when C{host} is an IP address
        literal (what a raw C{socket.connect} takes), else C{None}.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
        family: int = 0,
        cache: NameCache | None = None,
        validity: float | None = None,
    ) -> None:
        """
        @param reactor: the reactor to connect (and resolve) with.
        @param host: see L{host}; IPv6 literals without brackets.
        @param port: see L{port}.
        @param timeout: see L{timeout}.
        @param bindAddress: see L{bindAddress}.
        @param family: see L{family}.
        @param validity: see L{validity}.
        @param cache: the L{NameCache} to resolve through (default: the
            reactor's, L{cacheFor <splicetx._pool.resolver.cacheFor>}).
        @raise ValueError: for a port out of range.
        """
        if not 0 <= port < 65536:
            raise ValueError(f"port {port} out of range")
        self._reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bindAddress = bindAddress
        self.family = family
        self.validity = validity
        self._cache = cache
        self.literal: tuple[int, tuple[str, int]] | None = None
        # (Every IPv6 literal has a colon, and no IPv4 one: one check each.)
        if ":" in host:
            if isIPv6Address(host):
                self.literal = (socket.AF_INET6, (host, port))
        elif isIPAddress(host):
            self.literal = (socket.AF_INET, (host, port))
        # What the general path's direct connect reads (see
        # splicetx._proxy.upstream.directTarget).
        self._host, self._port = host, port
        self._timeout, self._bindAddress = timeout, bindAddress

    @property
    def description(self) -> str:
        """
        How logs and the status page name it: C{name:port}, C{[::1]:port}.
        """
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<TCPTarget {self.description}>"

    @property
    def cache(self) -> NameCache:
        """
        The L{NameCache} its name resolves through.
        """
        if self._cache is None:
            self._cache = cacheFor(self._reactor)
        return self._cache

    def cached(self) -> Resolved | None:
        """
        The addresses to try now without waiting: the literal, or the name's
        valid resolution; C{None} when the name must be resolved first
        (L{resolve}).
        """
        if self.literal is not None:
            return ((self.literal[0], self.host),)
        return self.cache.cached(self.host, self.family, self.validity)

    def resolve(self) -> Deferred[Resolved]:
        """
        The addresses to try, in order (see L{NameCache.resolve}).
        """
        if self.literal is not None:
            return succeed(((self.literal[0], self.host),))
        return self.cache.resolve(self.host, self.family, self.validity)

    def _endpoint(self, family: int, address: str) -> Any:
        kind = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
        return kind(self._reactor, address, self.port, self.timeout, self.bindAddress)

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """
        Connect: a literal at once, a name to each of its addresses in turn
        until one connects.

        @param protocolFactory: the factory of the connection's protocol.
        @return: a L{Deferred} firing with the protocol, or failing with the
            last address's connect error (or C{DNSLookupError}).
        """
        if self.literal is not None:
            result: Deferred[Any] = self._endpoint(self.literal[0], self.host).connect(
                protocolFactory
            )
            return result
        attempt = _Attempt(self, protocolFactory)
        return attempt.start()


class _Attempt:
    """
    One connect to a name: resolve, then try each address in order.
    Cancelling it cancels the lookup's wait or the current try.
    """

    def __init__(self, target: TCPTarget, factory: Any) -> None:
        self.target = target
        self.factory = factory
        self.current: Deferred[Any] | None = None
        self.result: Deferred[Any] = Deferred(self._cancel)
        self.cancelled = False

    def start(self) -> Deferred[Any]:
        d = self.current = self.target.resolve()
        d.addCallbacks(self._resolved, self._fail)
        return self.result

    def _resolved(self, addresses: Resolved) -> None:
        self._try(list(addresses), None)

    def _try(self, left: list[tuple[int, str]], last: Failure | None) -> None:
        if self.cancelled:
            return
        if not left:
            assert last is not None
            self._fail(last)
            return
        family, address = left.pop(0)
        d = self.current = self.target._endpoint(family, address).connect(self.factory)
        d.addCallbacks(self._done, _retry(self, left))

    def _done(self, proto: Any) -> None:
        self.current = None
        if not self.result.called:
            self.result.callback(proto)

    def _fail(self, reason: Failure) -> None:
        self.current = None
        if not self.result.called:
            self.result.errback(reason)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True
        current, self.current = self.current, None
        if current is not None:
            current.cancel()
        if not d.called:
            d.errback(ConnectingCancelledError(self.target.description))


def _retry(attempt: _Attempt, left: list[tuple[int, str]]) -> Callable[[Failure], None]:
    def failed(reason: Failure) -> None:
        attempt._try(left, reason)

    return failed
