"""
What every layer of splicetx takes from the process it runs in: its
version, its reactor, and the log namespaces its events are filed under.

B{The reactor.} Nothing in splicetx imports C{twisted.internet.reactor} at
module level: importing it installs the default reactor, which would take
the choice away from C{twist}, C{trial} and applications that install their
own.  Every object that needs a reactor takes C{reactor=None} and resolves it
with L{defaultReactor}, at the moment it is first needed.

B{Log namespaces.} Operators filter C{twisted.logger} events on these names
(C{twist --log-level}, observers, the JSON log's C{log_namespace}), so they
are part of the interface: they are written here once, documented in
C{docs/operations.md}, and do not follow the modules that log under them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "__version__",
    "defaultReactor",
    "LOG_RELAY",
    "LOG_SENDFILE",
    "LOG_PROXY",
    "LOG_POOL",
    "LOG_HEALTH",
    "LOG_STATUS",
    "LOG_WORKERS",
    "LOG_ENDPOINTS",
    "LOG_NAMESPACES",
]

# The one place the version is written: pyproject.toml reads it from here,
# and splicetx.__version__ is this value.
__version__ = "0.2.1.dev0"

#: The relay core: engine choice, fallbacks, the socket loop.
LOG_RELAY = "splicetx.relay"
#: C{sendFile}: fallbacks from C{sendfile(2)}.
LOG_SENDFILE = "splicetx.sendfile"
#: Proxied connections: their records, refusals, drain, the service.
LOG_PROXY = "splicetx.proxy"
#: Upstream pools: failed tries, members marked down.
LOG_POOL = "splicetx.pool"
#: Active health checks: an upstream going down or up.
LOG_HEALTH = "splicetx.health"
#: The status page and its endpoint.
LOG_STATUS = "splicetx.status"
#: C{--workers N}: workers started, restarted, stopped.
LOG_WORKERS = "splicetx.workers"
#: The C{mptcp:} endpoints: falling back to plain TCP.
LOG_ENDPOINTS = "splicetx.endpoints"

#: Every namespace above, the ones C{docs/operations.md} lists.
LOG_NAMESPACES = (
    LOG_RELAY,
    LOG_SENDFILE,
    LOG_PROXY,
    LOG_POOL,
    LOG_HEALTH,
    LOG_STATUS,
    LOG_WORKERS,
    LOG_ENDPOINTS,
)


def defaultReactor(reactor: Any = None) -> Any:
    """
    Return C{reactor}, or the global reactor when C{reactor} is C{None}.

    @param reactor: a reactor, or C{None}.
    @return: C{reactor} itself, or C{twisted.internet.reactor} (importing it,
        and so installing the default reactor if none is installed yet).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor
