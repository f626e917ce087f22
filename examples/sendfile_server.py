"""
Serve one file, zero-copy: every client that connects receives the file
(or a range of it) sent with os.sendfile, then the connection is closed.
Over TLS, or on a reactor without file descriptors, it falls back to
Twisted's FileSender by itself.

    python examples/sendfile_server.py --listen tcp:9000 big.iso
    nc 127.0.0.1 9000 | sha256sum
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from splicetx import ZeroCopyFileSender

log = Logger()


class ServeFile(Protocol):
    def connectionMade(self):
        args = self.factory.args
        self.file = open(args.path, "rb")
        self.sender = ZeroCopyFileSender(
            self.transport, self.file, args.offset, args.count
        )
        self.sender.start().addBoth(self.sent)

    def sent(self, result):
        self.file.close()
        log.info(
            "{peer}: {result} ({engine}; {sent} bytes)",
            peer=self.transport.getPeer(),
            result=result,
            engine=self.sender.engine,
            sent=self.sender.bytesSent,
        )
        self.transport.loseConnection()


async def main(reactor, args):
    factory = Factory.forProtocol(ServeFile)
    factory.args = args
    port = await serverFromString(reactor, args.listen).listen(factory)
    print("listening on", port.getHost().host, port.getHost().port, flush=True)
    await Deferred()  # serve until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="the file to serve")
    parser.add_argument("--listen", default="tcp:9000", help="server endpoint string")
    parser.add_argument("--offset", type=int, default=0, help="first byte to send")
    parser.add_argument("--count", type=int, default=None, help="bytes to send")
    arguments = parser.parse_args()
    open(arguments.path, "rb").close()  # fail now if it cannot be read
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
