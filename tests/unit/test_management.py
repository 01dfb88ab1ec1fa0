"""A VM lab's own management network (labgen/providers/libvirt/management.py): its subnet
follows the lab name, its dnsmasq offers an address without a ping check first, and the
Vagrantfile names it. (Defining, starting and removing it on a real libvirt: the e2e tests.)"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from ipaddress import IPv4Address, IPv4Network

from support.golden import render_case

from labgen.lab.model import Options, management_network
from labgen.lifecycle import build_lab
from labgen.providers.libvirt import management
from labgen.providers.libvirt.virsh import NETWORK

DNSMASQ = "{http://libvirt.org/schemas/network/dnsmasq/1.0}"


def test_the_subnet_is_a_27_of_the_test_range_that_follows_the_lab_name():
    names = ["gre", "vxlan", "geneve", "ci-gre", "a", "lab-1", "lab-2"]
    nets = [management.subnet(n) for n in names]
    assert all(n.prefixlen == 27 and n.subnet_of(IPv4Network("198.18.0.0/15")) for n in nets)
    assert len(set(nets)) == len(names)                     # these names: no two alike
    assert management.subnet("gre") == management.subnet("gre")
    assert management.subnet("gre") == IPv4Network("198.19.66.128/27")


def test_the_network_offers_addresses_without_dnsmasqs_ping_check():
    net = IPv4Network("198.19.66.128/27")
    root = ET.fromstring(management.xml("labgen-gre.mgmt", net))
    assert root.findtext("name") == "labgen-gre.mgmt"
    assert root.find("forward").get("mode") == "nat"
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("198.19.66.129", "255.255.255.224")
    rng = ip.find("dhcp/range")
    assert (rng.get("start"), rng.get("end")) == ("198.19.66.130", "198.19.66.158")
    assert all(IPv4Address(rng.get(k)) in net for k in ("start", "end"))
    options = [o.get("value") for o in root.iter(f"{DNSMASQ}option")]
    assert options == ["no-ping"]
    assert root.find("bridge").get("name") is None      # libvirt picks a free one


def test_its_name_is_never_another_labs_underlay_network_and_lists_under_its_lab():
    # lab "a-mgmt" has the underlay network labgen-a-mgmt; lab "a" the management labgen-a.mgmt
    assert management_network("a") == "labgen-a.mgmt" != "labgen-a-mgmt"
    assert NETWORK.match("labgen-a.mgmt").group(1) == "a"
    assert NETWORK.match("labgen-a-mgmt").group(1) == "a-mgmt"
    assert NETWORK.match("labgen-a.mgmtx") is None


def test_the_vagrantfile_puts_the_nodes_on_it_and_tells_vagrant_to_keep_it(tmp_path):
    lab = build_lab(Options(tunnel="gre"), kvm_usable=False)
    assert lab.settings.management == "198.19.66.128/27"
    vagrantfile = (render_case("gre", tmp_path) / "Vagrantfile").read_text()
    assert "lv.management_network_name = 'labgen-gre.mgmt'" in vagrantfile
    assert "lv.management_network_address = '198.19.66.128/27'" in vagrantfile
    assert "lv.management_network_keep = true" in vagrantfile
