# -*- test-case-name: tests.test_docs_snippets -*-
"""
The code excerpts of README.md and docs/ marked
C{<!-- excerpt: PATH -->} stay in step with the file they are taken from.
"""

from __future__ import annotations

import re
from pathlib import Path

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
