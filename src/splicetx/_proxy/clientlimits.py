# -*- test-case-name: tests.test_clientlimits -*-
"""
Limits per client: how many connections one client may have live at once
(C{--client-max-connections}), how many new ones it may open per second
(C{--client-connection-rate}, a token bucket with a burst), and how many
bytes per second all its connections together may move each way
(C{--client-bandwidth}: a pair of L{SharedBandwidth
<splicetx._relay.bandwidth.SharedBandwidth>} per client, kept in its
record of the table).

A client is its address, or the network it is in with C{--client-prefix}
(C{24,64}: every address of a C{/24} or a C{/64} counts as one client); the
address is the source of a trusted PROXY header when the listener reads
one.  Both listener paths (the general one of L{splicetx._proxy.protocol}
and the lean one of L{splicetx._proxy.fastconn}) ask L{ClientLimits.admit}
once the client's address is known, and tell the L{Admission} it returned
when the connection has ended (L{Admission.ended}).

A refused client is reset, as one the access rules deny (or closed at once,
with C{--client-limit-action close}); its record says
why (reason C{rejected}) and the C{connectionRefused} metric counts it as
C{client_connections} or C{client_rate}.  Only the first refusal of a
client in L{LOG_INTERVAL} seconds is recorded; the others are counted (and
the next recorded one says how many were not), so a flood does not flood
the log.  A refused attempt takes no token: a client that keeps trying
still gets in at the rate.

The table of clients is bounded: at most L{DEFAULT_CAPACITY} keys (see
L{ClientLimits.capacity}), least recently seen first out.  A client with
no live connection and a full bucket is forgotten when the room is needed
(forgetting it changes nothing); when every client a few places from the
old end is busy, the least recently seen one is forgotten anyway, so a
scan from millions of sources cannot grow memory: its connections still
end normally, and it is counted afresh from its next one.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from typing import Any, NamedTuple

from splicetx._pool.addresses import normaliseAddress
from splicetx._proxy.preamble import Refusal
from splicetx._relay.bandwidth import SharedBandwidth, sharedPair

__all__ = [
    "DEFAULT_CAPACITY",
    "LOG_INTERVAL",
    "ConnectionRate",
    "ClientLimits",
    "Admission",
]

#: How many clients the table keeps at most (about 200 bytes each; the two
#: buckets of C{--client-bandwidth} add about 420).
DEFAULT_CAPACITY = 65536
#: Seconds between two recorded refusals of one client.
LOG_INTERVAL = 60.0
#: How many of the least recently seen clients are looked at for one that
#: can be forgotten without loss, before the oldest goes regardless.
_SCAN = 16


class ConnectionRate(NamedTuple):
    """
    A rate of new connections: C{perSecond} on average, up to C{burst} at
    once (C{5/s:20}).
    """

    perSecond: float
    burst: int

    def __str__(self) -> str:
        return f"{self.perSecond:g}/s:{self.burst}"


class _Client:
    """
    What the table knows of one client.
    """

    __slots__ = (
        "key",
        "name",
        "live",
        "tokens",
        "stamp",
        "loggedAt",
        "unlogged",
        "shared",
    )

    def __init__(self, key: Any, name: str, tokens: float, now: float) -> None:
        self.key = key
        self.name = name
        self.live = 0
        self.tokens = tokens
        self.stamp = now
        self.loggedAt = -math.inf
        self.unlogged = 0
        #: Its L{SharedBandwidth} pair (up, down), made when first needed.
        self.shared: tuple[SharedBandwidth, SharedBandwidth] | None = None


class Admission:
    """
    What L{ClientLimits.admit} decided of one connection.

    @ivar refusal: the L{Refusal} when the client is over a limit, else
        C{None}.
    @ivar quiet: C{True} for a refusal whose record is not written (the
        client was refused and recorded less than L{LOG_INTERVAL} ago).
    """

    __slots__ = ("_limits", "_client", "refusal", "quiet")

    def __init__(
        self,
        limits: ClientLimits | None,
        client: _Client | None,
        refusal: Refusal | None = None,
        quiet: bool = False,
    ) -> None:
        self._limits = limits
        self._client = client
        self.refusal = refusal
        self.quiet = quiet

    def shared(self, reactor: Any) -> tuple[SharedBandwidth, SharedBandwidth] | None:
        """
        The shared buckets (up, down) of the client's bandwidth, or
        C{None} when there is no C{--client-bandwidth} (or no client).

        @param reactor: the reactor of the buckets' timers, if they are
            made now.
        """
        limits, client = self._limits, self._client
        if limits is None or client is None or limits.bandwidth is None:
            return None
        pair = client.shared
        if pair is None or pair[0].rate != limits.bandwidth:
            # New (or a reload changed the rate): the client's live
            # connections keep the pair they have.
            pair = client.shared = sharedPair(limits.bandwidth, reactor)
        return pair

    def ended(self) -> bool:
        """
        The connection has ended: give its client's place back (once).

        @return: whether its record is to be written (C{False} for a quiet
            refusal).
        """
        client, self._client = self._client, None
        if client is not None:
            client.live -= 1
            limits = self._limits
            if limits is not None and client.live == 0 and limits.rate is None:
                # Nothing left to remember of it (its bandwidth buckets
                # have no sharer left).
                table = limits._table
                if table.get(client.key) is client:
                    del table[client.key]
        return not self.quiet


#: The admission of a client that has no IP address (a UNIX socket): no
#: limit applies.
_UNLIMITED = Admission(None, None)


class ClientLimits:
    """
    The limits per client of one listener (a factory), and the table of
    its clients.

    @ivar maxConnections: live connections per client at most, or C{None}.
    @ivar rate: the L{ConnectionRate} of new connections per client, or
        C{None}.
    @ivar prefix: the network lengths a client's address is cut to, IPv4
        then IPv6 (C{(32, 128)}: each address is a client).
    @ivar capacity: how many clients the table keeps at most.
    @ivar logInterval: seconds between two recorded refusals of a client.
    @ivar bandwidth: bytes per second all connections of a client may move
        each way together, or C{None}.
    @ivar reset: C{True} to reset a refused client's connection, C{False}
        to close it.
    """

    def __init__(
        self,
        maxConnections: int | None = None,
        rate: ConnectionRate | None = None,
        prefix: tuple[int, int] = (32, 128),
        capacity: int = DEFAULT_CAPACITY,
        logInterval: float = LOG_INTERVAL,
        bandwidth: int | None = None,
        reset: bool = True,
    ) -> None:
        """
        @raise ValueError: for a limit or prefix out of range.
        """
        self._table: OrderedDict[Any, _Client] = OrderedDict()
        self.capacity = capacity
        self.logInterval = logInterval
        self.maxConnections: int | None = None
        self.rate: ConnectionRate | None = None
        self.prefix = (32, 128)
        self.bandwidth: int | None = None
        self.reset = reset
        self.configure(maxConnections, rate, prefix, bandwidth, reset)

    def configure(
        self,
        maxConnections: int | None,
        rate: ConnectionRate | None,
        prefix: tuple[int, int] = (32, 128),
        bandwidth: int | None = None,
        reset: bool = True,
    ) -> None:
        """
        Take new limits (a reload), for the connections admitted from now
        on; the live connections are still counted.  A new prefix starts
        an empty table.

        @raise ValueError: for a limit or prefix out of range.
        """
        if maxConnections is not None and maxConnections < 1:
            raise ValueError(f"maxConnections must be at least 1, not {maxConnections}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, not {bandwidth!r}")
        if rate is not None and (rate.perSecond <= 0 or rate.burst < 1):
            raise ValueError(f"bad connection rate {rate!r}")
        v4, v6 = prefix
        if not (0 <= v4 <= 32 and 0 <= v6 <= 128):
            raise ValueError(f"bad client prefix {prefix!r}")
        if tuple(prefix) != self.prefix:
            self._table.clear()
        self.maxConnections = maxConnections
        self.rate = rate
        self.prefix = (v4, v6)
        self.bandwidth = bandwidth
        self.reset = reset

    @property
    def active(self) -> bool:
        """
        Whether any limit is set.
        """
        return (
            self.maxConnections is not None
            or self.rate is not None
            or self.bandwidth is not None
        )

    def __len__(self) -> int:
        """
        How many clients the table holds.
        """
        return len(self._table)

    def admit(self, address: object, now: float) -> Admission:
        """
        Decide whether a new connection of the client at C{address} is
        served, and count it when it is.

        @param address: the client's address (see L{normaliseAddress}).
        @param now: the reactor's time.
        @return: the L{Admission}; its C{ended()} is to be called when the
            connection ends, whatever it says.
        """
        ip = normaliseAddress(address)
        if ip is None:
            return _UNLIMITED
        bits = ip.max_prefixlen
        prefix = self.prefix[ip.version == 6]
        key = (ip.version, int(ip) >> (bits - prefix))
        table = self._table
        client = table.get(key)
        rate = self.rate
        if client is None:
            if len(table) >= self.capacity:
                self._makeRoom(now)
            if prefix == bits:
                name = str(ip)
            else:
                name = str(ipaddress.ip_network((ip, prefix), strict=False))
            burst = rate.burst if rate is not None else 0
            client = table[key] = _Client(key, name, burst, now)
        else:
            table.move_to_end(key)
        most = self.maxConnections
        if most is not None and client.live >= most:
            return self._refused(
                client,
                "client_connections",
                f"client {client.name} is at its limit of {most} live connections",
                now,
            )
        if rate is not None:
            tokens = client.tokens + (now - client.stamp) * rate.perSecond
            client.tokens = min(float(rate.burst), tokens)
            client.stamp = now
            if client.tokens < 1.0:
                return self._refused(
                    client,
                    "client_rate",
                    f"client {client.name} is over its limit of {rate} new connections",
                    now,
                )
            client.tokens -= 1.0
        client.live += 1
        return Admission(self, client)

    def _refused(
        self, client: _Client, metric: str, detail: str, now: float
    ) -> Admission:
        interval = self.logInterval
        if now - client.loggedAt < interval:
            client.unlogged += 1
            return Admission(None, None, Refusal(metric, detail, self.reset), True)
        if client.unlogged:
            detail += f"; {client.unlogged} more refused since, not recorded"
        detail += f"; its next refusals in {interval:g} s are counted, not recorded"
        client.loggedAt = now
        client.unlogged = 0
        return Admission(None, None, Refusal(metric, detail, self.reset))

    def _makeRoom(self, now: float) -> None:
        """
        Forget one client: the least recently seen of those that have
        nothing to remember, else the least recently seen.
        """
        table = self._table
        rate = self.rate
        for scanned, client in enumerate(table.values()):
            if scanned >= _SCAN:
                break
            if client.live:
                continue
            if rate is None or (
                client.tokens + (now - client.stamp) * rate.perSecond >= rate.burst
            ):
                del table[client.key]
                return
        table.popitem(last=False)
