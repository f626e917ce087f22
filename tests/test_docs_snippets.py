# -*- test-case-name: tests.test_docs_snippets -*-
"""
Every Python block of README.md and docs/ is tested: the excerpts marked
C{<!-- excerpt: PATH -->} stay in step with the file they are taken from,
the samples marked C{<!-- sample: NAME -->} run as files (in
C{tests/test_testing.py}), and every other block runs here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def excerpts() -> list[tuple[Path, str, str]]:
    """
    C{(document, source path, code)} for every marked block.
    """
    found = []
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = document.read_text()
        pattern = r"<!-- excerpt: (\S+) -->\n```python\n(.*?)```"
        for path, code in re.findall(pattern, text, re.S):
            found.append((document, path, code))
    return found


class ExcerptTests(SynchronousTestCase):
    """
    Every line of an excerpt is a line of its source.
    """

    def test_linesInSource(self) -> None:
        """
        Each code line of each excerpt (other than C{...}) is, stripped, a
        line of the file it names.
        """
        blocks = excerpts()
        self.assertGreaterEqual(len(blocks), 2)
        for document, path, code in blocks:
            source = {line.strip() for line in (ROOT / path).read_text().splitlines()}
            for line in code.splitlines():
                line = line.strip()
                if not line or line.startswith("..."):
                    continue
                self.assertIn(line, source, f"{document.name}: {path}")


def fragments() -> list[tuple[str, int, str]]:
    """
    C{(document, line, code)} for every Python block of README.md and docs/
    that is neither an excerpt of a file nor a sample run as a file.
    """
    found = []
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = document.read_text()
        pattern = r"(<!-- (?:excerpt|sample): \S+ -->\n)?```python\n(.*?)```"
        for match in re.finditer(pattern, text, re.S):
            if match.group(1):
                continue
            line = text[: match.start()].count("\n") + 1
            found.append((document.name, line, match.group(2)))
    return found


class FragmentTests(SynchronousTestCase):
    """
    Every other Python block of the docs runs, with the few names it takes
    from its surroundings given to it (a fake reactor where it would listen:
    a doc's example must not open ports on every interface).
    """

    def names(self, code: str, directory: str) -> dict[str, Any]:
        from twisted.internet.protocol import Protocol
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        namespace: dict[str, Any] = {"reactor": MemoryReactorClock()}
        if "clientProtocol" in code:
            for name in ("clientProtocol", "upstreamProtocol"):
                proto = Protocol()
                transport = StringTransport()
                transport.protocol = proto
                proto.makeConnection(transport)
                namespace[name] = proto
        if "sendFile(" in code:
            path = os.path.join(directory, "file.bin")
            with open(path, "wb") as f:
                f.write(b"x" * 1000)
            namespace.update(path=path, transport=StringTransport())
        return namespace

    def test_everyFragmentRuns(self) -> None:
        """
        Each block executes without an error; one that returns a Deferred
        (C{d = ...}) really made one.
        """
        from twisted.internet import defer
        from twisted.internet.testing import MemoryReactorClock

        from .test_tls import makeCertificate

        blocks = fragments()
        self.assertGreaterEqual(len(blocks), 5)
        for document, line, code in blocks:
            directory = tempfile.mkdtemp(prefix="splicetx-snippet-")
            self.addCleanup(shutil.rmtree, directory, True)
            key, cert = makeCertificate(directory)
            with open(key) as k, open(cert) as c:
                both = k.read() + c.read()
            with open(os.path.join(directory, "key.pem"), "w") as pem:
                pem.write(both)
            namespace = self.names(code, directory)
            fake = namespace["reactor"]
            assert isinstance(fake, MemoryReactorClock)
            with (
                mock.patch.dict(sys.modules, {"twisted.internet.reactor": fake}),
                mock.patch.object(
                    sys.modules["twisted.internet"], "reactor", fake, create=True
                ),
                _cwd(directory),
            ):
                try:
                    exec(compile(code, f"{document}:{line}", "exec"), namespace)
                except Exception as e:  # pragma: no cover (a failing doc)
                    self.fail(f"{document}:{line}: {type(e).__name__}: {e}")
            if "d" in namespace:
                self.assertIsInstance(namespace["d"], defer.Deferred, document)
            listened = fake.tcpServers + fake.sslServers
            for port, *_ in listened:
                self.assertNotEqual(port, 0, f"{document}:{line}")


@contextlib.contextmanager
def _cwd(directory: str) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)
