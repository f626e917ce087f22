"""
One proxied connection, from accept to its end record.

It imports L{splicetx._relay} and L{splicetx._pool}.

 - C{protocol}: C{SpliceProxyProtocol}, its hooks and actions.
 - C{phase}: the phases of a connection and the check on actions.
 - C{upstream}: the upstream connection attempt and its timeout.
 - C{timeouts}: idle, half-close and drain timers.
 - C{headerreader}, C{proxyheader}: the HAProxy PROXY header, read and
   written.
 - C{answers}: C{reply()} and C{refuse()}, and hooks that raise.
 - C{access}: allow and deny rules over client addresses.
 - C{gate}: live connections, the connection limit and the drain.
 - C{fastpath}, C{fastconn}: the fast path of a plain forward.
 - C{leantransport}, C{leanrelay}: protocols with hooks on the lean path
   (a raw socket as their transport, adopted on demand; two raw sockets
   spliced on the socket loop, shared with the fast path).
 - C{poolproxy}: pools and SNI routing on the protocol's hooks.
 - C{tls}: TLS listeners and upstreams that answer ALPN.
 - C{wording}: the relay's A and B as the client and the upstream.
 - C{lifecycle}: a connection's admission and its end (counted and
   recorded), decided the same way for every path.

Public through L{splicetx.proxy}, L{splicetx.pools} and C{splicetx.tls}.
 - C{factory}: C{SpliceProxyFactory}.
 - C{interfaces}: the seams to what records a connection (metrics, the
   access log).
 - C{preamble}, C{leanpreamble}: what a PROXY header or a ClientHello
   decides, and reading them from the raw socket on the lean path.
 - C{clientlimits}: connections and new connections per client.
"""
