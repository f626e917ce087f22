"""
Helpers for testing relays and proxies built on splicetx, under trial and
pytest.
"""

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
]
