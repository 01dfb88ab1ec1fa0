"""End-to-end on real VMs, VXLAN: create -> verified -> destroyed in one command, as a CI
pipeline runs it. A module of its own so that it boots only after the shared GRE lab of
test_vm_e2e.py is gone (two emulated VMs at a time keep two cores busy)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from netns_helpers import labgen
from vm_helpers import EMPTY, libvirt_names

pytestmark = pytest.mark.vm


def test_vxlan_create_verifies_and_destroy_leaves_nothing(tmp_path, box):
    name = "ci-vxlan"
    assert libvirt_names(f"labgen-{name}") == EMPTY
    junit = tmp_path / "junit.xml"
    proc = labgen("create", "vxlan", "--box", box, "--name", name, "--dir", str(tmp_path / "lab"),
                  "--vni", "4242", "--destroy", "--json", "--junit", str(junit), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["passed"] and result["provider"] == "libvirt"
    for c in (c for c in result["checks"] if c["stage"] == "tunnel"):
        assert "ICMP echo request" in c["evidence"] and "vni 4242" in c["evidence"], c["evidence"]
    config = [c for c in result["checks"] if c["stage"] == "config" and "VNI" in c["name"]]
    assert len(config) == 2 and all("key 4242" in c["evidence"] for c in config)
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert libvirt_names(f"labgen-{name}") == EMPTY
    assert not (tmp_path / "lab" / ".vagrant").exists()
