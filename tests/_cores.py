"""
Run a relay test scenario under both relay cores: the compiled one
(C{splicetx._relay._ccore}) and the pure-Python reference
(L{splicetx._relay.core}).

L{makeCoreTests} is L{makeReactorTests <splicetx.testing.makeReactorTests>}
plus, for every reactor, a copy that runs under the other core: the
classes named as usual run the process's core (the compiled one when it is
built, the pure one under C{SPLICETX_NO_EXTENSIONS=1}), those ending in
C{_pure} or C{_compiled} the other.  Only the relay, fast path and fault
scenarios are doubled, not the whole suite: the rest of splicetx runs above
the relay's public behaviour, which the doubled scenarios pin for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.trial.unittest import SkipTest

from splicetx._relay import core
from splicetx.testing import makeReactorTests


@contextmanager
def usingCore(compiled: bool) -> Iterator[None]:
    """
    Run the block under the compiled core (C{True}) or the pure one, then
    put back the one that ran before.
    """
    before = core.current() == core.COMPILED
    core.use(compiled)
    try:
        yield
    finally:
        core.use(before)


class CoreSwitch:
    """
    A test case mixin: run each test under the core C{compiledCore} says,
    then put back the one that ran before.
    """

    compiledCore: bool

    def setUp(self) -> None:
        if self.compiledCore and not core.available():
            raise SkipTest(f"the compiled core is not built: {core.describe()}")
        before = core.current() == core.COMPILED
        core.use(self.compiledCore)
        self.addCleanup(core.use, before)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


def otherCore() -> str:
    """
    The core the process does not run by default.
    """
    return core.PURE if core.current() == core.COMPILED else core.COMPILED


def makeCoreTests(mixin: type) -> dict[str, type]:
    """
    One test case per reactor for the process's core and one per reactor
    for the other core.

    @param mixin: a L{ReactorTestMixin <splicetx.testing.ReactorTestMixin>}
        subclass holding the test methods.
    @return: a C{{name: class}} dict for C{globals().update(...)}.
    """
    classes = makeReactorTests(mixin)
    other = otherCore()
    for name, cls in list(classes.items()):
        otherName = f"{name}_{other}"
        classes[otherName] = type(
            otherName,
            (CoreSwitch, cls),
            {"compiledCore": other == core.COMPILED, "__module__": cls.__module__},
        )
    return classes
