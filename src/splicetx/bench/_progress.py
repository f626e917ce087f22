"""
The bench's progress on standard error: one line, redrawn, on a terminal;
one line per step otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """
    A one-line progress bar on stderr (one line per step when stderr is not a
    terminal).
    """

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def step(self, label: str) -> None:
        self.show(label)
        self.done += 1

    def show(self, label: str) -> None:
        frac = self.done / self.total
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = (
            f"[{bar}] {self.done}/{self.total} "
            f"{time.monotonic() - self.started:5.0f}s  {label}"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, label: str = "done") -> None:
        self.done = self.total
        self.show(label)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
