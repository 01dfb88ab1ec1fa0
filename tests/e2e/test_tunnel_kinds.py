"""Each tunnel kind on a live netns lab: VERIFIED with the same stages, and its overhead
measured rather than assumed. The MTU stage shows a don't-fragment frame of exactly the inner
MTU crosses (so the overhead is not underestimated); here every overlay interface of both
nodes is raised one byte and a frame one byte larger must not cross (so it is not
overestimated either): the inner MTU is exactly the underlay MTU minus the real overhead."""
from __future__ import annotations

import json
import re

import pytest
from support.cli import labgen
from support.netns import node_cmd

from labgen.lab import tunnels
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.verify.checks import overlay_interfaces

pytestmark = pytest.mark.netns

CASES = [(kind, None) for kind in tunnels.NAMES] + [("gre", 77)]


@pytest.mark.parametrize("kind,key", CASES, ids=[f"{k}-key{v}" if v else k for k, v in CASES])
def test_kind_verifies_and_its_overhead_is_exact(tmp_path, kind, key):
    name = f"ovh{kind[:3]}"
    extra = ["--key", str(key)] if key is not None else []
    lab = build_lab(Options(tunnel=kind, provider="netns", key=key, stp="rstp"))
    d = tmp_path / "lab"
    try:
        proc = labgen("create", kind, "--provider", "netns", "--stp", "rstp", "--name", name,
                      "--dir", str(d), "--json", *extra)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        result = json.loads(proc.stdout)
        assert {c["stage"] for c in result["checks"]} == {
            "nodes", "config", "underlay", "stp", "overlay", "tunnel", "mtu"}
        marker = tunnels.get(kind).marker(key)
        for c in (c for c in result["checks"] if c["stage"] == "tunnel"):
            assert tunnels.get(kind).title in c["name"] and marker in c["evidence"], c

        a1, a2 = lab.nodes[0].namespaces[0], lab.nodes[1].namespaces[0]
        size = lab.max_ping_payload

        def df_ping(payload: int):
            return node_cmd(name, "node1", f"ip netns exec {a1.name} ping -n -c 2 -i 0.2 -W 1 "
                                           f"-M do -s {payload} {a2.address}", check=False)

        for node in lab.nodes:
            for ns, ifaces in overlay_interfaces(lab, node).items():
                for iface in ifaces:
                    if iface in lab.bridges:
                        cmd = f"ovs-vsctl set interface {iface} mtu_request={lab.inner_mtu + 1}"
                    else:
                        cmd = f"ip link set dev {iface} mtu {lab.inner_mtu + 1}"
                    node_cmd(name, node.name, f"ip netns exec {ns} {cmd}" if ns else cmd)
        # The path itself still works at the old size...
        assert df_ping(size).returncode == 0
        # ...and one byte more now leaves the sender (no local refusal) but cannot cross:
        # encapsulated, it is one byte above the underlay MTU.
        over = df_ping(size + 1)
        assert over.returncode != 0, over.stdout
        assert not re.search(r"message too long", over.stdout + over.stderr, re.I), over.stdout
        assert re.search(r"2 packets transmitted, 0 received", over.stdout), over.stdout
    finally:
        labgen("destroy", str(d))


def test_a_running_lab_provisioned_again_as_each_other_kind_keeps_only_that_kind(tmp_path):
    """What the VM suite does to share one booted pair between tunnel kinds: render the running
    lab's directory as another kind (--force), `labgen up`, verify. The node script takes the
    previous kind's ports away; the config stage would name any left behind."""
    d, name = tmp_path / "lab", "rekind"
    common = ["--provider", "netns", "--stp", "rstp", "--name", name, "--dir", str(d)]
    try:
        assert labgen("create", "gre", *common).returncode == 0
        for kind, vni in (("vxlan", "4242"), ("geneve", "5000"), ("gre", "7")):
            rendered = labgen("render", kind, *common, "--key", vni, "--force")
            assert rendered.returncode == 0, rendered.stderr
            up = labgen("up", str(d))
            assert up.returncode == 0, up.stderr
            proc = labgen("verify", str(d), "--json")
            assert proc.returncode == 0, proc.stdout[-3000:]
            marker = tunnels.get(kind).marker(int(vni))
            assert all(marker in c["evidence"] for c in json.loads(proc.stdout)["checks"] if c["stage"] == "tunnel")
            for node, peer in (("node1", "node2"), ("node2", "node1")):
                ports = node_cmd(name, node, "ovs-vsctl list-ports br1").stdout.split()
                assert [p for p in ports if "-node" in p] == [tunnels.get(kind).port_name(peer)], ports
    finally:
        labgen("destroy", str(d))
