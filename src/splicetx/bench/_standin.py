"""
A minimal splicetx TCP proxy for the bench, used when C{twist splice-proxy}
is not installed (or when asked for with C{--splicetx-launcher standin}).

It listens with Twisted on splicetx's epoll reactor (L{splicetx.reactor}),
pauses reading the client, connects upstream and hands both transports to
L{splicetx.relay}.  No ACLs,
no metrics, no per-connection log line: the bare cost of the relay.  Run as
C{python -m splicetx.bench._standin --listen PORT --connect PORT --engine
splice|copy|auto --pipe-size BYTES}.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """
    Run the stand-in proxy until killed.
    """
    p = argparse.ArgumentParser(prog="python -m splicetx.bench._standin")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--connect", type=int, required=True)
    p.add_argument("--engine", default="auto", choices=["auto", "splice", "copy"])
    p.add_argument("--pipe-size", type=int, default=1 << 20)
    args = p.parse_args(argv)

    from splicetx.reactor import install

    install()
    from twisted.internet import reactor
    from twisted.internet.protocol import ClientFactory, Factory, Protocol
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    import splicetx

    # Warnings and errors only, like C{twist --log-level=warn}.
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    pool = splicetx.PipePool(pipeSize=args.pipe_size)

    class Upstream(Protocol):
        def connectionMade(self) -> None:
            down = self.factory.downstream
            if down.gone:
                self.transport.abortConnection()
                return
            splicetx.relay(
                down.transport,
                self.transport,
                engine=args.engine,
                pipePool=pool,
                reactor=reactor,
            )

    class UpstreamFactory(ClientFactory):
        # Quiet and Deferred-free, like twist portforward's client side.
        noisy = False
        protocol = Upstream

        def __init__(self, downstream: Downstream) -> None:
            self.downstream = downstream

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            print(f"standin: upstream: {reason.getErrorMessage()}", file=sys.stderr)
            self.downstream.transport.abortConnection()

    class Downstream(Protocol):
        gone = False

        def connectionMade(self) -> None:
            self.transport.pauseProducing()
            reactor.connectTCP(
                "127.0.0.1", args.connect, UpstreamFactory(self), timeout=10
            )

        def connectionLost(self, reason: Any = None) -> None:
            self.gone = True

    factory = Factory.forProtocol(Downstream)
    factory.noisy = False
    reactor.listenTCP(args.listen, factory, backlog=4096, interface="127.0.0.1")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
