"""The one way the tests run the labgen CLI: `python -m labgen ARGS` in a subprocess, with the
interpreter that runs the tests, output captured as text; and what its output must look like
in a pipe."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ARGV = (sys.executable, "-m", "labgen")
# rich wraps at the terminal width and colours a terminal: a wide dumb one keeps lines whole.
ENV = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}


def labgen(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run labgen to its end (env: ENV unless given; input: its stdin)."""
    return subprocess.run([*ARGV, *args], cwd=cwd, env=ENV if env is None else env, input=input,
                          capture_output=True, text=True, timeout=timeout)


def labgen_started(*args: str, text: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start labgen without waiting (a test that interrupts it); stdout and stderr are pipes."""
    return subprocess.Popen([*ARGV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
                            env=ENV if env is None else env)


ESC = "\x1b"
BOX_DRAWING = re.compile("[\u2500-\u257f]")


def assert_plain(text: str, width: int = 100) -> None:
    """Output fit for a log or a pipe: no colour or cursor codes, no box drawing, ASCII, and
    no line wider than width."""
    assert ESC not in text, "colour or cursor codes in non-terminal output"
    assert not BOX_DRAWING.search(text), "box-drawing characters in non-terminal output"
    assert text.isascii(), [ch for ch in text if not ch.isascii()][:5]
    too_wide = [ln for ln in text.splitlines() if len(ln) > width]
    assert not too_wide, too_wide
