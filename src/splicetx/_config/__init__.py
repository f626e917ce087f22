"""
Configuration: text in, frozen values out, no reactor.

It imports the layers below it for the value types it produces.

 - C{values}: the one grammar of values (durations, sizes, counts ...)
   and the one error, C{ConfigError}.
 - C{model}: the one set of frozen values (C{ProxyConfig}, C{Forward},
   C{PoolSpec}, C{UpstreamSpec}, C{HealthCheckSpec}, C{ConfigFile}).
 - C{endpoints}: endpoint strings as C{twist splice-proxy} accepts them.
 - C{commandline}: the command line's forward.
 - C{pools}: the written forms of upstreams, pools and SNI routes.
 - C{rinetd}, C{toml}: the two file formats.
 - C{files}: read a C{--config} file in either format.
 - C{endpointerrors}: endpoint-string errors in the user's words.
 - C{limits}: the per-client limit and metrics-access options.
 - C{udpforward}: what a UDP forward may and may not have.
"""
