"""Every judge on recorded real outputs (tests/data/outputs, taken from running netns labs
with OVS 3.1): it passes on the evidence its check names, and fails on anything else:
timeouts, a missing namespace or binary, empty output, the wrong value."""
from __future__ import annotations

import re

import pytest
from support import OUTPUTS

from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.nodes.runner import TIMEOUT_EXIT, Result
from labgen.verify import config_judges, judges
from labgen.verify.spantree import model_ports

# The lab the recordings come from: GRE, RSTP, two nodes, netns (userspace datapath).
LAB = build_lab(Options(tunnel="gre", provider="netns", stp="rstp"))


def rec(name: str, rc: int = 0) -> Result:
    return Result("recorded", rc, (OUTPUTS / name).read_text(), "")


def res(stdout: str, rc: int = 0, stderr: str = "") -> Result:
    return Result("cmd", rc, stdout, stderr)


# Failures every judge must turn into a failed check, never a pass.
NOT_RUN = [
    res("", 0),                                                     # empty output, exit 0
    res("", TIMEOUT_EXIT, "timed out after 10 s"),                  # runner timeout
    res("", 127, "sh: 1: ip: not found"),                           # missing binary
    res("Cannot open network namespace \"A2\": No such file or directory", 1),
]


@pytest.mark.parametrize("bad", NOT_RUN)
def test_no_judge_passes_without_evidence(bad):
    verdicts = [
        judges.ping_reply(bad),
        judges.refused_locally(bad, 1462),
        judges.ovs_daemons(bad),
        judges.interface_with_address(bad, "a1.2", "192.168.10.1/24"),
        judges.underlay_nic(bad, "10.10.10.1/24"),
        judges.mtu_inventory(bad, {"": ["br1"], "A1": ["a1.2"]}, 1462),
        judges.underlay_mtu(bad, 1500),
        judges.underlay_mtu(bad, 1500, ("br-phy",)),
        config_judges.tunnel_ports(bad, {"gre-node2": ("gre", "10.10.10.2", None)}),
        config_judges.bridge_ports(bad, {"br1": ["gre-node2"]}),
        config_judges.veth_pairs(bad, [("b12.1", "b12.2", None)]),
        judges.encapsulated_echo(bad, "GREv0"),
    ]
    for passed, evidence in verdicts:
        assert passed is False and evidence.strip()
        assert "\n" not in evidence


def test_ping_reply():
    passed, ev = judges.ping_reply(rec("ping-reply.txt"))
    assert passed and ev.startswith("reply in ") and ev.endswith(" ms")
    assert judges.reply_ms(ev) == float(ev.split()[2])     # the stage line's figure
    assert judges.reply_ms("no reply: 5 sent, 0 received, 100% loss") is None
    passed, ev = judges.ping_reply(rec("ping-no-reply.txt", 1))
    assert not passed and ev == "no reply: 5 sent, 0 received, 100% loss"
    passed, ev = judges.ping_reply(rec("ping-no-namespace.txt", 1))
    assert not passed and ev.startswith('Cannot open network namespace "A9"')
    # exit 0 with no statistics line is not a reply
    assert not judges.ping_reply(res("PING 192.168.10.10 (192.168.10.10) 56(84) bytes of data.\n"))[0]


def test_refused_locally_needs_the_kernels_reason_and_mtu():
    passed, ev = judges.refused_locally(rec("ping-refused-local.txt", 1), 1462)
    assert passed and ev == "refused by the kernel: message too long, mtu=1462"
    # The same refusal at another MTU: the interface is not at the inner MTU.
    assert not judges.refused_locally(rec("ping-refused-local.txt", 1), 1450)[0]
    # Debian 13's iputils 20240905: the refusal comes from sendmsg() and names no MTU.
    trixie = res("PING 192.168.10.10 (192.168.10.10) 1435(1463) bytes of data.\n"
                 "ping: sendmsg: Message too long\n\n--- 192.168.10.10 ping statistics ---\n"
                 "1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms\n", 1)
    assert judges.refused_locally(trixie, 1462) == (True, "refused by the kernel: sendmsg: Message too long")
    # A silent loss (the black hole) is not a refusal.
    passed, ev = judges.refused_locally(rec("ping-no-reply.txt", 1), 1462)
    assert not passed and "black hole" in ev
    passed, ev = judges.refused_locally(rec("ping-reply.txt"), 1462)
    assert not passed and "got through" in ev


def test_ovs_daemons_both_answer():
    passed, ev = judges.ovs_daemons(rec("ovs-daemons.txt"))
    # Each version names its true source: the database for ovsdb-server, the daemon itself
    # (ovs-appctl version, its control socket) for ovs-vswitchd.
    assert (passed, ev) == (True, "ovsdb-server answers (3.1.0 in its database), "
                                  "ovs-vswitchd 3.1.0 (from its control socket)")
    assert judges.vswitchd_version(ev) == "3.1.0"
    assert judges.vswitchd_version("ovsdb-server 3.1.0, ovs-vswitchd 3.1.0") is None


@pytest.mark.parametrize("name,evidence", [
    # ovs-vswitchd stopped (SIGTERM: it removed its pidfile) or killed (SIGKILL: the pidfile
    # stays, naming a process that is gone); the version is still in the database.
    ("ovs-daemons-vswitchd-stopped.txt", 'ovs-vswitchd does not answer: ovs-appctl: cannot read pidfile '
                                         '"/var/run/openvswitch/ovs-vswitchd.pid" (No such file or directory)'),
    ("ovs-daemons-vswitchd-killed.txt", 'ovs-vswitchd does not answer: ovs-appctl: cannot read pidfile '
                                        '"/var/run/openvswitch/ovs-vswitchd.pid" (No such process)'),
])
def test_ovs_daemons_names_a_dead_switch_daemon(name, evidence):
    passed, ev = judges.ovs_daemons(rec(name, 1))
    assert not passed and ev == evidence
    assert "ovsdb-server" not in ev


def test_ovs_daemons_names_each_daemon_that_does_not_answer():
    passed, ev = judges.ovs_daemons(rec("ovs-daemons-both-stopped.txt", 1))
    assert not passed
    assert ev.startswith("ovsdb-server does not answer: ovs-vsctl: unix:/var/run/openvswitch/db.sock: "
                         "database connection failed")
    assert "; ovs-vswitchd does not answer: ovs-appctl: cannot read pidfile" in ev


def test_ovs_daemons_item_missing_or_nonzero_exit():
    ok = rec("ovs-daemons.txt").stdout
    # An answer missing from the output (cut short) is not an answer, whatever the exit.
    only_db = ok.splitlines()[0] + "\n"
    assert judges.ovs_daemons(res(only_db)) == (False, "ovs-vswitchd: no answer in the output")
    # Both answered, but the check itself exited non-zero: not a pass.
    passed, ev = judges.ovs_daemons(res(ok, 1))
    assert not passed and "exited 1" in ev
    # The version alone, as the old check read it from the database, proves nothing of ovs-vswitchd.
    assert not judges.ovs_daemons(rec("ovs-version.txt"))[0]


def test_namespace_interface_up_with_address():
    ok = rec("ns-iface.txt")
    assert judges.interface_with_address(ok, "a1.2", "192.168.10.1/24") == (True, "a1.2 up with 192.168.10.1/24")
    passed, ev = judges.interface_with_address(ok, "a1.2", "192.168.10.9/24")
    assert not passed and ev == "expected 192.168.10.9/24 on a1.2, found 192.168.10.1/24"
    down = res(ok.stdout.replace("BROADCAST,MULTICAST,UP,LOWER_UP", "BROADCAST,MULTICAST"))
    passed, ev = judges.interface_with_address(down, "a1.2", "192.168.10.1/24")
    assert not passed and ev.startswith("expected a1.2 up, found")


def test_namespace_interface_nonzero_exit():
    ok = rec("ns-iface.txt")
    # `ip -o link show` answered, `ip -o -4 addr show` failed after printing: not a pass.
    passed, ev = judges.interface_with_address(res(ok.stdout + "RTNETLINK answers: Invalid argument\n", 2),
                                               "a1.2", "192.168.10.1/24")
    assert not passed and ev == "a1.2 up with 192.168.10.1/24, but the check failed: RTNETLINK answers: Invalid argument"
    passed, ev = judges.interface_with_address(res('Device "a1.2" does not exist.\n', 1), "a1.2", "192.168.10.1/24")
    assert not passed and ev == 'expected a1.2 with 192.168.10.1/24, found no a1.2: Device "a1.2" does not exist.'


def test_underlay_nic():
    ok = rec("underlay-nic.txt")
    assert judges.underlay_nic(ok, "10.10.10.1/24") == (True, "eth1 up; 10.10.10.1/24 on br-phy")
    assert not judges.underlay_nic(ok, "10.10.10.2/24")[0]
    down = res(ok.stdout.replace("PROMISC,UP,LOWER_UP", "PROMISC"))
    assert not judges.underlay_nic(down, "10.10.10.1/24")[0]


def test_underlay_nic_item_missing_or_nonzero_exit():
    ok = rec("underlay-nic.txt")
    # The NIC's line missing: OVS named no NIC (`ip link show dev ""`).
    no_nic = res("\n".join(ln for ln in ok.stdout.splitlines() if "eth1" not in ln) + "\n")
    passed, ev = judges.underlay_nic(no_nic, "10.10.10.1/24")
    assert not passed and ev.startswith("underlay NIC not found")
    # Every item there, but the address listing exited non-zero.
    passed, ev = judges.underlay_nic(res(ok.stdout + "Cannot send dump request: Connection refused\n", 1),
                                     "10.10.10.1/24")
    assert not passed and ev.endswith("but the check failed: Cannot send dump request: Connection refused")


INVENTORY = {"": ["br1", "br2", "br3", "a1.1", "b1.1", "b12.1", "b12.2", "b13.1", "b13.2", "b23.1", "b23.2"],
             "A1": ["a1.2"], "B1": ["b1.2"]}


def test_mtu_inventory_names_each_interface_over_the_inner_mtu():
    text = (OUTPUTS / "mtu-inventory-node1.txt").read_text()
    wanted = INVENTORY
    assert judges.mtu_inventory(res(text), wanted, 1462) == (True, "13 overlay interfaces, none above 1462")
    passed, ev = judges.mtu_inventory(res(text), wanted, 1450)
    assert not passed and "a1.2 in A1 mtu 1462" in ev and "b23.2 mtu 1462" in ev
    broken = text.replace("a1.2@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1462",
                          "a1.2@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500")
    assert broken != text
    passed, ev = judges.mtu_inventory(res(broken), wanted, 1462)
    assert not passed and ev == "above the inner MTU 1462: a1.2 in A1 mtu 1500"
    passed, ev = judges.mtu_inventory(res(text), {**wanted, "A1": ["a1.9"]}, 1462)
    assert not passed and ev == "missing: a1.9 in A1"


def test_mtu_inventory_nonzero_exit():
    text = (OUTPUTS / "mtu-inventory-node1.txt").read_text()
    # B1 could not be entered: the listing stops there (&&), its interface is missing.
    cut = text[:text.index("@@ns B1")] + 'Cannot open network namespace "B1": No such file or directory\n'
    passed, ev = judges.mtu_inventory(res(cut, 1), INVENTORY, 1462)
    assert not passed and ev == ('missing: b1.2 in B1; the listing failed: '
                                 'Cannot open network namespace "B1": No such file or directory')
    # Every interface listed, yet the command exited non-zero: not a pass.
    passed, ev = judges.mtu_inventory(res(text, 1), INVENTORY, 1462)
    assert not passed and ev == "the listing failed: exit 1, no output"


def test_underlay_mtu():
    ok = rec("underlay-nic.txt")
    assert judges.underlay_mtu(ok, 1500)[0]
    passed, ev = judges.underlay_mtu(ok, 1504)
    assert not passed and "eth1 mtu 1500" in ev


def test_underlay_mtu_userspace_layout_reads_the_nic_and_br_phy():
    ok = rec("underlay-mtu-netdev.txt")
    assert judges.underlay_mtu(ok, 1500, ("br-phy",)) == (True, "eth1 mtu 1500, br-phy mtu 1500 (needs 1500)")
    short = res(ok.stdout.replace("br-phy: <BROADCAST,MULTICAST,PROMISC,UP,LOWER_UP> mtu 1500",
                                  "br-phy: <BROADCAST,MULTICAST,PROMISC,UP,LOWER_UP> mtu 1400"))
    assert judges.underlay_mtu(short, 1500, ("br-phy",)) == \
        (False, "below 1500 (inner MTU + tunnel overhead): br-phy mtu 1400")


def test_underlay_mtu_item_missing_or_nonzero_exit():
    # Recorded with br-phy deleted: eth1 alone is listed, `ip link show dev br-phy` fails.
    gone = rec("underlay-mtu-no-br-phy.txt", 1)
    assert judges.underlay_mtu(gone, 1500, ("br-phy",)) == \
        (False, 'underlay interface not found: br-phy: Device "br-phy" does not exist.')
    # br-phy missing from an output that exited 0: still missing.
    passed, ev = judges.underlay_mtu(res(gone.stdout.splitlines()[0] + "\n"), 1500, ("br-phy",))
    assert not passed and ev == "underlay interface not found: br-phy"
    # No NIC at all (OVS named none).
    passed, ev = judges.underlay_mtu(res('Device "" does not exist.\n', 1), 1500)
    assert not passed and ev.startswith("underlay interface not found: the underlay NIC")
    # Both listed, but the command exited non-zero.
    passed, ev = judges.underlay_mtu(res(rec("underlay-mtu-netdev.txt").stdout, 1), 1500, ("br-phy",))
    assert not passed and ev == "the check failed: exit 1, no output"


def test_tunnel_ports_compare_type_remote_and_key():
    gre = rec("interfaces-gre.json")
    assert config_judges.tunnel_ports(gre, {"gre-node2": ("gre", "10.10.10.2", None)}) == (True, "gre-node2 gre to 10.10.10.2")
    passed, ev = config_judges.tunnel_ports(gre, {"gre-node2": ("gre", "10.10.10.3", None)})
    assert not passed and ev == ("gre-node2: expected gre to 10.10.10.3 key none, found gre to 10.10.10.2 "
                                 "key none, ofport 3")
    assert not config_judges.tunnel_ports(gre, {"gre-node2": ("vxlan", "10.10.10.2", None)})[0]
    assert not config_judges.tunnel_ports(gre, {"gre-node3": ("gre", "10.10.10.3", None)})[0]
    vx = rec("interfaces-vxlan-vni42.json")
    assert config_judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", "42")})[0]
    passed, ev = config_judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", "43")})
    assert not passed and "key 43" in ev and "key 42" in ev
    assert not config_judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", None)})[0]


def test_tunnel_ports_item_missing_or_nonzero_exit():
    gre = rec("interfaces-gre.json")
    passed, ev = config_judges.tunnel_ports(gre, {"gre-node2": ("gre", "10.10.10.2", None),
                                           "gre-node3": ("gre", "10.10.10.3", None)})
    assert not passed and ev == "gre-node3: expected gre to 10.10.10.3, found no such port"
    passed, ev = config_judges.tunnel_ports(res(gre.stdout, 1), {"gre-node2": ("gre", "10.10.10.2", None)})
    assert not passed and ev == "ovs-vsctl failed: exit 1, no output"


def ports(node: str) -> dict[str, list[str]]:
    return model_ports(LAB, LAB.node(node))


def test_bridge_ports_every_port_of_the_model_on_its_bridge():
    assert ports("node1") == {"br1": ["b12.2", "b13.2", "gre-node2"], "br2": ["a1.1", "b12.1", "b23.2"],
                              "br3": ["b1.1", "b13.1", "b23.1"]}
    assert config_judges.bridge_ports(rec("bridge-ports-node1.json"), ports("node1")) == \
        (True, "9 ports of the model on br1, br2, br3, each opened by OVS")


def test_bridge_ports_item_missing():
    # Recorded after `ovs-vsctl del-port br2 b12.1` on node2.
    deleted = rec("bridge-ports-b12.1-deleted-node2.json")
    assert config_judges.bridge_ports(deleted, ports("node2")) == (False, "port b12.1 missing from br2")
    # Then `ip link del b23.1` too: OVS keeps both ends as opened ports of their bridges (ofport,
    # no error) with their devices gone. Only b12.1 is named here; the veth check names b23.
    gone = rec("bridge-ports-b23-veth-deleted-node2.json")
    assert config_judges.bridge_ports(gone, ports("node2")) == (False, "port b12.1 missing from br2")
    ok = rec("bridge-ports-node1.json")
    # A port on the wrong bridge, a bridge that is not there.
    passed, ev = config_judges.bridge_ports(ok, {"br3": ["b12.1"]})
    assert not passed and ev == "port b12.1 missing from br3 (it is on br2)"
    passed, ev = config_judges.bridge_ports(ok, {**ports("node1"), "br4": ["x.1"]})
    assert not passed and ev == "bridge br4 missing (1 ports: x.1)"
    # A port OVS could not open (no such device when it was added): ofport -1 and its error.
    unopened = res(re.sub(r'"b13.1",\d+,\["set",\[\]\]',
                          '"b13.1",-1,"could not open network device b13.1 (No such device)"', ok.stdout))
    assert unopened.stdout != ok.stdout
    passed, ev = config_judges.bridge_ports(unopened, ports("node1"))
    assert not passed and ev == "br3 b13.1 not opened by OVS (ofport -1: could not open network device b13.1 (No such device))"


def test_bridge_ports_nonzero_exit():
    passed, ev = config_judges.bridge_ports(res("ovs-vsctl: unix:/var/run/openvswitch/db.sock: database connection "
                                         "failed (No such file or directory)\n", 1), ports("node1"))
    assert not passed and ev.startswith("ovs-vsctl failed: ovs-vsctl: unix:/var/run/openvswitch/db.sock: database")
    passed, ev = config_judges.bridge_ports(res(rec("bridge-ports-node1.json").stdout, 1), ports("node1"))
    assert not passed and ev == "ovs-vsctl failed: exit 1, no output"
    # Two of the three documents: cut short.
    cut = rec("bridge-ports-node1.json").stdout.strip().rsplit("\n", 1)[0]
    passed, ev = config_judges.bridge_ports(res(cut), ports("node1"))
    assert not passed and ev.startswith("no bridge list from OVS")


def pairs(node: str) -> list[tuple[str, str, str | None]]:
    return [(v.a, v.b, v.namespace) for v in LAB.node(node).veths]


def test_veth_pairs_each_end_paired_with_its_other_end():
    assert config_judges.veth_pairs(rec("veth-pairs-node1.txt"), pairs("node1")) == \
        (True, "5 veth pairs, each end paired with its own other end")


def test_veth_pairs_names_a_pair_made_with_the_wrong_partner():
    # Recorded on node2 with b13 and b23 re-made crosswise (b13.1 <-> b23.2, b23.1 <-> b13.2):
    # every end exists and is on its bridge, only the cabling is wrong.
    passed, ev = config_judges.veth_pairs(rec("veth-pairs-crossed-node2.txt"), pairs("node2"))
    assert not passed
    assert ev.startswith("expected b13.1 <-> b13.2, found b13.1 paired with b23.2, b13.2 with b23.1; "
                         "expected b23.1 <-> b23.2")
    # A namespace end whose peer is another interface.
    text = rec("veth-pairs-node1.txt").stdout.replace("3: a1.2@if4:", "3: a1.2@if6:")
    passed, ev = config_judges.veth_pairs(res(text), pairs("node1"))
    assert not passed and ev == "expected a1.1 <-> a1.2 in A1, found a1.1 (if4) paired with if3 in A1, a1.2 in A1 (if3) with if6"


def test_veth_pairs_item_missing_or_nonzero_exit():
    # Recorded on node2 after `ip link del b23.1` (both ends gone).
    passed, ev = config_judges.veth_pairs(rec("veth-pairs-b23-deleted-node2.txt"), pairs("node2"))
    assert not passed and ev == "missing: b23.1, b23.2"
    text = rec("veth-pairs-node1.txt").stdout
    cut = text[:text.index("@@ns B1")] + 'Cannot open network namespace "B1": No such file or directory\n'
    passed, ev = config_judges.veth_pairs(res(cut, 1), pairs("node1"))
    assert not passed and ev == ('missing: b1.2 in B1; the listing failed: '
                                 'Cannot open network namespace "B1": No such file or directory')
    passed, ev = config_judges.veth_pairs(res(text, 1), pairs("node1"))
    assert not passed and ev == "the listing failed: exit 1, no output"


def test_encapsulated_echo():
    passed, ev = judges.encapsulated_echo(rec("capture-gre.txt"), "GREv0")
    assert passed and ev.startswith("2 captured: IP 10.10.10.1 > 10.10.10.2: GREv0")
    assert not judges.encapsulated_echo(rec("capture-gre.txt"), "key=0x4d")[0]
    passed, ev = judges.encapsulated_echo(rec("capture-vxlan-vni42.txt"), "vni 42")
    assert passed and "ICMP echo request" in ev
    assert not judges.encapsulated_echo(rec("capture-vxlan-vni42.txt"), "vni 7")[0]
    # One of the two packets, then the capture's own timeout: not a pass (tcpdump -c 2 exits 0
    # only with both; capture_collect exits with tcpdump's code).
    text = rec("capture-gre.txt").stdout
    one = "\n".join(ln for ln in text.splitlines() if "seq 2" not in ln).replace("2 packets captured",
                                                                             "1 packet captured")
    passed, ev = judges.encapsulated_echo(res(one, TIMEOUT_EXIT), "GREv0")
    assert not passed and ev.startswith("1 of 2 encapsulated echo requests captured, then the capture's timeout ended it: ")
    passed, ev = judges.encapsulated_echo(res(text, 1), "GREv0")
    assert not passed and "then tcpdump exited 1" in ev
    passed, ev = judges.encapsulated_echo(rec("capture-nothing.txt", TIMEOUT_EXIT), "GREv0")
    assert not passed and ev.startswith("no encapsulated echo request captured")


def test_one_line():
    assert judges.one_line("a\n\n b \nc") == "a; b; c"
    assert len(judges.one_line("x" * 500)) == judges.EVIDENCE_WIDTH


# What a CI run met on a loaded machine: ovs-vsctl logged to stderr, which a batched check
# reads in the same output as the JSON (tests/data/outputs: recorded from live labs).
OVS_WARN = ("2026-12-05T07:31:36Z|00001|timeval|WARN|Unreasonably long 1383ms poll interval "
            "(80ms user, 36ms system)\n2026-12-05T07:31:37Z|00002|timeval|WARN|faults: 64 minor, 0 major\n")


def test_ovs_json_judges_skip_the_log_lines_ovs_vsctl_writes_under_load():
    bridges = rec("bridge-ports-node1.json")
    lines = bridges.stdout.splitlines(keepends=True)
    warned = res(OVS_WARN + lines[0] + OVS_WARN + "".join(lines[1:]))
    assert config_judges.bridge_ports(warned, ports("node1")) == config_judges.bridge_ports(bridges, ports("node1"))
    gre = rec("interfaces-gre.json")
    assert config_judges.tunnel_ports(res(OVS_WARN + gre.stdout), {"gre-node2": ("gre", "10.10.10.2", None)}) == \
        (True, "gre-node2 gre to 10.10.10.2")
    # A document missing is still a failure, not a pass on what is left.
    passed, ev = config_judges.bridge_ports(res(OVS_WARN + lines[0]), ports("node1"))
    assert not passed and ev.startswith("no bridge list from OVS"), ev


def test_tunnel_ports_name_a_tunnel_the_model_lacks():
    gre = rec("interfaces-gre.json")
    passed, ev = config_judges.tunnel_ports(gre, {}, tunnel_types=("gre", "vxlan", "geneve"))
    assert not passed and ev == "gre-node2: a gre port to 10.10.10.2 that the model does not have"
