"""The lab model: the article's names and addresses (README.md, "Lab options": --underlay and
--overlay), tunnel mesh, MTU arithmetic, spanning tree settings, every option's limits, lab.json
round trip and the libvirt driver choice."""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from labgen.errors import InputError
from labgen.lab.build import check_timeout
from labgen.lab.labfile import lab_json, load_lab
from labgen.lab.model import Lab, Options
from labgen.lifecycle import build_lab
from labgen.providers import REGISTERED
from labgen.system.hostfacts import kvm_usable


def lab(tunnel: str = "gre", **kw) -> Lab:
    kw.setdefault("provider", "netns")      # no host probe, no VM defaults
    return build_lab(Options(tunnel=tunnel, **kw))


# README.md, Lab options: A1 .1, B1 .2; node k >= 2: A{k} .10(k-1), B{k} .10(k-1)+1.
OVERLAY_HOST_PART = {1: (1, 2), 2: (10, 11), 3: (20, 21), 4: (30, 31), 5: (40, 41),
                     6: (50, 51), 7: (60, 61), 8: (70, 71)}


@pytest.mark.parametrize("n", range(2, 9))
def test_addresses_and_names_follow_the_design(n):
    lb = lab(nodes=n)
    assert [node.name for node in lb.nodes] == [f"node{k}" for k in range(1, n + 1)]
    for node in lb.nodes:
        k = node.index
        assert node.underlay_ip == f"10.10.10.{k}"
        a, b = node.namespaces
        assert (a.name, a.address, a.interface, a.bridge) == (
            f"A{k}", f"192.168.10.{OVERLAY_HOST_PART[k][0]}", f"a{k}.2", "br2")
        assert (b.name, b.address, b.interface, b.bridge) == (
            f"B{k}", f"192.168.10.{OVERLAY_HOST_PART[k][1]}", f"b{k}.2", "br3")
        # Namespace veths: bridge end .1 on the bridge, end .2 inside the namespace.
        ns_veths = [(v.a, v.bridge_a, v.b, v.namespace) for v in node.veths if v.namespace]
        assert ns_veths == [(f"a{k}.1", "br2", f"a{k}.2", f"A{k}"), (f"b{k}.1", "br3", f"b{k}.2", f"B{k}")]
        # The article's bridge loop, the same on every node.
        loop = [(v.a, v.bridge_a, v.b, v.bridge_b) for v in node.veths if not v.namespace]
        assert loop == [("b12.1", "br2", "b12.2", "br1"), ("b13.1", "br3", "b13.2", "br1"),
                        ("b23.1", "br3", "b23.2", "br2")]
    assert lb.underlay_hypervisor_ip == "10.10.10.254"
    assert lb.bridges == ("br1", "br2", "br3") and lb.tunnel_bridge == "br1"
    addresses = [ns.address for _, ns in lb.namespaces()]
    assert len(set(addresses)) == 2 * n


def test_underlay_hypervisor_takes_the_last_usable_address_and_never_a_node():
    lb = lab(nodes=2, underlay="172.16.5.0/29")
    assert lb.underlay_hypervisor_ip == "172.16.5.6"
    assert [n.underlay_ip for n in lb.nodes] == ["172.16.5.1", "172.16.5.2"]
    lb8 = lab(nodes=8, underlay="172.16.5.0/28")
    assert lb8.underlay_hypervisor_ip == "172.16.5.14"
    assert lb8.underlay_hypervisor_ip not in {n.underlay_ip for n in lb8.nodes}
    with pytest.raises(InputError, match="too small for 8 nodes"):
        lab(nodes=8, underlay="172.16.5.0/29")


def test_other_networks_keep_the_same_host_parts():
    lb = lab(nodes=3, underlay="172.20.0.0/16", overlay="10.99.0.0/24")
    assert [n.underlay_ip for n in lb.nodes] == ["172.20.0.1", "172.20.0.2", "172.20.0.3"]
    assert [ns.address for _, ns in lb.namespaces()] == [
        "10.99.0.1", "10.99.0.2", "10.99.0.10", "10.99.0.11", "10.99.0.20", "10.99.0.21"]
    assert lb.underlay_hypervisor_ip == "172.20.255.254"
    assert lb.overlay_prefixlen == 24 and lb.underlay_prefixlen == 16
    assert lb.underlay_netmask == "255.255.0.0"


@pytest.mark.parametrize("tunnel", ["gre", "vxlan"])
@pytest.mark.parametrize("n", range(2, 9))
def test_tunnels_are_a_full_mesh(tunnel, n):
    lb = lab(tunnel, nodes=n)
    ports = [(node.name, t) for node in lb.nodes for t in node.tunnels]
    assert len(ports) == n * (n - 1)
    by_ip = {node.underlay_ip: node.name for node in lb.nodes}
    for node in lb.nodes:
        assert len(node.tunnels) == n - 1
        assert {t.remote_node for t in node.tunnels} == {m.name for m in lb.nodes} - {node.name}
        for t in node.tunnels:
            assert t.type == tunnel
            assert t.port == f"{tunnel}-{t.remote_node}"
            assert by_ip[t.remote_ip] == t.remote_node
            # The remote end has the mirror port.
            assert f"{tunnel}-{node.name}" in {p.port for p in lb.node(t.remote_node).tunnels}
            assert len(t.port) <= 15   # an interface name


@pytest.mark.parametrize("tunnel,key,underlay_mtu,inner", [
    ("gre", None, 1500, 1462),      # 20 IPv4 + 4 GRE + 14 inner Ethernet
    ("gre", 77, 1500, 1458),        # + 4 GRE key
    ("gre", 0, 1500, 1458),         # key 0 is still a key on the wire
    ("vxlan", None, 1500, 1450),    # 20 IPv4 + 8 UDP + 8 VXLAN + 14 inner Ethernet
    ("vxlan", 5000, 1500, 1450),    # the VNI is always in the header
    ("gre", None, 9000, 8962),
    ("gre", 77, 9000, 8958),
    ("vxlan", None, 9000, 8950),
    ("vxlan", None, 1280, 1230),
])
def test_inner_mtu(tunnel, key, underlay_mtu, inner):
    lb = lab(tunnel, key=key, underlay_mtu=underlay_mtu)
    assert lb.inner_mtu == inner
    assert lb.max_ping_payload == inner - 28
    # The encapsulated packet of a full inner frame fits the underlay exactly.
    assert lb.overhead + inner == underlay_mtu


def test_stp_tuned_timers_are_consistent():
    cfg = lab(stp="stp", stp_timers="tuned").stp_config
    fd = int(cfg["other_config:stp-forward-delay"])
    max_age = int(cfg["other_config:stp-max-age"])
    assert (fd, max_age) == (4, 6)
    # 802.1D: 2*(forward_delay-1) >= max_age, else OVS quietly raises the forward delay.
    assert 2 * (fd - 1) >= max_age
    assert cfg["stp_enable"] == "true" and cfg["rstp_enable"] == "false"


def test_stp_standard_timers_are_written_out_at_802_1d_defaults():
    # Written, not left out: a lab provisioned again from tuned timers must not keep them.
    assert lab(stp="stp", stp_timers="standard").stp_config == {
        "rstp_enable": "false", "stp_enable": "true",
        "other_config:stp-forward-delay": "15", "other_config:stp-max-age": "20"}


def test_rstp():
    lb = lab(stp="rstp")
    # tuned: a port may send 10 BPDUs a tick (OVS's default 6 held one back a tick)
    # and classic STP off: OVS runs RSTP when both are on, so a lab switched from one to the
    # other by provisioning it again must switch the other off
    assert lb.stp_config == {"stp_enable": "false", "rstp_enable": "true",
                             "other_config:rstp-transmit-hold-count": "10"}
    assert lab(stp="rstp", stp_timers="standard").stp_config == {
        "stp_enable": "false", "rstp_enable": "true", "other_config:rstp-transmit-hold-count": "6"}


@pytest.mark.parametrize("stp, key", [("stp", "other_config:stp-priority"),
                                      ("rstp", "other_config:rstp-priority")])
def test_root_is_pinned_to_node1_br1(stp, key):
    lb = lab(stp=stp, nodes=3)
    prio = {(n.name, br): int(lb.bridge_config(n.name, br).get(key, 32768))
            for n in lb.nodes for br in lb.bridges}
    # node1's br1 wins the lab; each other node's br1 wins that node's own bridges (the shape
    # of its tree does not change when its tunnel joins); all in RSTP's 4096 steps.
    assert min(prio, key=prio.__getitem__) == ("node1", "br1")
    assert list(prio.values()).count(prio[("node1", "br1")]) == 1
    for n in lb.nodes[1:]:
        assert prio[(n.name, "br1")] < min(prio[(n.name, "br2")], prio[(n.name, "br3")])
    assert all(p % 4096 == 0 for p in prio.values())
    assert all(lb.stp_config.items() <= lb.bridge_config(n.name, br).items()
               for n in lb.nodes for br in lb.bridges)


def test_underlay_macs_are_distinct_and_stable():
    lb = lab(nodes=8, name="maclab")
    macs = [lb.underlay_mac(n.name) for n in lb.nodes]
    assert len(set(macs)) == 8 and all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert macs == [lab(nodes=8, name="maclab").underlay_mac(n.name) for n in lb.nodes]
    assert lab(name="other").underlay_mac("node1") != macs[0]


def test_ns_ports_are_edge_ports_under_rstp_only():
    assert lab(stp="rstp").ns_port_config == {"other_config:rstp-port-admin-edge": "true"}
    assert lab(stp="stp").ns_port_config == {}


def test_settle_timeouts_follow_the_stp_mode():
    tuned = lab(stp="stp", stp_timers="tuned").settle_timeout
    standard = lab(stp="stp", stp_timers="standard").settle_timeout
    rstp = lab(stp="rstp").settle_timeout
    assert rstp < tuned < standard
    # Standard 802.1D needs 2 x 15 s forward delay plus up to 20 s max age to converge.
    assert standard > 2 * 15 + 20


@pytest.mark.parametrize("opts", [
    Options(tunnel="gre", provider="netns"),
    Options(tunnel="vxlan", nodes=3, key=5000, stp="rstp", provider="netns"),
    Options(tunnel="gre", nodes=8, key=4294967295, stp_timers="standard", underlay="172.16.0.0/16",
            overlay="10.1.0.0/24", underlay_mtu=9000, provider="netns", name="big-one"),
    Options(tunnel="gre", box="generic/debian12", memory=2048, cpus=2, libvirt_driver="qemu"),
], ids=["gre-netns", "vxlan-rstp", "gre-8-nodes", "gre-libvirt"])
def test_lab_json_round_trip(opts):
    lb = build_lab(opts)
    assert Lab.from_dict(lb.to_dict(), REGISTERED) == lb
    # Through the real file format too (tuples become lists, "kind" is added).
    data = json.loads(lab_json(lb))
    assert data["kind"] == "labgen-lab"
    back = Lab.from_dict(data, REGISTERED)
    assert back == lb
    assert back.nodes[-1].tunnels[0].remote_ip == lb.nodes[-1].tunnels[0].remote_ip
    assert isinstance(back.box.providers, tuple) and isinstance(back.nodes[0].namespaces, tuple)


def test_round_trip_notices_a_change():
    lb = lab()
    changed = lb.to_dict() | {"inner_mtu": 1000}
    assert Lab.from_dict(changed, REGISTERED) != lb


@pytest.mark.parametrize("requested,kvm,expected", [
    ("auto", True, "kvm"),
    ("auto", False, "qemu"),
    ("qemu", True, "qemu"),
    ("kvm", False, "kvm"),     # asked for explicitly: the user's call
])
def test_libvirt_driver_resolution(requested, kvm, expected):
    lb = build_lab(Options(tunnel="gre", libvirt_driver=requested), kvm_usable=kvm)
    assert lb.settings is not None and lb.settings.driver == expected


def test_netns_labs_have_no_libvirt_settings():
    assert build_lab(Options(tunnel="gre", provider="netns"), kvm_usable=True).settings is None


def test_lab_json_from_before_the_libvirt_record_still_loads():
    lb = build_lab(Options(tunnel="gre", memory=2048, libvirt_driver="qemu"))
    old = lb.to_dict()
    old |= {"memory": 2048, "cpus": 1, "libvirt_driver": "qemu", "libvirt_network": "labgen-gre",
            "domain_prefix": "labgen-gre-"}
    del old["libvirt"]
    # (from before the lab's own management network too: it stays on vagrant-libvirt's)
    assert Lab.from_dict(old, REGISTERED) == replace(lb, settings=replace(lb.settings, management=""))


def test_a_vm_lab_has_its_own_management_subnet_from_its_name_and_keeps_it_in_lab_json():
    gre, other = (build_lab(Options(tunnel="gre", name=n), kvm_usable=False) for n in ("gre", "gre2"))
    assert gre.settings.management == "198.19.66.128/27" and gre.management_network == "labgen-gre.mgmt"
    assert other.settings.management != gre.settings.management
    assert ip_network(gre.settings.management).subnet_of(ip_network("198.18.0.0/15"))
    assert Lab.from_dict(gre.to_dict(), REGISTERED) == gre
    before = gre.to_dict()
    del before["libvirt"]["management"]     # a lab.json written before it
    assert Lab.from_dict(before, REGISTERED).settings.management == ""


def test_lab_json_with_the_old_underlay_host_ip_key_still_loads(tmp_path):
    """Earlier labgen versions wrote the hypervisor's underlay address as underlay_host_ip."""
    lb = build_lab(Options(tunnel="gre", libvirt_driver="qemu"))
    data = json.loads(lab_json(lb))
    data = {("underlay_host_ip" if k == "underlay_hypervisor_ip" else k): v for k, v in data.items()}
    assert "underlay_hypervisor_ip" not in data and data["underlay_host_ip"] == "10.10.10.254"
    (tmp_path / "lab.json").write_text(json.dumps(data, indent=2) + "\n")
    back = load_lab(tmp_path, REGISTERED)
    assert back == lb and back.underlay_hypervisor_ip == "10.10.10.254"


def test_names_derive_from_the_lab_name():
    lb = lab("vxlan")
    assert lb.name == "vxlan"
    named = build_lab(Options(tunnel="gre", name="my-lab-2"), kvm_usable=False)
    assert (named.libvirt_network, named.domain_prefix) == ("labgen-my-lab-2", "labgen-my-lab-2-")


def facts(lb: Lab) -> dict:
    """What a limit shows in a built lab."""
    return {"nodes": [n.name for n in lb.nodes], "underlay": [n.underlay_ip for n in lb.nodes],
            "hypervisor": lb.underlay_hypervisor_ip, "overlay": [ns.address for _, ns in lb.namespaces()],
            "key": lb.key, "mtu": (lb.underlay_mtu, lb.inner_mtu), "name": lb.name,
            "network": lb.libvirt_network, "vm": (lb.settings.memory, lb.settings.cpus) if lb.settings else None}


# Each limit: options at it, what the lab built from them holds, the same options one step
# past it, and the refusal's words. On the libvirt provider (the only one with --memory and
# --cpus), built without probing this host. Through the CLI (one line, exit 2): test_bad_input.py.
BOUNDARIES = [
    pytest.param({"nodes": 2}, {"nodes": ["node1", "node2"]}, {"nodes": 1}, "--nodes 1 is out of range",
                 id="nodes-2"),
    pytest.param({"nodes": 8}, {"nodes": [f"node{k}" for k in range(1, 9)], "hypervisor": "10.10.10.254"},
                 {"nodes": 9}, "--nodes 9 is out of range", id="nodes-8"),
    pytest.param({"key": 0}, {"key": 0, "mtu": (1500, 1458)}, {"key": -1}, "GRE key -1 is out of range",
                 id="gre-key-0"),
    pytest.param({"key": (1 << 32) - 1}, {"key": 4294967295}, {"key": 1 << 32}, "GRE key 4294967296 is out",
                 id="gre-key-max"),
    pytest.param({"underlay_mtu": 1280}, {"mtu": (1280, 1242)}, {"underlay_mtu": 1279},
                 "--underlay-mtu 1279 is out of range", id="underlay-mtu-1280"),
    pytest.param({"underlay_mtu": 9000}, {"mtu": (9000, 8962)}, {"underlay_mtu": 9001},
                 "--underlay-mtu 9001 is out of range", id="underlay-mtu-9000"),
    pytest.param({"memory": 512}, {"vm": (512, 1)}, {"memory": 511}, "--memory 511 MiB is too small",
                 id="memory-512"),
    pytest.param({"memory": 1 << 20}, {"vm": (1 << 20, 1)}, {"memory": (1 << 20) + 1},
                 "--memory 1048577 MiB is out of range", id="memory-1-tib"),
    pytest.param({"cpus": 1}, {"vm": (1024, 1)}, {"cpus": 0}, "--cpus 0 is out of range", id="cpus-1"),
    pytest.param({"cpus": 64}, {"vm": (1024, 64)}, {"cpus": 65}, "--cpus 65 is out of range", id="cpus-64"),
    pytest.param({"name": "a"}, {"name": "a", "network": "labgen-a"}, {"name": ""}, "lab name '' is not usable",
                 id="name-1-char"),
    pytest.param({"name": "a" * 20}, {"name": "a" * 20, "network": "labgen-" + "a" * 20}, {"name": "a" * 21},
                 "is not usable", id="name-20-chars"),
    pytest.param({"underlay": "10.10.10.0/29"}, {"underlay": ["10.10.10.1", "10.10.10.2"], "hypervisor": "10.10.10.6"},
                 {"underlay": "10.10.10.0/30"}, "underlay 10.10.10.0/30 is too small for 2 nodes",
                 id="underlay-29-for-2-nodes"),
    pytest.param({"overlay": "192.168.10.0/28"},
                 {"overlay": ["192.168.10.1", "192.168.10.2", "192.168.10.10", "192.168.10.11"]},
                 {"overlay": "192.168.10.0/29"}, "overlay 192.168.10.0/29 is too small for 2 nodes",
                 id="overlay-28-for-2-nodes"),
    pytest.param({"nodes": 8, "overlay": "192.168.10.0/25"},
                 {"overlay": [f"192.168.10.{h}" for k in range(1, 9) for h in OVERLAY_HOST_PART[k]]},
                 {"nodes": 8, "overlay": "192.168.10.0/26"}, "overlay 192.168.10.0/26 is too small for 8 nodes",
                 id="overlay-25-for-8-nodes"),
]


@pytest.mark.parametrize("at,holds,past,refusal", BOUNDARIES)
def test_boundaries_are_accepted_and_one_step_past_is_refused(at, holds, past, refusal):
    def vm_lab(**kw) -> Lab:
        return build_lab(Options(tunnel="gre", provider="libvirt", libvirt_driver="qemu", **kw), kvm_usable=False)
    got = facts(vm_lab(**at))
    assert {k: got[k] for k in holds} == holds
    with pytest.raises(InputError, match=re.escape(refusal)):
        vm_lab(**past)


@pytest.mark.parametrize("seconds", [0.1, 30, 3600])
def test_timeouts_in_range(seconds):
    check_timeout(seconds)
    check_timeout(None)     # not given: by STP mode


@pytest.mark.parametrize("seconds", [0, -1, 3600.5, float("nan"), float("inf")])
def test_timeouts_out_of_range(seconds):
    with pytest.raises(InputError, match=f"^--timeout {seconds:g} is out of range: give more than 0 and at most 3600"):
        check_timeout(seconds)


@pytest.mark.parametrize("field,value,words", [
    ("memory", 1024, "--memory sets a VM's memory"),
    ("cpus", 2, "--cpus sets a VM's vCPUs"),
    ("libvirt_driver", "qemu", "--libvirt-driver picks how libvirt runs the VMs (kvm or qemu)"),
])
def test_vm_options_given_to_netns_are_refused_whatever_their_value(field, value, words):
    opts = Options(tunnel="gre", provider="netns", **{field: value}, given=frozenset({field}))
    with pytest.raises(InputError, match=re.escape(f"{words}; the netns provider runs no VMs: drop it "
                                                   f"or use --provider libvirt")):
        build_lab(opts)
    # Not given (the value is the default or was set in code): the netns lab has no VM settings.
    assert build_lab(Options(tunnel="gre", provider="netns", **{field: value})).settings is None
    # The libvirt provider takes it.
    vm = build_lab(Options(tunnel="gre", **{"libvirt_driver": "qemu", field: value}, given=frozenset({field})))
    assert vm.settings is not None


def test_key_limits_depend_on_the_tunnel():
    assert lab("vxlan", key=(1 << 24) - 1).key == 16777215
    assert lab("gre", key=(1 << 32) - 1).key == 4294967295
    with pytest.raises(InputError, match="VXLAN VNI 16777216"):
        lab("vxlan", key=1 << 24)
    # A GRE key may be larger than any VNI.
    assert lab("gre", key=1 << 24).key == 1 << 24


def test_overlay_big_enough_for_eight_nodes():
    lb = lab(nodes=8, overlay="192.168.10.0/25")
    last = ipaddress.ip_address(lb.nodes[-1].namespaces[1].address)
    assert last == ipaddress.ip_address("192.168.10.71")
    assert last in ipaddress.ip_network(lb.overlay)


# ---- hostfacts.kvm_usable: /dev/kvm AND vmx/svm in the CPU flags ---------------------------
CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: Some CPU
flags\t\t: fpu vme de pse tsc msr pae {virt} sse sse2 ht syscall nx lm
bugs\t\t: spectre_v1 {bugs}

"""


def fake_host(tmp_path: Path, virt: str = "", bugs: str = "", dev: bool = True) -> tuple[Path, Path]:
    kvm = tmp_path / "kvm"
    if dev:
        kvm.write_text("")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(vendor="GenuineIntel", virt=virt, bugs=bugs))
    return kvm, cpuinfo


@pytest.mark.parametrize("virt,dev,expected", [
    ("vmx", True, True),
    ("svm", True, True),
    ("", True, False),            # /dev/kvm without hardware virtualisation (e.g. a PVM host)
    ("vmx", False, False),        # flags but no /dev/kvm
    ("vmxfoo", True, False),      # only whole flag names count
])
def test_kvm_usable(tmp_path, virt, dev, expected):
    kvm, cpuinfo = fake_host(tmp_path, virt=virt, dev=dev)
    assert kvm_usable(dev=kvm, cpuinfo=cpuinfo) is expected


def test_kvm_usable_reads_only_the_flags_line(tmp_path):
    kvm, cpuinfo = fake_host(tmp_path, virt="", bugs="vmx svm")
    assert kvm_usable(dev=kvm, cpuinfo=cpuinfo) is False


def test_kvm_usable_without_cpuinfo(tmp_path):
    kvm, _ = fake_host(tmp_path, virt="vmx")
    assert kvm_usable(dev=kvm, cpuinfo=tmp_path / "missing") is False
