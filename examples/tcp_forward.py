"""
Forward TCP connections to one upstream, zero-copy: accept, connect
upstream, relay.  The tokio-splice README example, the Twisted way.

    python examples/tcp_forward.py --listen tcp:8080 --connect tcp:127.0.0.1:80
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from splicetx.proxy import SpliceProxyFactory


async def main(reactor, args):
    factory = SpliceProxyFactory(
        clientFromString(reactor, args.connect), reactor=reactor
    )
    port = await serverFromString(reactor, args.listen).listen(factory)
    print("listening on", port.getHost().host, port.getHost().port, flush=True)
    await Deferred()  # serve until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="tcp:8080", help="server endpoint string")
    parser.add_argument("--connect", required=True, help="client endpoint string")
    arguments = parser.parse_args()
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
