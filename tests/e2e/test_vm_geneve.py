"""End-to-end on real VMs, Geneve: the same stages as GRE and VXLAN, the capture proof seeing
Geneve-encapsulated echo requests with the lab's VNI, the inner MTU from Geneve's overhead
proven by the MTU stage; firewalld on both nodes first (the box's default), its rule taken
away (the overlay fails, firewalld named) and put back by labgen up, then iptables with an
INPUT policy of DROP on node2 after labgen up. Then destroyed: nothing left.
Runs after the GRE lab of test_vm_e2e.py is gone (two emulated VMs at a time)."""
from __future__ import annotations

import json

import pytest
from support import bounds
from support.cli import labgen
from support.vm import (
    EMPTY,
    fails_at_overlay_naming,
    firewalld_then_iptables,
    forget_tunnel_flows,
    libvirt_names,
    on_node,
    root_node,
    sweep,
)

from labgen import tunnels
from labgen.stages import NAMES

# (per test, fixture set-up included: a lab boot or a fresh root is inside)
pytestmark = [pytest.mark.vm, pytest.mark.timeout(bounds.TEST_BOOT)]

GENEVE = tunnels.get("geneve")


def test_geneve_lab_verifies_through_firewalld_then_iptables(tmp_path_factory, box):
    name, lab = "ci-geneve", tmp_path_factory.mktemp("vm") / "lab"
    sweep(name)
    try:
        proc = labgen("create", "geneve", "--box", box, "--name", name, "--vni", "5000",
                      "--dir", str(lab), "--json", timeout=bounds.VM_CREATE)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        result = json.loads(proc.stdout)
        assert {s["name"]: s["status"] for s in result["stages"]} == {n: "passed" for n in NAMES}
        tunnel = [c for c in result["checks"] if c["stage"] == "tunnel"]
        assert len(tunnel) == 2
        for c in tunnel:
            assert c["name"].startswith("Geneve (UDP 6081) carrying"), c["name"]
            assert "6081: Geneve" in c["evidence"] and "vni 0x1388" in c["evidence"], c["evidence"]
        mtu = {c["name"] for c in result["checks"] if c["stage"] == "mtu"}
        assert "underlay carries 1500 B (inner MTU + tunnel overhead)" in mtu
        assert any(n.endswith(f"DF ping, {1500 - GENEVE.overhead(True) - 28} B payload crosses") for n in mtu)

        # A UDP tunnel's packets from the peer are never replies to this node's own (other
        # source port), so firewalld's default zone rejects them without the rule. Taken off
        # the node holding the spanning-tree root: it needs no BPDUs from the peer, so only
        # data stops and the overlay stage is what fails.
        node = root_node(lab)
        rule = GENEVE.firewalld_rule("10.10.10.0/24")
        assert on_node(lab, node, f"firewall-cmd --remove-rich-rule='{rule}'").returncode == 0
        forget_tunnel_flows(lab, node, GENEVE)
        fails_at_overlay_naming(labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY), node, "firewalld", GENEVE)
        # (the file holds the probe's command too: the verdict is the output line of its own)
        assert "firewalld blocks" in (lab / "diagnostics" / f"{node}.txt").read_text().splitlines()
        assert labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN).returncode == 0      # puts the rule back

        firewalld_then_iptables(lab, GENEVE)
    finally:
        if (lab / "lab.json").exists():
            destroyed = labgen("destroy", str(lab), timeout=bounds.VM_DESTROY)
            assert destroyed.returncode == 0, destroyed.stderr
        assert libvirt_names(f"labgen-{name}") == EMPTY
