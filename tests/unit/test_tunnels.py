"""The tunnel-kind table (labgen/lab/tunnels.py): the one place that knows what differs between
GRE, VXLAN and Geneve, and what reads it."""
from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest
from support import OUTPUTS, ROOT, readme_block

from labgen import providers
from labgen.errors import InputError
from labgen.lab import tunnels
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.nodes.runner import Result
from labgen.render.files import render_files
from labgen.verify import judges


def render_node_script(lb, node) -> str:
    return render_files(lb, providers.get(lb.provider))[f"provision/{node.name}.sh"]


def rec(name: str) -> Result:
    return Result("recorded", 0, (OUTPUTS / name).read_text(), "")


def lab(tunnel: str, **kw):
    return build_lab(Options(tunnel=tunnel, provider="libvirt", libvirt_driver="qemu", **kw))


def test_readme_table_is_generated_from_the_table():
    assert readme_block("tunnels") == tunnels.readme_table()


def test_unknown_kind_is_refused_in_one_place_naming_all_kinds():
    with pytest.raises(InputError) as exc:
        tunnels.get("ipip")
    assert str(exc.value) == "unknown tunnel type 'ipip': use gre, vxlan or geneve"
    with pytest.raises(InputError):
        build_lab(Options(tunnel="ipip"))


@pytest.mark.parametrize("kind,keyed,overhead", [
    ("gre", False, 38), ("gre", True, 42),      # IPv4 20 + GRE 4 (+ key 4) + Ethernet 14
    ("vxlan", False, 50), ("vxlan", True, 50),  # IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14
    ("geneve", False, 50), ("geneve", True, 50),  # IPv4 20 + UDP 8 + Geneve 8 + Ethernet 14
])
def test_overhead(kind, keyed, overhead):
    assert tunnels.get(kind).overhead(keyed) == overhead
    lb = lab(kind, key=7 if keyed else None)
    assert lb.inner_mtu == 1500 - overhead and lb.overhead == overhead


@pytest.mark.parametrize("kind,limit,label", [
    ("gre", (1 << 32) - 1, "GRE key"), ("vxlan", (1 << 24) - 1, "VXLAN VNI"),
    ("geneve", (1 << 24) - 1, "Geneve VNI"),
])
def test_key_range(kind, limit, label):
    assert lab(kind, key=limit).key == limit
    with pytest.raises(InputError) as exc:
        lab(kind, key=limit + 1)
    assert str(exc.value) == f"{label} {limit + 1} is out of range: use 0 to {limit}"


# kind -> (key, what tcpdump shows for it, a real capture of that kind with that key)
RECORDED = {
    "gre": (None, "GREv0", "capture-gre.txt"),
    "vxlan": (42, "vni 42", "capture-vxlan-vni42.txt"),
    "geneve": (42, "vni 0x2a", "capture-geneve-vni42.txt"),
}


def test_every_kind_has_a_recorded_capture():
    assert set(RECORDED) == set(tunnels.NAMES)


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_marker_matches_a_real_capture_of_that_kind_only(kind):
    key, marker, record = RECORDED[kind]
    k = tunnels.get(kind)
    assert k.marker(key) == marker
    assert judges.encapsulated_echo(rec(record), marker)[0]
    # Another key, a key whose digits only start the same, or another kind is not this tunnel.
    assert not judges.encapsulated_echo(rec(record), k.marker(4))[0]
    assert not judges.encapsulated_echo(rec(record), marker[:-1])[0]
    for other, (_, _, other_record) in RECORDED.items():
        if other != kind:
            assert not judges.encapsulated_echo(rec(other_record), marker)[0]


@pytest.mark.parametrize("kind,firewalld,iptables", [
    ("gre", 'protocol value="gre"', "-s 10.10.10.0/24 -p gre -j ACCEPT"),
    ("vxlan", 'port port="4789" protocol="udp"', "-s 10.10.10.0/24 -p udp --dport 4789 -j ACCEPT"),
    ("geneve", 'port port="6081" protocol="udp"', "-s 10.10.10.0/24 -p udp --dport 6081 -j ACCEPT"),
])
def test_node_script_admits_only_the_tunnel_from_the_underlay(kind, firewalld, iptables):
    lb = lab(kind)
    script = render_node_script(lb, lb.nodes[0])
    rule = f'rule family="ipv4" source address="10.10.10.0/24" {firewalld} accept'
    assert f"rule='{rule}'" in script
    assert f"iptables -I INPUT {iptables}" in script
    # Never switched off, never opened wider than the rule.
    accepts = [ln for ln in script.splitlines() if "-j ACCEPT" in ln]
    assert accepts and all("-s 10.10.10.0/24" in ln for ln in accepts)
    assert not re.search(r"systemctl (stop|disable|mask) firewalld|-P INPUT ACCEPT$|iptables -F",
                         script, re.M)
    assert "--add-port" not in script and "--add-protocol" not in script


@pytest.mark.parametrize("kind", ["gre", "vxlan", "geneve"])
def test_the_boot_rule_is_the_same_rule_as_firewalld_keeps_it_in_a_zone_file(kind):
    """What the box writes into the default zone (boot_rule, decoded) is the rich rule the node
    script would add, in the zone file's form, and one word of a kernel command line."""
    k = tunnels.KINDS[kind]
    word = k.boot_rule("10.10.10.0/24")
    assert re.fullmatch(r"[A-Za-z0-9+/=]+", word)
    rule = ET.fromstring(base64.b64decode(word))
    assert rule.tag == "rule" and rule.attrib == {"family": "ipv4"}
    assert [c.tag for c in rule] == ["source", ("port" if k.udp_port else "protocol"), "accept"]
    assert rule[0].attrib == {"address": "10.10.10.0/24"}
    what = " ".join(f'{a}="{v}"' for a, v in rule[1].attrib.items())
    assert k.firewalld_rule("10.10.10.0/24") == (
        f'rule family="ipv4" source address="10.10.10.0/24" {rule[1].tag} {what} accept')


def test_netns_node_script_has_no_firewall_step():
    # The userspace datapath reads the NIC before netfilter: a rule there would prove nothing.
    lb = build_lab(Options(tunnel="vxlan", provider="netns"))
    assert "firewall-cmd" not in render_node_script(lb, lb.nodes[0])


def test_capture_and_config_read_the_table():
    from labgen.verify.checks import encap_filter, plan_config
    for kind in tunnels.NAMES:
        lb = lab(kind, key=9)
        f = encap_filter(lb, "192.168.10.1", "192.168.10.10")
        assert f.startswith(tunnels.get(kind).arriving_filter + " and ")
        assert f"ip[{lb.overhead + 9}] = 1" in f
        names = [p.name for p in plan_config(lb)]
        assert f"{kind} ports on br1: type, remote, {tunnels.get(kind).key_name}; no other tunnel" in names


def test_kind_names_appear_only_in_the_tunnel_module_or_as_user_facing_text():
    """The issue's grep, kept true: a quoted kind name outside tunnels.py is an example in a
    message, never a branch."""
    pattern = re.compile(r"""["'](gre|vxlan|geneve)["']""")
    hits = []
    for path in [*(ROOT / "labgen").rglob("*.py"), *(ROOT / "templates").glob("*.j2")]:
        if path.name == "tunnels.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert hits == []
