"""
The pytest plugin of splicetx (registered through the C{pytest11} entry
point): fixtures for testing relays and proxies.  It imports no reactor:
the fixtures import what they need when a test asks for them.

Fixtures:

  - C{splicetx_run}: L{splicetx.testing.runLoopback}, which runs
    C{scenario(loopback)} on a fresh private reactor and returns its
    result.  Works in a plain synchronous pytest function, with or without
    pytest-twisted.
  - C{splicetx_loopback}: a L{splicetx.testing.Loopback} on the global
    reactor, closed after the test.  For tests that run on the global
    reactor through pytest-twisted (C{@pytest_twisted.ensureDeferred} or
    C{@pytest_twisted.inlineCallbacks}).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def splicetx_run() -> Any:
    """
    L{splicetx.testing.runLoopback}: C{splicetx_run(scenario,
    reactorName="epoll", timeout=60.0)} runs C{scenario(loopback)} (a
    function or an C{async def}) on a fresh private reactor and returns
    what it returns.
    """
    from splicetx.testing import runLoopback

    return runLoopback


@pytest.fixture
def splicetx_loopback() -> Iterator[Any]:
    """
    A L{splicetx.testing.Loopback} on the global reactor (the one
    pytest-twisted installed), closed after the test.
    """
    from twisted.internet import reactor

    from splicetx.testing import Loopback

    loopback = Loopback(reactor)
    yield loopback
    closing = loopback.close()
    if not closing.called:
        try:
            import pytest_twisted
        except ImportError:  # pragma: no cover
            return
        pytest_twisted.blockon(closing)
