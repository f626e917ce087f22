# -*- test-case-name: tests.test_fastforward -*-
"""
One client on the fast path of a plain forward (L{splicetx._proxy.fastpath}),
from its accepted socket to its log record
(docs/design-decisions.md rule 15):

  1. the factory's access rules, and the preamble the factory asks for
     (a PROXY header, then the access rules over its source address; a TLS
     ClientHello whose server name routes to a pool), read from the raw
     socket by L{LeanPreamble <splicetx._proxy.leanpreamble.LeanPreamble>};
  2. a non-blocking connect to the upstream (a pool member chosen by the
     pool's balancer, failing over to the next member on a failed connect
     exactly as L{UpstreamPool.connect <splicetx._pool.pool.UpstreamPool.connect>}
     does, bounded in tries and time);
  3. once connected, both ways spliced by the splice engine's own
     L{Direction <splicetx._relay.direction.Direction>} (the same loop, the same
     byte budget per reactor turn), both sockets members of the reactor's
     L{SocketLoop <splicetx._relay.socketloop.SocketLoop>};
  4. at the end, both sockets closed, and the same L{RelayResult
     <splicetx.RelayResult>}, metrics and log record as the general path.

Its timeouts are checked by its forwarder's timer (L{FastConnection.check}).
"""

from __future__ import annotations

import errno
import os
from _socket import socket as _RawSocket
from enum import Enum
from typing import Any

from twisted.internet import error as _error
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._pool.addresses import describeAddress, describeEndpoint
from splicetx._pool.balance import clientKeyFor
from splicetx._pool.failover import Failover
from splicetx._proxy.leanpreamble import LeanPreamble
from splicetx._proxy.leanrelay import SpliceHost
from splicetx._proxy.leantransport import (
    PENDING,
    SocketMember,
    connectError,
    rawConnect,
)
from splicetx._proxy.lifecycle import NO_ENGINE as _NO_ENGINE
from splicetx._proxy.lifecycle import admit, countEnd, endResultOf, recordExtra
from splicetx._proxy.preamble import (
    REJECTED,
    Refusal,
    closedBeforeRelay,
    untrustedPeer,
)
from splicetx._proxy.timeouts import dueEnd
from splicetx._proxy.upstream import Address
from splicetx._relay.contract import CANCELLED, CLOSED, ERROR
from splicetx._relay.direction import (
    INERT,
    errname,
)
from splicetx._relay.runtime import LOG_PROXY
from splicetx._relay.tcpoptions import keepaliveOn

__all__ = ["FastConnection"]

_log = Logger(namespace=LOG_PROXY)


class _State(Enum):
    """
    Where a fast connection is; every transition assigns
    L{FastConnection.state}.
    """

    PREAMBLE = "preamble"
    CONNECTING = "connecting"
    RELAYING = "relaying"
    FINISHED = "finished"


class _FastSocket(SocketMember):
    """
    One socket of a fast connection: a member of the L{SocketLoop
    <splicetx._relay.socketloop.SocketLoop>} and, for its two
    L{Direction <splicetx._relay.direction.Direction>}s, what the splice engine's
    own socket object is.
    """

    __slots__ = ()

    def __init__(self, conn: FastConnection, sock: _RawSocket, name: str) -> None:
        self.engine: Any = conn
        self.loop = conn.forwarder.loop
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.reading = False
        self.writing = False
        self.source: Any = INERT
        self.sink: Any = INERT

    def crashed(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.fail(ERROR, f"internal error on socket {self.name}")

    def connectionLost(self, reason: Failure) -> None:
        engine = self.engine
        if engine is not None:
            engine.socketLost(self, reason)

    close = SocketMember.shut

    def __repr__(self) -> str:
        return f"<splicetx fast socket {self.name} fd={self.fd}>"


class FastConnection(SpliceHost):
    """
    One client on the fast path, from accept to its log record.  It is the
    "engine" its two L{Direction <splicetx._relay.direction.Direction>}s report to,
    and, for the factory's gate and status page, a live connection
    (C{abort}, C{drainStarted}, C{relay}, C{upstreamEndpoint},
    C{startedAt}, C{clientText}).

    @ivar state: the L{_State}.
    """

    __slots__ = (
        "forwarder",
        "plan",
        "state",
        "client",
        "upstream",
        "ab",
        "ba",
        "peer",
        "member",
        "deadline",
        "timeout",
        "failover",
        "startedAt",
        "lastActivity",
        "mark",
        "halfClosedAt",
        "preamble",
        "proxyHeader",
        "serverName",
        "upstreamPool",
        "admission",
        "keepaliveDue",
        "__weakref__",
    )

    #: What the status page and the log say of the engine.
    engine = "splice"

    def __init__(self, forwarder: Any, plan: Any, skt: _RawSocket, addr: Any) -> None:
        factory = forwarder.factory
        self.forwarder = forwarder
        self.plan = plan
        self.state = _State.CONNECTING
        self.client = _FastSocket(self, skt, "A")
        self.upstream: _FastSocket | None = None
        self.ab: Any = None
        self.ba: Any = None
        self.peer = addr
        self.member: Any = None
        #: The tries through its pool (L{Failover}), once it has one.
        self.failover: Failover | None = None
        self.deadline = 0.0
        self.timeout = 0.0
        self.startedAt = self.lastActivity = now = factory.reactor.seconds()
        self.mark = 0
        self.halfClosedAt: float | None = None
        self.preamble: LeanPreamble | None = None
        #: The PROXY header the client sent, once read.
        self.proxyHeader: Any = None
        #: The TLS server name its SNI route was chosen by, once read.
        self.serverName: str | None = None
        #: The pool it connects to (the plan's, or its SNI route's).
        self.upstreamPool: Any = None
        #: What the factory's client limits decided (see _admitted).
        self.admission: Any = None
        #: TCP keepalive is still to go on the upstream socket (see check).
        self.keepaliveDue = False
        factory._gate.connectionStarted(self)
        forwarder.started()
        metrics = factory.metrics
        if metrics is not None:
            metrics.connectionOpened(factory.forwardName)
        keepalive = factory.tcpKeepalive
        if keepalive is not None and not factory._keepalivePorts:
            keepaliveOn(skt, keepalive)
        if factory.acceptProxyProtocol:
            self.state = _State.PREAMBLE
            refusal = untrustedPeer(factory.proxyProtocolFrom, addr[0])
            if refusal is not None:
                self.refused(refusal)
                return
            self._readPreamble(factory, True, now)
            return
        if not self._admitted():
            return
        if plan.router is not None:
            self.state = _State.PREAMBLE
            self._readPreamble(factory, False, now)
            return
        self._start(plan.pool, now)

    # -- admission and the preamble --------------------------------------------------

    def _readPreamble(self, factory: Any, header: bool, now: float) -> None:
        preamble = self.preamble = LeanPreamble(self, self.client, factory, header, now)
        # The bytes are often here with the accept: no reactor turn to wait.
        preamble.readable()

    def _admitted(self) -> bool:
        """
        The factory's access rules and client limits over the client's
        address (the PROXY header's source, when one was read): C{False}
        when they refuse it (then the connection has ended).
        """
        refusal, self.admission = admit(
            self.forwarder.factory, self.clientAddress, self.lastActivity
        )
        if refusal is not None:
            self.refused(refusal)
            return False
        return True

    def headerRead(self, header: Any) -> bool:
        """
        The client's PROXY header arrived: admit the client by its source.

        @return: C{False} when the connection was refused (and has ended).
        """
        self.proxyHeader = header
        return self._admitted()

    def preambleDone(self, target: Any, serverName: str | None) -> None:
        """
        The preamble is read: connect to C{target} (the SNI route's pool),
        or, without SNI routes, to the plan's upstream.
        """
        self.preamble = None
        if serverName is not None:
            self.serverName = serverName
        self._start(target if target is not None else self.plan.pool, self.lastActivity)

    def refused(self, refusal: Refusal) -> None:
        """
        Refuse the client before any upstream connection: count it, close
        (or reset) it, record it as rejected.
        """
        self.preamble = None
        factory = self.forwarder.factory
        metrics = factory.metrics
        if metrics is not None:
            metrics.connectionRefused(refusal.metric, factory.forwardName)
        self.client.close(refusal.abort)
        self._finish(_NO_ENGINE, 0, 0, REJECTED, refusal.detail)

    def preambleLost(self, reason: Failure) -> None:
        """
        The client left (or its connection broke) during the preamble.
        """
        self.preamble = None
        self.client.close(False)
        self._finish(_NO_ENGINE, 0, 0, CLOSED, closedBeforeRelay(reason))

    def _start(self, pool: Any, now: float) -> None:
        """
        Connect to the upstream: the plan's one address, or C{pool}.
        """
        self.state = _State.CONNECTING
        if pool is not None:
            self.upstreamPool = pool
            key = clientKeyFor(self.clientAddress) if self.plan.needsKey else None
            self.failover = Failover(pool, key, now)
        self._connect(now)

    # -- connecting ----------------------------------------------------------------

    @property
    def clientAddress(self) -> Any:
        """
        The client's address: the source of an accepted PROXY header, else
        the peer's host.
        """
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return header.source
        return self.peer[0]

    @property
    def clientText(self) -> str:
        """
        The client's address, as the log writes it.
        """
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return describeAddress(header.source)
        return self.peerText

    @property
    def peerText(self) -> str:
        """
        The connection's peer (the balancer that sent a PROXY header).
        """
        addr = self.peer
        if len(addr) == 4:
            return f"[{addr[0]}]:{addr[1]}"
        return f"{addr[0]}:{addr[1]}"

    @property
    def upstreamEndpoint(self) -> Any:
        """
        What the status page names as the upstream.
        """
        member = self.member
        if member is not None:
            return member.endpoint
        return self.forwarder.factory.upstream

    def _connect(self, now: float) -> None:
        """
        Start the connect to the next upstream: the plan's only one, or the
        next member its L{Failover} chooses.
        """
        failover = self.failover
        if failover is None:
            target: Address | None = self.plan.single
            timeout = self.forwarder.factory.connectTimeout
        else:
            chosen = failover.next(now)
            if chosen is None:
                self._noUpstream()
                return
            member, bound = chosen
            self.member = member
            target = self.plan.addresses.get(id(member))
            timeout = bound or 0.0
        if target is None:
            self._noUpstream()
            return
        family, sockaddr, _, own = target
        if own and (not timeout or own < timeout):
            # A shorter timeout of the endpoint wins, as on the general path.
            timeout = own
        self.timeout = timeout
        self.deadline = now + timeout if timeout else 0.0
        try:
            up, err = rawConnect(family, sockaddr)
        except OSError as e:
            self._failed(
                f"cannot connect to {target[2]}: cannot create a socket: "
                f"{errname(e.errno or 0)}",
                e,
            )
            return
        us = self.upstream = _FastSocket(self, up, "B")
        if err == 0:
            self._connected()
        elif err == PENDING:
            us.sink = self
            us.startWriting()
            # A client read for its preamble waits (level-triggered).
            self.client.stopReading()
        else:
            self._tryFailed(err)

    def writable(self) -> None:
        """
        The upstream socket is writable while connecting: the connect
        finished, one way or the other.
        """
        us = self.upstream
        assert us is not None
        err = connectError(us.sock)
        if err:
            self._tryFailed(err)
        else:
            self._connected()

    def _tryFailed(self, err: int, timedOut: bool = False) -> None:
        """
        One connect failed: fail over to the pool's next member, or fail.
        """
        us, self.upstream = self.upstream, None
        if us is not None:
            us.close(True)
        if timedOut:
            exc: Exception = _error.TimeoutError()
        else:
            exc = _error.getConnectError(OSError(err, os.strerror(err)))
        member = self.member
        failover = self.failover
        if member is None or failover is None:
            factory = self.forwarder.factory
            if timedOut:
                why = f"timed out after {self.timeout:g} s"
            else:
                why = Failure(exc).getErrorMessage()
            self._failed(
                f"cannot connect to {describeEndpoint(factory.upstream)}: {why}", exc
            )
            return
        failure = Failure(exc)
        failover.failed(member, failure)
        metrics = self.forwarder.factory.metrics
        if metrics is not None:
            # Every failed try counts, as on the general path.
            metrics.connectFailed(failure, self.forwarder.factory.forwardName)
        self.member = None
        self._connect(self.forwarder.reactor.seconds())

    def _noUpstream(self) -> None:
        """
        The pool has no member left to try.
        """
        pool = self.upstreamPool
        failover = self.failover
        assert pool is not None and failover is not None
        exc = failover.exhausted()
        self._failed(
            f"cannot connect to pool {pool.name}: {Failure(exc).getErrorMessage()}",
            exc,
        )

    def _failed(self, detail: str, exc: BaseException) -> None:
        """
        No upstream could be reached: close the client, count and log it.
        """
        factory = self.forwarder.factory
        if factory.metrics is not None:
            factory.metrics.connectFailed(Failure(exc), factory.forwardName)
        # As the general path's upstreamFailed(): a close, not a reset.
        self.client.close(False)
        self._finish(_NO_ENGINE, 0, 0, "upstream failed", detail)

    def _connected(self) -> None:
        """
        The upstream is connected: splice both ways.
        """
        us = self.upstream
        assert us is not None
        self.state = _State.RELAYING
        factory = self.forwarder.factory
        member = self.member
        if member is not None:
            Failover.succeeded(member)
        # TCP keepalive goes on the upstream socket at the first check (see
        # check): a connection that ends before never needs it.
        self.keepaliveDue = factory.tcpKeepalive is not None
        self.lastActivity = self.forwarder.reactor.seconds()
        self.spliceBoth(self.client, us, factory.bandwidthPlan(self.admission))

    # -- for the gate and the status page ------------------------------------------

    @property
    def relay(self) -> FastConnection | None:
        """
        Itself once relaying (it has the byte counts), else C{None}.
        """
        return self if self.ab is not None else None

    @property
    def bytesAToB(self) -> int:
        return self.ab.moved if self.ab is not None else 0

    @property
    def bytesBToA(self) -> int:
        return self.ba.moved if self.ba is not None else 0

    def abort(self, reason: str = CANCELLED, detail: str = "aborted") -> None:
        """
        End this connection now (both sockets reset).
        """
        self._end(reason, detail, True)

    def drainStarted(self) -> None:
        """
        The factory drains: check at once whether this connection can close,
        then on the drain's schedule.
        """
        self.check(self.forwarder.reactor.seconds())
        self.forwarder.hurry()

    def check(self, now: float) -> None:
        """
        The timeouts: the preamble's and the connect timeout here; idle,
        half-close and the drain's prompt close as the general path decides
        them (L{splicetx._proxy.timeouts.dueEnd}).
        """
        state = self.state
        if state is _State.FINISHED:
            return
        if state is _State.CONNECTING:
            self.lastActivity = now
            if self.deadline and now >= self.deadline:
                self._tryFailed(errno.ETIMEDOUT, timedOut=True)
            return
        if state is _State.PREAMBLE:
            preamble = self.preamble
            refusal = preamble.expired(now) if preamble is not None else None
            if refusal is not None:
                self.refused(refusal)
                return
            # As the general path's idle timer, which runs from the accept.
            ended = (False, False)
        else:
            if self.keepaliveDue:
                self._keepalive()
            ab, ba = self.ab, self.ba
            mark = ab.moved + ba.moved
            if mark != self.mark:
                self.mark = mark
                self.lastActivity = now
            ended = (ab.done, ba.done)
        factory = self.forwarder.factory
        ending, self.halfClosedAt, _ = dueEnd(
            factory, now, self.lastActivity, self.halfClosedAt, ended, self.client
        )
        if ending is not None:
            self._end(*ending)

    def _keepalive(self) -> None:
        """
        Turn TCP keepalive on for the upstream socket (four C{setsockopt}).

        The client socket has it from the accept: inherited from the
        listening socket, or set then.  The upstream socket gets it here,
        at the connection's first check (a quarter of the shortest timeout
        at most after the connect: 7.5 s at the defaults), not at the
        connect: most connections of a busy proxy end before that and
        never needed it, and a connection that lives on gets it long
        before its first probe is due (60 s of silence at the defaults).
        """
        self.keepaliveDue = False
        keepalive = self.forwarder.factory.tcpKeepalive
        us = self.upstream
        if keepalive is not None and us is not None:
            keepaliveOn(us.sock, keepalive)

    # -- the end -----------------------------------------------------------------

    def _end(self, reason: str, detail: str, abort: bool) -> None:
        """
        Close both sockets, give the pipes back and record the result.
        """
        if self.state is _State.FINISHED:
            return
        up, down = self.stopDirections()
        self.client.close(abort)
        us, self.upstream = self.upstream, None
        if us is not None:
            us.close(abort)
        engine = "splice" if self.ab is not None else _NO_ENGINE
        self._finish(engine, up, down, reason, detail)

    def _finish(
        self, engine: str, up: int, down: int, reason: str, detail: str
    ) -> None:
        self.state = _State.FINISHED
        preamble, self.preamble = self.preamble, None
        if preamble is not None:
            preamble.detach()
        forwarder = self.forwarder
        factory = forwarder.factory
        forwarder.ended()
        upstreamText = self._upstreamText()
        member, self.member = self.member, None
        if member is not None and engine != _NO_ENGINE:
            if up or down:
                member.relayed(up, down)
            member.release()
        # Its sockets are named A (client) and B (upstream), as a relay's.
        result = endResultOf(
            forwarder.reactor, self.startedAt, engine, up, down, reason, detail
        )
        admission, self.admission = self.admission, None
        try:
            if countEnd(factory, result, admission):
                factory._recordConnection(
                    result, self.clientText, upstreamText, None, None, self._extra()
                )
        except Exception:
            _log.failure("recording {conn!r} failed", conn=self)
        finally:
            factory._gate.connectionEnded(self)

    def _upstreamText(self) -> str:
        plan = self.plan
        if plan.single is not None:
            return plan.single[2]
        member = self.member
        if member is not None and self.ab is not None:
            address = plan.addresses.get(id(member))
            if address is not None:
                return address[2]
        pool = self.upstreamPool or plan.pool
        if pool is None:
            return describeEndpoint(None)
        return f"pool {pool.name}"

    def _extra(self) -> dict[str, Any] | None:
        header = self.proxyHeader
        peer = None
        if header is not None and header.source is not None:
            peer = self.peerText
        pool = self.upstreamPool
        return recordExtra(
            self.forwarder.factory.logFields,
            peer,
            pool is not None,
            str(pool.name) if pool is not None else None,
            self.serverName,
        )

    def __repr__(self) -> str:
        return f"<splicetx fast connection {self.clientText} {self.state.value}>"
