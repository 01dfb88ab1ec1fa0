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


def test_up_again_on_running_vms_changes_nothing_then_destroy(tmp_path, box):
    """A second `labgen up` on a running lab (the netlab lesson) provisions again, changes
    nothing and the lab still verifies; `destroy` then removes everything."""
    name, lab = "ci-again", tmp_path / "lab"
    proc = labgen("create", "gre", "--box", box, "--name", name, "--dir", str(lab), "--stp", "rstp",
                  timeout=1200)
    try:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

        def state() -> str:
            # (lifetimes cut: the DHCP lease on the management NIC counts down)
            cmd = "{ sudo ovs-vsctl show; sudo ip -all netns exec ip -o addr; ip -o addr; } | sed 's/valid_lft.*//'"
            return "".join(subprocess.run(["vagrant", "ssh", n, "-c", cmd], cwd=lab, capture_output=True,
                                          text=True).stdout for n in ("node1", "node2"))
        before = state()
        again = labgen("up", str(lab), timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "node1: provisioned" in again.stderr and "creating" not in again.stderr
        assert state() == before
        status = labgen("status", str(lab), "--json")
        assert status.returncode == 0 and {s["stp"] for s in json.loads(status.stdout)} == {"converged"}
        assert labgen("verify", str(lab)).returncode == 0
    finally:
        destroyed = labgen("destroy", str(lab), timeout=600)
    assert destroyed.returncode == 0, destroyed.stderr
    assert _libvirt_names(f"labgen-{name}") == {"domains": [], "networks": [], "volumes": []}


@pytest.mark.parametrize("net_name,ip,name,fragment", [
    ("labgen-clash", "10.99.0.1", "clash", "libvirt network labgen-clash already exists and is not this lab's"),
    ("someone-else", "10.10.10.254", "free", "libvirt network someone-else already uses the underlay"),
])
def test_libvirt_names_and_subnets_taken_by_others_are_refused(tmp_path, box, net_name, ip, name, fragment):
    xml = tmp_path / "net.xml"
    xml.write_text(f"<network><name>{net_name}</name><ip address='{ip}' netmask='255.255.255.0'/></network>")
    virsh = ["virsh", "-c", "qemu:///system"]
    subprocess.run([*virsh, "net-define", str(xml)], check=True, capture_output=True)
    try:
        d = tmp_path / "lab"
        proc = labgen("create", "gre", "--box", box, "--name", name, "--dir", str(d))
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and fragment in lines[0], proc.stderr
        assert not d.exists()
        assert _libvirt_names(f"labgen-{name}-")["domains"] == []
    finally:
        subprocess.run([*virsh, "net-undefine", net_name], capture_output=True)
