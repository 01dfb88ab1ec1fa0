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
