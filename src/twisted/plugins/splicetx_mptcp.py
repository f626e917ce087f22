"""
The C{mptcp:} and C{mptcp6:} endpoint strings (Multipath TCP), for
C{serverFromString} and C{clientFromString} in any Twisted application.

Twisted imports every module here whenever it looks for a plugin, so this
one imports only interfaces: L{splicetx.endpoints} is imported when a string
is first parsed.
"""

from typing import Any

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(
    IPlugin,
    IStreamServerEndpointStringParser,
    IStreamClientEndpointStringParserWithReactor,
)
class MPTCPEndpointParser:
    """
    Parse C{PREFIX:PORT[:interface=ADDR][:backlog=N][:fallback=tcp]} (server)
    and C{PREFIX:HOST:PORT[:timeout=S][:bindAddress=ADDR][:fallback=tcp]}
    (client) with C{splicetx.endpoints}.
    """

    def __init__(self, prefix: str) -> None:
        """
        @param prefix: C{"mptcp"} or C{"mptcp6"}.
        """
        self.prefix = prefix

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        """
        An C{MPTCPServerEndpoint} from the string's arguments.
        """
        from splicetx.endpoints import parseServerArguments

        return parseServerArguments(reactor, self.prefix, *args, **kwargs)

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        """
        An C{MPTCPClientEndpoint} from the string's arguments.
        """
        from splicetx.endpoints import parseClientArguments

        return parseClientArguments(reactor, self.prefix, *args, **kwargs)


mptcp = MPTCPEndpointParser("mptcp")
mptcp6 = MPTCPEndpointParser("mptcp6")
