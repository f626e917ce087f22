# -*- test-case-name: tests.test_fastforward -*-
"""
The fast path of a plain forward: which factories and ports may take it,
the accept that replaces a port's own, where clients go (one address or a
pool), and the one timer of a factory's fast connections
(docs/design-decisions.md rule 15).  One connection's life, from the
upstream connect to its record, is L{splicetx._proxy.fastconn}.

A L{SpliceProxyFactory <splicetx.proxy.SpliceProxyFactory>} that nobody
customised -- its own C{protocol} (or L{PoolProxyProtocol
<splicetx._proxy.poolproxy.PoolProxyProtocol>} over a pool, L{SNIProxyProtocol
<splicetx._proxy.poolproxy.SNIProxyProtocol>} with SNI routes), no PROXY
header sent upstream (one accepted from the client is read here too), an
upstream that is a TCP address (or pools of them), not the copy engine --
forwards every client the same way, so most of what the
general path builds per connection (a C{tcp.Server} transport, a protocol
with its hooks and phases, an upstream connector, client factory and
protocol, a L{Relay <splicetx.Relay>} and its engine, a timer) exists only
to be torn down again.  For such a factory, on a plain TCP listening port
of a Linux reactor with C{IReactorFDSet}, L{FastForwarder.attach} replaces
the port's accept with one that accepts the sockets itself (the port's own
accept limit and Twisted's C{EMFILE} reserve apply, so C{max-connections}
and fd exhaustion behave as on the general path) and gives each to a
L{FastConnection <splicetx._proxy.fastconn.FastConnection>}.

The preamble's timeouts, the connect timeout, idle timeout, half-close
timeout and the drain's prompt close are checked for all of a factory's
fast connections by one timer (L{FastForwarder.check}), not one per
connection.

A connection that cannot take the fast path when it is accepted (a reload
made the upstream a host name, say) takes the general path from there: it
gets the port's transport and the factory's protocol as if the port had
accepted it itself.
"""

from __future__ import annotations

import errno
import os
import socket
from _socket import socket as _RawSocket
from collections import deque
from typing import Any

from twisted.internet import tcp as _tcp
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger

from splicetx._pool.balance import LeastConnections, RoundRobin, WeightedRandom
from splicetx._pool.pool import UpstreamPool
from splicetx._proxy.fastconn import FastConnection
from splicetx._proxy.leantransport import LeanTransport
from splicetx._proxy.protocol import SpliceProxyProtocol
from splicetx._proxy.upstream import Address, directAddress
from splicetx._relay import core as _core
from splicetx._relay.direction import errname
from splicetx._relay.pipes import UnreservedPipes, defaultPipePool
from splicetx._relay.runtime import LOG_PROXY
from splicetx._relay.socketloop import LoopMember, loopFor
from splicetx._relay.turns import turnsFor

__all__ = ["FastForwarder", "fastPathRefusal"]

_log = Logger(namespace=LOG_PROXY)

#: The listening families whose clients the compiled accept takes.
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
#: The type of an accepted socket that is non-blocking already.
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


def fastPathRefusal(factory: Any, port: Any) -> str | None:
    """
    Why C{factory}'s connections on C{port} cannot take the fast path, or
    C{None} when they can.

    @param factory: a L{SpliceProxyFactory <splicetx.proxy.SpliceProxyFactory>};
        its C{_fastPathRefusal()} says what about the factory itself stands
        in the way.
    @param port: a listening port of it.
    """
    owner: Any = factory
    if not hasattr(os, "splice"):
        return "no splice(2)"
    if type(port) is not _tcp.Port or getattr(port, "factory", None) is not owner:
        return "not a plain TCP port of this factory"
    if not IReactorFDSet.providedBy(port.reactor):
        return "the reactor has no IReactorFDSet"
    refusal: str | None = factory._fastPathRefusal()
    if refusal is not None and factory._leanRefusal() is None:
        # Its protocol's hooks run on the lean path (lean transports).
        return None
    return refusal


def _numeric(addr: Any) -> Any:
    """
    An accepted IPv6 peer's address with its host in numeric form (as
    C{tcp.Port.doRead} gives it).
    """
    if len(addr) == 4:
        host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        addr = (host[0], *addr[1:])
    return addr


class _Plan:
    """
    Where the factory's clients go now: one address, or a pool whose
    members all have one.  Remade when the factory's upstream, protocol or
    pool change (a reload).
    """

    __slots__ = (
        "key",
        "single",
        "pool",
        "router",
        "addresses",
        "needsKey",
        "hooks",
    )

    def __init__(self, factory: Any) -> None:
        self.key = _planKey(factory)
        self.single: Address | None = None
        self.pool: Any = None
        #: The SNI router whose pools clients go to, or C{None}.
        self.router: Any = None
        self.addresses: dict[int, Address] = {}
        self.needsKey = True
        #: Clients get the factory's protocol over a lean transport.
        self.hooks = False
        if factory._fastPathRefusal() is not None:
            self.hooks = factory._leanRefusal() is None
            return
        router = getattr(factory, "router", None)
        pool = factory._fastPool()
        pools = [pool]
        if router is not None:
            # Every route's pool, and the one for names without a route.
            pools = [*factory.pools, router.default]
        if pool is None and router is None:
            self.single = directAddress(factory.upstream)
            return
        pools = [each for each in pools if each is not None]
        for each in pools:
            if not isinstance(each, UpstreamPool):
                return
            for member in each.members:
                address = directAddress(member.endpoint)
                if address is None:
                    return
                self.addresses[id(member)] = address
        self.pool = pool
        self.router = router
        self.needsKey = not all(
            isinstance(each.balancer, (RoundRobin, LeastConnections, WeightedRandom))
            for each in pools
        )

    @property
    def usable(self) -> bool:
        return (
            self.single is not None or self.pool is not None or self.router is not None
        )

    @property
    def shortestTimeout(self) -> float:
        """
        The shortest connect timeout of the endpoints themselves (0: none),
        which the timer's interval must honour too.
        """
        addresses = [self.single] if self.single is not None else []
        addresses += self.addresses.values()
        return min((a[3] for a in addresses if a[3]), default=0.0)


def _planKey(factory: Any) -> tuple[Any, ...]:
    return (
        factory.upstream,
        factory.protocol,
        getattr(factory, "pool", None),
        getattr(factory, "router", None),
        factory.acceptProxyProtocol,
        factory.sendProxyProtocol,
        factory.engine,
    )


class _PortMember(LoopMember):
    """
    A fast listening port's socket as a member of the L{SocketLoop
    <splicetx._relay.socketloop.SocketLoop>}: readable means "accept" (the port's
    C{doRead}, wrapped by the factory's gate); C{startReading} and
    C{stopReading} of the port are this member's, so pausing for
    C{max-connections} and closing work as on the reactor.
    """

    __slots__ = ("port",)

    def __init__(self, port: Any, loop: Any) -> None:
        self.port = port
        self.loop = loop
        self.fd: int = port.socket.fileno()
        self.reading = False
        self.writing = False
        self.source = self
        self.sink = self

    def readable(self) -> None:
        self.port.doRead()

    def writable(self) -> None:
        pass

    def crashed(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        # Reactor shutdown: the port closes as the reactor would close it.
        self.port.connectionLost(reason)

    def __repr__(self) -> str:
        return f"<splicetx fast accept of {self.port!r}>"


class FastForwarder:
    """
    The fast path of one factory: the accept of its ports, the plan of
    where clients go, and the one timer of its fast connections.

    @ivar factory: the factory.
    @ivar live: how many of its fast connections are live.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.reactor = factory.reactor
        self.loop = loopFor(self.reactor)
        #: The reactor's turn budget, which every direction of its
        #: connections shares (asked once, not per direction).
        self.turns = turnsFor(self.reactor)
        self.live = 0
        #: The listening ports attached (until they stop listening).
        self.ports: set[Any] = set()
        self._plan: _Plan | None = None
        self._timer: Any = None
        self._pipes: UnreservedPipes | None = None
        #: Directions waiting for a pipe (see L{waitForPipe}).
        self._pipeWaiters: deque[Any] = deque()
        self._resumeCall: Any = None
        self._pipeWarned = -1e9

    @property
    def pool(self) -> UnreservedPipes:
        """
        The pipes of the fast connections: the factory's pipe pool, lent
        without reservations (see L{UnreservedPipes}).
        """
        factory = self.factory
        source = factory.pipePool or defaultPipePool()
        pipes = self._pipes
        if pipes is None or pipes.pool is not source:
            pipes = self._pipes = UnreservedPipes(source)
        return pipes

    # -- no pipe to be had --------------------------------------------------------

    def waitForPipe(self, direction: Any, why: str) -> None:
        """
        C{direction} found no pipe (the cap, or no fd for one): it stops
        reading its source and waits -- no byte is lost, its flow only
        pauses -- until a pipe comes back or the next check; said at
        C{warn} at most once a minute.
        """
        direction.src.stopReading()
        self._pipeWaiters.append(direction)
        self.pool.onReturn = self._pipeReturned
        now = self.reactor.seconds()
        if now - self._pipeWarned >= 60:
            self._pipeWarned = now
            _log.warn(
                "no pipe for a spliced direction ({why}): its flow waits for "
                "one ({count} waiting)",
                splicetxEvent="pipes-exhausted",
                why=why,
                count=len(self._pipeWaiters),
            )

    def _pipeReturned(self) -> None:
        if self._pipeWaiters and self._resumeCall is None:
            # Not from inside the direction that gave the pipe back.
            self._resumeCall = self.reactor.callLater(0, self._resumeWaiters)

    def _resumeWaiters(self) -> None:
        """
        Let the waiting directions try again, oldest first, each once.
        """
        self._resumeCall = None
        waiters = self._pipeWaiters
        for _ in range(len(waiters)):
            waiters.popleft().resume()
        if not waiters and self._pipes is not None:
            self._pipes.onReturn = None

    def attach(self, port: Any) -> None:
        """
        Accept C{port}'s clients on the fast path (before the factory's gate
        wraps the port's accept).
        """
        forwarder = self
        closed = port.connectionLost
        member = _PortMember(port, self.loop)
        # Once: socket.family converts to an enum on every read.
        family = int(port.socket.family)

        def doRead() -> None:
            forwarder.accept(port, family)

        def connectionLost(reason: Any) -> Any:
            member.stopReading()
            try:
                return closed(reason)
            finally:
                forwarder.portClosed(port)

        port.doRead = doRead
        port.connectionLost = connectionLost
        # The listening socket moves into the socket loop too: an accept is
        # then one more event of the loop's reactor turn, not one of the
        # reactor's own dispatches (a logging context and its bookkeeping).
        reading = port in self.reactor.getReaders()
        if reading:
            self.reactor.removeReader(port)
        port.startReading = member.startReading
        port.stopReading = member.stopReading
        if reading:
            member.startReading()
        self.ports.add(port)

    def portClosed(self, port: Any) -> None:
        """
        C{port} stopped listening: with nothing live and no port left, the
        timer goes (a test's reactor is left clean).
        """
        self.ports.discard(port)
        if not self.live and not self.ports:
            self.stop()

    # -- accept ------------------------------------------------------------------

    def plan(self) -> _Plan:
        plan = self._plan
        if plan is None or plan.key != _planKey(self.factory):
            plan = self._plan = _Plan(self.factory)
        return plan

    def accept(self, port: Any, family: int) -> None:
        """
        The port's C{doRead}: accept what the kernel has, up to the port's
        limit, as C{tcp.Port.doRead} does.

        @param family: the listening socket's address family (read once, at
            L{attach}).
        """
        listener = port.socket
        limit = port.numberAccepts
        accepted = 0
        plan = self.plan()
        # The compiled accept: the client's socket non-blocking from
        # accept4 (no FIONBIO after it), and None, not an exception, when
        # the backlog is drained.
        fast = _core.accept if family in _IP_FAMILIES else None
        listenFD = listener.fileno()
        while accepted < limit:
            try:
                if fast is not None:
                    got = fast(listenFD)
                    if got is None:
                        break
                    fd, addr = got
                else:
                    # The C level: socket.accept() would build a
                    # socket.socket and convert its family and type to
                    # enums, per client.
                    fd, addr = listener._accept()
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPERM:
                    continue
                if not self._acceptFailed(port, e):
                    break
                continue
            accepted += 1
            skt: Any = None
            try:
                if not plan.usable and not plan.hooks:
                    skt = socket.socket(listener.family, listener.type, 0, fd)
                    self._general(port, skt, addr)
                    continue
                if fast is not None:
                    skt = _RawSocket(family, _NONBLOCKING_STREAM, 0, fd)
                else:
                    skt = _RawSocket(family, socket.SOCK_STREAM, 0, fd)
                    skt.setblocking(False)
                if plan.usable:
                    FastConnection(self, plan, skt, addr)
                else:
                    self._lean(port, skt, addr)
            except Exception:
                _log.failure("accepting a client of {port!r} failed", port=port)
                if skt is not None:
                    skt.close()
                else:
                    os.close(fd)
        if accepted == port.numberAccepts:
            port.numberAccepts += 20
        else:
            port.numberAccepts = max(1, accepted)

    def _acceptFailed(self, port: Any, e: OSError) -> bool:
        """
        C{accept} failed: with C{EMFILE}, use Twisted's reserved descriptor
        to accept and close the waiting clients (they see a close, not a
        hang) and say so once; other errors end this round.

        @return: whether to go on accepting.
        """
        reserved = _tcp._reservedFD
        if e.errno == errno.EMFILE and reserved.available():
            closed = 0
            with reserved:
                while True:
                    try:
                        fd, _ = port.socket._accept()
                    except OSError:
                        break
                    os.close(fd)
                    closed += 1
            _log.warn(
                "out of file descriptors (EMFILE): closed {count} client(s) at accept",
                splicetxEvent="accept-failed",
                count=closed,
            )
            return False
        if e.errno in _tcp._ACCEPT_ERRORS:
            _log.warn(
                "cannot accept a client: {error}",
                splicetxEvent="accept-failed",
                error=errname(e.errno or 0),
            )
            return False
        raise e

    def _lean(self, port: Any, skt: _RawSocket, addr: Any) -> None:
        """
        Serve one accepted client with the factory's protocol over a
        L{LeanTransport} (its hooks run as on the general path; the socket
        stays a member of the socket loop).
        """
        addr = _numeric(addr)
        protocol = self.factory.buildProtocol(port._buildAddr(addr))
        if protocol is None:
            skt.close()
            return
        if not isinstance(protocol, SpliceProxyProtocol):
            # Not ours to run lean: a Twisted transport, as the port would.
            self._transport(port, socket.socket(fileno=skt.detach()), addr, protocol)
            return
        transport = LeanTransport(skt, self.loop, self.reactor, addr, "A", port)
        transport.protocol = protocol
        # Its idle, half-close and drain checks run on this forwarder's one
        # timer, as the fast connections' do: no callLater per client.
        protocol._checker = self
        self.started()
        protocol.makeConnection(transport)
        transport.begin()

    def _general(self, port: Any, skt: socket.socket, addr: Any) -> None:
        """
        Serve one accepted client the general way, as C{tcp.Port.doRead}
        would have.
        """
        addr = _numeric(addr)
        protocol = self.factory.buildProtocol(port._buildAddr(addr))
        if protocol is None:
            skt.close()
            return
        self._transport(port, skt, addr, protocol)

    def _transport(
        self, port: Any, skt: socket.socket, addr: Any, protocol: Any
    ) -> None:
        """
        Give C{protocol} the port's own kind of transport over C{skt}.
        """
        s = port.sessionno
        port.sessionno = s + 1
        transport = port.transport(skt, protocol, addr, port, s, port.reactor)
        protocol.makeConnection(transport)

    # -- the timer -----------------------------------------------------------------

    def started(self) -> None:
        self.live += 1
        if self._timer is None:
            self._schedule()

    def ended(self) -> None:
        # The timer stays while a port listens: between two connections of
        # a busy port it would otherwise be cancelled and made again for
        # each one.  It stops by itself at its next check.
        self.live -= 1
        if not self.live and not self.ports:
            self.stop()

    def interval(self) -> float:
        """
        How often the fast connections are checked: a quarter of the
        shortest timeout (between 50 ms and 60 s), at most every 0.25 s
        while draining.
        """
        factory = self.factory
        plan = self._plan
        times = [
            t
            for t in (
                factory.connectTimeout,
                factory.idleTimeout,
                factory.halfCloseTimeout,
                plan.shortestTimeout if plan is not None else 0.0,
                factory.proxyProtocolTimeout if factory.acceptProxyProtocol else 0.0,
                getattr(factory, "sniTimeout", 0.0) if plan and plan.router else 0.0,
            )
            if t
        ]
        interval = min(60.0, max(0.05, min(times) / 4)) if times else 60.0
        if factory.draining:
            interval = min(interval, 0.25)
        return interval

    def _schedule(self) -> None:
        self._timer = self.reactor.callLater(self.interval(), self.check)

    def check(self) -> None:
        """
        Check every fast connection's timeouts; again later while any is
        live.
        """
        self._timer = None
        if self._pipeWaiters:
            self._resumeWaiters()
        now = self.reactor.seconds()
        for conn in list(self.factory._gate.live):
            if type(conn) is FastConnection:
                if conn.forwarder is self:
                    conn.check(now)
            elif getattr(conn, "_checker", None) is self:
                # A protocol the lean accept took (see _lean).
                conn._checkIdle()
        if self.live > 0:
            self._schedule()

    def hurry(self) -> None:
        """
        The interval may have shrunk (a drain started): check no later than
        it says.
        """
        timer = self._timer
        if timer is None or not timer.active():
            return
        interval = self.interval()
        if timer.getTime() - self.reactor.seconds() > interval:
            timer.reset(interval)

    def stop(self) -> None:
        """
        Cancel the timer (nothing live).
        """
        for call in (self._timer, self._resumeCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._resumeCall = None
