# -*- test-case-name: tests.test_reload -*-
"""
Read a C{--config} file in either format, rinetd's or TOML, into one
L{ConfigFile}: its forwards with the command line's access rules around
their own, their endpoint strings checked, and the warnings about it.

This is what C{twist splice-proxy --config FILE} reads at start and what
SIGHUP reads again (L{splicetx._app.reload}).
"""

from __future__ import annotations

import attr

from splicetx._config.endpoints import checkConnect, checkListen
from splicetx._config.model import ConfigFile, Forward
from splicetx._config.rinetd import parseConfig
from splicetx._config.toml import parseToml
from splicetx._config.udpforward import checkForwardKind
from splicetx._config.values import ConfigError
from splicetx._proxy.access import AccessControl

__all__ = ["readConfigText", "isTomlConfig", "readConfigFile", "connectStrings"]


def readConfigText(path: str) -> str:
    """
    Read a C{--config} file.

    @raise ConfigError: when it cannot be read or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason}", path) from None


def isTomlConfig(path: str, text: str | None = None) -> bool:
    """
    Whether a C{--config} file is TOML: a C{.toml} suffix, or content whose
    first statement opens a table (C{[defaults]}, C{[[forward]]}).

    @param path: the file.
    @param text: its text when already read; default: read C{path} (an
        unreadable one is left to the rinetd reader, which reports it).
    """
    if path.lower().endswith(".toml"):
        return True
    if text is None:
        try:
            text = readConfigText(path)
        except ConfigError:
            return False
    for line in text.splitlines():
        statement = line.split("#", 1)[0].strip()
        if statement:
            return statement.startswith("[")
    return False


def connectStrings(forwards: list[Forward] | tuple[Forward, ...]) -> list[str]:
    """
    Every upstream endpoint string of some forwards (L{Forward.connectStrings}).
    """
    return [d for forward in forwards for d in forward.connectStrings()]


def _checkEndpoints(config: ConfigFile, path: str, checkListens: bool) -> None:
    for n, forward in enumerate(config.forwards):
        where = f"forward[{n}]"
        try:
            for description in forward.listens if checkListens else ():
                checkListen(description)
            for description in connectStrings([forward]):
                checkConnect(description)
            checkForwardKind(forward)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e.problem}", path) from None


def readConfigFile(
    path: str,
    commandACL: AccessControl | None = None,
    text: str | None = None,
    checkListens: bool = True,
) -> ConfigFile:
    """
    Read the forwards of a C{--config} file, with the command line's
    C{--allow}/C{--deny} rules applied to each forward first.

    @param path: the file.
    @param commandACL: the command line's rules, or C{None}.
    @param text: the file's text, when already read (a worker gets the copy
        its supervisor checked); default: read C{path}.
    @param checkListens: check the listening endpoint strings too (a worker
        adopts its supervisor's sockets, so it does not).
    @return: the file's forwards, each with C{acl} C{None} when no rule
        could refuse anyone, and its warnings.
    @raise ConfigError: when the file cannot be read or has a problem.
    """
    if text is None:
        text = readConfigText(path)
    outer = None if commandACL is None or commandACL.empty else commandACL
    if isTomlConfig(path, text):
        config = parseToml(text, path, outer)
    else:
        config = parseConfig(text, path, outer=outer)
        config = attr.evolve(
            config,
            forwards=[
                attr.evolve(f, acl=None if f.acl is None or f.acl.empty else f.acl)
                for f in config.forwards
            ],
        )
    _checkEndpoints(config, path, checkListens)
    return config
