"""
An HTTP CONNECT proxy that splices: read "CONNECT host:port HTTP/1.1" and
the headers, connect to host:port, answer "HTTP/1.1 200 Connection
established", then let the kernel relay the tunnel.  Malformed requests get
400 (431 for oversized headers), other methods 405, unreachable targets 502.

    python examples/http_connect_proxy.py        # listens on 127.0.0.1:3128
    curl -p -x http://127.0.0.1:3128 https://example.com/

or, with this directory on PYTHONPATH, as twist splice-proxy's protocol:

    twist splice-proxy --protocol http_connect_proxy.ConnectProtocol \\
        --listen tcp:3128:interface=127.0.0.1 --metrics tcp:9100:interface=127.0.0.1

Every option of twist splice-proxy applies (--help lists them): drain on
SIGTERM, --workers, --access-log, --metrics with the status page, ...
It forwards to any host: do not expose it beyond hosts you trust.
"""

from splicetx.endpoints import TCPTarget
from splicetx.proxy import SpliceProxyProtocol
from splicetx.service import serve

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
    readsHandshake = True  # client bytes go to handshakeReceived()
    buffer = b""

    def handshakeReceived(self, data):
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buffer) > MAX_HEADER:
                self.refuseWith(431, "header_too_large")
            return
        try:
            requestLine = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = requestLine.split(" ")
        except (UnicodeDecodeError, ValueError):
            return self.refuseWith(400, "bad_request")
        if not version.startswith("HTTP/1."):
            return self.refuseWith(400, "bad_request")
        if method != "CONNECT":
            return self.refuseWith(405, "not_connect", b"Allow: CONNECT\r\n")
        try:
            host, port = parseTarget(target)
        except ValueError:
            return self.refuseWith(400, "bad_request")
        # An address connects at once; a name resolves through one cache.
        upstream = TCPTarget(self.factory.reactor, host, port)
        self.connectUpstream(upstream, toUpstream=rest)  # bytes past the request

    def upstreamConnected(self, upstream):
        self.reply(answer(200))  # written first...
        self.startRelay()  # ...then the kernel relays the tunnel

    def upstreamFailed(self, reason):
        self.refuseWith(502, "upstream_failed")  # recorded as "upstream failed"

    def refuseWith(self, code, reason, headers=b""):
        headers += b"Content-Length: 0\r\nConnection: close\r\n"
        self.refuse(reason, f"{code} {REASONS[code]}", reply=answer(code, headers))


def answer(code, headers=b""):
    """
    The bytes of an HTTP/1.1 response head with no body.
    """
    return f"HTTP/1.1 {code} {REASONS[code]}\r\n".encode("ascii") + headers + b"\r\n"


if __name__ == "__main__":
    serve(ConnectProtocol, listen="tcp:3128:interface=127.0.0.1")
