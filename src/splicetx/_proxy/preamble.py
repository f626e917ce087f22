# -*- test-case-name: tests.test_fastforward,tests.test_poolproxy -*-
"""
What a connection's preamble decides -- the PROXY protocol header a load
balancer sends first, and the TLS ClientHello an SNI route is chosen by --
whichever way its bytes are read: by the general path's protocol
(L{splicetx._proxy.headerreader}, L{SNIProxyProtocol
<splicetx._proxy.poolproxy.SNIProxyProtocol>}) or from the raw socket by
the lean path (L{splicetx._proxy.leanpreamble}).  Both call these, so a
refused client is counted, recorded and closed the same way on both.

Each refusal is a L{Refusal}: the C{connectionRefused} metric's reason,
the record's detail (its reason is L{REJECTED}), and whether the client
gets a reset rather than a close.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.python.failure import Failure

from splicetx._pool.sni import TIMEOUT, ClientHello, ClientHelloError
from splicetx._proxy.proxyheader import ProxyProtocolError

__all__ = [
    "REJECTED",
    "NO_ROUTE",
    "Refusal",
    "untrustedPeer",
    "badHeader",
    "headerTimedOut",
    "badHello",
    "helloTimedOut",
    "routeHello",
    "readHello",
    "closedBeforeRelay",
]

#: L{RelayResult.reason <splicetx.RelayResult>} of a client turned away
#: before any upstream connection (access rules, C{clientAccepted()}, a
#: refused preamble).
REJECTED = "rejected"
#: The detail's start when no route matches and there is no default pool.
NO_ROUTE = "no route for server name"


class Refusal(NamedTuple):
    """
    A client refused for its preamble.

    @ivar metric: the reason label of the C{connectionRefused} metric.
    @ivar detail: the connection record's detail.
    @ivar abort: C{True} to reset the client's connection, C{False} to
        close it.
    """

    metric: str
    detail: str
    abort: bool


def untrustedPeer(trusted: Any, peer: object) -> Refusal | None:
    """
    Whether a PROXY header may be believed from C{peer}.

    @param trusted: the factory's C{proxyProtocolFrom} (an
        L{AccessControl <splicetx.AccessControl>}), or C{None}: every peer.
    @param peer: the connection's peer address (a Twisted address or a
        host string).
    @return: C{None} when it may, else the L{Refusal}.
    """
    if trusted is None:
        return None
    allowed, why = trusted.isAllowed(peer)
    if allowed:
        return None
    return Refusal(
        "proxy_protocol_untrusted",
        f"PROXY protocol not trusted from this peer: {why}",
        True,
    )


def badHeader(error: ProxyProtocolError) -> Refusal:
    """
    The refusal of a malformed or missing PROXY header.
    """
    return Refusal("proxy_protocol", str(error), False)


def headerTimedOut(timeout: float, received: int) -> Refusal:
    """
    The refusal of a PROXY header not complete within C{timeout} seconds,
    after C{received} bytes of it.
    """
    return Refusal(
        "proxy_protocol_timeout",
        f"no complete PROXY protocol header within {timeout:g} s "
        f"(got {received} bytes)",
        False,
    )


def badHello(error: ClientHelloError) -> Refusal:
    """
    The refusal of what is not an acceptable ClientHello.
    """
    return Refusal("sni", str(error), True)


def helloTimedOut(timeout: float, received: int) -> Refusal:
    """
    The refusal of a ClientHello not complete within C{timeout} seconds,
    after C{received} bytes of it.
    """
    return Refusal(
        "sni_timeout",
        f"{TIMEOUT}: none within {timeout:g} s (got {received} bytes)",
        True,
    )


def routeHello(router: Any, hello: ClientHello) -> tuple[Any, Refusal | None]:
    """
    Where the client of C{hello} goes.

    @param router: an L{SNIRouter <splicetx._pool.sni.SNIRouter>}.
    @return: C{(target, None)}, or C{(None, refusal)} when no route matches
        and there is no default.
    """
    target = router.route(hello.serverName)
    if target is None:
        name = hello.serverName or "(none sent)"
        return None, Refusal("sni_no_route", f"{NO_ROUTE} {name}", True)
    return target, None


def readHello(
    reader: Any, data: bytes, router: Any
) -> tuple[ClientHello | None, Any, Refusal | None]:
    """
    Feed a ClientHello reader the client's new bytes, and route by the
    ClientHello once complete.

    @param reader: a L{ClientHelloReader <splicetx._pool.sni.ClientHelloReader>}.
    @param data: the bytes received since the last call.
    @param router: an L{SNIRouter <splicetx._pool.sni.SNIRouter>}.
    @return: C{(None, None, None)} while more bytes are needed, else
        C{(hello, target, None)}, or a refusal in the third place (with the
        ClientHello when it was complete).
    """
    try:
        hello = reader.feed(data)
    except ClientHelloError as e:
        return None, None, badHello(e)
    if hello is None:
        return None, None, None
    target, refusal = routeHello(router, hello)
    return hello, target, refusal


def closedBeforeRelay(reason: Failure) -> str:
    """
    The detail of a connection whose client left before the relay started
    (its reason is C{closed}).
    """
    return "connection closed before the relay started: " + reason.getErrorMessage()
