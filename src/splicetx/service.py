"""
The service C{twist splice-proxy} runs, around your own protocol or factory
class: for applications that build their own service tree
(L{proxyService}) and for scripts whose C{main()} is one call (L{serve}).

A script that serves its own protocol with everything C{twist splice-proxy}
has (drain on SIGTERM, C{--workers}, SIGHUP reload of C{--config}, access
records, C{--metrics} with the status page)::

    from splicetx.proxy import SpliceProxyProtocol
    from splicetx.service import serve

    class MyProxy(SpliceProxyProtocol):
        ...

    if __name__ == "__main__":
        serve(MyProxy, listen="tcp:7000:interface=127.0.0.1")

The same class runs as C{twist splice-proxy --protocol mymodule.MyProxy}.
"""

from splicetx._app.embed import proxyService, serve

__all__ = ["proxyService", "serve"]
