# -*- test-case-name: tests.test_userproxy -*-
"""
C{twist splice-proxy --protocol PACKAGE.MODULE.CLASS} and C{--factory}: a
user's own L{SpliceProxyProtocol} or L{SpliceProxyFactory} subclass served
with everything the plain forward has.

  - L{loadClass} imports the class a name gives and checks it, with one
    line for every way it can be wrong (exit status 64).
  - L{scanClassNames} finds those options in the arguments before they are
    parsed, so that the class's own options (its C{commandLineOptions}, a
    C{usage.Options} subclass) join the command line and its C{--help}
    (L{addClassOptions}).
  - L{choosesUpstream} says whether a protocol needs no C{--connect}.
  - L{classFactoryMaker} and L{withClassOptions} build each forward's
    factory from the classes (see
    L{SpliceProxyService.buildFactory
    <splicetx._app.service.SpliceProxyService.buildFactory>}).
  - L{qualifiedName} names a class so that another process (a worker) can
    import it again.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.python import usage

from splicetx._config.values import ConfigError
from splicetx._proxy.factory import SpliceProxyFactory
from splicetx._proxy.poolproxy import PoolProxyFactory
from splicetx._proxy.protocol import SpliceProxyProtocol

__all__ = [
    "CLASS_OPTIONS",
    "addClassOptions",
    "choosesUpstream",
    "classFactoryMaker",
    "classOptionsOf",
    "loadClass",
    "qualifiedName",
    "scanClassNames",
    "withClassOptions",
]

#: The options that name a class, and the class it must derive from.
CLASS_OPTIONS: dict[str, type] = {
    "protocol": SpliceProxyProtocol,
    "factory": SpliceProxyFactory,
}

#: Options every C{usage.Options} has, which a class's options do not add.
_INHERENT = ("help", "version")


def loadClass(name: str, option: str) -> type:
    """
    Import the class C{name} (C{PACKAGE.MODULE.CLASS}) for C{--option} and
    check that it derives from the class L{CLASS_OPTIONS} gives.

    @param name: the dotted name as given.
    @param option: C{"protocol"} or C{"factory"}.
    @return: the class.
    @raise ConfigError: with one line: the name is malformed, its module is
        not found or fails to import, it names nothing or no class, or a
        class of the wrong kind.
    """
    base = CLASS_OPTIONS[option]
    where = f"--{option} {name}"
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ConfigError(f"--{option}: expected MODULE.CLASS, not {name!r}")
    found: Any = None
    for cut in range(len(parts) - 1, 0, -1):
        moduleName = ".".join(parts[:cut])
        try:
            found = importlib.import_module(moduleName)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if missing and (moduleName + ".").startswith(missing + "."):
                continue
            raise ConfigError(f"{where}: importing {moduleName} failed: {e}") from None
        except Exception as e:
            raise ConfigError(
                f"{where}: importing {moduleName} failed: {type(e).__name__}: {e}"
            ) from None
        for attribute in parts[cut:]:
            try:
                found = getattr(found, attribute)
            except AttributeError:
                raise ConfigError(
                    f"{where}: module {moduleName} has no {'.'.join(parts[cut:])}"
                ) from None
        break
    else:
        raise ConfigError(
            f"{where}: no module named {parts[0]!r} (is its directory on PYTHONPATH?)"
        )
    if not isinstance(found, type):
        raise ConfigError(f"{where}: not a class but {type(found).__name__}")
    if not issubclass(found, base):
        raise ConfigError(f"{where}: not a subclass of {base.__name__}")
    return found


def scanClassNames(arguments: Sequence[str]) -> dict[str, str]:
    """
    The values of C{--protocol} and C{--factory} among unparsed arguments
    (the last one of each wins, as when parsed).

    @param arguments: the C{splice-proxy} arguments.
    @return: C{{"protocol": name, "factory": name}}, for those given.
    """
    found: dict[str, str] = {}
    arguments = list(arguments)
    for i, arg in enumerate(arguments):
        if arg == "--":
            break
        for option in CLASS_OPTIONS:
            flag = f"--{option}"
            if arg == flag and i + 1 < len(arguments):
                found[option] = arguments[i + 1]
            elif arg.startswith(flag + "="):
                found[option] = arg[len(flag) + 1 :]
    return found


def classOptionsOf(protocol: type | None, factory: type | None) -> type | None:
    """
    The C{usage.Options} subclass whose options the classes add: the
    factory's C{commandLineOptions}, else its protocol's (the C{--protocol}
    class, or the factory's own C{protocol}).

    @raise ConfigError: when it is not a C{usage.Options} subclass.
    """
    options = getattr(factory, "commandLineOptions", None)
    owner = factory
    if options is None:
        owner = protocol or getattr(factory, "protocol", None)
        options = getattr(owner, "commandLineOptions", None)
    if options is None:
        return None
    if not (isinstance(options, type) and issubclass(options, usage.Options)):
        assert owner is not None
        raise ConfigError(
            f"{owner.__qualname__}.commandLineOptions must be a "
            f"twisted.python.usage.Options subclass, not {options!r}"
        )
    return options


def addClassOptions(parser: usage.Options, extra: usage.Options) -> None:
    """
    Make C{parser} accept the options of C{extra} (and show them in its
    C{--help}); their values land in C{extra}, whose C{postOptions} the
    caller runs once parsing is done.

    This joins the tables every C{usage.Options} builds in its constructor
    (C{longOpt}, C{shortOpt}, C{docs}, C{synonyms}, C{defaults} and the
    handlers), the way C{getopt} and C{getUsage} read them.

    @raise ConfigError: when an option of C{extra} has the name of one of
        C{parser}'s.
    """
    ownLong = {o.rstrip("=") for o in parser.longOpt}
    ownShort = set(parser.shortOpt.replace(":", ""))
    for opt in extra.longOpt:
        name = opt.rstrip("=")
        if name in _INHERENT:
            continue
        if name in ownLong:
            raise ConfigError(
                f"{type(extra).__qualname__}: its option --{name} clashes "
                "with an option of splice-proxy"
            )
        parser.longOpt.append(opt)
        parser.docs[name] = extra.docs.get(name)
        if name in extra.defaults:
            parser.defaults[name] = extra.defaults[name]
    shorts = extra.shortOpt
    i = 0
    while i < len(shorts):
        letter = shorts[i]
        takesValue = shorts[i + 1 : i + 2] == ":"
        i += 2 if takesValue else 1
        if letter in ownShort:
            raise ConfigError(
                f"{type(extra).__qualname__}: its option -{letter} clashes "
                "with an option of splice-proxy"
            )
        parser.shortOpt += letter + (":" if takesValue else "")
    for key, value in extra.synonyms.items():
        if value not in _INHERENT:
            parser.synonyms[key] = value
    dispatch = extra._dispatch
    for key, handler in dispatch.items():
        if key not in _INHERENT:
            parser._dispatch[key] = handler


def choosesUpstream(protocol: type | None) -> bool:
    """
    Whether a protocol class picks its upstream itself, so that C{--connect}
    may be left out: it reads a handshake first or overrides
    C{chooseUpstream}.
    """
    if protocol is None:
        return False
    return bool(protocol.readsHandshake) or (
        protocol.chooseUpstream is not SpliceProxyProtocol.chooseUpstream
    )


def classFactoryMaker(config: Any, pooled: bool) -> Callable[..., Any] | None:
    """
    What makes one forward's factory from the C{--protocol} and
    C{--factory} classes of a configuration, called like
    L{SpliceProxyFactory} (the upstream, then the keywords); C{None} when
    neither was given.

    @param config: the L{ProxyConfig <splicetx._config.model.ProxyConfig>}.
    @param pooled: whether the upstream is the forward's
        L{ForwardPools <splicetx._app.poolservice.ForwardPools>}: its pool
        becomes the factory's C{upstream}, which the protocol's default
        C{chooseUpstream} (and C{connectUpstream}) take.
    """
    factory = config.factoryClass
    if factory is None and config.protocolClass is None:
        return None
    if not pooled:
        return factory or SpliceProxyFactory
    if factory is None or issubclass(factory, PoolProxyFactory):
        return (factory or PoolProxyFactory).forPools

    def fromPools(pools: Any, **kwargs: Any) -> Any:
        return factory(pools.pool, **kwargs)

    return fromPools


def withClassOptions(factory: Any, config: Any) -> Any:
    """
    Give a factory the C{--protocol} class and the parsed class options of
    a configuration.

    @return: C{factory}.
    """
    if config.protocolClass is not None:
        factory.protocol = config.protocolClass
    if config.classOptions is not None:
        factory.options = config.classOptions
    return factory


def qualifiedName(cls: type) -> str:
    """
    The name C{--protocol}/C{--factory} imports C{cls} by, in this process
    and in its workers.  A class of a script run as C{__main__} is named by
    the script's module (C{python -m}) or file name, and the script's
    directory joins C{sys.path} and C{PYTHONPATH} (which workers inherit).

    @raise ValueError: when the class cannot be named so (defined in a
        function, or in an interactive C{__main__}).
    """
    module = cls.__module__
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is local to a function")
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        path = getattr(main, "__file__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name
        elif path:
            directory, filename = os.path.split(os.path.abspath(path))
            module = os.path.splitext(filename)[0]
            if directory not in sys.path:
                sys.path.insert(0, directory)
            known = os.environ.get("PYTHONPATH", "")
            if directory not in known.split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    [directory, known] if known else [directory]
                )
        else:
            raise ValueError(f"{cls.__qualname__} is defined in an interactive session")
    return f"{module}.{cls.__qualname__}"
