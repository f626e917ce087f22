"""
UDP forwarding: datagrams relayed between clients and upstreams, one
session (one upstream socket) per client address, on Twisted's
C{listenUDP} and C{DatagramProtocol}, so it runs on every reactor.

It imports L{splicetx._relay}, L{splicetx._pool} and L{splicetx._proxy}.

 - C{endpoints}: the C{udp:} listening and upstream endpoints.
 - C{upstreams}: the upstreams of a UDP forward, their addresses and the
   balancer that gives each new session one.
 - C{session}: one client's session: its upstream socket, idle expiry and
   figures.
 - C{forwarder}: the forward: listening ports, the session table, its
   cap, access rules, drain and the per-session record.

C{twist splice-proxy --listen udp:PORT --connect udp:HOST:PORT} builds
these (L{splicetx._app.udpservice}); C{docs/udp.md} is the user's guide.
"""
