"""Who a lab belongs to (labgen/system/owner.py) and how a found lab's state is judged
(providers.Found): pure logic on records and lab directories in tmp_path."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from labgen.providers import Found
from labgen.system import owner
from labgen.system.processes import start_ticks


def _found(record, nodes=("node1", "node2"), running=("node1", "node2")) -> Found:
    return Found(name="gre", provider="netns", host="this host", record=record, nodes=nodes,
                 running=running, resources=())


def test_record_round_trips_and_strangers_text_is_not_a_record():
    rec = owner.new_owner("gre", "netns", ("node1", "node2"), __import__("pathlib").Path("."))
    assert owner.Owner.from_json(rec.to_json()) == rec
    for text in ("", "a lab of someone's", '{"lab": "gre"}', '{"kind": "labgen-owner"}', "[1]"):
        assert owner.Owner.from_json(text) is None


def test_this_directory_passes_another_or_a_copy_is_refused_in_one_line(tmp_path):
    y, x, copy = tmp_path / "y", tmp_path / "x", tmp_path / "copy"
    for d in (y, x, copy):
        d.mkdir()
    rec = owner.new_owner("gre", "netns", ("node1", "node2"), y).done()
    owner.write_claim(y, rec)
    owner.write_claim(copy, rec)        # cp -r y copy: the same id, another path
    owner.check(rec, y, "gre")
    owner.check(None, x, "gre")          # nothing runs under the name
    for d in (x, copy):
        with pytest.raises(owner.NotOwner) as exc:
            owner.check(rec, d, "gre")
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(f"lab 'gre' on this host belongs to {y} (started ")
        assert msg.endswith(f"(labgen destroy {y})")
    (y / owner.CLAIM).unlink()           # y no longer claims it (its dir was wiped): by name
    with pytest.raises(owner.NotOwner, match="labgen destroy --name gre"):
        owner.check(rec, x, "gre")


def test_states_whole_creating_partial_orphaned(tmp_path):
    rec = owner.new_owner("gre", "netns", ("node1", "node2"), tmp_path)
    owner.write_claim(tmp_path, rec)
    assert _found(rec).state == "creating"              # this process is bringing it up
    done = rec.done()
    owner.write_claim(tmp_path, done)
    assert _found(done).state == "whole"
    assert _found(done, running=("node1",)).state == "partial"
    # a create whose process is gone: a short-lived child's PID and start time
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = start_ticks(child.pid)
    child.wait()
    dead = replace(done, pid=child.pid, pid_start=ticks)
    owner.write_claim(tmp_path, dead)
    assert not dead.creating and _found(dead).state == "partial"
    assert _found(None).state == "orphaned"             # nothing says whose it is
    other = replace(done, id="another")                 # its dir claims another lab now
    assert _found(other).state == "orphaned"
    gone = replace(done, dir=str(tmp_path / "gone"))
    assert _found(gone).state == "orphaned" and "(gone)" in gone.describe()


def test_a_reused_pid_is_not_the_process_that_was_recorded():
    me = os.getpid()
    assert start_ticks(me) > 0
    rec = replace(owner.new_owner("gre", "netns", ("node1",), __import__("pathlib").Path(".")),
                  pid_start=start_ticks(me) + 1)
    assert not rec.creating and rec.unfinished


def test_age_reads_as_people_say_it():
    assert owner.ago(5) == "5 s ago" and owner.ago(125) == "2 min ago"
    assert owner.ago(3 * 3600 + 60) == "3 h 1 min ago" and owner.ago(3 * 86400) == "3 d ago"
    assert owner.ago(time.time() - time.time() - 10) == "0 s ago"
