# -*- test-case-name: tests.test_fastforward,tests.test_proxy -*-
"""
The decisions at both ends of a proxied connection's life, taken once for
every way its bytes move (the protocol of L{splicetx._proxy.protocol}, the
plain forward's L{FastConnection <splicetx._proxy.fastconn.FastConnection>}):
whether the client is admitted (L{admit}), and at the end the result its
record and C{relayFinished} get (L{endResult}), what is counted
(L{countEnd}) and the extra fields of its record (L{recordExtra}).
L{SpliceProxyFactory._recordConnection
<splicetx._proxy.factory.SpliceProxyFactory._recordConnection>} writes it.
"""

from __future__ import annotations

from typing import Any

from splicetx._proxy.preamble import Refusal
from splicetx._proxy.wording import inProxyWords
from splicetx._relay.contract import RelayResult

__all__ = [
    "NO_ENGINE",
    "admit",
    "endResult",
    "endResultOf",
    "countEnd",
    "recordExtra",
]

#: L{RelayResult.engine} of a connection that ended before a relay started.
NO_ENGINE = "none"


def admit(factory: Any, address: Any, now: float) -> tuple[Refusal | None, Any]:
    """
    Admit a client by its address (the PROXY header's source, when one was
    read): the factory's access rules, then its client limits.

    @return: C{(refusal, admission)}: the L{Refusal} when the client is
        turned away (an access rule's is a reset, as HAProxy's C{tcp-request
        connection reject}), else C{None}; the client limits' admission (to
        give back at the end with L{countEnd}), or C{None}.
    """
    acl = factory.acl
    if acl is not None:
        allowed, why = acl.isAllowed(address)
        if not allowed:
            return Refusal("acl", why, True), None
    limits = factory.clientLimits
    if limits is None:
        return None, None
    admission = limits.admit(address, now)
    return admission.refusal, admission


def endResult(reactor: Any, startedAt: float, result: RelayResult) -> RelayResult:
    """
    C{result} as the connection's record says it: its duration from the
    accept, and the relay's A and B named as the client and the upstream
    (L{splicetx._proxy.wording}).
    """
    return endResultOf(
        reactor,
        startedAt,
        result.engine,
        result.bytesAToB,
        result.bytesBToA,
        result.reason,
        result.detail,
        result.fallbackReason,
    )


def endResultOf(
    reactor: Any,
    startedAt: float,
    engine: str,
    bytesAToB: int,
    bytesBToA: int,
    reason: str,
    detail: str,
    fallbackReason: str | None = None,
) -> RelayResult:
    """
    L{endResult} from the result's fields, for a connection that has no
    relay's result to start from (the plain forward's).
    """
    return RelayResult(
        engine,
        bytesAToB,
        bytesBToA,
        max(0.0, reactor.seconds() - startedAt),
        reason,
        inProxyWords(detail),
        inProxyWords(fallbackReason),
    )


def countEnd(factory: Any, result: RelayResult, admission: Any) -> bool:
    """
    Give the client's place back (its admission, or C{None}) and count the
    end in the factory's metrics (a relay's bytes when one ran).

    @return: whether the connection's record is to be written (C{False}
        for a client refused again within its log interval).
    """
    record = admission is None or admission.ended()
    metrics = factory.metrics
    if metrics is not None:
        forward = factory.forwardName
        metrics.connectionClosed(forward)
        if result.engine != NO_ENGINE:
            metrics.relayFinished(result, forward)
    return record


def recordExtra(
    logFields: dict[str, Any] | None,
    peer: str | None,
    pooled: bool,
    pool: str | None,
    serverName: str | None,
) -> dict[str, Any] | None:
    """
    The record's fields beyond the result's: the factory's C{logFields};
    C{peer} (the balancer) when a PROXY header named another client; once
    the connection went through a pool (C{pooled}), the C{pool} (C{None}
    for a member given alone) and the C{serverName} its SNI route was
    chosen by.
    """
    extra = logFields
    if peer is not None:
        extra = dict(extra or ())
        extra["peer"] = peer
    if pooled:
        extra = dict(extra or ())
        extra["pool"] = pool
        extra["serverName"] = serverName
    return extra
