"""
Registers C{twist splice-proxy} (and C{twistd splice-proxy}).  The module is
named by string so that nothing, in particular no reactor, is imported until
the sub-command runs.
"""

from twisted.application.service import ServiceMaker

spliceProxy = ServiceMaker(
    "splicetx splice proxy",
    "splicetx._app.tap",
    "A zero-copy TCP relay: splice(2) between client and upstream.",
    "splice-proxy",
)
