"""
A SOCKS5 proxy that splices (RFC 1928, no authentication, CONNECT only):
negotiate, connect to the IPv4 / IPv6 address or domain name asked for,
reply with the proper code, then let the kernel relay the connection.

    python examples/socks5_proxy.py --listen tcp:1080:interface=127.0.0.1
    curl --socks5-hostname 127.0.0.1:1080 https://example.com/

It forwards to any host: do not expose it beyond hosts you trust.
"""

import argparse
import ipaddress
import struct
import sys

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
)
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from splicetx.proxy import SpliceProxyFactory, SpliceProxyProtocol

# Reply codes (RFC 1928, section 6).
SUCCEEDED, GENERAL_FAILURE, NETWORK_UNREACHABLE, HOST_UNREACHABLE = 0, 1, 3, 4
CONNECTION_REFUSED, TTL_EXPIRED, COMMAND_NOT_SUPPORTED = 5, 6, 7
ADDRESS_TYPE_NOT_SUPPORTED = 8
IPV4, DOMAIN, IPV6 = 1, 3, 4


def failureCode(reason):
    """
    The SOCKS reply code for a failed upstream connection.
    """
    if reason.check(error.ConnectionRefusedError):
        return CONNECTION_REFUSED
    if reason.check(error.DNSLookupError, error.NoRouteError):
        return HOST_UNREACHABLE
    if reason.check(error.TimeoutError, error.TCPTimedOutError):
        return TTL_EXPIRED
    if "unreachable" in reason.getErrorMessage().lower():
        return NETWORK_UNREACHABLE
    return GENERAL_FAILURE


class Socks5Protocol(SpliceProxyProtocol):
    readsHandshake = True
    buffer = b""
    greeted = False

    def handshakeReceived(self, data):
        self.buffer += data
        if not self.greeted:
            if len(self.buffer) < 2 or len(self.buffer) < 2 + self.buffer[1]:
                return
            version, count = self.buffer[0], self.buffer[1]
            methods, self.buffer = self.buffer[2 : 2 + count], self.buffer[2 + count :]
            if version != 5 or 0 not in methods:
                self.transport.write(b"\x05\xff")  # no acceptable method
                return self.transport.loseConnection()
            self.greeted = True
            self.transport.write(b"\x05\x00")
        request = self.parseRequest()
        if request is not None:
            command, endpoint, rest = request
            if command != 1:
                return self.fail(COMMAND_NOT_SUPPORTED)
            if endpoint is None:
                return self.fail(ADDRESS_TYPE_NOT_SUPPORTED)
            self.connectUpstream(endpoint, toUpstream=rest)

    def parseRequest(self):
        """
        (command, endpoint or None, bytes past the request), or None while
        the request is incomplete.
        """
        b = self.buffer
        if len(b) < 5:
            return None
        if b[0] != 5:
            self.transport.loseConnection()
            return None
        addressType, reactor = b[3], self.factory.reactor
        if addressType == IPV4:
            end = 4 + 4
            host = str(ipaddress.IPv4Address(b[4:end])) if len(b) >= end else ""
            make = TCP4ClientEndpoint
        elif addressType == IPV6:
            end = 4 + 16
            host = str(ipaddress.IPv6Address(b[4:end])) if len(b) >= end else ""
            make = TCP6ClientEndpoint
        elif addressType == DOMAIN:
            end = 5 + b[4]
            try:
                host = b[5:end].decode("ascii")  # IDNs arrive as punycode
            except UnicodeDecodeError:
                return b[1], None, b""
            make = HostnameEndpoint
        else:
            return b[1], None, b""
        if len(b) < end + 2:
            return None
        (port,) = struct.unpack("!H", b[end : end + 2])
        return b[1], make(reactor, host, port), b[end + 2 :]

    def reply(self, code, host="0.0.0.0", port=0):
        address = ipaddress.ip_address(host)
        kind = IPV4 if address.version == 4 else IPV6
        self.transport.write(
            bytes([5, code, 0, kind]) + address.packed + struct.pack("!H", port)
        )

    def fail(self, code):
        self.reply(code)
        self.transport.loseConnection()

    def upstreamConnected(self, upstream):
        bound = upstream.transport.getHost()
        self.reply(SUCCEEDED, bound.host, bound.port)
        self.startRelay()

    def upstreamFailed(self, reason):
        self.fail(failureCode(reason))


async def main(reactor, args):
    factory = SpliceProxyFactory(reactor=reactor, connectTimeout=args.connect_timeout)
    factory.protocol = Socks5Protocol
    port = await serverFromString(reactor, args.listen).listen(factory)
    print("listening on", port.getHost().host, port.getHost().port, flush=True)
    await Deferred()  # serve until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="tcp:1080", help="server endpoint string")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds (default 10)"
    )
    arguments = parser.parse_args()
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
