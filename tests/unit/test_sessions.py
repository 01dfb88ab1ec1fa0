"""support.sessions on real processes: a session left by a test run that was killed as a
whole is ended by the next run; one whose test run is still going is kept."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from support import sessions

# A stand-in test run: starts a session of its own (a shell that starts a child, as a recipe
# script starts labgen), notes it in the ledger, prints the two PIDs and waits on stdin.
# The child writes to /dev/null, not to the owner's pipe: GNU `tail -f` (here before) exits
# when its output is a pipe whose reader is gone, so the killed owner took the session with
# it now and then (CI, stop 30), and the test saw nothing left to end.
OWNER = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from support import sessions
leader = subprocess.Popen(["sh", "-c", "sleep 86400 >/dev/null & echo $!; wait"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, text=True, start_new_session=True)
sessions.note(leader.pid)
leader.stdout.readline()        # the child is there
print(leader.pid, flush=True)
sys.stdin.read()
"""


def _start_owner(ledger):
    env = {**os.environ, "LABGEN_TEST_SESSIONS": str(ledger)}
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    owner = subprocess.Popen([sys.executable, "-c", OWNER, tests], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    leader = int(owner.stdout.readline())
    return owner, leader


def test_a_session_of_a_killed_test_run_is_ended_and_a_live_runs_kept(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger"
    monkeypatch.setattr(sessions, "LEDGER", ledger)
    live_owner, live_leader = _start_owner(ledger)
    dead_owner, dead_leader = _start_owner(ledger)
    try:
        dead_members = sessions._members(dead_leader, sessions._ticks(dead_leader))
        assert len(dead_members) == 2               # the shell and its child
        dead_owner.kill()                           # the test run killed as a whole ...
        dead_owner.wait()
        assert sessions._members(dead_leader, sessions._ticks(dead_leader)) == dead_members  # ... its session lives on
        ended = sessions.end_left(grace=10)
        assert ended == [f"session {dead_leader} (2 processes) of test run {dead_owner.pid}"]
        assert not any(os.path.exists(f"/proc/{p}") and sessions._stat(p)[0] != "Z" for p in dead_members)
        # The live run's session is untouched and still noted.
        assert len(sessions._members(live_leader, sessions._ticks(live_leader))) == 2
        assert ledger.read_text().split()[0] == str(live_leader)
        assert sessions.end_left() == []
    finally:
        for owner, leader in ((live_owner, live_leader), (dead_owner, dead_leader)):
            try:
                os.killpg(leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
            owner.kill()
            owner.wait()
