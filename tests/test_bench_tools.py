# -*- test-case-name: tests.test_bench_tools -*-
"""
The single-purpose bench tools run and report (never how fast).
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=120
    )
    if out.returncode:
        raise AssertionError(f"{args} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


class BenchToolTests(SynchronousTestCase):
    """
    C{python -m splicetx.bench.transfer} and C{python -m splicetx.bench.sendfile}.
    """

    def test_transfer(self) -> None:
        """One fixed-size transfer per engine: every byte arrives, rows printed."""
        out = _run(
            "splicetx.bench.transfer", "--size", "8M", "--proxies", "splice-1m,copy"
        )
        rows = [line for line in out.splitlines() if line.startswith("| splice-1m")]
        rows += [line for line in out.splitlines() if line.startswith("| copy")]
        self.assertEqual(len(rows), 2, out)
        for row in rows:
            self.assertEqual(row.split("|")[2].strip(), str(8 << 20))

    def test_transferBadSize(self) -> None:
        """A nonsense size is one usage error, not a traceback."""
        out = subprocess.run(
            [sys.executable, "-m", "splicetx.bench.transfer", "--size", "lots"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(out.returncode, 2)
        self.assertIn("not a size", out.stderr)
        self.assertNotIn("Traceback", out.stderr)

    def test_sendfile(self) -> None:
        """sendfile and FileSender both serve the whole file."""
        out = _run("splicetx.bench.sendfile", "--size", "8M")
        for name in ("| sendfile (auto)", "| FileSender"):
            row = [line for line in out.splitlines() if line.startswith(name)]
            self.assertEqual(len(row), 1, out)
            self.assertEqual(row[0].split("|")[2].strip(), str(8 << 20))
