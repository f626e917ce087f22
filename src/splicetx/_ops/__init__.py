"""
What operators see: Prometheus metrics, the access log and the status page.

It imports the layers below it (L{splicetx._relay}, L{splicetx._pool},
L{splicetx._proxy}).

 - C{metrics}, C{poolmetrics}, C{processmetrics}: the Prometheus metrics
   and endpoint.
 - C{accesslog}: one record per finished connection.
 - C{status}, C{statushtml}, C{statusweb}, C{statusrates}: C{/status},
   C{/status.json} (with rates) and C{/healthz}, and the endpoint's web
   server, which logs no requests.
 - C{udpstats}: the UDP forwards' metrics and status rows.
"""
