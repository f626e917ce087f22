"""
Route each connection by its first line, then splice: a client sends
C{NAME\\n} and is relayed to the upstream registered under NAME (the line
itself is consumed; everything the client sent after it goes first).

    python examples/line_router.py --listen tcp:7000 \\
        --route web=tcp:127.0.0.1:8080 --route db=unix:/run/db.sock

An unknown name gets C{ERR unknown route NAME} and the connection closes;
a first line longer than 256 bytes gets C{ERR line too long}.
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol

MAX_LINE = 256


class LineRouter(SpliceProxyProtocol):
    readsHandshake = True  # client bytes go to handshakeReceived()
    buffer = b""

    def handshakeReceived(self, data):
        self.buffer += data
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            if len(self.buffer) > MAX_LINE:
                self.refuse(b"line too long")
            return
        name = line.strip().decode("ascii", "replace")
        endpoint = self.factory.routes.get(name)
        if endpoint is None:
            return self.refuse(b"unknown route " + name.encode("ascii", "replace"))
        self.connectUpstream(endpoint, toUpstream=rest)

    def refuse(self, why):
        self.transport.write(b"ERR " + why + b"\n")
        self.transport.loseConnection()


async def main(reactor, args):
    factory = SpliceProxyFactory(reactor=reactor)
    factory.protocol = LineRouter
    factory.routes = {
        name: clientFromString(reactor, where) for name, where in args.route
    }
    port = await serverFromString(reactor, args.listen).listen(factory)
    print("listening on", port.getHost().host, port.getHost().port, flush=True)
    await Deferred()  # serve until killed


def route(text):
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise argparse.ArgumentTypeError(f"expected NAME=ENDPOINT, not {text!r}")
    return name, where


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="tcp:7000", help="server endpoint string")
    parser.add_argument(
        "--route",
        type=route,
        action="append",
        default=[],
        metavar="NAME=ENDPOINT",
        help="a route: first line NAME goes to client endpoint ENDPOINT",
    )
    arguments = parser.parse_args()
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
