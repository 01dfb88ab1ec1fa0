"""Every verification check, shown failing on a live netns lab when exactly the thing it
names is broken: the check fails, on the right node, and no earlier stage does. Then the
lab is repaired (by `labgen up`, or by undoing what `up` does not own) and verifies again.

Run with -s to see how long verify took to report each breakage."""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

import pytest
from support.cli import labgen
from support.netns import netns_lab, node_cmd

from labgen import providers
from labgen.lab import boxes
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.verify.stages import NAMES

LAB = "brk"


def host(cmd: str) -> None:
    subprocess.run(["sh", "-ec", cmd], check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Breakage:
    id: str
    stage: str                 # the stage that must catch it
    check: str                 # part of the failing check's name
    node: str                  # where the failing check ran ("all" for the tree check)
    node_cmds: tuple[tuple[str, str], ...] = ()     # (node, shell) run inside the node
    host_cmd: str = ""         # run on the host (switch namespace, cross-node links)
    undo: tuple[tuple[str, str], ...] = ()          # what `labgen up` does not repair
    undo_host: str = ""
    evidence: str = ""         # part of the failing check's evidence
    passes_on: str = ""        # a node on which the same check must still pass
    stops_there: bool = False  # the later stages are skipped, not run (no wait on spanning tree)


NAMES_OF = build_lab(Options(tunnel="gre", provider="netns", name=LAB))   # the model's host names
SW = NAMES_OF.underlay_switch
# ovs-vswitchd alone, killed by the PID its own pidfile names inside the node (no other process
# is touched); then waited for until it has exited (a zombie holds no socket), bounded.
KILL_VSWITCHD = ('p=$(cat /run/openvswitch/ovs-vswitchd.pid) && [ "$(cat /proc/$p/comm)" = ovs-vswitchd ] && '
                 'kill -KILL "$p" && timeout 10 sh -c \'while [ -e /proc/$0 ] && '
                 '! grep -q "^State:.Z" /proc/$0/status; do sleep 0.05; done\' "$p"')
# ...and started again as the node's box starts it: `labgen up` starts Open vSwitch only when
# ovsdb-server does not answer, so it does not restart ovs-vswitchd alone.
START_VSWITCHD = next(ln for ln in boxes.get("host", providers=providers.NAMES).start.splitlines() if ln.startswith("ovs-vswitchd "))
BREAKAGES = [
    Breakage("ovs-killed", "nodes", "Open vSwitch answers", "node2",
             (("node2", "kill -TERM $(cat /run/openvswitch/ovs-vswitchd.pid /run/openvswitch/ovsdb-server.pid)"),),
             evidence="database connection failed"),
    # The switch daemon alone: its version stays in the database, which the check once read.
    Breakage("vswitchd-killed", "nodes", "Open vSwitch answers", "node2", (("node2", KILL_VSWITCHD),),
             undo=(("node2", START_VSWITCHD),), evidence="ovs-vswitchd does not answer", passes_on="node1"),
    Breakage("underlay-nic-down", "config", "underlay NIC up", "node2",
             (("node2", "ip link set dev eth1 down"),), evidence="expected eth1 up"),
    # A port the model puts on a bridge, gone: no wait heals it, so the config stage names it
    # at once and spanning tree (which would poll until its timeout) is not run.
    Breakage("loop-port-deleted", "config", "every port of the model on br1, br2, br3", "node2",
             (("node2", "ovs-vsctl del-port br2 b12.1"),), evidence="port b12.1 missing from br2",
             passes_on="node1", stops_there=True),
    # Two loop veths re-made crosswise: every end exists and is on its bridge, the cabling is wrong.
    # (`labgen up` keeps an existing veth, and OVS keeps a port bound to a device that was
    # deleted: the undo removes both, so that up makes them again.)
    Breakage("veth-pairs-crossed", "config", "veth pairs", "node2",
             (("node2", "ip link del b13.1 && ip link del b23.1 && "
                        "ip link add b13.1 mtu 1462 type veth peer name b23.2 mtu 1462 && "
                        "ip link add b23.1 mtu 1462 type veth peer name b13.2 mtu 1462 && "
                        "for l in b13.1 b13.2 b23.1 b23.2; do ip link set dev $l up; done"),),
             undo=(("node2", "ip link del b13.1; ip link del b23.1; ovs-vsctl del-port br3 b13.1 "
                             "-- del-port br1 b13.2 -- del-port br3 b23.1 -- del-port br2 b23.2"),),
             evidence="expected b13.1 <-> b13.2, found b13.1 paired with b23.2", passes_on="node1", stops_there=True),
    Breakage("tunnel-port-deleted", "config", "gre ports on br1", "node2",
             (("node2", "ovs-vsctl del-port br1 gre-node1"),), evidence="found no such port"),
    Breakage("tunnel-wrong-remote", "config", "gre ports on br1", "node1",
             (("node1", "ovs-vsctl set interface gre-node2 options:remote_ip=10.10.10.9"),),
             evidence="found gre to 10.10.10.9"),
    # A tunnel of another kind left beside the model's (a lab provisioned before as VXLAN):
    # named by the config stage; `labgen up` takes it away (the repair below).
    Breakage("tunnel-of-another-kind", "config", "gre ports on br1", "node2",
             (("node2", "ovs-vsctl add-port br1 vxlan-node1 -- set interface vxlan-node1 type=vxlan "
                        "options:remote_ip=10.10.10.1"),),
             evidence="vxlan-node1: a vxlan port to 10.10.10.1 that the model does not have", passes_on="node1"),
    Breakage("gre-key-mismatch", "config", "gre ports on br1", "node2",
             (("node2", "ovs-vsctl set interface gre-node1 options:key=99"),), evidence="key 99"),
    Breakage("namespace-address-flushed", "config", "A2: a2.2 up with 192.168.10.10/24", "node2",
             (("node2", "ip netns exec A2 ip addr flush dev a2.2"),), evidence="found no address"),
    Breakage("namespace-interface-down", "config", "B1: b1.2 up", "node1",
             (("node1", "ip netns exec B1 ip link set dev b1.2 down"),), evidence="expected b1.2 up"),
    # The underlay "cable" stays up (carrier) but is unplugged from the switch's bridge.
    Breakage("underlay-cable-unplugged", "underlay", "ping node1 underlay", "node2",
             host_cmd=f"ip -n {SW} link set dev node2 nomaster",
             undo_host=f"ip -n {SW} link set dev node2 master ul",
             evidence="no reply"),
    Breakage("rstp-off-on-br2", "stp", "RSTP on br1, br2, br3", "node1",
             (("node1", "ovs-vsctl set bridge br2 rstp_enable=false"),), evidence="br2: rstp_enable=false"),
    # Both loop links of node2's br3 down (the ports stay on their bridges: a port deleted is
    # the config stage's, loop-port-deleted).
    Breakage("bridge-cut-off", "stp", "one spanning tree", "all",
             (("node2", "ip link set dev b13.1 down && ip link set dev b23.1 down"),),
             evidence="cut off from the other bridges: node2 br3"),
    # B2's traffic dropped by an OpenFlow rule: spanning tree (BPDUs are not IP) is unaffected.
    Breakage("overlay-flow-drop", "overlay", "B2 -> A1", "node2",
             (("node2", "ovs-ofctl add-flow br3 priority=100,ip,nw_src=192.168.10.11,actions=drop"),),
             undo=(("node2", "ovs-ofctl --strict del-flows br3 priority=100,ip,nw_src=192.168.10.11"),),
             evidence="no reply"),
    # A1 and A2 reach each other over a direct veth: pings pass, nothing crosses the tunnel.
    Breakage("traffic-bypasses-tunnel", "tunnel", "carrying A1 -> A2 seen on node2", "node2",
             (("node1", "ip link set byp1 netns A1 && ip netns exec A1 sh -ec 'ip link set byp1 mtu 1462 up; "
                        "ip route add 192.168.10.10/32 dev byp1'"),
              ("node2", "ip link set byp2 netns A2 && ip netns exec A2 sh -ec 'ip link set byp2 mtu 1462 up; "
                        "ip route add 192.168.10.1/32 dev byp2'")),
             host_cmd=f"ip link add byp1 netns {NAMES_OF.node_netns('node1')} mtu 1462 type veth peer "
                      f"name byp2 netns {NAMES_OF.node_netns('node2')} mtu 1462",
             undo=(("node1", "ip netns exec A1 ip link del byp1"),),
             evidence="no encapsulated echo request captured"),
    Breakage("namespace-veth-mtu-1500", "mtu", "no overlay interface above the inner MTU", "node2",
             (("node2", "ip link set a2.1 mtu 1500 && ip netns exec A2 ip link set a2.2 mtu 1500"),),
             evidence="a2.2 in A2 mtu 1500"),
    Breakage("namespace-mtu-black-hole", "mtu", "A2 -> A1: DF ping, 1435 B payload refused", "node2",
             (("node2", "ip link set a2.1 mtu 1500 && ip netns exec A2 ip link set a2.2 mtu 1500"),),
             evidence="black hole"),
    Breakage("underlay-mtu-too-small", "mtu", "underlay carries 1500 B", "node2",
             (("node2", "ip link set eth1 mtu 1400"),), evidence="eth1 mtu 1400"),
    Breakage("underlay-mtu-drops-full-frames", "mtu", "A1 -> A2: DF ping, 1434 B payload crosses", "node1",
             (("node2", "ip link set eth1 mtu 1400"),), evidence="no reply"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    for d, _ in netns_lab(tmp_path_factory, "gre", LAB, "--stp", "rstp"):
        yield d


def _verify(d):
    started = time.monotonic()
    proc = labgen("verify", str(d), "--json", "--timeout", "20")
    return proc, time.monotonic() - started


@pytest.mark.netns
@pytest.mark.parametrize("b", BREAKAGES, ids=[b.id for b in BREAKAGES])
def test_breakage_is_caught_by_the_check_that_names_it(lab, b):
    if b.host_cmd:
        host(b.host_cmd)
    for node, cmd in b.node_cmds:
        node_cmd(LAB, node, cmd)
    try:
        proc, seconds = _verify(lab)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        result = json.loads(proc.stdout)
        failing = [c for c in result["checks"] if c["status"] in ("failed", "error")]
        hit = [c for c in failing if c["stage"] == b.stage and b.check in c["name"] and c["node"] == b.node]
        assert hit, f"{b.id}: expected [{b.stage}] '{b.check}' on {b.node} to fail; failing: " + \
            json.dumps([(c["stage"], c["node"], c["name"], c["evidence"]) for c in failing], indent=1)
        assert any(b.evidence in c["evidence"] for c in hit), [c["evidence"] for c in hit]
        # Caught by its own stage: no earlier stage failed.
        first = min(NAMES.index(c["stage"]) for c in failing)
        assert NAMES[first] == b.stage, f"{b.id}: an earlier stage failed first: {NAMES[first]}"
        assert all(c["evidence"] and "\n" not in c["evidence"] for c in failing)
        if b.passes_on:
            same = [c for c in result["checks"] if c["stage"] == b.stage and b.check in c["name"]
                    and c["node"] == b.passes_on]
            assert same and all(c["status"] == "passed" for c in same), same
        if b.stops_there:
            # (the event, not a time: spanning tree's stage would poll until its timeout)
            later = {s["name"]: s["status"] for s in result["stages"]
                     if NAMES.index(s["name"]) > NAMES.index(b.stage)}
            assert later and set(later.values()) == {"skipped"}, later
        print(f"\nBREAKAGE {b.id}: [{hit[0]['stage']}] {hit[0]['name']} on {hit[0]['node']} "
              f"in {seconds:.1f} s: {hit[0]['evidence']}")
    finally:
        for node, cmd in b.undo:
            node_cmd(LAB, node, cmd, check=False)
        if b.undo_host:
            host(b.undo_host)
        repair = labgen("up", str(lab))
        assert repair.returncode == 0, repair.stderr
    proc, _ = _verify(lab)
    assert proc.returncode == 0, f"not repaired after {b.id}: " + proc.stdout[-3000:]


def test_every_stage_has_a_breakage():
    """The table itself (needs no lab): every stage is shown failing by some breakage."""
    assert {b.stage for b in BREAKAGES} == set(NAMES)
    assert len({b.id for b in BREAKAGES}) >= 12


@pytest.mark.netns
def test_a_slow_capture_start_still_verifies(lab, tmp_path):
    """tcpdump on node2 takes 3 s to start listening (a busy or emulated node): the sender
    keeps pinging until the capture has its packets, so the tunnel proof still holds."""
    wrapper = tmp_path / "tcpdump"
    real = subprocess.run(["sh", "-c", "command -v tcpdump"], capture_output=True, text=True).stdout.strip()
    copy = tmp_path / "tcpdump.real"
    host(f"cp {real} {copy}")
    # The delay stands in for a slow machine: it is the fault injected, not a wait in labgen.
    wrapper.write_text(f"#!/bin/sh\nsleep 3\nexec {copy} \"$@\"\n")
    wrapper.chmod(0o755)
    # Bind-mounted inside node2's own mount namespace only: the host's tcpdump is untouched.
    node_cmd(LAB, "node2", f"mount --bind {wrapper} {real}")
    try:
        proc, seconds = _verify(lab)
        assert proc.returncode == 0, proc.stdout[-3000:]
        tunnel = [c for c in json.loads(proc.stdout)["checks"] if c["stage"] == "tunnel" and c["node"] == "node2"]
        assert tunnel and tunnel[0]["status"] == "passed" and tunnel[0]["seconds"] >= 3
        print(f"\nSLOW CAPTURE: verified in {seconds:.1f} s, node2's tunnel check took {tunnel[0]['seconds']:.1f} s")
    finally:
        node_cmd(LAB, "node2", f"umount {real}", check=False)
