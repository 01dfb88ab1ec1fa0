"""Lines for a terminal or a log: styled (bold, colours) only on a terminal, plain elsewhere.

Most commands print a few lines, and loading rich for them costs ~40 ms of every command
(docs/benchmarks.md); rich is loaded only by what prints a table (`Stream.rich`). A line is
built from parts: plain strings, printed as they are (no markup to escape), and
(text, style) pairs. Which streams count as a terminal follows rich's rules, so a line and
a table next to it agree: FORCE_COLOR makes any stream one, NO_COLOR drops colours (not
bold or dim), TERM=dumb or unknown drops all styles.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Part = str | tuple[str, str]

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33"}
_COLOURS = {"red", "green", "yellow"}
_LOCK = threading.Lock()


class Stream:
    """Standard output or standard error, looked up at each print (a test may swap it)."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self._rich: Console | None = None

    @property
    def file(self) -> IO[str]:
        return sys.stderr if self.stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        if os.environ.get("FORCE_COLOR"):
            return True
        isatty = getattr(self.file, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:      # a closed stream
            return False

    def _styles(self) -> bool:
        return self.is_terminal and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")

    def sgr(self, style: str) -> str:
        """The escape sequence for a style ("bold red"), or "" where styles do not belong."""
        if not self._styles():
            return ""
        words = [w for w in style.split() if w in _SGR]
        if os.environ.get("NO_COLOR"):
            words = [w for w in words if w not in _COLOURS]
        return f"\x1b[{';'.join(_SGR[w] for w in words)}m" if words else ""

    def line(self, *parts: Part) -> None:
        """One line, never wrapped (logs are read line by line)."""
        text = []
        for part in parts:
            if isinstance(part, str):
                text.append(part)
            else:
                body, style = part
                on = self.sgr(style)
                text.append(f"{on}{body}\x1b[0m" if on else body)
        with _LOCK:     # one write per line: lines from progress threads never interleave
            self.file.write("".join(text) + "\n")
            self.file.flush()

    @property
    def rich(self) -> Console:
        """A rich console on this stream, for tables (loaded on first use)."""
        if self._rich is None:
            from rich.console import Console
            self._rich = Console(stderr=self.stderr, highlight=False)
        return self._rich


out = Stream()
err = Stream(stderr=True)
