# -*- test-case-name: tests.test_leanhooks,tests.test_fastforward -*-
"""
Splicing two raw sockets of the lean path both ways, once for every way a
connection gets there (docs/design-decisions.md rules 15 and 16):

 - L{SpliceHost}: what the two L{Direction
   <splicetx._relay.direction.Direction>}s of a lean connection report to
   (pipes that run out, splice errors, ends of stream, reactor shutdown),
   how they are set up (L{SpliceHost.spliceBoth}) and taken down
   (L{SpliceHost.stopDirections}).  The fast path of a plain forward
   (L{FastConnection <splicetx._proxy.fastconn.FastConnection>}) and
   L{LeanRelay} are both one.
 - L{LeanRelay}: the relay of a protocol with hooks whose client and
   upstream are both L{LeanTransport
   <splicetx._proxy.leantransport.LeanTransport>}s: what was written to
   either (a handshake's reply) and the relay's C{toA}/C{toB} go first,
   byte-exact, then both ways are spliced on the socket loop.  It has what
   the protocol, its timers and the status page use of a L{Relay
   <splicetx.Relay>}.
 - L{leanTarget}: the upstream endpoints the lean path connects raw, and
   L{connectLean}, L{relayFor}: the protocol's choices between the lean
   way and Twisted's.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from splicetx._pool.endpoints import PoolEndpoint
from splicetx._pool.pool import UpstreamPool
from splicetx._pool.target import TCPTarget
from splicetx._proxy.leantransport import connectRaw, isLean, realTransport
from splicetx._proxy.upstream import Address, addressFor, directAddress, startConnecting
from splicetx._relay.bandwidth import BandwidthPlan, directionLimits
from splicetx._relay.contract import CANCELLED, CLOSED, DONE, RelayResult
from splicetx._relay.direction import (
    Direction,
    errname,
    socketLoss,
    spliceFailure,
)
from splicetx._relay.pipes import PipeLimitReached
from splicetx._relay.relay import Relay

__all__ = ["SpliceHost", "LeanRelay", "leanTarget", "connectLean", "relayFor"]


def leanTarget(endpoint: Any) -> Address | None:
    """
    Where the lean path connects for C{endpoint} with a raw socket, or
    C{None} when it must be connected through its own C{connect}: a plain
    TCP endpoint to an address literal without a bind address (what
    L{directAddress <splicetx._proxy.upstream.directAddress>} knows: a
    C{TCP4ClientEndpoint}, C{TCP6ClientEndpoint}, a C{HostnameEndpoint} or
    a L{TCPTarget <splicetx._pool.target.TCPTarget>} with an address), or a
    L{TCPTarget <splicetx._pool.target.TCPTarget>} with a name whose one
    address the name cache holds now (asked at each connect, so a name that
    moves is followed).  The one place that recognises them.
    """
    if type(endpoint) is TCPTarget:
        literal = endpoint.literal
        if literal is not None:
            # What directAddress() would make of it, without asking twice
            # whether the host is an address.
            if endpoint.bindAddress is not None:
                return None
            family, sockaddr = literal
            host, port = sockaddr
            text = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            return family, sockaddr, text, float(endpoint.timeout or 0)
        cached = endpoint.cached()
        if cached is None or len(cached) != 1 or endpoint.bindAddress is not None:
            return None
        return addressFor(cached[0][1], endpoint.port, float(endpoint.timeout or 0))
    return directAddress(endpoint)


class SpliceHost:
    """
    The engine the two directions of a lean connection report to.  The
    host class has C{forwarder} (the factory's L{FastForwarder
    <splicetx._proxy.fastpath.FastForwarder>}: its pipes, its reactor, its
    wait for a pipe), C{ab} and C{ba}, and C{_end(reason, detail, abort)}.
    """

    __slots__ = ()

    forwarder: Any
    ab: Any
    ba: Any

    def _end(self, reason: str, detail: str, abort: bool) -> None:
        raise NotImplementedError

    @property
    def pool(self) -> Any:
        return self.forwarder.pool

    @property
    def reactor(self) -> Any:
        return self.forwarder.reactor

    def spliceBoth(self, cs: Any, us: Any, plan: int | BandwidthPlan | None) -> None:
        """
        Splice C{cs} (the client, A) and C{us} (the upstream, B) both ways,
        each direction within the bandwidth C{plan} when there is one (see
        L{directionLimits <splicetx._relay.bandwidth.directionLimits>}).
        """
        forwarder = self.forwarder
        pool, turns = forwarder.pool, forwarder.turns
        ab = self.ab = Direction(self, cs, us, pool, turns)
        ba = self.ba = Direction(self, us, cs, pool, turns)
        cs.source = us.sink = ab
        us.source = cs.sink = ba
        if plan is not None:
            ab.limit, ba.limit = directionLimits(plan, self.forwarder.reactor)
        if us.writing:
            us.writing = False
            us.reading = True
            us.loop.update(us)
        else:
            us.startReading()
        cs.startReading()

    def stopDirections(self) -> tuple[int, int]:
        """
        Stop both directions and give their pipes back.

        @return: the bytes each moved (A to B, B to A).
        """
        ab, ba = self.ab, self.ba
        pool = self.forwarder.pool
        for d in (ab, ba):
            if d is None:
                continue
            if d.limit is not None:
                d.limit.cancel(d)
            if d.pipe is not None:
                if d.inPipe:
                    pool.discard(d.pipe)
                else:
                    pool.give(d.pipe)
                d.pipe = None
            d.engine = None
            d.src = d.dst = None
        if ab is None:
            return 0, 0
        return ab.moved, ba.moved

    # -- what the directions report ------------------------------------------------

    def directionDone(self) -> None:
        ab, ba = self.ab, self.ba
        if ab.done and ba.done:
            self._end(DONE, "both directions finished", False)

    def fail(self, reason: str, detail: str) -> None:
        self._end(reason, detail, True)

    def spliceFailed(self, direction: Any, e: OSError, reading: bool) -> None:
        self.fail(*spliceFailure(direction, e.errno or 0, reading))

    def pipeFailed(self, direction: Any, e: OSError) -> None:
        """
        No pipe for C{direction}'s readable source.  An end of stream (or a
        reset) needs no pipe: a peek tells, and the direction ends as it
        would have -- so that connections whose peers leave still close
        and give their descriptors back when the descriptors are what ran
        out.  Bytes wait for a pipe (L{waitForPipe
        <splicetx._proxy.fastpath.FastForwarder.waitForPipe>}).
        """
        try:
            peeked = direction.src.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as err:
            self.spliceFailed(direction, err, True)
            return
        if not peeked:
            direction.eof = True
            direction.src.stopReading()
            direction.finish()
            return
        if isinstance(e, PipeLimitReached):
            why = str(e.strerror)
        else:
            why = errname(e.errno or 0)
        self.forwarder.waitForPipe(direction, why)

    def socketLost(self, sock: Any, reason: Failure) -> None:
        """
        The reactor dropped the socket loop (reactor shutdown).
        """
        self.fail(*socketLoss(sock, reason))


class LeanRelay(SpliceHost):
    """
    The relay of a protocol whose client and upstream are lean transports
    (see the module docstring): L{start}, L{abort}, L{close}, the byte
    counts and L{endedDirections}, as a L{Relay <splicetx.Relay>} has.
    """

    __slots__ = (
        "forwarder",
        "client",
        "upstream",
        "ab",
        "ba",
        "rate",
        "toA",
        "toB",
        "startedAt",
        "result",
        "_done",
    )

    #: What the status page and the log say of the engine.
    engine = "splice"

    def __init__(
        self,
        forwarder: Any,
        client: Any,
        upstream: Any,
        toA: bytes = b"",
        toB: bytes = b"",
        bandwidth: int | BandwidthPlan | None = None,
    ) -> None:
        """
        @param forwarder: the factory's fast forwarder (pipes, reactor).
        @param client: the client's L{LeanTransport}.
        @param upstream: the upstream's L{LeanTransport}.
        @param toA: bytes for the client before the upstream's stream.
        @param toB: bytes for the upstream before the client's stream.
        @param bandwidth: the connection's bandwidth plan (bytes per second
            per direction, or a L{BandwidthPlan
            <splicetx._relay.bandwidth.BandwidthPlan>}), or C{None}.
        """
        self.forwarder = forwarder
        self.client = client
        self.upstream = upstream
        self.ab: Any = None
        self.ba: Any = None
        self.rate = bandwidth
        self.toA = toA
        self.toB = toB
        self.startedAt = forwarder.reactor.seconds()
        self.result: RelayResult | None = None
        self._done: Deferred[RelayResult] | None = None

    @property
    def bytesAToB(self) -> int:
        ab = self.ab
        return len(self.toB) + (ab.moved if ab is not None else 0)

    @property
    def bytesBToA(self) -> int:
        ba = self.ba
        return len(self.toA) + (ba.moved if ba is not None else 0)

    @property
    def endedDirections(self) -> tuple[bool, bool]:
        ab, ba = self.ab, self.ba
        if ab is None:
            return False, False
        return ab.done, ba.done

    def start(self) -> Deferred[RelayResult]:
        """
        Take both sockets over, send what is to go first, then splice.

        @return: a C{Deferred} firing with the L{RelayResult}.
        """
        d = self._done = Deferred()
        cs, us = self.client, self.upstream
        for each in (cs, us):
            each.protocol = None
            each.engine = self
            each.stopReading()
        if self.toA:
            cs.write(self.toA)
        if self.toB:
            us.write(self.toB)
        if self.result is None:
            self._maybeSplice()
        return d

    def _maybeSplice(self) -> None:
        """
        Splice once both sockets have sent what was written to them.
        """
        if self.result is not None:
            return
        for each in (self.client, self.upstream):
            if not each.flushed:
                each.onFlushed = self._maybeSplice
                return
        self.spliceBoth(self.client, self.upstream, self.rate)

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End now: both sockets reset.
        """
        self._end(reason, detail, True)

    def close(self, reason: str = CLOSED, detail: str = "closed") -> None:
        """
        End now: both sockets closed cleanly.
        """
        self._end(reason, detail, False)

    def _end(self, reason: str, detail: str, abort: bool) -> None:
        if self.result is not None:
            return
        up, down = self.stopDirections()
        self.client.close(abort)
        self.upstream.close(abort)
        result = self.result = RelayResult(
            self.engine,
            len(self.toB) + up,
            len(self.toA) + down,
            max(0.0, self.forwarder.reactor.seconds() - self.startedAt),
            reason,
            detail,
            None,
        )
        d, self._done = self._done, None
        if d is not None:
            d.callback(result)

    def __repr__(self) -> str:
        return f"<splicetx lean relay {self.bytesAToB} up, {self.bytesBToA} down>"


def connectLean(proxy: Any, endpoint: Any, timeout: float) -> bool:
    """
    Connect C{proxy}'s upstream raw when its client is a lean transport:
    an endpoint L{leanTarget} knows (L{connectRaw
    <splicetx._proxy.leantransport.connectRaw>}), or a pool endpoint, whose
    members are tried by the pool's own failover with each member L{leanTarget}
    knows connected raw.

    @return: C{False} when the endpoint is to be connected Twisted's way.
    """
    transport = proxy.transport
    if not isLean(transport):
        return False
    reactor = proxy.factory.reactor
    if type(endpoint) is PoolEndpoint and isinstance(endpoint.pool, UpstreamPool):
        members = _LeanMembers(endpoint, transport.loop, reactor)
        startConnecting(proxy, reactor, members, timeout)
        return True
    target = leanTarget(endpoint)
    if target is None:
        return False
    connectRaw(proxy, transport.loop, reactor, target, timeout)
    return True


@implementer(IStreamClientEndpoint)
class _LeanMembers:
    """
    A L{PoolEndpoint <splicetx._pool.endpoints.PoolEndpoint>} connected
    through its pool's own failover (L{UpstreamPool.connect
    <splicetx._pool.pool.UpstreamPool.connect>}: the same tries, timeouts,
    passive health and counts), each member L{leanTarget} knows connected
    raw, any other through its endpoint.
    """

    def __init__(self, pooled: Any, loop: Any, reactor: Any) -> None:
        self.pooled = pooled
        self.loop = loop
        self.reactor = reactor

    def connect(self, factory: Any) -> Deferred[Any]:
        """
        @param factory: the proxy's upstream factory (its C{proxy}).
        """
        pooled = self.pooled
        proxy = factory.proxy

        def one(member: Any, factory: Any) -> Deferred[Any]:
            target = leanTarget(member.endpoint)
            if target is None:
                d: Deferred[Any] = member.endpoint.connect(factory)
                return d
            return _rawDeferred(proxy, self.loop, self.reactor, target)

        kwargs = {}
        if pooled.onTryFailed is not None:
            kwargs["onTryFailed"] = pooled.onTryFailed
        d = pooled.pool.connect(factory, pooled.clientKey, connectOne=one, **kwargs)

        def connected(result: tuple[Any, Any]) -> Any:
            pooled.upstream, upstream = result
            return upstream

        return d.addCallback(connected)

    def __repr__(self) -> str:
        return f"<splicetx lean connect through {self.pooled!r}>"


class _Firing:
    """
    What a raw connect reports to when a C{Deferred} is to tell its
    outcome (one try of a pool's failover).
    """

    _timedOut = False
    _connecting: Any = None

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.d: Deferred[Any] = Deferred(self._cancel)

    def _connected(self, upstream: Any) -> None:
        self._connecting = None
        upstream.proxy = self.proxy
        self.d.callback(upstream)

    def _connectFailed(self, reason: Failure) -> None:
        self._connecting = None
        self.d.errback(reason)

    def _cancel(self, _: Deferred[Any]) -> None:
        attempt, self._connecting = self._connecting, None
        if attempt is not None:
            attempt.stopConnecting()


def _rawDeferred(proxy: Any, loop: Any, reactor: Any, target: Address) -> Deferred[Any]:
    firing = _Firing(proxy)
    # The pool's try timeout rules; else the endpoint's own.
    connectRaw(firing, loop, reactor, target, 0.0)
    return firing.d


def relayFor(
    factory: Any,
    client: Any,
    upstream: Any,
    toA: bytes,
    toB: bytes,
    bandwidth: int | BandwidthPlan | None,
) -> Any:
    """
    The relay of a proxied connection: a L{LeanRelay} when both transports
    are lean, else Twisted's L{Relay <splicetx.Relay>} over both (a lean
    one adopted: L{realTransport
    <splicetx._proxy.leantransport.realTransport>}).
    """
    if isLean(client) and isLean(upstream):
        return LeanRelay(factory._fast, client, upstream, toA, toB, bandwidth)
    return Relay(
        realTransport(client),
        realTransport(upstream),
        reactor=factory.reactor,
        engine=factory.engine,
        toA=toA,
        toB=toB,
        pipePool=factory.pipePool,
        bandwidth=bandwidth,
    )
