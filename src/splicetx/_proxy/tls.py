# -*- test-case-name: tests.test_tls -*-
"""
TLS listeners and upstreams that answer ALPN correctly, on every Twisted the
project supports.

Why this exists: Twisted's C{CertificateOptions} (26.10) installs an ALPN
select callback on every server context, even one with no protocols of its
own; when it finds no overlap it returns C{b""}, which pyOpenSSL passes to
OpenSSL as "selected a zero-length protocol" and OpenSSL turns into an
C{internal_error} alert.  So every client that offers ALPN (curl, browsers)
was cut during the handshake.  Twisted 23.10 installs the callback only
when protocols are configured, but answers a client with no overlap the
same broken way.

L{ALPNServerConnectionCreator} wraps the listener's connection creator and
replaces that callback with one that:

    - with no protocols configured, declines the extension (RFC 7301 lets
      a server negotiate no application protocol), so every client is
      served;
    - with protocols, picks the first of them (server preference) the
      client offered;
    - with no overlap, refuses the client with the C{no_application_protocol}
      alert and logs why.

The protocols come from the proxy factory when it provides
L{IProtocolNegotiationFactory} (asked once per handshake, so a subclass can
choose per connection), else from C{--alpn}.

On the upstream side, L{ALPNClientConnectionCreator} makes a C{tls:}
endpoint offer C{--connect-alpn}'s protocols.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.interfaces import (
    ILoggingContext,
    INegotiated,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from splicetx._relay.runtime import LOG_PROXY

__all__ = [
    "ALPNClientConnectionCreator",
    "ALPNServerConnectionCreator",
    "NoApplicationProtocol",
    "checkALPNOptions",
    "negotiatedProtocol",
    "parseProtocols",
    "withClientALPN",
    "withServerALPN",
]

try:
    from OpenSSL.SSL import Error as _SSLError
except ImportError:  # pragma: no cover - TLS needs pyOpenSSL; plain TCP not
    _SSLError = Exception  # type: ignore[assignment,misc]

_log = Logger(namespace=LOG_PROXY)

#: Server endpoint types that terminate TLS (and so take C{--alpn}).
_TLS_SERVER_TYPES = frozenset({"ssl"})
#: Client endpoint types that can offer C{--connect-alpn}.
_TLS_CLIENT_TYPES = frozenset({"tls"})


class NoApplicationProtocol(_SSLError):
    """
    The client offered ALPN protocols and none of them is one this listener
    speaks.  Raised inside the ALPN callback: OpenSSL then ends the
    handshake with the C{no_application_protocol} alert, and Twisted's TLS
    layer (which handles C{OpenSSL.SSL.Error}) sends it and closes the connection.
    """


def parseProtocols(option: str, text: str | None) -> tuple[bytes, ...]:
    """
    Parse a comma-separated ALPN protocol list (C{"h2,http/1.1"}).

    @param option: the option's name, for messages.
    @param text: the option's value, or C{None} when not given.
    @return: the protocol names in preference order (empty for C{None}).
    @raise ValueError: for an empty, duplicated, over-long or non-ASCII
        name.
    """
    if text is None:
        return ()
    out: list[bytes] = []
    for piece in text.split(","):
        name = piece.strip()
        if not name:
            raise ValueError(
                f"{option}: empty protocol name in {text!r} (use e.g. h2,http/1.1)"
            )
        try:
            raw = name.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{option}: protocol name {name!r} is not ASCII")
        if len(raw) > 255:
            raise ValueError(f"{option}: protocol name longer than 255 bytes")
        if raw in out:
            raise ValueError(f"{option}: protocol {name!r} given twice")
        out.append(raw)
    return tuple(out)


def _endpointType(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


def checkALPNOptions(
    alpn: str | None,
    connectALPN: str | None,
    listen: Iterable[str],
    connects: Iterable[str],
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """
    Check C{--alpn} and C{--connect-alpn} against the endpoints they apply
    to.

    @param alpn: C{--alpn} as given, or C{None}.
    @param connectALPN: C{--connect-alpn} as given, or C{None}.
    @param listen: the C{--listen} strings.
    @param connects: every forward's C{--connect} string.
    @return: both protocol lists, parsed.
    @raise ValueError: with a message naming the option at fault.
    """
    server = parseProtocols("--alpn", alpn)
    client = parseProtocols("--connect-alpn", connectALPN)
    if server and not any(_endpointType(d) in _TLS_SERVER_TYPES for d in listen):
        raise ValueError(
            "--alpn: needs a TLS listener (--listen ssl:PORT:privateKey=...)"
        )
    if client:
        for description in connects:
            if _endpointType(description) not in _TLS_CLIENT_TYPES:
                raise ValueError(
                    f"--connect-alpn: needs a tls: upstream, not {description} "
                    "(e.g. --connect tls:example.com:443)"
                )
    return server, client


def _protocolNames(protocols: Sequence[bytes]) -> str:
    return ",".join(p.decode("ascii", "replace") for p in protocols) or "(none)"


@implementer(IOpenSSLServerConnectionCreator)
class ALPNServerConnectionCreator:
    """
    Wraps a server connection creator (what an C{ssl:} endpoint string
    builds: a L{CertificateOptions <twisted.internet.ssl.CertificateOptions>})
    so that its connections answer ALPN as the module docstring says.

    @ivar original: the wrapped creator (or old-style context factory).
    @ivar acceptableProtocols: the protocols offered when the proxy factory
        does not provide L{IProtocolNegotiationFactory}, in preference order.
    """

    def __init__(self, original: Any, acceptableProtocols: Sequence[bytes] = ()):
        """
        @param original: a provider of L{IOpenSSLServerConnectionCreator}, or
            an object with C{getContext()}.
        @param acceptableProtocols: see L{acceptableProtocols}.
        """
        self.original = original
        self.acceptableProtocols = tuple(acceptableProtocols)
        self._context: Any = None

    def getContext(self) -> Any:
        """
        The wrapped creator's context, with this creator's ALPN callback
        (for code that still uses C{IOpenSSLContextFactory}).
        """
        context = self._context
        if context is None:
            # pyOpenSSL refuses to change a context once a connection was
            # made from it: install the callback before the first one.  The
            # wrapped creator caches its context (CertificateOptions does).
            context = self.original.getContext()
            context.set_alpn_select_callback(self._select)
            self._context = context
        return context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """
        Make the wrapped creator's connection, on the context that carries
        this creator's ALPN callback.

        @param tlsProtocol: the L{TLSMemoryBIOProtocol
            <twisted.protocols.tls.TLSMemoryBIOProtocol>} of the connection.
        """
        context = self.getContext()
        if IOpenSSLServerConnectionCreator.providedBy(self.original):
            connection = self.original.serverConnectionForTLS(tlsProtocol)
            if connection.get_context() is context:
                return connection
        # The wrapped creator made a context of its own (or has none):
        # use ours.
        from OpenSSL.SSL import Connection

        connection = Connection(context, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def protocolsFor(self, tlsProtocol: Any) -> Sequence[bytes]:
        """
        The protocols to offer on one connection: the proxy factory's
        L{IProtocolNegotiationFactory.acceptableProtocols} when it provides
        that interface, else L{acceptableProtocols}, else those of the
        wrapped creator (C{CertificateOptions(acceptableProtocols=...)}).

        The factory is asked at every handshake, once the connection's
        protocol is built (Twisted may ask it too, so it may be asked more
        than once per connection: answer from state, not by consuming it).

        @param tlsProtocol: the connection's TLS protocol.
        """
        # The listening factory: the TLS layer wraps it (and the relay may
        # have replaced the protocol the TLS layer delivers to already).
        listening = getattr(
            getattr(tlsProtocol, "factory", None), "wrappedFactory", None
        )
        if isinstance(listening, _Unnegotiating):
            listening = listening.wrapped
        wrapped = getattr(tlsProtocol, "wrappedProtocol", None)
        for factory in (listening, getattr(wrapped, "factory", None)):
            negotiating = IProtocolNegotiationFactory(factory, None)
            if negotiating is not None:
                return tuple(negotiating.acceptableProtocols())
        if self.acceptableProtocols:
            return self.acceptableProtocols
        return tuple(getattr(self.original, "_acceptableProtocols", None) or ())

    def _select(self, connection: Any, offered: list[bytes]) -> Any:
        tlsProtocol = connection.get_app_data()
        try:
            ours = self.protocolsFor(tlsProtocol)
        except Exception:
            _log.failure(
                "choosing the ALPN protocols of {tls!r} failed", tls=tlsProtocol
            )
            raise NoApplicationProtocol(
                [("SSL routines", "", "choosing the ALPN protocols failed")]
            )
        if not ours:
            from OpenSSL.SSL import NO_OVERLAPPING_PROTOCOLS

            # Decline the extension: the handshake goes on without ALPN.
            return NO_OVERLAPPING_PROTOCOLS
        for name in ours:
            if name in offered:
                _remember(tlsProtocol, name)
                return name
        peer = getattr(getattr(tlsProtocol, "transport", None), "getPeer", None)
        _log.warn(
            "refused TLS client {client}: it offered ALPN {offered}, this "
            "listener speaks {acceptable} (alert no_application_protocol)",
            splicetxEvent="alpn-refused",
            client=_describePeer(peer),
            offered=_protocolNames(offered),
            acceptable=_protocolNames(ours),
        )
        # Shaped like OpenSSL's own errors (a list of (library, function,
        # reason)), which is what Twisted's TLS layer reads.
        raise NoApplicationProtocol(
            [
                (
                    "SSL routines",
                    "",
                    f"no application protocol (client offered "
                    f"{_protocolNames(offered)}, listener speaks "
                    f"{_protocolNames(ours)})",
                )
            ]
        )


def _describePeer(getPeer: Any) -> str:
    if getPeer is None:
        return "(unknown)"
    from splicetx._pool.addresses import describeAddress

    try:
        return describeAddress(getPeer())
    except Exception:
        return "(unknown)"


def withServerALPN(endpoint: Any, acceptableProtocols: Sequence[bytes] = ()) -> Any:
    """
    Make a TLS server endpoint answer ALPN correctly (see the module
    docstring); leave any other endpoint as it is.

    Call it on every C{ssl:} listener, with or without protocols: without,
    it is what lets clients that offer ALPN in.

    @param endpoint: a server endpoint (an C{SSL4ServerEndpoint} has its
        connection creator wrapped in place).
    @param acceptableProtocols: the protocols to offer (C{--alpn}).
    @return: the endpoint to listen on.
    """
    creator = getattr(endpoint, "_sslContextFactory", None)
    if creator is None:
        return endpoint
    if isinstance(creator, ALPNServerConnectionCreator):
        creator = creator.original
    endpoint._sslContextFactory = ALPNServerConnectionCreator(
        creator, acceptableProtocols
    )
    return _ALPNServerEndpoint(endpoint)


@implementer(IStreamServerEndpoint)
class _ALPNServerEndpoint:
    """
    Listens on a TLS endpoint with a factory that Twisted's TLS layer does
    not see as an L{IProtocolNegotiationFactory}: Twisted 23.10 would then
    change the shared context at every connection (which pyOpenSSL 25+
    refuses) and 26.10 would ask the factory once more for nothing.
    L{ALPNServerConnectionCreator} asks the factory itself.
    """

    def __init__(self, endpoint: Any) -> None:
        self._wrappedEndpoint = endpoint

    def listen(self, protocolFactory: Any) -> Any:
        if IProtocolNegotiationFactory.providedBy(protocolFactory):
            protocolFactory = _Unnegotiating(protocolFactory)
        return self._wrappedEndpoint.listen(protocolFactory)


@implementer(IProtocolFactory, ILoggingContext)
class _Unnegotiating:
    """
    Stands for a protocol factory, without its
    L{IProtocolNegotiationFactory}.
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.noisy = getattr(wrapped, "noisy", False)

    def buildProtocol(self, addr: Any) -> Any:
        return self.wrapped.buildProtocol(addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        context = ILoggingContext(self.wrapped, None)
        if context is not None:
            return str(context.logPrefix())
        return type(self.wrapped).__name__


@implementer(IOpenSSLClientConnectionCreator)
class ALPNClientConnectionCreator:
    """
    Wraps the connection creator of a C{tls:} endpoint so that each of its
    connections offers ALPN protocols (set on the connection, so no shared
    context is changed; Twisted's own route, an
    L{IProtocolNegotiationFactory} around the protocol factory, changes the
    shared context on Twisted 23.10, which pyOpenSSL 25+ refuses).

    @ivar protocols: what it offers, in preference order.
    """

    def __init__(self, makeConnection: Any, protocols: Sequence[bytes]) -> None:
        """
        @param makeConnection: a callable taking the TLS protocol and
            returning the wrapped creator's C{OpenSSL.SSL.Connection}.
        @param protocols: see L{protocols}.
        """
        self._makeConnection = makeConnection
        self.protocols = tuple(protocols)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """
        The wrapped creator's connection, offering L{protocols}.
        """
        connection = self._makeConnection(tlsProtocol)
        connection.set_alpn_protos(list(self.protocols))
        return connection


def _connectionMaker(endpoint: Any) -> Any:
    """
    Find how the TLS endpoint C{wrapClientTLS} built makes its connections.

    @raise ValueError: when this Twisted hides it.
    """
    from twisted.internet.protocol import Factory

    wrapper = getattr(endpoint, "_wrapperFactory", None)
    if wrapper is not None:
        tlsFactory = wrapper(Factory())
        creator = getattr(tlsFactory, "_connectionCreator", None)  # 23.10
        if IOpenSSLClientConnectionCreator.providedBy(creator):
            return creator.clientConnectionForTLS
        if callable(creator):
            return creator
        made = getattr(tlsFactory, "_creatorCallable", None)  # 24.7+
        if callable(made):
            return made
    raise ValueError(
        "--connect-alpn: cannot find the TLS settings of this tls: endpoint "
        f"({endpoint!r})"
    )


def withClientALPN(endpoint: Any, protocols: Sequence[bytes] = ()) -> Any:
    """
    Make a C{tls:} client endpoint offer ALPN C{protocols}.

    @param endpoint: the upstream endpoint C{clientFromString} built.
    @param protocols: C{--connect-alpn}; when empty, C{endpoint} is
        returned as it is.
    @return: the endpoint to connect with.
    @raise ValueError: when C{endpoint} is not a TLS endpoint of
        C{wrapClientTLS}.
    """
    if not protocols:
        return endpoint
    from twisted.internet.endpoints import wrapClientTLS

    inner = getattr(endpoint, "_wrappedEndpoint", None)
    if inner is None:
        raise ValueError(f"--connect-alpn: not a tls: endpoint ({endpoint!r})")
    creator = ALPNClientConnectionCreator(_connectionMaker(endpoint), protocols)
    return _RememberingEndpoint(wrapClientTLS(creator, inner))


@implementer(IStreamClientEndpoint)
class _RememberingEndpoint:
    """
    A TLS client endpoint whose connections keep their negotiated protocol
    for the proxy's log (see L{negotiatedProtocol}).
    """

    def __init__(self, endpoint: Any) -> None:
        self._wrappedEndpoint = endpoint

    def connect(self, protocolFactory: Any) -> Any:
        return self._wrappedEndpoint.connect(_Remembering(protocolFactory))


@implementer(IProtocolFactory)
class _Remembering:
    """
    Stands for a protocol factory and has each protocol's transport keep
    the negotiated protocol when the connection is lost.
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is not None:
            _rememberWhenLost(protocol)
        return protocol

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()


#: Where the negotiated protocol is kept on a TLS protocol: Twisted drops
#: the TLS connection object (and the answer) once the connection is lost,
#: and the proxy logs after both sides are.
_REMEMBERED = "_splicetxNegotiated"


def _remember(tlsProtocol: Any, name: bytes | None) -> None:
    try:
        setattr(tlsProtocol, _REMEMBERED, name)
    except AttributeError:
        pass


def _rememberWhenLost(protocol: Any) -> None:
    """
    Have C{protocol}'s transport remember the negotiated protocol just
    before C{protocol} hears the connection is lost.
    """
    original = protocol.connectionLost

    def connectionLost(reason: Any) -> None:
        # Drop this wrapper first: no protocol -> closure -> protocol cycle.
        del protocol.connectionLost
        transport = protocol.transport
        if transport is not None and INegotiated.providedBy(transport):
            try:
                _remember(transport, transport.negotiatedProtocol)
            except Exception:
                pass
        original(reason)

    protocol.connectionLost = connectionLost


def negotiatedProtocol(transport: Any) -> str | None:
    """
    The ALPN protocol a transport negotiated, for a log field.

    @param transport: a connection's transport (a TLS one started with
        C{startTLS} or a TLS wrapper protocol), or anything else.
    @return: e.g. C{"h2"}, or C{None} for none or not TLS.
    """
    if transport is None:
        return None
    candidates = [transport]
    if getattr(transport, "TLS", False):
        candidates.insert(0, getattr(transport, "protocol", None))
    for candidate in candidates:
        if candidate is not None and INegotiated.providedBy(candidate):
            try:
                name = candidate.__dict__.get(_REMEMBERED)
                if name is None:
                    name = candidate.negotiatedProtocol
            except Exception:
                return None
            if isinstance(name, bytes) and name:
                return name.decode("ascii", "replace")
            return None
    return None
