"""libvirt's command line and the hypervisors: virsh against a URI, a shell on a remote
hypervisor over the SSH its guests' proxy uses, and labgen's names for libvirt's objects."""
from __future__ import annotations

import re
import subprocess
from ipaddress import IPv4Network

from labgen.providers.libvirt.hypervisors import Hypervisor


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"virsh -c {uri} gave no answer in 60 s")


def hypervisor_shell(hv: Hypervisor, command: str) -> subprocess.CompletedProcess[str]:
    """A shell command on a remote hypervisor, as the guests' proxy reaches it."""
    try:
        return subprocess.run([*hv.ssh_argv(), command], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", "no answer in 60 s")


def names(res: subprocess.CompletedProcess[str]) -> set[str]:
    return {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}


def hypervisor_key(hv: Hypervisor) -> str:
    """Which machine hv is: the name the libvirtd behind it gives its machine (or its URI
    when it does not answer). Two URIs with one key reach one libvirtd."""
    res = virsh(hv.uri, "hostname")
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else hv.uri


def on_hypervisor(hv: Hypervisor) -> str:
    """' on NAME' for a remote hypervisor's lines, nothing for this machine's."""
    return f" on {hv.name}" if hv.remote else ""


def volumes(uri: str) -> list[str]:
    lines = virsh(uri, "vol-list", "default").stdout.splitlines()[2:]
    return [ln.split()[0] for ln in lines if ln.split()]


def network_subnets(uri: str) -> dict[str, list[IPv4Network]]:
    """Every libvirt network at uri with its IPv4 subnets (none for one without): what the
    pre-checks compare the lab's underlay and management subnets with."""
    return {net: subnets_of(virsh(uri, "net-dumpxml", net).stdout)
            for net in sorted(names(virsh(uri, "net-list", "--all", "--name")))}


def subnets_of(xml: str) -> list[IPv4Network]:
    """The IPv4 subnets in a network's XML (`<ip address= netmask=|prefix=>`)."""
    import xml.etree.ElementTree as ET  # only up and the pre-checks read libvirt's XML
    try:
        ips = list(ET.fromstring(xml).iter("ip"))
    except ET.ParseError:
        return []
    return [IPv4Network(f"{e.get('address')}/{e.get('netmask') or e.get('prefix') or 24}", strict=False)
            for e in ips if e.get("address") and ":" not in e.get("address", "")]


def overlapping(subnets: dict[str, list[IPv4Network]], net: IPv4Network, but: str) -> list[str]:
    """The networks of `subnets` (network_subnets), other than `but`, that use part of `net`."""
    return [other for other, found in subnets.items()
            if other != but and any(s.overlaps(net) for s in found)]


def remove_network(uri: str, name: str) -> str | None:
    """Stop and undefine a lab's network once no domain uses it (libvirt counts them while
    it runs): "removed", "in use", or None when there is no such network."""
    import xml.etree.ElementTree as ET
    if name not in names(virsh(uri, "net-list", "--all", "--name")):
        return None
    try:
        used = int(ET.fromstring(virsh(uri, "net-dumpxml", name).stdout).get("connections", "0")) > 0
    except (ET.ParseError, ValueError):
        used = False
    if used:
        return "in use"
    virsh(uri, "net-destroy", name)
    virsh(uri, "net-undefine", name)
    return "removed"


# Domains labgen-NAME-nodeK, their disks labgen-NAME-nodeK.img / -vdb.qcow2, the underlay
# network labgen-NAME and the management network labgen-NAME.mgmt. A box's image
# (labgen-VAGRANTSLASH-...) matches none of these.
DOMAIN = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)$")
VOLUME = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)[.-]")
NETWORK = re.compile(r"^labgen-([a-z][a-z0-9-]*)(?:\.mgmt)?$")
