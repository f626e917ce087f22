"""
A minimal splicetx TCP proxy for the bench, used when C{twist splice-proxy}
is not installed (or when asked for with C{--splicetx-launcher standin}).

It listens with Twisted on the epoll reactor, pauses reading the client,
connects upstream and hands both transports to L{splicetx.relay}.  No ACLs,
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

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Factory, Protocol
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
    upstream = TCP4ClientEndpoint(reactor, "127.0.0.1", args.connect, timeout=10)

    class Downstream(Protocol):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()
            self.gone = False
            d = connectProtocol(upstream, Protocol())
            d.addCallbacks(self.upstreamConnected, self.upstreamFailed)

        def upstreamConnected(self, up: Any) -> None:
            if self.gone:
                up.transport.abortConnection()
                return
            splicetx.relay(
                self.transport,
                up.transport,
                engine=args.engine,
                pipePool=pool,
                reactor=reactor,
            )

        def upstreamFailed(self, f: Any) -> None:
            print(f"standin: upstream: {f.getErrorMessage()}", file=sys.stderr)
            self.transport.abortConnection()

        def connectionLost(self, reason: Any = None) -> None:
            self.gone = True

    factory = Factory.forProtocol(Downstream)
    factory.noisy = False
    reactor.listenTCP(args.listen, factory, backlog=4096, interface="127.0.0.1")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
