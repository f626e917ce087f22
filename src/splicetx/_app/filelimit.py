# -*- test-case-name: tests.test_cli -*-
"""
Size the proxy to the file descriptor limit: raise the soft
C{RLIMIT_NOFILE} to the hard limit, and derive from it how many pipes and
connections the process can hold (C{--max-pipes} and C{--max-connections
auto}).

A spliced connection holds L{FDS_PER_SPLICED_CONNECTION} descriptors; the
pipe pool may take half of them, so C{auto} allows a quarter of the limit in
connections (less a few for the process itself), shared out among the
forwards.  Under the C{select()} reactor only descriptors below
L{_FD_SETSIZE} are usable, whatever the limit.
"""

from __future__ import annotations

import resource
from typing import Any

import attr

__all__ = ["FDS_PER_SPLICED_CONNECTION", "Capacity", "capacity", "raiseFileLimit"]

#: File descriptors a spliced connection may hold: two sockets, two pipes.
FDS_PER_SPLICED_CONNECTION = 6

#: select() cannot watch descriptors at or above this number.
_FD_SETSIZE = 1024


def raiseFileLimit() -> tuple[int, int]:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit.

    @return: the soft limit before and after.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return before, soft


@attr.s(frozen=True, auto_attribs=True)
class Capacity:
    """
    What the file descriptor limit leaves room for.

    @ivar before: the soft limit before L{raiseFileLimit}.
    @ivar fds: the soft limit after it.
    @ivar usable: the descriptors the reactor can watch (C{fds}, or fewer
        under C{select()}).
    @ivar maxPipes: the pipe pool's cap: as configured, or derived from
        C{usable} when the reactor cannot use them all; C{None} lets the
        pool decide.
    @ivar maxConnections: connections each forward accepts at once, or
        C{None} for no limit.
    """

    before: int
    fds: int
    usable: int
    maxPipes: int | None
    maxConnections: int | None

    @property
    def spliced(self) -> int:
        """
        About how many spliced connections fit in L{usable}.
        """
        return self.usable // FDS_PER_SPLICED_CONNECTION


def capacity(
    reactor: Any,
    forwards: int,
    maxPipes: int | None,
    maxConnections: int | str | None,
) -> Capacity:
    """
    Raise the file descriptor limit and size the proxy to it.

    @param reactor: the reactor (the C{select()} one caps what is usable).
    @param forwards: how many forwards share C{auto} connections.
    @param maxPipes: C{--max-pipes}, or C{None}.
    @param maxConnections: C{--max-connections}: a number, C{None} (no
        limit) or C{"auto"}.
    @raise ValueError: for another string in C{maxConnections}.
    """
    before, fds = raiseFileLimit()
    usable = fds
    if type(reactor).__name__ == "SelectReactor":
        usable = min(usable, _FD_SETSIZE)
    if maxPipes is None and usable != fds:
        maxPipes = max(2, usable // 4)
    if maxConnections == "auto":
        # Pipes may take half the descriptors (see PipePool); the other
        # half is two sockets per connection, less some for the process.
        maxConnections = max(1, usable // 4 - 32)
        maxConnections = max(1, maxConnections // max(1, forwards))
    if isinstance(maxConnections, str):
        raise ValueError(
            f"max connections must be a number, None or 'auto', not {maxConnections!r}"
        )
    return Capacity(before, fds, usable, maxPipes, maxConnections)
