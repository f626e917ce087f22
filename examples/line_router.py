"""
Route each connection by its first line, then splice: a client sends
C{NAME\\n} and is relayed to the upstream registered under NAME (the line
itself is consumed; everything the client sent after it goes first).

    python examples/line_router.py --route web=tcp:127.0.0.1:8080 \\
        --route db=unix:/run/db.sock      # listens on 127.0.0.1:7000

or, with this directory on PYTHONPATH:

    twist splice-proxy --protocol line_router.LineRouter \\
        --listen tcp:7000:interface=127.0.0.1 --route web=tcp:127.0.0.1:8080

An unknown name gets C{ERR unknown route NAME} and the connection closes;
a first line longer than 256 bytes gets C{ERR line too long}.  Both are
refusals: the record says C{rejected}, the metrics count them by reason.
"""

from twisted.internet.endpoints import clientFromString
from twisted.python import usage

from splicetx.proxy import SpliceProxyProtocol
from splicetx.service import serve

MAX_LINE = 256


class RouterOptions(usage.Options):
    """
    The router's own options, added to twist splice-proxy's.
    """

    def __init__(self):
        super().__init__()
        self["route"] = {}

    def opt_route(self, text):
        """
        NAME=ENDPOINT: a first line NAME goes to this client endpoint
        (repeatable).
        """
        name, sep, where = text.partition("=")
        if not sep or not name or not where:
            raise usage.UsageError(f"--route: expected NAME=ENDPOINT, not {text!r}")
        self["route"][name] = where


class LineRouter(SpliceProxyProtocol):
    readsHandshake = True  # client bytes go to handshakeReceived()
    commandLineOptions = RouterOptions  # parsed: self.factory.options
    buffer = b""

    def handshakeReceived(self, data):
        self.buffer += data
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            if len(self.buffer) > MAX_LINE:
                self.refuse("line_too_long", reply=b"ERR line too long\n")
            return
        name = line.strip().decode("ascii", "replace")
        where = self.factory.options["route"].get(name)
        if where is None:
            reply = b"ERR unknown route " + name.encode("ascii", "replace") + b"\n"
            return self.refuse("unknown_route", f"unknown route {name}", reply=reply)
        endpoint = clientFromString(self.factory.reactor, where)
        self.connectUpstream(endpoint, toUpstream=rest)


if __name__ == "__main__":
    serve(LineRouter, listen="tcp:7000:interface=127.0.0.1")
