"""A VM lab's own management network: the NIC Vagrant reaches each guest on (DHCP, NAT).

vagrant-libvirt's default is one network for every lab on a host (`vagrant-libvirt`,
192.168.121.0/24), whose dnsmasq pings each address before it offers it and waits 3 s for an
answer that never comes: 3-6 s of every guest's boot (docs/benchmarks.md). labgen defines a
network per lab instead, before `vagrant up`, with dnsmasq's `no-ping` (nothing else is on a
network the lab just made), and names it in the Vagrantfile; it is removed with the lab, by
labgen (Vagrant is told to keep it), and only once no domain uses it.

Its subnet is derived from the lab name, as the UDP ports of a lab across hosts are: a /27 of
198.18.0.0/15 (RFC 2544's range for network test labs), 4096 of them; create refuses one that
another network already uses on a hypervisor, naming it.
"""
from __future__ import annotations

import zlib
from ipaddress import IPv4Network
from pathlib import Path
from tempfile import TemporaryDirectory

from labgen.errors import ProviderError
from labgen.providers.libvirt.hypervisors import Hypervisor
from labgen.providers.libvirt.virsh import names, on_hypervisor, subnets_of, virsh

POOL = IPv4Network("198.18.0.0/15")
PREFIX = 27         # 29 addresses to lease: up to 8 nodes, each recreated a few times


def subnet(lab_name: str) -> IPv4Network:
    """The lab's management subnet, the same on every hypervisor (each has its own network)."""
    blocks = list(POOL.subnets(new_prefix=PREFIX))
    return blocks[zlib.crc32(lab_name.encode()) % len(blocks)]


def xml(name: str, net: IPv4Network) -> str:
    """NAT to the outside, as vagrant-libvirt's own (a box may install packages), a bridge
    name libvirt picks, DHCP over the whole subnet but the host's first address."""
    hosts = list(net.hosts())
    return f"""<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>{name}</name>
  <forward mode='nat'/>
  <bridge stp='off' delay='0'/>
  <ip address='{hosts[0]}' netmask='{net.netmask}'>
    <dhcp><range start='{hosts[1]}' end='{hosts[-1]}'/></dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>
</network>
"""


def ensure(hv: Hypervisor, name: str, net: IPv4Network) -> str | None:
    """Define and start the network on hv unless it runs already. Returns what was done, for
    progress, or None. A network that fails to start is removed again (nothing half-made)."""
    where = on_hypervisor(hv)
    existing = names(virsh(hv.uri, "net-list", "--all", "--name"))
    if name in existing:
        found = subnets_of(virsh(hv.uri, "net-dumpxml", name).stdout)
        if found != [net]:
            raise ProviderError(f"libvirt network {name}{where} has {', '.join(map(str, found)) or 'no subnet'}, "
                                f"not this lab's {net}: remove it (labgen destroy, or virsh "
                                f"net-destroy {name}; virsh net-undefine {name})")
        if name in names(virsh(hv.uri, "net-list", "--name")):
            return None
        done = "started"
    else:
        with TemporaryDirectory(prefix="labgen-net-") as tmp:
            path = Path(tmp) / "net.xml"
            path.write_text(xml(name, net))
            res = virsh(hv.uri, "net-define", str(path))
        if res.returncode != 0:
            raise ProviderError(f"cannot define libvirt network {name}{where}: {_last(res.stderr)}")
        done = "defined"
    res = virsh(hv.uri, "net-start", name)
    if res.returncode != 0:
        if done == "defined":
            virsh(hv.uri, "net-undefine", name)
        raise ProviderError(f"cannot start libvirt network {name} ({net}){where}: {_last(res.stderr)}; "
                            f"another network or interface of this host may use {net}: free it "
                            f"or pass another --name (the subnet follows the lab name)")
    return f"management network {name} {net}{where} {done} (DHCP without dnsmasq's ping check)"


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no reason given"
