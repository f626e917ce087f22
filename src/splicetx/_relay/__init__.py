"""
The relay core: moving bytes between two connected sockets or transports.

It imports nothing else of splicetx; every other layer builds on it.

 - C{contract}: what a relay and its engines agree on (end reasons,
   C{RelayResult}, C{RelayUsageError}, the engine interfaces).
 - C{relay}: C{relay()} and C{Relay}, which choose an engine and deliver the
   result.
 - C{splice}, C{direction}, C{turns}, C{pipes}: the kernel path (socket ->
   pipe -> socket), one direction at a time, with the per-turn byte budget
   and the pipe pool.
 - C{bandwidth}: the token bucket of a direction with a bandwidth limit.
 - C{socketloop}: many relayed sockets behind one reactor reader.
 - C{core}: which core runs the hot loop of C{socketloop} and C{direction}:
   the compiled one (C{_ccore}, a C extension built at install) or the
   pure-Python reference.
 - C{copy}: the userspace engine (TLS, fakes, every fallback).
 - C{transports}: what splicetx knows of Twisted's transports.
 - C{tcpoptions}: TCP keepalive and delivery queries on a socket.
 - C{sendfile}: C{sendFile()}, zero-copy file sending.
 - C{mptcp}: the C{mptcp:}/C{mptcp6:} endpoints (public in
   L{splicetx.endpoints}).
 - C{runtime}: the version, the reactor given (or else the global one)
   and the log namespaces.

Public through L{splicetx} (C{relay}, C{Relay}, C{RelayResult}, C{PipePool},
C{sendFile}, C{TCPKeepalive}, the reasons).
"""
