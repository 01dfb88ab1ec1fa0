"""Shared test setup for tests/unit (pure logic: no root, no Open vSwitch, no VM) and tests/e2e
(real OVS in namespaces, real VMs, fresh Debian roots, a real sshd). What the modules share
is in tests/support/ (importable as `support`: pyproject.toml puts tests/ on sys.path).

Markers: `netns` (real OVS in namespaces, root), `vm` (real Vagrant + libvirt + qemu VMs,
root, minutes) and `fresh` (a debootstrapped Debian root, root, minutes). They mark only the
tests that need that; netns and vm tests are skipped with the reason when the host cannot
run them, never faked (test_fresh_machine.py skips by itself)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from support import sshd as ssh_server
from support.cli import labgen


def netns_capable() -> str | None:
    """Why the netns end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ovs-vsctl", "ovs-vswitchd", "tcpdump", "ethtool", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def vm_capable() -> str | None:
    """Why the VM end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("vagrant", "virsh", "qemu-system-x86_64", "debootstrap", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (sudo scripts/setup --vm)"
    return None


def pytest_collection_modifyitems(config, items):
    for marker, probe in (("netns", netns_capable), ("vm", vm_capable)):
        reason = probe()
        # In CI the host is set up by .ci/run: a missing tool there must fail, not skip.
        if reason and os.environ.get("CI") != "true":
            skip = pytest.mark.skip(reason=f"{marker} end-to-end: {reason}")
            for item in items:
                if marker in item.keywords:
                    item.add_marker(skip)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from what labgen renders now (tests/unit/test_golden.py); "
                          "env LABGEN_UPDATE_GOLDEN=1 does the same")


@pytest.fixture(scope="session")
def box():
    """The locally built labgen/debian12 box (built once, then reused from the cache)."""
    proc = labgen("box", "build", "debian12", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True).stdout
    assert "labgen/debian12" in listed and "libvirt" in listed
    return "labgen/debian12"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback, one per module (support.sshd.Server): the SSH
    runner's tests and exec/capture over SSH (tests/e2e)."""
    yield from ssh_server.serve(tmp_path_factory)


@pytest.fixture
def ssh_runner(sshd):
    """An SSHRunner for "node1" on that server, closed after the test."""
    from labgen.ssh import SSHRunner
    r = SSHRunner("node1", sshd.target(), connect_timeout=5)
    yield r
    r.close()
