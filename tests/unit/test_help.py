"""The CLI's help, as a user reads it at 80 columns: every tunnel kind named, nothing cut off."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from labgen.lab import tunnels

SCREENS = ([], ["render"], ["create"], ["up"], ["verify"], ["status"], ["destroy"], ["list"],
           ["prune"], ["shell"], ["exec"], ["capture"], ["boxes"], ["doctor"], ["box", "build"])


def _help(argv: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "labgen", *argv, "--help"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("argv", [[], ["capture"]], ids=["top", "capture"])
def test_help_names_every_tunnel_kind(argv):
    text = " ".join(_help(argv).split())
    for kind in tunnels.KINDS.values():
        assert kind.title in text, f"labgen {' '.join(argv)} --help does not name {kind.title}"


def test_every_help_screen_fits_80_columns():
    for argv in SCREENS:
        text = _help(argv)
        lines = text.splitlines()
        assert max(len(ln) for ln in lines) <= 80, (argv, text)
        assert "…" not in text, f"labgen {' '.join(argv)} --help cuts a word off:\n{text}"


def test_the_command_list_wraps_to_the_width_not_at_the_docstrings_breaks():
    """Each verb's summary fills its rows: a row that ends short while the next row goes on
    with the same summary is a docstring line break kept (create and failover had them)."""
    text = _help([])
    panel = text.split("Commands")[1]
    cmds = [ln[2:].rstrip("│").rstrip() for ln in panel.splitlines() if ln.startswith("│ ")]
    width = max(len(r) for r in cmds)
    for row, nxt in zip(cmds, cmds[1:], strict=False):
        continued = nxt.startswith(" " * 5)     # the next row goes on with this summary
        if continued:
            first_word = nxt.split()[0]
            assert len(row) + 1 + len(first_word) > width, f"wrapped early:\n{row}\n{nxt}"
