"""Labs across hypervisors: --host parsing, the hypervisors and projects in the model, the UDP
underlay link, the MTU it costs, and the refusals (one line each)."""
from __future__ import annotations

import json

import pytest
from support.cli import labgen

from labgen.errors import InputError
from labgen.lab.model import Lab, Options
from labgen.lifecycle import build_lab
from labgen.nodes.ssh import parse_ssh_config
from labgen.providers import REGISTERED
from labgen.providers.libvirt import hypervisors
from labgen.providers.libvirt.hypervisors import LOCAL_URI, SPLIT_UNDERLAY_MTU

HV_B = "qemu+ssh://root@127.0.0.1/system?keyfile=/k/hv-b&no_verify=1"


def split(tunnel: str = "gre", **kw) -> Lab:
    kw = {"provider": "libvirt", "libvirt_driver": "qemu", "hosts": (f"node2={HV_B}",)} | kw
    return build_lab(Options(tunnel=tunnel, **kw))


def test_a_split_lab_has_one_project_per_hypervisor_and_a_udp_link_between_them():
    lab = split()
    assert lab.settings is not None and lab.settings.split
    local, remote = lab.settings.hosts
    assert (local.name, local.uri, local.nodes, local.project) == ("local", LOCAL_URI, ("node1",), "hosts/local")
    assert (remote.name, remote.uri, remote.nodes, remote.project) == ("127.0.0.1", HV_B, ("node2",), "hosts/127.0.0.1")
    a, b = lab.settings.links
    # Each end sends to the other's socket: one point-to-point link.
    assert (a.node, b.node) == ("node1", "node2")
    assert (a.remote_ip, a.remote_port) == (b.local_ip, b.local_port)
    assert (b.remote_ip, b.remote_port) == (a.local_ip, a.local_port)
    assert a.local_port != b.local_port and 20000 <= a.local_port < 32768
    # The addresses and names stay the article's.
    assert [n.underlay_ip for n in lab.nodes] == ["10.10.10.1", "10.10.10.2"]


def test_the_udp_link_costs_42_bytes_of_the_underlay_mtu_unless_the_user_says_otherwise():
    lab = split()
    assert SPLIT_UNDERLAY_MTU == 1500 - 20 - 8 - 14
    assert (lab.underlay_mtu, lab.inner_mtu) == (1458, 1458 - lab.overhead)
    assert split(underlay_mtu=9000).underlay_mtu == 9000       # a jumbo path between the hypervisors
    one_hypervisor = build_lab(Options(tunnel="gre", libvirt_driver="qemu"))
    assert one_hypervisor.underlay_mtu == 1500 and not one_hypervisor.settings.split


def test_ports_follow_the_lab_name():
    assert split(name="a").settings.links != split(name="b").settings.links
    assert split(name="a").settings.links == split(name="a").settings.links


def test_nodes_on_one_remote_hypervisor_keep_the_single_project_and_its_network():
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu",
                            hosts=(f"node1={HV_B}", f"node2={HV_B}")))
    (hv,) = lab.settings.hosts
    assert hv.remote and hv.project == "." and hv.nodes == ("node1", "node2")
    assert lab.settings.links == () and lab.underlay_mtu == 1500


def test_the_model_survives_lab_json():
    lab = split()
    assert Lab.from_dict(json.loads(json.dumps(lab.to_dict())), REGISTERED) == lab


@pytest.mark.parametrize("hosts,fragment", [
    (("node2",), "--host 'node2' is not NODE=URI: e.g. --host node2=qemu+ssh://root@hv-b/system"),
    (("node3=" + HV_B,), "the lab has no node3 (its nodes are node1 to node2)"),
    (("node2=" + HV_B, "node2=" + HV_B), "--host names node2 twice"),
    (("node2=qemu+tcp://hv-b/system",), "is not a system libvirt reached over SSH"),
    (("node2=qemu+ssh://hv-b/session",), "is not a system libvirt reached over SSH"),
    (("node2=qemu+ssh://root@hv-b;reboot/system",), "has characters a libvirt URI here may not hold"),
    (("node2=qemu+ssh://root@hv-b:99999/system",), "is not a libvirt URI"),
])
def test_bad_hosts_are_refused_in_one_line(hosts, fragment):
    with pytest.raises(InputError) as exc:
        build_lab(Options(tunnel="gre", libvirt_driver="qemu", hosts=hosts))
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_a_lab_across_hosts_has_two_nodes():
    with pytest.raises(InputError, match="a lab across hosts has 2 nodes on 2 hosts"):
        split(nodes=3)


def test_netns_refuses_hosts():
    with pytest.raises(InputError, match="the netns provider runs every node on this machine"):
        build_lab(Options(tunnel="gre", provider="netns", hosts=(f"node2={HV_B}",)))


def test_an_unresolvable_host_is_refused():
    with pytest.raises(InputError, match="cannot resolve libvirt host 'no-such-host.invalid'"):
        split(hosts=("node2=qemu+ssh://root@no-such-host.invalid/system",))


def test_proxy_command_carries_the_uris_ssh_options():
    lab = split()
    remote = lab.settings.hosts[1]
    assert remote.proxy_command == ("ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                    "-o LogLevel=ERROR -l root -i /k/hv-b 127.0.0.1 -W %h:%p")
    assert lab.settings.hosts[0].proxy_command is None         # the local hypervisor needs none
    # vagrant-libvirt 0.11 cannot load a Vagrantfile with its own proxy command and a port
    # in the URI: then vagrant-libvirt's own proxy, and the pre-check asks the same of ssh.
    with_port = hypervisors.Hypervisor("h", "qemu+ssh://u@127.0.0.1:2222/system?keyfile=/k", ("node2",), ".")
    assert with_port.proxy_command is None
    assert with_port.ssh_argv()[-7:] == ["-p", "2222", "-l", "u", "-i", "/k", "127.0.0.1"]


def test_ssh_config_proxy_command_reaches_the_runner_with_its_tokens_replaced():
    text = """Host node2
  HostName 192.168.121.7
  User vagrant
  Port 22
  IdentityFile /k/insecure
  ProxyCommand ssh -l root 127.0.0.1 -W %h:%p
"""
    target = parse_ssh_config(text)["node2"]
    assert target.proxy_command == "ssh -l root 127.0.0.1 -W 192.168.121.7:22"
    assert parse_ssh_config(text.replace("  ProxyCommand ssh -l root 127.0.0.1 -W %h:%p\n", ""))["node2"].proxy_command is None


def test_render_writes_one_vagrant_project_per_hypervisor(tmp_path):
    proc = labgen("render", "gre", "--box", "labgen/debian12", "--libvirt-driver", "qemu",
                  "--host", f"node2={HV_B}", "--dir", str(tmp_path / "lab"))
    assert proc.returncode == 0, proc.stderr
    local = (tmp_path / "lab/hosts/local/Vagrantfile").read_text()
    remote = (tmp_path / "lab/hosts/127.0.0.1/Vagrantfile").read_text()
    assert "config.vm.define 'node1'" in local and "node2" not in local.split("Vagrant.configure")[1]
    assert "config.vm.define 'node2'" in remote and f"lv.uri = '{HV_B}'" in remote
    assert 'libvirt__tunnel_type: "udp"' in local and "libvirt__network_name" not in local
    # A remote hypervisor has none of this machine's paths: no serial console file there.
    assert "lv.serial" in local and "lv.serial" not in remote
    assert not (tmp_path / "lab/Vagrantfile").exists()


def test_render_refuses_a_bad_host_in_one_line_and_writes_nothing(tmp_path):
    proc = labgen("render", "gre", "--host", "node2=qemu+tcp://hv-b/system", "--dir", str(tmp_path / "lab"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "qemu+ssh://" in proc.stderr
    assert not (tmp_path / "lab").exists()
