"""A VM create killed with SIGKILL (labgen alone: its vagrant up lives on, as when a CI job's
main process dies) while Vagrant boots the guests: `labgen list` shows the lab as partial, and
`labgen destroy DIR` leaves libvirt exactly as before: no domain, network or volume of the lab,
no vagrant still running for it. Runs alone (two emulated VMs at a time).

The other kill point, while a node provisions (then `labgen prune --yes` with the directory
deleted), runs on the VM suite's shared pair, last (tests/e2e/test_vm_e2e.py): reaching it here
would take a boot of its own, minutes under emulation."""
from __future__ import annotations

import subprocess

import pytest
from support import bounds
from support.cli import labgen
from support.labs import listed
from support.vm import killed_at, running, sweep

# (per test, fixture set-up included: a lab boot or a fresh root is inside)
pytestmark = [pytest.mark.vm, pytest.mark.timeout(bounds.TEST_BOOT)]


def libvirt_objects() -> dict[str, list[str]]:
    """Every domain, network and volume libvirt has, but the two things that a first VM lab
    on a host creates to share with every later one: vagrant-libvirt's management network
    and the box's image in the storage pool."""
    def names(*args: str) -> list[str]:
        out = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                             text=True, timeout=120).stdout
        return sorted(ln.split()[0] for ln in out.splitlines() if ln.strip())
    vols = [v for v in names("vol-list", "default")[2:] if "_vagrant_box_image_" not in v]
    return {"domains": names("list", "--all", "--name"),
            "networks": [n for n in names("net-list", "--all", "--name") if n != "vagrant-libvirt"],
            "volumes": vols}


def test_vm_create_killed_while_vagrant_boots_leaves_a_partial_lab_that_destroy_removes(tmp_path, box):
    name = "ci-kill"
    sweep(name)
    before = libvirt_objects()
    lab_dir = tmp_path / "lab"
    vagrants = killed_at(name, ": booting", "create", "gre", "--box", box, "--name", name, "--dir", str(lab_dir))
    entry = listed(name, "libvirt")
    assert entry is not None and entry["state"] == "partial", entry
    assert entry["dir"] == str(lab_dir)
    done = labgen("destroy", str(lab_dir), timeout=bounds.VM_DESTROY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert listed(name, "libvirt") is None
    assert libvirt_objects() == before
    assert not running(vagrants)
