"""
Helpers for the UDP tests: loopback echo upstreams, clients that collect
their replies, and polling on a scenario's reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from splicetx._udp.endpoints import MAX_DATAGRAM, UDPClientEndpoint
from splicetx._udp.forwarder import UDPForwarder
from splicetx._udp.upstreams import UDPUpstream, UDPUpstreams

LOOPBACK = "127.0.0.1"


class Echo(DatagramProtocol):
    """
    An upstream that answers every datagram with C{tag} + the datagram,
    and remembers the source addresses it saw.
    """

    noisy = False

    def __init__(self, tag: bytes = b"") -> None:
        self.tag = tag
        self.sources: list[Any] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.sources.append(addr)
        self.transport.write(self.tag + data, addr)


class Client(DatagramProtocol):
    """
    A client that sends to the proxy and collects what comes back.
    """

    noisy = False

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def send(self, data: bytes, port: int) -> None:
        self.transport.write(data, (LOOPBACK, port))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


def listen(reactor: Any, proto: DatagramProtocol) -> Any:
    """
    Listen on an ephemeral loopback port.
    """
    return reactor.listenUDP(0, proto, interface=LOOPBACK, maxPacketSize=MAX_DATAGRAM)


def waitFor(
    reactor: Any, condition: Callable[[], bool], interval: float = 0.01
) -> Deferred[None]:
    """
    Fire once C{condition()} is true (polled on the reactor; the scenario's
    own timeout bounds it).
    """
    d: Deferred[None] = Deferred()

    def check() -> None:
        if condition():
            d.callback(None)
        else:
            reactor.callLater(interval, check)

    check()
    return d


def forwarderTo(reactor: Any, ports: list[int], **keywords: Any) -> UDPForwarder:
    """
    A forwarder to loopback upstreams on C{ports}.
    """
    balance = keywords.pop("balance", "source")
    members = [UDPUpstream(UDPClientEndpoint(reactor, LOOPBACK, p)) for p in ports]
    return UDPForwarder(UDPUpstreams(members, balance), reactor=reactor, **keywords)


def proxyPort(reactor: Any, forwarder: UDPForwarder) -> Any:
    """
    Start the forwarder listening on an ephemeral loopback port.
    """
    port = listen(reactor, forwarder.buildProtocol(None))
    forwarder.addListeningPort(port)
    return port


class Records:
    """
    An access log stand-in that keeps the records.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def connection(
        self,
        warn: bool,
        client: str,
        upstream: str,
        engine: str,
        up: int,
        down: int,
        duration: float,
        reason: str,
        detail: str,
        fallbackReason: Any,
        extra: Any = None,
    ) -> None:
        self.records.append(
            dict(
                warn=warn,
                client=client,
                upstream=upstream,
                engine=engine,
                up=up,
                down=down,
                reason=reason,
                detail=detail,
                **(extra or {}),
            )
        )
