"""
Choosing an upstream: pools, balancers, health checks and SNI routing.

It imports only L{splicetx._relay}.

 - C{pool}: C{Upstream} and C{UpstreamPool}, passive health and failover on
   connect.
 - C{failover}: one client's tries through a pool (which member next, for
   how long, when to give up and why), for both ways of connecting.
 - C{balance}: the balancers (round robin, least connections, source hash,
   weighted random).
 - C{health}: active health checks.
 - C{sni}: the TLS ClientHello parser and the server-name router.
 - C{addresses}: text and normal forms of addresses and endpoints, for log
   lines and keys.

Public through L{splicetx.pools}.
 - C{endpoints}: pools and pool members as client endpoints.
 - C{resolver}: the one cache of upstream host names (TTL, size bound,
   shared lookups).
 - C{target}: C{TCPTarget}, a TCP upstream by host and port that connects
   an address at once and a name through the cache.
"""
