# -*- test-case-name: tests.test_docs -*-
"""
What the README, C{docs/} and C{deploy/} tell a new user holds: install
commands that work from a checkout of an unpublished package, notes that
match what the code does, and benchmark runs named so that no label reads as
a package version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.service import METRICS_MISSING

ROOT = Path(__file__).resolve().parent.parent

#: Installing the published distribution: fails until splicetx is on PyPI.
PUBLISHED = re.compile(r"pip install ['\"]?splicetx\b")


def _textFiles() -> list[Path]:
    """
    The files a user reads for instructions: the README, CONTRIBUTING,
    C{docs/}, C{deploy/} and the package's docstrings.
    """
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    files += sorted((ROOT / "src" / "splicetx").rglob("*.py"))
    return files


def _paragraphs(text: str) -> list[str]:
    """
    C{text} split at blank lines.
    """
    return re.split(r"\n[ \t]*\n", text)


class InstallTests(SynchronousTestCase):
    """
    How to install: from the checkout, in a virtual environment; the
    published form only as what works after a release.
    """

    def test_publishedFormOnlyAfterARelease(self) -> None:
        """
        Every C{pip install splicetx...} in the docs, recipes and docstrings
        is in a paragraph that says it is for after a release.
        """
        bare = []
        for path in _textFiles():
            for paragraph in _paragraphs(path.read_text(encoding="utf-8")):
                if PUBLISHED.search(paragraph) and "after a release" not in paragraph:
                    bare.append(f"{path.relative_to(ROOT)}: {paragraph.strip()[:80]}")
        self.assertEqual(bare, [])

    def test_checkoutFormDocumented(self) -> None:
        """
        The metrics extra is shown installed from the checkout in the CLI
        and operations docs and the deploy recipes.
        """
        for name in ["docs/cli.md", "docs/operations.md", "deploy/README.md"]:
            text = (ROOT / name).read_text(encoding="utf-8")
            self.assertIn("pip install '.[metrics]'", text, name)

    def test_metricsHint(self) -> None:
        """
        The one line C{--metrics} exits with, without prometheus-client,
        names the install from the checkout first.
        """
        hint = METRICS_MISSING
        self.assertIn("pip install '.[metrics]' in the splicetx checkout", hint)
        self.assertIn("after a release: pip install 'splicetx[metrics]'", hint)

    def test_readmeCommandsNeedAVirtualEnvironment(self) -> None:
        """
        Right after each of the README's two install commands, the text says
        to run it in a virtual environment, and why (PEP 668's error).
        """
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        for marker in ["<!-- run-command -->", "<!-- test-command -->"]:
            after = readme.split(marker, 1)[1]
            block, rest = re.match(r"\s*```sh\n(.*?)```\n(.*)", after, re.S).groups()
            self.assertIn("pip install", block)
            note = _paragraphs(rest.lstrip("\n"))[0]
            self.assertIn("virtual environment", note, marker)
            self.assertIn("externally-managed-environment", note, marker)


class DeployNotesTests(SynchronousTestCase):
    """
    The deploy recipes' notes match the code.
    """

    def test_healthzIsThere(self) -> None:
        """
        No note in C{deploy/} says C{/healthz} is still to come: the
        C{--metrics} server serves it.
        """
        stale = []
        for path in sorted((ROOT / "deploy").rglob("*")):
            if not path.is_file():
                continue
            for paragraph in _paragraphs(path.read_text(encoding="utf-8")):
                if "healthz" in paragraph and re.search(
                    r"later change|until then|until it is there", paragraph, re.I
                ):
                    stale.append(f"{path.relative_to(ROOT)}: {paragraph.strip()[:80]}")
        self.assertEqual(stale, [])
        self.assertIn("/healthz", (ROOT / "deploy" / "README.md").read_text())


class BenchmarkLabelTests(SynchronousTestCase):
    """
    Recorded benchmark runs are numbered and dated, not labelled with
    version numbers the package never had.
    """

    def test_runsNumberedAndDated(self) -> None:
        """
        Each recorded run's heading gives its number and date, numbers count
        down from the latest, and each run's JSON is named after its number
        and was started on that date.
        """
        text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
        sections = re.split(r"^## ", text, flags=re.M)
        runs = []
        for section in sections:
            heading = section.split("\n", 1)[0]
            if not heading.startswith("Recorded run"):
                continue
            match = re.match(r"Recorded run (\d+), (\d{4}-\d\d-\d\d)\b", heading)
            self.assertIsNotNone(match, heading)
            assert match is not None
            number, date = int(match.group(1)), match.group(2)
            runs.append(number)
            linked = re.findall(r"\]\((benchmarks-run(\d+)\.json)\)", section)
            self.assertTrue(linked, heading)
            for name, linkedNumber in linked:
                self.assertEqual(int(linkedNumber), number, heading)
                meta = json.loads((ROOT / "docs" / name).read_text())["meta"]
                self.assertEqual(meta["started"][:10], date, name)
        self.assertEqual(runs, list(range(len(runs), 0, -1)))

    def test_readmeNamesTheLatestRun(self) -> None:
        """
        The README's table names the latest recorded run by its number and
        date, not by a version number.
        """
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        self.assertIsNone(re.search(r"\brun \d+\.\d+", readme))
        label = re.search(r"\brun (\d+) of (\d{4}-\d\d-\d\d)\)", readme)
        self.assertIsNotNone(label)
        assert label is not None
        latest = re.search(
            r"^## Recorded run (\d+), (\d{4}-\d\d-\d\d)",
            (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"),
            re.M,
        )
        assert latest is not None
        self.assertEqual(label.groups(), latest.groups())
