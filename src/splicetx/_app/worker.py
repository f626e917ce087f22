# -*- test-case-name: tests.test_workers -*-
"""
The worker side of C{--workers N}: find the listening sockets the supervisor
(L{splicetx._app.processes}) passed down, adopt them into the reactor, and stop
when the supervisor is gone.

The supervisor starts each worker with these environment variables:

  - C{SPLICETX_WORKER_FDS}: the inherited listening sockets, in the order of
    the listeners, as C{FD:FAMILY} separated by commas, e.g.
    C{3:inet,4:inet6} (C{FAMILY} is C{inet}, C{inet6} or C{unix}).
  - C{SPLICETX_WORKER_INDEX}: the worker's slot, C{0} to C{N-1} (a restarted
    worker keeps its slot).
  - C{SPLICETX_SUPERVISOR_PID}: the supervisor's process id.
  - C{SPLICETX_WORKER_CONFIG}: with C{--config}, a file holding the text of
    the configuration file as the supervisor checked it; the worker reads
    that instead of the file, so every worker of a generation (and a worker
    restarted after a crash) runs what the supervisor checked, even while
    the file is being edited (L{configText}).
  - C{SPLICETX_WORKER_READY_FD}: a pipe the worker writes C{ready} to
    (L{reportReady}) once it serves its sockets; the supervisor waits for it
    before it retires the previous generation on a reload.

A worker calls L{adoptListeners} instead of listening on its endpoints, and
L{watchSupervisor} so it never outlives a supervisor killed with C{SIGKILL}.
On C{SIGTERM} it should stop listening and drain its connections, as a
single process would.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from splicetx._relay.runtime import defaultReactor

__all__ = [
    "ENV_CONFIG",
    "ENV_FDS",
    "ENV_INDEX",
    "ENV_READY",
    "ENV_SUPERVISOR",
    "adoptListeners",
    "configText",
    "familyName",
    "inheritedListeners",
    "isWorker",
    "reportReady",
    "watchSupervisor",
    "workerIndex",
]

ENV_FDS = "SPLICETX_WORKER_FDS"
ENV_INDEX = "SPLICETX_WORKER_INDEX"
ENV_SUPERVISOR = "SPLICETX_SUPERVISOR_PID"
ENV_READY = "SPLICETX_WORKER_READY_FD"
ENV_CONFIG = "SPLICETX_WORKER_CONFIG"

_FAMILIES = {
    "inet": socket.AF_INET,
    "inet6": socket.AF_INET6,
    "unix": socket.AF_UNIX,
}


def familyName(family: int) -> str:
    """
    The name used in C{SPLICETX_WORKER_FDS} for an address family.

    @raise ValueError: for a family a worker cannot adopt.
    """
    for name, value in _FAMILIES.items():
        if value == family:
            return name
    raise ValueError(f"cannot pass a socket of family {family!r} to a worker")


def isWorker(environ: Mapping[str, str] | None = None) -> bool:
    """
    Tell whether this process was started by a worker supervisor.
    """
    return ENV_FDS in (os.environ if environ is None else environ)


def workerIndex(environ: Mapping[str, str] | None = None) -> int | None:
    """
    This worker's slot number, or C{None} outside a worker.
    """
    value = (os.environ if environ is None else environ).get(ENV_INDEX)
    return None if value is None else int(value)


def inheritedListeners(
    environ: Mapping[str, str] | None = None,
) -> list[tuple[int, int]]:
    """
    Read the inherited listening sockets.

    @return: C{(fd, family)} pairs in listener order (empty outside a
        worker).
    @raise ValueError: when the variable is malformed.
    """
    env = os.environ if environ is None else environ
    text = env.get(ENV_FDS, "")
    result: list[tuple[int, int]] = []
    for item in filter(None, text.split(",")):
        fd, sep, family = item.partition(":")
        if not sep or not fd.isdigit() or family not in _FAMILIES:
            raise ValueError(f"bad {ENV_FDS} entry {item!r}")
        result.append((int(fd), _FAMILIES[family]))
    return result


def adoptListeners(
    factories: Sequence[Any],
    reactor: Any = None,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """
    Listen on the inherited sockets: one factory per listener, in order.

    The inherited descriptors are closed once adopted (the reactor holds its
    own duplicate), as C{IReactorSocket.adoptStreamPort} asks.

    @param factories: the server factories, one per inherited socket.
    @param reactor: an C{IReactorSocket}; default the global reactor.
    @return: the listening ports.
    @raise ValueError: when the number of factories does not match.
    """
    reactor = defaultReactor(reactor)
    listeners = inheritedListeners(environ)
    if len(listeners) != len(factories):
        raise ValueError(
            f"{len(listeners)} inherited listening sockets for "
            f"{len(factories)} listeners"
        )
    ports = []
    for (fd, family), factory in zip(listeners, factories, strict=True):
        try:
            ports.append(reactor.adoptStreamPort(fd, family, factory))
        finally:
            os.close(fd)
    return ports


def configText(environ: Mapping[str, str] | None = None) -> str | None:
    """
    The text of the configuration file the supervisor checked for this
    worker's generation, or C{None} (not a worker, or no C{--config}).

    @raise OSError: when the supervisor's copy cannot be read.
    """
    env = os.environ if environ is None else environ
    path = env.get(ENV_CONFIG) if ENV_FDS in env else None
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def reportReady(environ: Mapping[str, str] | None = None) -> None:
    """
    Tell the supervisor this worker serves its sockets: write C{ready} to
    the C{SPLICETX_WORKER_READY_FD} pipe and close it (nothing outside a
    worker, or when the supervisor is gone).
    """
    value = (os.environ if environ is None else environ).get(ENV_READY)
    if not value or not value.isdigit():
        return
    fd = int(value)
    try:
        os.write(fd, b"ready\n")
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def watchSupervisor(
    reactor: Any = None,
    interval: float = 1.0,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """
    Stop the reactor when the supervisor is gone (this process was
    re-parented), so a worker never outlives a supervisor that was killed
    without a chance to stop it.

    @param reactor: the reactor to stop; default the global one.
    @param interval: seconds between checks.
    @return: the running C{LoopingCall}, or C{None} outside a worker.
    """
    from twisted.internet.task import LoopingCall

    env = os.environ if environ is None else environ
    if ENV_SUPERVISOR not in env:
        return None
    reactor = defaultReactor(reactor)
    supervisor = int(env[ENV_SUPERVISOR])

    def check() -> None:
        if os.getppid() != supervisor:
            loop.stop()
            reactor.stop()

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(interval, now=True)
    return loop
