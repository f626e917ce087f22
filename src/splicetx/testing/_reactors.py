# -*- test-case-name: tests.test_testing_reactors -*-
"""
Run a test scenario on a fresh instance of each real reactor.

The kernel path of splicetx is reactor-level code: it registers its own
descriptors and depends on how each reactor maps file descriptors to objects.
So it is tested against every reactor a user may pick, each test on a new,
private reactor instance (the global reactor is left alone), the way
Twisted's own reactor tests do it.  This::

    class RelayTests(ReactorTestMixin):
        def test_something(self):
            def scenario(reactor):
                ...           # return a Deferred
            result = self.runScenario(scenario)

    globals().update(makeReactorTests(RelayTests))

generates C{RelayTests_epoll}, C{RelayTests_splicetx}, C{RelayTests_poll},
C{RelayTests_select} and C{RelayTests_asyncio}: trial and pytest both
collect them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "REACTORS",
    "ReactorTestMixin",
    "ReactorUnclean",
    "ScenarioTimeout",
    "buildReactor",
    "makeReactorTests",
    "runScenario",
]


def _epoll() -> Any:
    from twisted.internet.epollreactor import EPollReactor

    return EPollReactor()


def _splicetx() -> Any:
    from splicetx.reactor import SpliceEPollReactor

    return SpliceEPollReactor()


def _poll() -> Any:
    from twisted.internet.pollreactor import PollReactor

    return PollReactor()


def _select() -> Any:
    from twisted.internet.selectreactor import SelectReactor

    return SelectReactor()


def _asyncio() -> Any:
    import asyncio

    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    return AsyncioSelectorReactor(asyncio.new_event_loop())


#: The reactors splicetx supports, by short name.  epoll, splicetx's own
#: (L{splicetx.reactor}: epoll's without a log context per socket loop
#: wake, which C{twist splice-proxy} runs by default) and poll exist on
#: Linux only; select and asyncio everywhere.
REACTORS: dict[str, Callable[[], Any]] = {
    "epoll": _epoll,
    "splicetx": _splicetx,
    "poll": _poll,
    "select": _select,
    "asyncio": _asyncio,
}
if not sys.platform.startswith("linux"):  # pragma: no cover
    del REACTORS["epoll"]
    del REACTORS["splicetx"]


class ScenarioTimeout(AssertionError):
    """
    A scenario did not finish within its time limit.
    """


class ReactorUnclean(AssertionError):
    """
    Descriptors were still registered with the reactor after a scenario.
    """


def buildReactor(name: str) -> Any:
    """
    Make a new, uninstalled reactor of the given kind.

    @param name: a key of L{REACTORS}.
    @raise KeyError: for an unknown name.
    """
    return REACTORS[name]()


def _internal(reactor: Any) -> set[Any]:
    return set(getattr(reactor, "_internalReaders", ()))


def _dispose(reactor: Any) -> None:
    """
    Release what the reactor itself holds (waker, poller, event loop).
    """
    for reader in list(_internal(reactor)):
        reactor.removeReader(reader)
        try:
            reader.connectionLost(None)
        except Exception:
            pass
    if hasattr(reactor, "_internalReaders"):
        reactor._internalReaders.clear()
    reactor.disconnectAll()
    for call in reactor.getDelayedCalls():
        call.cancel()
    poller = getattr(reactor, "_poller", None)
    if poller is not None and hasattr(poller, "close"):
        poller.close()
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        loop.close()


def runScenario(
    reactor: Any,
    scenario: Callable[[Any], Any],
    timeout: float = 60.0,
    requireClean: bool = True,
) -> Any:
    """
    Run C{scenario(reactor)} on a fresh reactor until the L{Deferred} it
    returns fires, then stop the reactor and dispose of it.

    @param reactor: a new reactor, e.g. from L{buildReactor}.
    @param scenario: a callable taking the reactor and returning a value or
        a L{Deferred}.
    @param timeout: seconds before the scenario is abandoned.
    @param requireClean: raise L{ReactorUnclean} when descriptors other than
        the reactor's own are still registered once the scenario's
        L{Deferred} fired (a leak of sockets or of relay descriptors).
    @return: the scenario's result.
    @raise ScenarioTimeout: when the timeout expired.
    @raise ReactorUnclean: see C{requireClean}.
    @raise Exception: whatever the scenario failed with.
    """
    outcome: list[Any] = []
    timedOut: list[bool] = []
    leftovers: list[Any] = []

    def snapshot() -> None:
        leftovers[:] = [
            s
            for s in set(reactor.getReaders()) | set(reactor.getWriters())
            if s not in _internal(reactor)
        ]

    def stop() -> None:
        snapshot()
        reactor.stop()

    def finished(result: Any) -> None:
        outcome.append(result)
        if not timedOut:
            # Let closes that were started in the same turn complete.
            reactor.callLater(0, stop)

    def start() -> None:
        d: Deferred[Any] = maybeDeferred(scenario, reactor)
        d.addBoth(finished)

    def expire() -> None:
        timedOut.append(True)
        stop()

    reactor.callWhenRunning(start)
    timer = reactor.callLater(timeout, expire)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        if timer.active():
            timer.cancel()
        _dispose(reactor)
    if timedOut:
        raise ScenarioTimeout(
            f"scenario still running after {timeout} s; registered: {leftovers!r}"
        )
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    if requireClean and leftovers:
        raise ReactorUnclean(f"reactor unclean after scenario: {leftovers!r}")
    return result


class ReactorTestMixin:
    """
    Mixin for test cases whose tests run on real reactors; see
    L{makeReactorTests}.

    @cvar reactorName: set by L{makeReactorTests} on each generated class.
    """

    reactorName: str = "epoll"
    scenarioTimeout: float = 60.0

    def buildReactor(self) -> Any:
        """
        A fresh reactor of this class's kind.
        """
        return buildReactor(self.reactorName)

    def runScenario(
        self,
        scenario: Callable[[Any], Any],
        timeout: float | None = None,
        requireClean: bool = True,
    ) -> Any:
        """
        Run C{scenario} on a fresh reactor; see L{runScenario}.
        """
        return runScenario(
            self.buildReactor(),
            scenario,
            timeout=self.scenarioTimeout if timeout is None else timeout,
            requireClean=requireClean,
        )


def makeReactorTests(mixin: type, reactors: list[str] | None = None) -> dict[str, type]:
    """
    Make one L{SynchronousTestCase} per reactor from a L{ReactorTestMixin}
    subclass.

    @param mixin: the class holding the test methods.
    @param reactors: reactor names (default: all of L{REACTORS}).
    @return: a C{{name: class}} dict for C{globals().update(...)}.
    """
    classes: dict[str, type] = {}
    for name in reactors or list(REACTORS):
        clsName = f"{mixin.__name__}_{name}"
        cls = type(
            clsName,
            (mixin, SynchronousTestCase),
            {"reactorName": name, "__module__": mixin.__module__},
        )
        classes[clsName] = cls
    return classes
