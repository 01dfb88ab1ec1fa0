"""Processes labgen ends that are not its children (a node's daemons, the vagrant up of a
killed labgen): found by PID, told apart from a later process that reuses the number by their
start time, and stopped SIGTERM first, SIGKILL after a bounded wait."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def start_ticks(pid: int) -> int:
    """A live process's start time (clock ticks since boot; -1: no such process, or one that
    has exited and waits to be reaped): PIDs are reused, start times not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return -1 if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return -1


def stop(pids: list[int], grace: float = 5, groups: bool = False) -> None:
    """SIGTERM, up to `grace` seconds for every exit, then SIGKILL to what is left. groups:
    a PID that leads its own process group is signalled with its whole group. The exits are
    polled: these are not our children, so there is no wait() to block on."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in pids if start_ticks(p) != -1]
        for pid in alive:
            try:
                if groups and os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(start_ticks(p) != -1 for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)    # the poll's period (see above), not an assumed duration
