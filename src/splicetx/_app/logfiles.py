# -*- test-case-name: tests.test_logrotate -*-
"""
SIGUSR1: reopen the log files, so that logrotate can move them away.

nginx's convention: logrotate renames C{proxy.log} to C{proxy.log.1}, the
process keeps writing to the renamed file (its descriptor follows the
file, not the name) until it gets C{SIGUSR1}, then opens C{proxy.log} anew
and writes there.  C{twist splice-proxy} does this for C{twist}'s own log
file (C{twist --log-file}) and for the C{--access-log} file; with
C{--workers} the supervisor passes the signal on to every worker (see
L{splicetx._app.supervisor}).  A snippet for logrotate is in
C{deploy/logrotate/splicetx}.

A file is reopened in place: a new descriptor for the same name is
C{dup2}'d over the old one, so every holder of the file object (C{twist}'s
log observer, the L{AccessLog <splicetx._ops.accesslog.AccessLog>}) writes
to the new file without being told.  Standard output, pipes and terminals
are left alone.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import Logger

from splicetx._relay.runtime import LOG_PROXY

__all__ = ["installReopenSignal", "reopenFile", "reopenFiles"]

_log = Logger(namespace=LOG_PROXY)


def reopenFile(outFile: IO[str] | None) -> str | None:
    """
    Point an open, appending file object at a fresh file of the same name
    (created with the old file's permissions when it is gone).

    @param outFile: a file opened by name, or anything else (C{None},
        standard output, a pipe), which is left as it is.
    @return: the name reopened, or C{None} when C{outFile} is not a regular
        file opened by name.
    @raise OSError: when the name cannot be opened again (the old file is
        then still written to).
    """
    name = getattr(outFile, "name", None)
    if outFile is None or not isinstance(name, str) or name.startswith("<"):
        return None
    try:
        fd = outFile.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(mode):
        return None
    outFile.flush()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    new = os.open(name, flags, stat.S_IMODE(mode))
    try:
        os.dup2(new, fd, inheritable=False)
    finally:
        os.close(new)
    return name


def reopenFiles(files: list[IO[str] | None], **fields: Any) -> list[str]:
    """
    L{reopenFile} each file once, and log what could not be reopened and
    then (into the new files) what was.

    @param files: file objects; C{None} and repeats are skipped.
    @param fields: more fields for the C{reopened} event (C{workers}: how
        many workers the signal was passed on to).
    @return: the names reopened.
    """
    reopened: list[str] = []
    seen: list[Any] = []
    for outFile in files:
        if outFile is None or any(outFile is s for s in seen):
            continue
        seen.append(outFile)
        try:
            name = reopenFile(outFile)
        except OSError as e:
            _log.error(
                "cannot reopen {file} (still writing to the old one): {error}",
                splicetxEvent="reopen-failed",
                file=getattr(outFile, "name", "?"),
                error=e.strerror or str(e),
            )
            continue
        if name is not None:
            reopened.append(name)
    names = ", ".join(reopened) or "no log file (none was opened by name)"
    text = "SIGUSR1: reopened " + names.replace("{", "{{").replace("}", "}}")
    if "workers" in fields:
        text += "; passed on to {workers} worker(s)"
    _log.info(
        text,
        splicetxEvent="reopened",
        files=reopened,
        pid=os.getpid(),
        **fields,
    )
    return reopened


def installReopenSignal(reactor: Any, reopen: Callable[[], object]) -> None:
    """
    Call C{reopen()} in the reactor thread on every SIGUSR1.

    @param reactor: the running reactor.
    @param reopen: what to call.
    """

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(reopen)

    signal.signal(signal.SIGUSR1, onSignal)
