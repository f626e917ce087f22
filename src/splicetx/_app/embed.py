# -*- test-case-name: tests.test_userproxy -*-
"""
The service C{twist splice-proxy} runs, for applications and scripts that
bring their own protocol or factory class: L{proxyService} builds it from
C{splice-proxy} arguments, L{serve} is the whole C{main()} of a script.
Public as L{splicetx.service}.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from typing import NoReturn

from twisted.application.service import IService

from splicetx._app.protocolclass import qualifiedName
from splicetx._app.tap import Options, makeService

__all__ = ["proxyService", "serve"]


def _classArguments(protocol: type | None, factory: type | None) -> list[str]:
    out = []
    for option, cls in (("--protocol", protocol), ("--factory", factory)):
        if cls is not None:
            out += [option, qualifiedName(cls)]
    return out


def proxyService(
    arguments: Sequence[str] = (),
    *,
    protocol: type | None = None,
    factory: type | None = None,
) -> IService:
    """
    The service C{twist splice-proxy} would run for C{arguments} (its
    options, e.g. C{["--listen", "tcp:3128:interface=127.0.0.1",
    "--metrics", "tcp:9100:interface=127.0.0.1"]}) with your classes: it
    listens, serves metrics and the status page, reloads C{--config} on
    SIGHUP and drains on SIGTERM/SIGINT (once the reactor runs with its
    signal handlers), or with C{--workers} supervises worker processes.

    Give it to your application (C{service.setServiceParent(application)})
    or start it yourself (C{startService()}; stop it with C{stopService()},
    which drains, before the reactor stops).  It runs on the global
    reactor.

    @param arguments: C{splice-proxy} options, including those your
        classes declare (C{commandLineOptions}).
    @param protocol: a L{SpliceProxyProtocol
        <splicetx.proxy.SpliceProxyProtocol>} subclass, as C{--protocol}.
    @param factory: a L{SpliceProxyFactory
        <splicetx.proxy.SpliceProxyFactory>} subclass, as C{--factory}.
    @return: an C{IService}.
    @raise twisted.python.usage.UsageError: for bad arguments (its message
        is one line).
    @raise ValueError: for a class that cannot be imported by name (one
        defined inside a function).
    """
    options = Options()
    options.exitOnUsageError = False
    options.installsReactor = False
    options.parseOptions([*_classArguments(protocol, factory), *arguments])
    return makeService(options)


def serve(
    protocol: type | None = None,
    factory: type | None = None,
    *,
    arguments: Sequence[str] | None = None,
    listen: str | None = None,
) -> NoReturn:
    """
    Run C{twist splice-proxy} with your classes: the C{main()} of a
    script.  The command line is C{splice-proxy}'s own (with your classes'
    options), logging and exit statuses are C{twist}'s, and the process
    drains on SIGTERM/SIGINT.  A class defined in the script itself is
    imported again by the script's file name, so that C{--workers} can
    import it too.

    @param protocol: as C{--protocol}.
    @param factory: as C{--factory}.
    @param arguments: the C{splice-proxy} arguments (default:
        C{sys.argv[1:]}).
    @param listen: the listening endpoint when the arguments give neither
        C{--listen} nor C{--config}, e.g. C{"tcp:3128:interface=127.0.0.1"}.
    @raise SystemExit: always, with the process's exit status.
    """
    args = list(sys.argv[1:] if arguments is None else arguments)
    given = {a.partition("=")[0] for a in args if a.startswith("-")}
    if listen is not None and not given & {"--listen", "-l", "--config"}:
        args = ["--listen", listen, *args]
    sys.argv = [
        sys.argv[0],
        "splice-proxy",
        *_classArguments(protocol, factory),
        *args,
    ]
    # As "python -m twisted" would: twist's own options, logging and exit.
    runpy.run_module("twisted", run_name="__main__", alter_sys=True)
    raise SystemExit(0)
