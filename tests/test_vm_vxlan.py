"""End-to-end on real VMs, VXLAN, the way a user's pipeline runs it: through the CI recipe's
own script (examples/ci/labgen-ci.sh, what the GitHub and GitLab recipes call), so the recipe
cannot rot. create -> verified -> destroyed, a JUnit report, nothing left in libvirt.
A module of its own so that it boots only after the shared GRE lab of test_vm_e2e.py is gone
(two emulated VMs at a time keep two cores busy)."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from vm_helpers import EMPTY, libvirt_names

pytestmark = pytest.mark.vm

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "ci" / "labgen-ci.sh"


def test_ci_recipe_script_verifies_vxlan_and_leaves_nothing(tmp_path, box):
    name = "ci-vxlan"
    assert libvirt_names(f"labgen-{name}") == EMPTY
    out = tmp_path / "reports"
    proc = subprocess.run(["bash", str(SCRIPT), "--box", box, "--no-setup", "--tunnels", "vxlan",
                           "--name-prefix", "ci", "--out", str(out), "--", "--vni", "4242"],
                          capture_output=True, text=True, timeout=1800)
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
    assert libvirt_names(f"labgen-{name}") == EMPTY
    assert not (out / ".labs").exists()
