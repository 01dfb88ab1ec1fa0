"""End-to-end on real VMs: Vagrant + vagrant-libvirt + libvirt + qemu (software emulation
here), the locally built labgen/debian12 box, OVS's kernel datapath inside the guests,
verification over SSH. Minutes, not seconds: one lab per tunnel type."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from netns_helpers import labgen

pytestmark = pytest.mark.vm


def _libvirt_names(prefix: str) -> dict[str, list[str]]:
    def names(*args: str) -> list[str]:
        out = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                             text=True).stdout
        return [ln.split()[0] for ln in out.splitlines() if ln.strip().startswith(prefix)]
    return {"domains": names("list", "--all", "--name"), "networks": names("net-list", "--all", "--name"),
            "volumes": names("vol-list", "default")}


@pytest.fixture(scope="module")
def box():
    proc = labgen("box", "build", "debian12", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True).stdout
    assert "labgen/debian12" in listed and "libvirt" in listed
    return "labgen/debian12"


@pytest.mark.parametrize("tunnel,marker", [("gre", "GREv0"), ("vxlan", "vni 0")])
def test_create_on_vms_verifies_and_destroy_leaves_nothing(tmp_path, box, tunnel, marker):
    name = f"ci-{tunnel}"
    assert _libvirt_names(f"labgen-{name}") == {"domains": [], "networks": [], "volumes": []}
    junit = tmp_path / "junit.xml"
    proc = labgen("create", tunnel, "--box", box, "--name", name, "--dir", str(tmp_path / "lab"),
                  "--destroy", "--json", "--junit", str(junit), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["passed"] and result["provider"] == "libvirt"
    tunnel_checks = [c for c in result["checks"] if c["stage"] == "tunnel"]
    assert len(tunnel_checks) == 2
    for c in tunnel_checks:
        # The capture ran inside the receiving VM, on its underlay NIC (kernel datapath).
        assert "ICMP echo request" in c["evidence"] and marker in c["evidence"], c["evidence"]
    assert len([c for c in result["checks"] if c["stage"] == "overlay"]) == 12
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    # Progress per node was shown.
    assert "node1: SSH ready" in proc.stderr and "node2: provisioning" in proc.stderr
    # destroy: no domain, network or volume of this lab is left.
    assert _libvirt_names(f"labgen-{name}") == {"domains": [], "networks": [], "volumes": []}
    assert not (tmp_path / "lab" / ".vagrant").exists()
