# -*- test-case-name: tests.test_ops_cli -*-
"""
The web server of C{--metrics} (C{/metrics}, C{/healthz}, C{/status}) that
keeps the proxy's log for what an operator reads.

A plain C{twisted.web.server.Site} writes one access line per request into
the process's log: a Prometheus scrape every 15 s, a probe of C{/healthz}
every few seconds and an open C{/status} tab (which refreshes every 5 s)
would fill it with lines nobody asked for.  L{QuietSite} writes none, and
no "Starting factory" line either; the endpoint's own start is logged once
by the service (C{splicetxEvent="metrics"}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Site

__all__ = ["QuietSite"]


class QuietSite(Site):
    """
    A C{Site} that logs neither its requests nor its start and stop.
    """

    noisy = False

    def logPrefix(self) -> str:
        """
        What Twisted's "... starting on PORT" line calls this server.
        """
        return "metrics endpoint"

    def log(self, request: Any) -> None:
        """
        Write nothing: requests to the metrics endpoint are not logged.

        @param request: the finished request.
        """
