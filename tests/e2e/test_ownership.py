"""One lab is one lab (netns, real OVS in real namespaces): every verb acts on its own
directory's lab only, `labgen list` sees every lab on the host, and a labgen killed with
SIGKILL at any point leaves a lab that `labgen destroy DIR` (or, with the directory gone,
`labgen prune --yes`) removes completely."""
from __future__ import annotations

import shutil

import pytest
from support.cli import labgen, labgen_started
from support.labs import kill_at, listed

pytestmark = pytest.mark.netns


def test_every_verb_on_another_directory_of_the_same_name_is_refused(tmp_path, clean_host):
    y, x = tmp_path / "y", tmp_path / "x"
    made = labgen("create", "gre", "--provider", "netns", "--stp", "rstp", "--name", "own", "--dir", str(y))
    assert made.returncode == 0, made.stderr
    try:
        assert labgen("render", "gre", "--provider", "netns", "--stp", "rstp", "--name", "own",
                      "--dir", str(x)).returncode == 0
        shutil.copytree(y, tmp_path / "copy")       # a copy holds y's id, not its path
        for lab_dir in (x, tmp_path / "copy"):
            for argv in (["verify", str(lab_dir)], ["status", str(lab_dir)], ["destroy", str(lab_dir)],
                         ["up", str(lab_dir)], ["exec", "node1", "--dir", str(lab_dir), "--", "true"],
                         ["capture", "node1", "--dir", str(lab_dir), "-c", "1"],
                         ["shell", "node1", "--dir", str(lab_dir)],
                         ["create", "gre", "--provider", "netns", "--stp", "rstp", "--name", "own",
                          "--dir", str(lab_dir), "--force"]):
                proc = labgen(*argv)
                assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
                lines = proc.stderr.strip().splitlines()
                assert len(lines) == 1 and f"lab 'own' on this host belongs to {y}" in lines[0], (argv, lines)
        # destroy --name is for a lab whose directory is gone: y still holds it
        by_name = labgen("destroy", "--name", "own")
        assert by_name.returncode == 2 and f"labgen destroy {y}" in by_name.stderr
        still = labgen("verify", str(y), "--json")
        assert still.returncode == 0, still.stdout[-2000:]
        entry = listed("own")
        assert entry is not None and entry["state"] == "whole" and entry["dir"] == str(y)
        assert entry["provider"] == "netns" and (entry["nodes"], entry["running"]) == (2, 2)
    finally:
        shutil.rmtree(y)
    gone = listed("own")
    assert gone is not None and gone["state"] == "orphaned" and gone["dir_exists"] is False
    dry = labgen("prune")
    assert dry.returncode == 1 and "would remove: netns lab 'own'" in dry.stdout
    assert listed("own") is not None            # without --yes nothing goes
    pruned = labgen("prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert listed("own") is None
    assert labgen("prune").returncode == 0      # nothing left to prune


# (what labgen prints just as it reaches the point, the verb that is killed)
POINTS = {
    "underlay switch": ("underlay switch labgen-", "create"),
    "node script": ("node1: provisioning", "create"),
    "verify": ("verifying", "create"),
    "destroy": ("stopping", "destroy"),
}


@pytest.mark.parametrize("cleanup", ["destroy", "prune"])
@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_leaves_a_partial_lab_that_is_removed_completely(tmp_path, clean_host, point, cleanup):
    marker, verb = POINTS[point]
    lab_dir = tmp_path / "lab"
    name = "kill"
    create = ["create", "gre", "--provider", "netns", "--name", name, "--dir", str(lab_dir)]
    if verb == "destroy":
        assert labgen(*create, "--stp", "rstp").returncode == 0
        proc = labgen_started("destroy", str(lab_dir))
    else:
        proc = labgen_started(*create)
    kill_at(proc, marker, timeout=120)
    entry = listed(name)
    assert entry is not None, "the killed lab is not listed"
    assert entry["state"] == "partial" and entry["dir"] == str(lab_dir), entry
    if cleanup == "destroy":
        proc2 = labgen("destroy", str(lab_dir))
    else:
        shutil.rmtree(lab_dir)
        assert listed(name)["state"] == "orphaned"
        proc2 = labgen("prune", "--yes")
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert listed(name) is None
