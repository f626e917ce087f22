"""
The one way splicetx says "the reactor given, or else the global one".

Nothing in splicetx imports C{twisted.internet.reactor} at module level:
importing it installs the default reactor, which would take the choice away
from C{twist}, C{trial} and applications that install their own.  Every
object that needs a reactor takes C{reactor=None} and resolves it here, at
the moment it is first needed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["defaultReactor"]


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
