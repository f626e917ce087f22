# -*- test-case-name: tests.test_relay_loop -*-
"""
Tests that L{splicetx.relay} on two Twisted transports puts the relayed
sockets in the reactor's L{SocketLoop <splicetx._relay.socketloop.SocketLoop>}
(the set the fast path's sockets are in) for the relay's duration, and takes
them out at its end, on every reactor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks

from splicetx import DONE, RESET, PipePool
from splicetx._relay.socketloop import loopFor
from splicetx._relay.splice import socketLoopOf
from splicetx.testing import ReactorTestMixin, digest, makeReactorTests, payload

from ._harness import makePair


def _fds(pair: Any) -> set[int]:
    """
    The file descriptors of the two relayed transports.
    """
    return {h.transport.fileno() for h in pair.holders}


class SocketLoopMembershipMixin(ReactorTestMixin):
    """
    A spliced relay's two sockets are loop members while it runs, not reactor
    readers of their own, and leave the loop when it ends.
    """

    @inlineCallbacks
    def _membership(self, reactor: Any, ending: str) -> Any:
        loop = loopFor(reactor)
        self.assertIs(socketLoopOf(reactor), loop)
        pool = PipePool()
        pair = yield makePair(reactor, engine="splice", pipePool=pool)
        fds = _fds(pair)
        transports = [h.transport for h in pair.holders]
        seen: Deferred[tuple[set[int], bool, list[bool]]] = Deferred()
        first = payload(200_000, 41)

        def onData(data: bytes) -> None:
            if seen.called or pair.server.received < len(first):
                return
            readers = reactor.getReaders()
            seen.callback(
                (
                    set(loop.members) & fds,
                    loop in readers,
                    [t in readers for t in transports],
                )
            )

        pair.server.onData = onData
        pair.client.send(first, halfClose=False)
        members, loopReading, ownReaders = yield seen
        if ending == "reset":
            pair.client.transport.abortConnection()
        else:
            pair.client.transport.loseConnection()
            yield pair.server.eof
            pair.server.transport.loseConnection()
        result = yield pair.result
        yield gatherResults([pair.client.lost, pair.server.lost])
        pool.close()
        self.assertEqual(members, fds)
        self.assertTrue(loopReading)
        self.assertEqual(ownReaders, [False, False])
        self.assertEqual(pair.server.digest(), digest(first))
        self.assertEqual(result.engine, "splice")
        self.assertEqual(result.reason, DONE if ending == "done" else RESET, result)
        # Out of the loop, the loop out of the reactor, its epoll set closed.
        self.assertEqual(set(loop.members) & fds, set())
        self.assertNotIn(loop, reactor.getReaders())
        self.assertEqual(loop.fileno(), -1)

    def test_membersWhileRelaying(self) -> None:
        """Both sockets are loop members while spliced; none is left after."""
        self.runScenario(lambda r: self._membership(r, "done"))

    def test_membersLeaveOnReset(self) -> None:
        """A reset ends the relay and takes both sockets out of the loop."""
        self.runScenario(lambda r: self._membership(r, "reset"))

    @inlineCallbacks
    def _sharedLoop(self, reactor: Any) -> Any:
        pool = PipePool()
        one = yield makePair(reactor, engine="splice", pipePool=pool)
        two = yield makePair(reactor, engine="splice", pipePool=pool)
        loop = loopFor(reactor)
        fdsTwo = _fds(two)
        data = payload(100_000, 42)
        one.client.send(data)
        one.server.send(data)
        yield one.result
        yield gatherResults([one.client.lost, one.server.lost])
        # The other relay is still a member, so the set stays open.
        still = set(loop.members) & fdsTwo, loop.fileno() != -1
        two.client.send(data)
        two.server.send(data)
        result = yield two.result
        yield gatherResults([two.client.lost, two.server.lost])
        pool.close()
        self.assertEqual(still, (fdsTwo, True))
        self.assertEqual(result.reason, DONE)
        self.assertEqual(two.server.digest(), digest(data))
        self.assertEqual(loop.fileno(), -1)

    def test_sharedLoop(self) -> None:
        """One relay's end leaves another relay's sockets in the loop."""
        self.runScenario(self._sharedLoop)


_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)

_NO_FD_FOR_LOOP = textwrap.dedent(
    """
    import hashlib, json, os, resource, sys
    sys.path[:0] = [{src!r}, {root!r}]
    from twisted.internet.defer import gatherResults, inlineCallbacks
    from splicetx import PipePool
    from splicetx._relay.socketloop import loopFor
    from splicetx.testing import buildReactor, payload, runScenario
    from tests._harness import makePair

    @inlineCallbacks
    def scenario(reactor):
        pool = PipePool()
        pool.give(pool.take()); pool.give(pool.take())  # two idle pipes
        seen = {{}}
        def before(pair):
            # No fd number is left: the loop cannot make its epoll set.
            top = max(int(x) for x in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, top + 1))
            try:
                while True:  # and none below it either
                    seen.setdefault("fillers", []).append(os.open(os.devnull, 0))
            except OSError:
                pass
        pair = yield makePair(reactor, beforeRelay=before, pipePool=pool)
        up, down = payload(1 << 20, 1), payload(1 << 20, 2)
        def onData(data):
            seen.setdefault("members", len(loopFor(reactor).members))
        pair.server.onData = onData
        pair.client.send(up); pair.server.send(down)
        result = yield pair.result
        yield gatherResults([pair.client.lost, pair.server.lost])
        for fd in seen.get("fillers", []):
            os.close(fd)
        return dict(engine=result.engine, reason=result.reason,
                    members=seen.get("members"),
                    up=pair.server.digest() == hashlib.sha256(up).hexdigest(),
                    down=pair.client.digest() == hashlib.sha256(down).hexdigest())
    print(json.dumps(runScenario(buildReactor(sys.argv[1]), scenario, timeout=30)))
    """
)


class NoDescriptorForTheLoopMixin(ReactorTestMixin):
    """
    With pipes at hand but no descriptor left for the loop's C{epoll} set, the
    relay still splices: the reactor watches its sockets.
    """

    def test_emfileForTheLoop(self) -> None:
        """EMFILE for the loop's epoll set: spliced anyway, nothing lost."""
        script = _NO_FD_FOR_LOOP.format(src=os.path.join(_ROOT, "src"), root=_ROOT)
        out = subprocess.run(
            [sys.executable, "-c", script, self.reactorName],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(
            (got["engine"], got["reason"], got["members"]), ("splice", "done", 0)
        )
        self.assertTrue(got["up"] and got["down"], got)


globals().update(makeReactorTests(SocketLoopMembershipMixin))
globals().update(makeReactorTests(NoDescriptorForTheLoopMixin))
