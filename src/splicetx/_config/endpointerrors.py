# -*- test-case-name: tests.test_cli_errors -*-
"""
What went wrong with an endpoint string, said in the user's terms: which
parameter is unknown (and which one was probably meant), which is missing
(with an example of the right form), which file could not be read, which
port is out of range -- never a Python signature or a lock file's internal
name.

L{explainEndpointError} words an exception from Twisted's endpoint parsers or
from a failed listen; L{splicetx._config.endpoints} puts the option and the
string in front of it.
"""

from __future__ import annotations

import difflib
import re

__all__ = ["explainEndpointError", "SERVER", "CLIENT"]

#: The side of an endpoint string: a listening (server) one.
SERVER = "server"
#: The side of an endpoint string: an upstream (client) one.
CLIENT = "client"

_TCP_SERVER = ("port", "interface", "backlog")
_TCP_CLIENT = ("host", "port", "timeout", "bindAddress")

#: The parameters each endpoint type takes, by side (Twisted's parsers and
#: splicetx's own), to name the one a misspelt parameter probably meant.
_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    (SERVER, "tcp"): _TCP_SERVER,
    (SERVER, "tcp6"): _TCP_SERVER,
    (SERVER, "mptcp"): (*_TCP_SERVER, "fallback"),
    (SERVER, "mptcp6"): (*_TCP_SERVER, "fallback"),
    (SERVER, "unix"): ("address", "backlog", "mode", "lockfile"),
    (SERVER, "ssl"): (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    (SERVER, "systemd"): ("domain", "index", "name"),
    (CLIENT, "tcp"): _TCP_CLIENT,
    (CLIENT, "tcp6"): _TCP_CLIENT,
    (CLIENT, "mptcp"): (*_TCP_CLIENT, "fallback"),
    (CLIENT, "mptcp6"): (*_TCP_CLIENT, "fallback"),
    (CLIENT, "unix"): ("path", "timeout", "checkPID"),
    (CLIENT, "tls"): (
        "host",
        "port",
        "timeout",
        "bindAddress",
        "certificate",
        "privateKey",
        "trustRoots",
        "endpoint",
    ),
}

#: A right form of each endpoint type, for "missing the port" messages.
_EXAMPLES: dict[tuple[str, str], str] = {
    (SERVER, "tcp"): "tcp:8080:interface=127.0.0.1",
    (SERVER, "tcp6"): "tcp6:8080:interface=\\:\\:1",
    (SERVER, "unix"): "unix:/run/proxy.sock",
    (SERVER, "ssl"): "ssl:8443:privateKey=key.pem:certKey=cert.pem",
    (CLIENT, "tcp"): "tcp:127.0.0.1:8080",
    (CLIENT, "tcp6"): "tcp6:[::1]:8080",
    (CLIENT, "unix"): "unix:/run/app.sock",
    (CLIENT, "tls"): "tls:example.com:443",
}

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")
_MISSING = re.compile(
    r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)"
)
_TOO_MANY = re.compile(r"takes (?:from )?\d+ (?:to \d+ )?positional arguments? but")


def _typeError(e: TypeError, side: str | None, kind: str | None) -> str:
    text = str(e)
    key = (side or "", kind or "")
    known = _PARAMETERS.get(key, ())
    example = _EXAMPLES.get(key)
    unexpected = _UNEXPECTED.search(text)
    if unexpected:
        name = unexpected.group(1)
        close = difflib.get_close_matches(name, known, 1)
        if close:
            return f"unknown parameter {name!r} (did you mean {close[0]}=?)"
        if known:
            takes = ", ".join(known)
            return f"unknown parameter {name!r} (a {kind}: endpoint takes {takes})"
        return f"unknown parameter {name!r}"
    missing = _MISSING.search(text)
    if missing:
        names = re.findall(r"'(\w+)'", missing.group(1))
        what = " and the ".join(names) or "a parameter"
        return f"missing the {what}" + (f" (e.g. {example})" if example else "")
    if _TOO_MANY.search(text):
        return "too many fields" + (f" (e.g. {example})" if example else "")
    return f"not a valid {kind or 'endpoint'} string" + (
        f" (e.g. {example})" if example else ""
    )


def _osError(e: OSError, kind: str | None) -> str:
    reason = e.strerror or type(e).__name__
    if reason.startswith("bind(): port must be"):
        return "port out of range (0-65535)"
    path = e.filename2 if e.filename2 is not None else e.filename
    if path is None:
        return reason
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    text = f"{reason}: {path}"
    if kind == "ssl":
        text += (
            " (an ssl: listener needs privateKey=FILE, and certKey=FILE unless "
            "the key file holds the certificate too)"
        )
    return text


def explainEndpointError(
    e: BaseException | None, side: str | None = None, kind: str | None = None
) -> str:
    """
    Word an exception from an endpoint parser or a failed listen for a
    one-line message about the user's string.

    @param e: the exception (or C{None}).
    @param side: L{SERVER} or L{CLIENT}, when known.
    @param kind: the endpoint type (C{"tcp"}, C{"unix"} ...), when known.
    """
    if e is None:
        return "unknown error"
    if isinstance(e, TypeError):
        return _typeError(e, side, kind)
    if isinstance(e, KeyError):
        return f"missing {e.args[0] if e.args else 'a parameter'}"
    if type(e).__module__.startswith("OpenSSL"):
        reasons = [
            str(item[-1])
            for item in (e.args[0] if e.args and isinstance(e.args[0], list) else [])
            if isinstance(item, tuple) and item
        ]
        why = ", ".join(r for r in reasons if r) or type(e).__name__
        return f"not a PEM key or certificate that OpenSSL can read ({why})"
    if type(e).__name__ == "UnlistableError":
        return "trustRoots= must name a directory of CA certificates that exists"
    if isinstance(e, OSError):
        return _osError(e, kind)
    text = str(e) or type(e).__name__
    text = text.splitlines()[0]
    if text.startswith("invalid literal for int()"):
        return "expected a number, got " + text.rpartition(": ")[2]
    if text.startswith("bind(): port must be"):
        return "port out of range (0-65535)"
    return text
