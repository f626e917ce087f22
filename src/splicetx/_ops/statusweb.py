# -*- test-case-name: tests.test_status -*-
"""
The twisted.web side of the C{--metrics} endpoint: the resources of the
status page next to C{/metrics} -- C{/status} (HTML) and C{/status.json}
serve a snapshot (built by L{splicetx._ops.status}), C{/healthz} answers
whether the process still serves; they know nothing of how a snapshot is
made, each takes a callable -- and the server, L{QuietSite}.

A plain C{twisted.web.server.Site} writes one access line per request into
the process's log: a Prometheus scrape every 15 s, a probe of C{/healthz}
every few seconds and an open C{/status} tab would fill it with lines
nobody asked for.  L{QuietSite} writes none, and no "Starting factory" line
either; the endpoint's own start is logged once by the service
(C{splicetxEvent="metrics"}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from splicetx._ops.statushtml import MAX_REFRESH, REFRESH_SECONDS, renderHTML
from splicetx._relay.runtime import LOG_STATUS

__all__ = [
    "StatusPage",
    "HealthResource",
    "statusResources",
    "refreshSeconds",
    "QuietSite",
]

_log = Logger(namespace=LOG_STATUS)


class StatusSource(Protocol):
    """
    What the resources need of a status source (L{splicetx._ops.status.ServiceStatus}).
    """

    def snapshot(self) -> Any:
        """
        A snapshot, or a C{Deferred} of one.
        """

    def isServing(self) -> bool:
        """
        C{True} until a drain begins.
        """


def refreshSeconds(request: Any) -> int:
    """
    The reload period a request for C{/status} asks for: C{?refresh=N}
    seconds (C{0}: never), capped at L{MAX_REFRESH}; without it, or with a
    value that is not a whole number, L{REFRESH_SECONDS}.
    """
    values = (getattr(request, "args", None) or {}).get(b"refresh") or []
    try:
        seconds = int(values[-1])
    except (IndexError, ValueError):
        return REFRESH_SECONDS
    return max(0, min(seconds, MAX_REFRESH))


class StatusPage(Resource):
    """
    Serves a snapshot as HTML (C{/status}) or JSON (C{/status.json}).

    @ivar snapshot: a callable returning a snapshot or a C{Deferred} of one.
    @ivar asJSON: serve JSON instead of HTML.
    """

    isLeaf = True

    def __init__(self, snapshot: Callable[[], Any], asJSON: bool = False) -> None:
        """
        @param snapshot: see L{snapshot}.
        @param asJSON: see L{asJSON}.
        """
        super().__init__()
        self.snapshot = snapshot
        self.asJSON = asJSON

    def _body(self, snap: Mapping[str, Any], request: Any) -> tuple[bytes, bytes]:
        if self.asJSON:
            # Compact: with indent= the json module leaves its C encoder.
            text = json.dumps(snap, separators=(",", ":")) + "\n"
            return text.encode("utf-8"), b"application/json"
        page = renderHTML(snap, refreshSeconds(request))
        return page.encode("utf-8"), b"text/html; charset=utf-8"

    def _answer(self, request: Any, result: Any) -> bytes:
        """
        The body for a snapshot, or a 500 for a L{Failure} (of the snapshot,
        or of rendering it).
        """
        if not isinstance(result, Failure):
            try:
                body, contentType = self._body(result, request)
            except Exception:
                result = Failure()
            else:
                request.setHeader(b"content-type", contentType)
                return body
        _log.failure("status snapshot failed", result)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"status snapshot failed\n"

    def render_GET(self, request: Any) -> Any:
        """
        Answer with the snapshot (at once, or once a supervisor's workers
        have answered).
        """
        request.setHeader(b"cache-control", b"no-store")
        d = maybeDeferred(self.snapshot)
        now: list[Any] = []
        d.addBoth(lambda result: now.append(result))
        if now:
            # A single process: the snapshot is ready at once.
            return self._answer(request, now[0])
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))

        def reply(_: None) -> None:
            if not finished[0]:
                request.write(self._answer(request, now[0]))
                request.finish()

        d.addCallback(reply)
        return NOT_DONE_YET


class HealthResource(Resource):
    """
    C{/healthz}: C{200 ok} while serving, C{503 draining} once a drain has
    begun.

    @ivar isServing: a callable returning C{True} while serving.
    """

    isLeaf = True

    def __init__(self, isServing: Callable[[], bool]) -> None:
        """
        @param isServing: see L{isServing}.
        """
        super().__init__()
        self.isServing = isServing

    def render_GET(self, request: Any) -> bytes:
        """
        Answer C{ok} (200) or C{draining} (503), as plain text.
        """
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.isServing():
            return b"ok\n"
        request.setResponseCode(503)
        return b"draining\n"


def statusResources(status: StatusSource) -> dict[bytes, Resource]:
    """
    The resources to put next to C{/metrics}: C{status}, C{status.json} and
    C{healthz}.

    @param status: a L{ServiceStatus} or L{SupervisorStatus}.
    """
    return {
        b"status": StatusPage(status.snapshot),
        b"status.json": StatusPage(status.snapshot, asJSON=True),
        b"healthz": HealthResource(status.isServing),
    }


class QuietSite(Site):
    """
    A C{Site} that logs neither its requests nor its start and stop.

    @ivar access: an L{AccessControl <splicetx.AccessControl>} of the
        clients served (C{--metrics-allow}); others are closed at once,
        unanswered.  C{None}: every client.
    """

    noisy = False
    access: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        """
        Serve a client the L{access} rules allow; close the others (a
        C{None} protocol).
        """
        access = self.access
        if access is not None and not access.isAllowed(addr)[0]:
            return None
        return Site.buildProtocol(self, addr)

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
