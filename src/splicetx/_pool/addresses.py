# -*- test-case-name: tests.test_proxy -*-
"""
Addresses as splicetx shows and compares them: short text forms of Twisted
addresses and client endpoints, for log lines and upstream names, and the
normal form of a client's IP address (L{normaliseAddress}), which access
rules and balancers key on.

Both functions are public as L{splicetx.proxy.describeAddress} and
L{splicetx.proxy.describeEndpoint}.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint

__all__ = ["describeAddress", "describeEndpoint", "normaliseAddress"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def describeAddress(address: IAddress | object) -> str:
    """
    Format a Twisted address for a log line.

    @param address: an C{IPv4Address}, C{IPv6Address}, C{UNIXAddress}, or
        anything else (formatted with C{str}).
    @return: C{"host:port"}, C{"[host]:port"}, C{"unix:path"} or C{str()}.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        raw = address.name
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return f"unix:{name or '(unnamed)'}"
    return str(address)


def describeEndpoint(endpoint: IStreamClientEndpoint | None) -> str:
    """
    Describe a client endpoint for a log line, as far as its (private)
    attributes allow.

    @param endpoint: an C{IStreamClientEndpoint}, or C{None}.
    @return: e.g. C{"127.0.0.1:8080"}, C{"unix:/run/app.sock"}, the
        C{description} of an object that has one (an upstream pool), or the
        endpoint's C{repr}.
    """
    if endpoint is None:
        return "(none)"
    description = getattr(endpoint, "description", None)
    if isinstance(description, str):
        return description
    wrapped = getattr(endpoint, "_wrappedEndpoint", None)
    if wrapped is not None:
        return describeEndpoint(wrapped)
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    port = getattr(endpoint, "_port", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    path = getattr(endpoint, "_path", None)
    if path is not None:
        return f"unix:{path}"
    return repr(endpoint)


def normaliseAddress(address: object) -> IPAddress | None:
    """
    Turn a client address into an C{ipaddress} object.

    @param address: a string, an C{ipaddress} address or a Twisted address
        with a C{host} attribute (C{IPv4Address}, C{IPv6Address}).
    @return: the address, IPv4-mapped IPv6 turned into IPv4 and any IPv6
        zone dropped; C{None} when it is not an IP address.
    """
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        ip: IPAddress = address
    else:
        host = getattr(address, "host", address)
        if not isinstance(host, str):
            return None
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            ip = ipaddress.IPv6Address(ip.packed)
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip
