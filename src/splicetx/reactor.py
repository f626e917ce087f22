# -*- test-case-name: tests.test_reactor -*-
"""
Twisted's epoll reactor, handing splicetx's socket loop its readiness
events without a log context per wake.

Every relayed socket of the fast path sits in one C{epoll} set of
L{splicetx._relay.socketloop.SocketLoop}, whose descriptor is the one thing
the reactor watches for them.  Twisted's C{EPollReactor.doPoll} calls each
ready descriptor through C{twisted.python.log.callWithLogger}, which builds
a legacy logging context (two dictionary copies and a context-stack push)
so that C{log.msg} calls made inside C{doRead} carry the descriptor's
C{logPrefix} as their C{system}: about 2.8 microseconds per call on this
project's benchmark machine, against 0.1 for the call itself, and 6 % of a
plain forward's CPU per connection on the churn load (docs/design-decisions.md,
"The reactor wake without a log context becomes the default").  The socket
loop logs through C{twisted.logger} with its own namespace and has no use
for that context.

L{SpliceEPollReactor} is C{EPollReactor} with three changes:

  - a ready L{SocketLoop} is called directly, with the error handling and
    disconnection rules of the reactor's own C{_doReadOrWrite} (an error
    is logged and disconnects it); every other descriptor goes through
    C{callWithLogger} and C{_doReadOrWrite} as before;
  - its main loop catches an unexpected error ("Unexpected error in main
    loop") around a run of iterations, not around each (Twisted enters a
    Python context manager per wake), and goes on after logging it, so an
    error ends one iteration, as on Twisted's own loop;
  - an iteration with no timed call due and nothing new to run (no thread
    call, no new timed call, no stop) goes straight to the poll, with the
    timeout C{timeout()} would give, where Twisted's loop calls
    C{runUntilCurrent} and C{timeout} every time, to find the same.

Each of these is what a wake of a relaying proxy pays between the sockets'
events and the next poll: about 110 bytecodes of Twisted's per wake, which
on one CPU shared with its peers sits between the proxy's write and the
peer's turn to answer (docs/design-decisions.md, "A leaner reactor
iteration").  Twisted's own reactor tests (time, system events, threads)
run against this reactor in C{tests/test_reactor.py}.

Install it the way Twisted's reactors are installed, before anything
imports C{twisted.internet.reactor}::

    from splicetx import reactor
    reactor.install()

or name it on the command line, C{twist --reactor splicetx ...} and
C{trial --reactor splicetx ...} (the plugin is
C{twisted/plugins/splicetx_reactor.py}).  C{twist splice-proxy} installs
it when no reactor was chosen (L{installDefault}); C{twist --reactor epoll
splice-proxy} keeps Twisted's own.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.python import log

from splicetx._relay.socketloop import SocketLoop

__all__ = ["SpliceEPollReactor", "install", "installDefault"]

# In Twisted's namespace, as Twisted's main loop logs them.
_log = Logger(namespace="twisted.internet.base")


#: The log system of an error that escapes the socket loop's dispatch.
_SYSTEM = "splicetx"

#: The socket loop's read event, as the reactor's poller reports it.
_POLLIN = EPollReactor._POLL_IN

#: The longest timeout of a poll, in seconds: Twisted's C{timeout()} bound
#: (2 ** 31 ms, epoll_wait's C int).
_LONGEST = 2147483


class SpliceEPollReactor(EPollReactor):
    """
    C{EPollReactor} that hands a ready L{SocketLoop} its event without
    C{callWithLogger}.  See the module docstring.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for new events and dispatch them, as C{EPollReactor.doPoll}
        does, but call a L{SocketLoop} without a legacy log context.

        @param timeout: seconds to wait at most; C{None} waits until an
            event.
        """
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        drdw = self._doReadOrWrite
        callWithLogger = log.callWithLogger
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if selectable.__class__ is SocketLoop:
                # What callWithLogger would do besides the context: an
                # error that escapes the reactor's own handling is logged,
                # and the other events of the poll are still dispatched.
                try:
                    if event == _POLLIN:
                        # The loop's only event (an epoll set is never hung
                        # up on): _doReadOrWrite's read, inline.  Its doRead
                        # returns None unless it raises: then, as there, the
                        # error is logged and disconnects the loop.
                        try:
                            selectable.doRead()
                        except BaseException as e:
                            log.err(system=_SYSTEM)
                            self._disconnectSelectable(selectable, e, True)
                    else:
                        drdw(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    log.err(system=_SYSTEM)
            else:
                callWithLogger(selectable, drdw, selectable, fd, event)

    doIteration = doPoll

    def mainLoop(self) -> None:
        """
        Run iterations until the reactor stops, as C{ReactorBase.mainLoop},
        with the error handler entered once per run of iterations, and
        C{runUntilCurrent} and C{timeout} called only when there is
        something for them to run (see the module docstring).
        """
        while self._started:
            try:
                while self._started:
                    due = (
                        self.threadCallQueue or self._newTimedCalls or self._justStopped
                    )
                    if not due:
                        # Nothing new: runUntilCurrent would only run the
                        # timed calls that are due, and timeout() say how
                        # long until the first.
                        pending = self._pendingTimedCalls
                        t2 = None
                        if pending:
                            delay = pending[0].time - self.seconds()
                            due = delay <= 0
                            # timeout()'s bound: epoll_wait's int of ms.
                            t2 = min(_LONGEST, delay)
                    if due:
                        self.runUntilCurrent()
                        t2 = self.timeout()
                    t = self.running and t2
                    self.doIteration(t)
            except BaseException:
                # As Twisted's handler: logged, and the loop goes on.
                _log.failure("Unexpected error in main loop")
        _log.info("Main loop terminated.")


def install() -> SpliceEPollReactor:
    """
    Install a L{SpliceEPollReactor} as the global reactor.

    @return: the reactor.
    @raise twisted.internet.error.ReactorAlreadyInstalledError: if a reactor
        is installed already.
    """
    from twisted.internet.main import installReactor

    r = SpliceEPollReactor()
    installReactor(r)
    return r


def installDefault() -> Any:
    """
    Install a L{SpliceEPollReactor} unless a reactor is installed already
    (C{twist --reactor NAME}, or an import of C{twisted.internet.reactor}),
    for C{twist splice-proxy}, whose options are parsed before C{twist}
    installs its default.

    @return: the reactor installed now, or C{None} if one was already.
    """
    if "twisted.internet.reactor" in sys.modules:
        return None
    return install()
