"""
C{twist splice-proxy --help} reads as prose: every option's help is one
flowing text, wrapped by column, without runs of blanks from docstrings.
"""

from __future__ import annotations

import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from ._cli_support import twistCommand


class HelpTests(SynchronousTestCase):
    """
    The help text of the real command.
    """

    def test_noRunsOfBlanks(self) -> None:
        """
        Within an option's description no word is followed by more than one
        blank (the column between option and description excepted).
        """
        proc = subprocess.run(
            twistCommand(["--help"]), capture_output=True, text=True, timeout=60
        )
        self.assertEqual(proc.returncode, 0, proc.stderr)
        descriptions = []
        for line in proc.stdout.splitlines():
            match = re.match(r"^\s+(?:-\w, )?--[\w-]+=?\s{2,}(.*)$", line)
            text = match.group(1) if match else line.strip()
            descriptions.append(text)
        self.assertIn("--allow", proc.stdout)
        # (two blanks after a full stop are a sentence end, as in Twisted.)
        blanks = [d for d in descriptions if re.search(r"[^.\s] {2,}\S", d)]
        self.assertEqual(blanks, [])
        self.assertIn("address or rinetd pattern", " ".join(descriptions))
