"""The sessions that tests start, noted so that a later run can end what a killed run left.

Every long process a test starts runs in a session of its own (support.cli.run_group,
labgen_started; the fresh-root test's commands), so that a timeout kills the whole of it. A
test run killed as a whole (a CI time-out: SIGKILL to its process group) does not reach those
sessions: a labgen create, the CI recipe's script, a chroot's apt-get would go on holding VMs,
locks and both cores while the next run starts. So each is noted in LEDGER with the test run
that started it, and

    python3 tests/support/sessions.py

(.ci/run's clean start, before `labgen prune`) ends every session whose test run is gone: the
processes still in it (session id = the noted leader, started no earlier than it), by PID,
never by name. Only the standard library: .ci/run may call it before anything is installed.
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path

LEDGER = Path(os.environ.get("LABGEN_TEST_SESSIONS", "/var/tmp/labgen-test-sessions"))


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot): a PID with another start time is
    another process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, ticks: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == ticks


def note(pid: int) -> None:
    """Note a session that this test run just started (its leader's PID)."""
    ticks, own = _ticks(pid), _ticks(os.getpid())
    if ticks is None or own is None:        # (gone already: nothing to end later)
        return
    LEDGER.parent.mkdir(parents=True, exist_ok=True)
    with open(LEDGER, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"{pid} {ticks} {os.getpid()} {own}\n")


def _members(sid: int, since: int) -> list[int]:
    """The live processes of session sid that started no earlier than its leader."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == sid and int(fields[19]) >= since:
                out.append(int(entry))
    return out


def end_left(grace: float = 10) -> list[str]:
    """End every noted session whose test run is gone; keep the notes of live test runs.
    SIGTERM to each process group in it, a bounded wait, then SIGKILL. Returns what it ended."""
    if not LEDGER.exists():
        return []
    ended, keep = [], []
    with open(LEDGER, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        for line in f.read().splitlines():
            try:
                sid, ticks, owner, owner_ticks = map(int, line.split())
            except ValueError:
                continue
            members = _members(sid, ticks)
            if not members:
                continue                    # over: the note goes
            if _alive(owner, owner_ticks):
                keep.append(line)           # a test run still going
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pgid in {int(_stat(p)[2]) for p in members if _stat(p)}:
                    try:
                        os.killpg(pgid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + grace
                while _members(sid, ticks) and time.monotonic() < deadline:
                    time.sleep(0.1)         # (polling /proc: no event says a stranger is gone)
                if not _members(sid, ticks):
                    break
            ended.append(f"session {sid} ({len(members)} processes) of test run {owner}")
        f.seek(0)
        f.truncate()
        f.write("".join(f"{ln}\n" for ln in keep))
    return ended


if __name__ == "__main__":
    done = end_left()
    for what in done:
        print(f"ended {what}, left by a test run that is gone")
    if not done:
        print("no sessions left by earlier test runs")
    sys.exit(0)
