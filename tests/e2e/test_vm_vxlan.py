"""End-to-end on real VMs, VXLAN, the way a user's pipeline runs it: through the CI recipe's
own script (examples/ci/labgen-ci.sh, what the GitHub and GitLab recipes call), so the recipe
cannot rot. create -> verified with firewalld on both nodes (the box's default) -> kept
(--keep) -> node2 switched to an iptables DROP policy, labgen up, verified again -> destroyed,
nothing left in libvirt.
A module of its own so that it boots only after the shared GRE lab of test_vm_e2e.py is gone
(two emulated VMs at a time keep two cores busy)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from support import bounds
from support.ci import SCRIPT
from support.cli import labgen, run_group
from support.vm import EMPTY, firewalld_then_iptables, libvirt_names, sweep

from labgen import tunnels

# (per test, fixture set-up included: a lab boot or a fresh root is inside)
pytestmark = [pytest.mark.vm, pytest.mark.timeout(bounds.TEST_BOOT)]


def test_ci_recipe_script_verifies_vxlan_and_leaves_nothing(tmp_path, box):
    name = "ci-vxlan"
    sweep(name)
    out = tmp_path / "reports"
    lab = out / ".labs" / "lab-vxlan"
    try:
        _recipe_then_iptables(box, name, out, lab)
    finally:
        if (lab / "lab.json").exists():
            destroyed = labgen("destroy", str(lab), timeout=bounds.VM_DESTROY)
            assert destroyed.returncode == 0, destroyed.stderr
    assert libvirt_names(f"labgen-{name}") == EMPTY


def _recipe_then_iptables(box, name, out, lab):
    proc = run_group(["bash", str(SCRIPT), "--box", box, "--no-setup", "--tunnels", "vxlan",
                      "--name-prefix", "ci", "--out", str(out), "--keep", "--", "--vni", "4242"],
                     bounds.CI_RECIPE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "labgen-ci: vxlan: VERIFIED" in proc.stdout, proc.stdout[-2000:]
    suite = ET.parse(out / "labgen-vxlan.xml").getroot().find("testsuite")
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    tunnel = [c for n, c in cases.items() if "VXLAN (UDP 4789) carrying" in n]
    assert len(tunnel) == 2
    for c in tunnel:
        seen = c.find("system-out").text
        assert "ICMP echo request" in seen and "vni 4242" in seen, seen
    assert sum("VNI" in n for n in cases) == 2
    assert f"labgen-ci: kept: {lab}" in proc.stdout

    firewalld_then_iptables(lab, tunnels.get("vxlan"))
