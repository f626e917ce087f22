"""
A SOCKS5 proxy that splices (RFC 1928, no authentication, CONNECT only):
negotiate, connect to the IPv4 / IPv6 address or domain name asked for,
reply with the proper code, then let the kernel relay the connection.

    python examples/socks5_proxy.py        # listens on 127.0.0.1:1080
    curl --socks5-hostname 127.0.0.1:1080 https://example.com/

or, with this directory on PYTHONPATH, as twist splice-proxy's protocol:

    twist splice-proxy --protocol socks5_proxy.Socks5Protocol \\
        --listen tcp:1080:interface=127.0.0.1

Every option of twist splice-proxy applies (--help lists them): drain on
SIGTERM, --workers, --access-log, --metrics with the status page, ...
It forwards to any host: do not expose it beyond hosts you trust.
"""

import ipaddress
import struct

from twisted.internet import error

from splicetx.endpoints import TCPTarget
from splicetx.proxy import SpliceProxyProtocol
from splicetx.service import serve

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
                return self.refuse("no_method", reply=b"\x05\xff")
            self.greeted = True
            self.reply(b"\x05\x00")
        request = self.parseRequest()
        if request is not None:
            command, endpoint, rest = request
            if command != 1:
                return self.fail(COMMAND_NOT_SUPPORTED, "command_not_supported")
            if endpoint is None:
                return self.fail(ADDRESS_TYPE_NOT_SUPPORTED, "bad_address_type")
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
            self.refuse("bad_version")
            return None
        addressType, reactor = b[3], self.factory.reactor
        if addressType == IPV4:
            end = 4 + 4
            host = str(ipaddress.IPv4Address(b[4:end])) if len(b) >= end else ""
        elif addressType == IPV6:
            end = 4 + 16
            host = str(ipaddress.IPv6Address(b[4:end])) if len(b) >= end else ""
        elif addressType == DOMAIN:
            end = 5 + b[4]
            try:
                host = b[5:end].decode("ascii")  # IDNs arrive as punycode
            except UnicodeDecodeError:
                return b[1], None, b""
        else:
            return b[1], None, b""
        if len(b) < end + 2:
            return None
        (port,) = struct.unpack("!H", b[end : end + 2])
        # An address connects at once; a name resolves through one cache.
        return b[1], TCPTarget(reactor, host, port), b[end + 2 :]

    def fail(self, code, reason):
        self.refuse(reason, f"SOCKS reply {code}", reply=socksReply(code))

    def upstreamConnected(self, upstream):
        bound = upstream.transport.getHost()
        self.reply(socksReply(SUCCEEDED, bound.host, bound.port))
        self.startRelay()

    def upstreamFailed(self, reason):
        # Recorded as "upstream failed", with the connect error as detail.
        self.refuse("upstream_failed", reply=socksReply(failureCode(reason)))


def socksReply(code, host="0.0.0.0", port=0):
    """
    The bytes of a SOCKS5 reply.
    """
    address = ipaddress.ip_address(host)
    kind = IPV4 if address.version == 4 else IPV6
    return bytes([5, code, 0, kind]) + address.packed + struct.pack("!H", port)


if __name__ == "__main__":
    serve(Socks5Protocol, listen="tcp:1080:interface=127.0.0.1")
