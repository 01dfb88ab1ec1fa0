"""Every judge on recorded real outputs (tests/data/outputs, taken from running netns labs
with OVS 3.1): it passes on the evidence its check names, and fails on anything else:
timeouts, a missing namespace or binary, empty output, the wrong value."""
from __future__ import annotations

import pytest
from support import OUTPUTS

from labgen import judges
from labgen.runner import TIMEOUT_EXIT, Result


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
        judges.ovs_version(bad),
        judges.interface_with_address(bad, "a1.2", "192.168.10.1/24"),
        judges.underlay_nic(bad, "10.10.10.1/24"),
        judges.mtu_inventory(bad.stdout, {"": ["br1"], "A1": ["a1.2"]}, 1462),
        judges.underlay_mtu(bad, [], 1500),
        judges.tunnel_ports(bad.stdout, {"gre-node2": ("gre", "10.10.10.2", None)}),
        judges.encapsulated_echo(bad, "GREv0"),
    ]
    for passed, evidence in verdicts:
        assert passed is False and evidence.strip()
        assert "\n" not in evidence


def test_ping_reply():
    passed, ev = judges.ping_reply(rec("ping-reply.txt"))
    assert passed and ev.startswith("reply in ") and ev.endswith(" ms")
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


def test_ovs_version():
    assert judges.ovs_version(rec("ovs-version.txt")) == (True, "ovs-vswitchd 3.1.0")
    assert not judges.ovs_version(res("ovs-vsctl: unix:/run/openvswitch/db.sock: database connection failed", 1))[0]


def test_namespace_interface_up_with_address():
    ok = rec("ns-iface.txt")
    assert judges.interface_with_address(ok, "a1.2", "192.168.10.1/24") == (True, "a1.2 up with 192.168.10.1/24")
    passed, ev = judges.interface_with_address(ok, "a1.2", "192.168.10.9/24")
    assert not passed and ev == "expected 192.168.10.9/24 on a1.2, found 192.168.10.1/24"
    down = res(ok.stdout.replace("BROADCAST,MULTICAST,UP,LOWER_UP", "BROADCAST,MULTICAST"))
    passed, ev = judges.interface_with_address(down, "a1.2", "192.168.10.1/24")
    assert not passed and ev.startswith("expected a1.2 up, found")


def test_underlay_nic():
    ok = rec("underlay-nic.txt")
    assert judges.underlay_nic(ok, "10.10.10.1/24") == (True, "eth1 up; 10.10.10.1/24 on br-phy")
    assert not judges.underlay_nic(ok, "10.10.10.2/24")[0]
    down = res(ok.stdout.replace("PROMISC,UP,LOWER_UP", "PROMISC"))
    assert not judges.underlay_nic(down, "10.10.10.1/24")[0]


def test_mtu_inventory_names_each_interface_over_the_inner_mtu():
    text = (OUTPUTS / "mtu-inventory-node1.txt").read_text()
    wanted = {"": ["br1", "br2", "br3", "a1.1", "b1.1", "b12.1", "b12.2", "b13.1", "b13.2", "b23.1", "b23.2"],
              "A1": ["a1.2"], "B1": ["b1.2"]}
    assert judges.mtu_inventory(text, wanted, 1462) == (True, "13 overlay interfaces, none above 1462")
    passed, ev = judges.mtu_inventory(text, wanted, 1450)
    assert not passed and "a1.2 in A1 mtu 1462" in ev and "b23.2 mtu 1462" in ev
    broken = text.replace("a1.2@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1462",
                          "a1.2@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500")
    assert broken != text
    passed, ev = judges.mtu_inventory(broken, wanted, 1462)
    assert not passed and ev == "above the inner MTU 1462: a1.2 in A1 mtu 1500"
    passed, ev = judges.mtu_inventory(text, {**wanted, "A1": ["a1.9"]}, 1462)
    assert not passed and ev == "missing: a1.9 in A1"


def test_underlay_mtu():
    ok = rec("underlay-nic.txt")
    assert judges.underlay_mtu(ok, ["eth1"], 1500)[0]
    passed, ev = judges.underlay_mtu(ok, ["eth1"], 1504)
    assert not passed and "eth1 mtu 1500" in ev


def test_tunnel_ports_compare_type_remote_and_key():
    gre = (OUTPUTS / "interfaces-gre.json").read_text()
    assert judges.tunnel_ports(gre, {"gre-node2": ("gre", "10.10.10.2", None)}) == (True, "gre-node2 gre to 10.10.10.2")
    passed, ev = judges.tunnel_ports(gre, {"gre-node2": ("gre", "10.10.10.3", None)})
    assert not passed and ev == ("gre-node2: expected gre to 10.10.10.3 key none, found gre to 10.10.10.2 "
                                 "key none, ofport 3")
    assert not judges.tunnel_ports(gre, {"gre-node2": ("vxlan", "10.10.10.2", None)})[0]
    assert not judges.tunnel_ports(gre, {"gre-node3": ("gre", "10.10.10.3", None)})[0]
    vx = (OUTPUTS / "interfaces-vxlan-vni42.json").read_text()
    assert judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", "42")})[0]
    passed, ev = judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", "43")})
    assert not passed and "key 43" in ev and "key 42" in ev
    assert not judges.tunnel_ports(vx, {"vxlan-node2": ("vxlan", "10.10.10.2", None)})[0]


def test_encapsulated_echo():
    passed, ev = judges.encapsulated_echo(rec("capture-gre.txt"), "GREv0")
    assert passed and ev.startswith("2 captured: IP 10.10.10.1 > 10.10.10.2: GREv0")
    assert not judges.encapsulated_echo(rec("capture-gre.txt"), "key=0x4d")[0]
    passed, ev = judges.encapsulated_echo(rec("capture-vxlan-vni42.txt"), "vni 42")
    assert passed and "ICMP echo request" in ev
    assert not judges.encapsulated_echo(rec("capture-vxlan-vni42.txt"), "vni 7")[0]
    passed, ev = judges.encapsulated_echo(rec("capture-nothing.txt", TIMEOUT_EXIT), "GREv0")
    assert not passed and ev.startswith("no encapsulated echo request captured")


def test_one_line():
    assert judges.one_line("a\n\n b \nc") == "a; b; c"
    assert len(judges.one_line("x" * 500)) == judges.EVIDENCE_WIDTH
