"""
Registers the C{splicetx} reactor (L{splicetx.reactor}), for
C{twist --reactor splicetx} and C{trial --reactor splicetx}.  The module is
named by string, so nothing is imported until the reactor is chosen.
"""

from twisted.application.reactors import Reactor

splicetx = Reactor(
    "splicetx",
    "splicetx.reactor",
    "epoll(4), handing splicetx's socket loop its events without a log "
    "context per wake.",
)
