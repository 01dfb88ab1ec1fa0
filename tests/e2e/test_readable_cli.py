"""Readable output of the real CLI on a real netns lab: `verify` (one line per stage, and
with --verbose one row per check) and `status` in a pipe (no colours, no box drawing, within
100 columns or COLUMNS), `| cat` literally, and status's exit codes. The tables themselves,
on sample reports: tests/unit/test_readable_output.py."""
from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
from support.cli import ARGV, ESC, assert_plain, labgen
from support.netns import netns_lab

from labgen.verify.stages import NAMES


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    for d, _ in netns_lab(tmp_path_factory, "gre", f"rd{os.getpid() % 100000}"):
        yield d


def cli(*args: str, columns: str | None = "100") -> subprocess.CompletedProcess:
    """labgen with the caller's environment, minus what says "terminal": COLUMNS as given."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    if columns:
        env["COLUMNS"] = columns
    return labgen(*args, env=env)


@pytest.mark.netns
@pytest.mark.parametrize("columns", ["100", None])
def test_verify_and_status_in_a_pipe(lab, columns):
    # By default one line per stage, in order; --verbose: one row per check, as before.
    for flags, count in (((), len(NAMES)), (("--verbose",), 30)):
        proc = cli("verify", str(lab), *flags, columns=columns)
        assert proc.returncode == 0, proc.stderr
        assert_plain(proc.stdout)
        rows = [ln for ln in proc.stdout.splitlines() if re.match(r"^(nodes|config|underlay|stp|overlay|tunnel|mtu) ", ln)]
        assert all(" passed " in ln for ln in rows), proc.stdout
        if flags:
            assert len(rows) >= count, proc.stdout
        else:
            assert [ln.split()[0] for ln in rows] == list(NAMES), proc.stdout
        assert proc.stdout.rstrip().splitlines()[-1].startswith("VERIFIED: ")
    st = cli("status", str(lab), columns=columns)
    assert st.returncode == 0, st.stderr
    assert_plain(st.stdout)
    assert re.search(r"^node1 +running +\S+ +gre-node2 +converged", st.stdout, re.M), st.stdout


@pytest.mark.netns
def test_verify_piped_through_cat(lab):
    """The README's claim, literally: `labgen verify DIR | cat` has no ESC and no box drawing."""
    proc = subprocess.run(f"{shlex.join([*ARGV, 'verify', str(lab)])} | cat", shell=True,
                          capture_output=True, text=True, timeout=240)
    assert "VERIFIED: " in proc.stdout
    assert_plain(proc.stdout)
    assert ESC not in proc.stderr


@pytest.mark.netns
def test_exit_codes_of_status(lab, tmp_path):
    """0 when every node runs, 3 when not (here: a lab that was rendered but never brought up)."""
    assert cli("status", str(lab)).returncode == 0
    other = tmp_path / "other"
    assert labgen("render", "gre", "--provider", "netns", "--name", "rdnone", "--dir", str(other)).returncode == 0
    proc = cli("status", str(other))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert_plain(proc.stdout)
    assert re.search(r"^node1 +absent", proc.stdout, re.M)


def test_verify_draws_the_tree_it_leaves(lab):
    """After verify the lab directory holds the spanning tree as OVS reports it then
    (topology-live.dot): of a two-node lab's 7 links (3 loop veths a node, 1 tunnel), the 5
    of one tree forward (solid) and 2 are blocked (dashed, naming the blocking port), one root."""
    live = lab / "topology-live.dot"
    live.unlink(missing_ok=True)
    proc = labgen("verify", str(lab))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = live.read_text()
    assert "(after verify)" in text.splitlines()[0], text
    edges = [ln for ln in text.splitlines() if " -- " in ln]
    assert len(edges) == 7, text
    assert sum("penwidth=2" in e for e in edges) == 5, text
    assert sum("style=dashed" in e and "blocked at" in e for e in edges) == 2, text
    assert text.count("(root)") == 1, text
