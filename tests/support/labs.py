"""For the tests of labs across runs: what `labgen list` says of a lab, and a labgen killed
with SIGKILL at the moment its progress reaches a given point."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

from support.cli import labgen


def listed(name: str, provider: str | None = None) -> dict | None:
    """The lab called name in `labgen list --json`, or None."""
    proc = labgen("list", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return next((lab for lab in json.loads(proc.stdout)["labs"]
                 if lab["name"] == name and provider in (None, lab["provider"])), None)


def kill_at(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Read labgen's progress (stderr) until a line holds marker, then SIGKILL labgen alone:
    its children live on, as when a CI job's main process is killed. Returns what it printed."""
    seen = ""
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in labgen's output within {timeout} s: {seen[-2000:]}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536).decode(errors="replace")
        assert chunk, f"labgen ended before {marker!r}: {seen[-2000:]}"
        seen += chunk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return seen
