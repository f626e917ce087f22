"""
An HTTP CONNECT proxy that splices: read "CONNECT host:port HTTP/1.1" and
the headers, connect to host:port, answer "HTTP/1.1 200 Connection
established", then let the kernel relay the tunnel.  Malformed requests get
400 (431 for oversized headers), other methods 405, unreachable targets 502.

    python examples/http_connect_proxy.py --listen tcp:3128:interface=127.0.0.1
    curl -p -x http://127.0.0.1:3128 https://example.com/

It forwards to any host: do not expose it beyond hosts you trust.
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol

MAX_HEADER = 16 * 1024
REASONS = {
    200: "Connection established",
    400: "Bad Request",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
}


def parseTarget(target):
    """
    Split "host:port" or "[v6]:port" into (host, port); raise ValueError.
    """
    if target.startswith("["):
        host, sep, port = target[1:].partition("]:")
    else:
        host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(target)
    return host, int(port)


class ConnectProtocol(SpliceProxyProtocol):
    readsHandshake = True
    buffer = b""

    def handshakeReceived(self, data):
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buffer) > MAX_HEADER:
                self.refuse(431)
            return
        try:
            requestLine = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = requestLine.split(" ")
        except (UnicodeDecodeError, ValueError):
            return self.refuse(400)
        if not version.startswith("HTTP/1."):
            return self.refuse(400)
        if method != "CONNECT":
            return self.refuse(405, b"Allow: CONNECT\r\n")
        try:
            host, port = parseTarget(target)
        except ValueError:
            return self.refuse(400)
        endpoint = HostnameEndpoint(self.factory.reactor, host, port)
        self.connectUpstream(endpoint, toUpstream=rest)

    def refuse(self, code, headers=b""):
        self.reply(code, headers + b"Content-Length: 0\r\nConnection: close\r\n")
        self.transport.loseConnection()

    def reply(self, code, headers=b""):
        line = f"HTTP/1.1 {code} {REASONS[code]}\r\n"
        self.transport.write(line.encode("ascii") + headers + b"\r\n")

    def upstreamConnected(self, upstream):
        self.reply(200)
        self.startRelay()

    def upstreamFailed(self, reason):
        self.refuse(502)


async def main(reactor, args):
    factory = SpliceProxyFactory(reactor=reactor, connectTimeout=args.connect_timeout)
    factory.protocol = ConnectProtocol
    port = await serverFromString(reactor, args.listen).listen(factory)
    print("listening on", port.getHost().host, port.getHost().port, flush=True)
    await Deferred()  # serve until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="tcp:3128", help="server endpoint string")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds (default 10)"
    )
    arguments = parser.parse_args()
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
