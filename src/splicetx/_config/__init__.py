"""
Configuration: text in, frozen values out, no reactor.

It imports the layers below it for the value types it produces.

 - C{values}: the grammar of option values (sizes, durations, counts ...).
 - C{endpoints}: endpoint strings as C{twist splice-proxy} accepts them.
 - C{model}: the frozen configuration of a run (C{Forward}, C{ProxyConfig}).
 - C{pools}: pools, upstreams, health checks and SNI routes, written forms
   and TOML.
 - C{rinetd}: rinetd's configuration format.
"""
