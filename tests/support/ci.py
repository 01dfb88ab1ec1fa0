"""The CI recipes in examples/ci/ and the npm tools that check or run them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support import ROOT

CI = ROOT / "examples" / "ci"
SCRIPT = CI / "labgen-ci.sh"            # the one script both recipes run
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
TOOLS = Path(os.environ.get("LABGEN_TEST_TOOLS", Path.home() / ".cache" / "labgen-test-tools"))


def npm_tool(package: str, binary: str) -> list[str] | None:
    """A tool from npm, installed once into TOOLS (the ordinary npm client); None without npm."""
    exe = TOOLS / "node_modules" / ".bin" / binary
    if not exe.exists():
        if shutil.which("npm") is None:
            return None
        TOOLS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS), package],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return [str(exe)]
