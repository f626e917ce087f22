"""
Helpers for testing relays and proxies built on splicetx, under trial and
pytest.
"""

from splicetx.testing._backends import (
    Backend,
    BackendConnection,
    Listener,
    RefusingPort,
    Tally,
    digest,
    payload,
)
from splicetx.testing._loopback import (
    Loopback,
    LoopbackClient,
    runLoopback,
    withLoopback,
)
from splicetx.testing._reactors import (
    REACTORS,
    ReactorTestMixin,
    ReactorUnclean,
    ScenarioTimeout,
    buildReactor,
    makeReactorTests,
    runScenario,
)

__all__ = [
    "REACTORS",
    "ReactorTestMixin",
    "ReactorUnclean",
    "ScenarioTimeout",
    "buildReactor",
    "makeReactorTests",
    "runScenario",
    "Backend",
    "BackendConnection",
    "Listener",
    "RefusingPort",
    "Loopback",
    "LoopbackClient",
    "Tally",
    "digest",
    "payload",
    "runLoopback",
    "withLoopback",
]
