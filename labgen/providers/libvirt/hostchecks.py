"""Whether this host and the lab's hypervisors can run a VM lab: tools, libvirtd, KVM,
SSH to remote hypervisors, their size, the box, and names or ports another lab already holds.
Each problem is one line with its fix."""
from __future__ import annotations

import re
import shutil
import socket
from ipaddress import IPv4Network
from pathlib import Path

from labgen.errors import HostError
from labgen.lab.model import Lab
from labgen.providers.libvirt.hypervisors import LOCAL_URI, Hypervisor, UdpLink
from labgen.providers.libvirt.project import domains, hypervisor_of, hypervisors, machine_ids
from labgen.providers.libvirt.settings import settings_of
from labgen.providers.libvirt.virsh import (
    hypervisor_shell,
    names,
    network_subnets,
    on_hypervisor,
    overlapping,
    virsh,
)
from labgen.system.hostfacts import KVM_FIX, kvm_access_drift, kvm_usable
from labgen.vagrant import command as vagrant_cli


def check(lab: Lab, lab_dir: Path) -> None:
    """Every host problem, each with its fix, before anything is created."""
    problems = host_problems(lab)
    if not problems:
        problems += name_problems(lab, lab_dir)
    if problems:
        raise HostError("; ".join(problems))


def host_problems(lab: Lab) -> list[str]:
    """One line per problem, each with its fix; every missing package in one apt command."""
    # Imported here: this method owns the host checks (hostfacts keeps the package map).
    from labgen.system.hostfacts import DEBIAN_PACKAGES, missing_line, missing_tools
    problems = []
    # What Vagrant, vagrant-libvirt and libvirtd run on this host. libvirtd finds qemu and
    # dnsmasq itself (sbin is on its PATH); labgen never runs those three.
    local = any(not hv.remote for hv in hypervisors(lab))
    needed = ("vagrant", "virsh") + (("libvirtd", "qemu-system-x86_64", "qemu-img", "dnsmasq") if local else ())
    tools = {cmd: DEBIAN_PACKAGES[cmd] for cmd in needed}
    missing = missing_tools(tools, system_dirs=("libvirtd", "qemu-system-x86_64", "dnsmasq"))
    vagrant = shutil.which("vagrant") is not None
    plugins = vagrant_cli.run(["plugin", "list"], timeout=60) if vagrant else None
    if plugins is not None and plugins.returncode != 0:     # not a missing plugin: say Vagrant's words
        said = (plugins.stderr or plugins.stdout).strip().splitlines() or ["no output"]
        problems.append(f"`vagrant plugin list` failed (exit {plugins.returncode}): {said[-1].strip()}")
    elif plugins is None or "vagrant-libvirt" not in plugins.stdout:
        missing.append("vagrant plugin vagrant-libvirt (package vagrant-libvirt)")
    if missing:
        problems.append(missing_line(missing))
    # (`virsh uri` needs no QEMU capabilities: it answers at once even where `version` probes)
    if local and shutil.which("virsh") and not any(m.startswith("libvirtd ") for m in missing) \
            and virsh(LOCAL_URI, "uri").returncode != 0:
        problems.append("libvirtd does not answer at qemu:///system: start it (systemctl start "
                        "libvirtd, or without systemd: virtlogd -d && libvirtd -d) "
                        "and make sure your user may use it (group libvirt, or sudo)")
    if shutil.which("virsh"):
        for hv in hypervisors(lab):
            if hv.remote:
                problems += remote_problems(hv)
    if settings_of(lab).driver == "kvm" and not kvm_usable():
        problems.append("KVM is not usable on this host: render with --libvirt-driver qemu "
                        "(software emulation, slower) or auto")
    if not problems:        # every hypervisor answers: are they big enough for their VMs?
        for hv in hypervisors(lab):
            problems += size_problems(lab, hv)
    if not problems:
        box = box_problem(lab)
        if box:
            problems.append(box)
    return problems

def size_problems(lab: Lab, hv: Hypervisor) -> list[str]:
    """The VMs a hypervisor is to run against its size (`virsh nodeinfo`): every VM's
    --memory together within the hypervisor's memory, each VM's --cpus within its CPUs. Free
    memory is not compared: QEMU takes a guest's memory as the guest touches it and the
    page cache gives way, so what is free now does not tell whether the VMs fit. A
    hypervisor that does not answer is another check's line."""
    res = virsh(hv.uri, "nodeinfo")
    if res.returncode != 0:
        return []
    hv_cpus = re.search(r"^CPU\(s\):\s*(\d+)\s*$", res.stdout, re.M)
    hv_kib = re.search(r"^Memory size:\s*(\d+)\s*KiB\s*$", res.stdout, re.M)
    vm, count = settings_of(lab), len(hv.nodes)
    where = f"libvirt host {hv.name}" if hv.remote else "this host"

    def gib(kib: int) -> str:
        return f"{kib / (1 << 20):.1f}".removesuffix(".0") + " GiB"
    problems = []
    need = vm.memory * 1024 * count
    if hv_kib and need > int(hv_kib.group(1)):
        vms, fewer = (f" x {count} nodes", " or fewer --nodes") if count > 1 else ("", "")
        problems.append(f"--memory {vm.memory}{vms} needs {gib(need)}; {where} has "
                        f"{gib(int(hv_kib.group(1)))}: use a smaller --memory{fewer}")
    if hv_cpus and vm.cpus > int(hv_cpus.group(1)):
        n = hv_cpus.group(1)
        problems.append(f"--cpus {vm.cpus} is more than the {n} CPUs of {where}: "
                        f"use --cpus {n} or fewer")
    return problems

def remote_problems(hv: Hypervisor) -> list[str]:
    """A hypervisor reached over SSH: SSH itself (Vagrant reaches the guests through it), its
    libvirtd, and the storage pool vagrant-libvirt puts the box and the disks in."""
    ssh = hypervisor_shell(hv, "true")
    if ssh.returncode != 0:
        return [f"libvirt host {hv.name} does not answer over SSH "
                f"({vagrant_cli.last_line(ssh.stderr)}): check that "
                f"`{' '.join(hv.ssh_argv())} true` works without a prompt (key, known host)"]
    version = virsh(hv.uri, "uri")
    if version.returncode != 0:
        return [f"libvirt at {hv.uri} does not answer ({vagrant_cli.last_line(version.stderr)}): start "
                f"libvirtd on {hv.name} and check that its user may use it"]
    if virsh(hv.uri, "pool-info", "default").returncode != 0:
        return [f"libvirt at {hv.uri} has no storage pool 'default' (vagrant-libvirt keeps "
                f"the box and the disks there): on {hv.name} run virsh pool-define-as default "
                f"dir --target /var/lib/libvirt/images && virsh pool-start default && "
                f"virsh pool-autostart default"]
    return []

def box_problem(lab: Lab) -> str | None:
    """Only a box that is not in Vagrant AND has no download source stops the run: one
    with a URL or a Vagrant catalog name is fetched by up() (see host_notes)."""
    from labgen.vagrant.boxfetch import is_added, source
    if source(lab.box) is not None or is_added(lab.box.name):
        return None
    if lab.box.build:
        how = f"build it here with: sudo labgen box build {lab.box.build}"
    else:
        how = f"add it with: vagrant box add --name {lab.box.name} --provider libvirt <URL>"
    return f"box {lab.box.name} (libvirt) is not in Vagrant: {how}; or pick another with --box"

def host_notes(lab: Lab) -> list[str]:
    """What is fine but worth knowing before create (for labgen doctor)."""
    from labgen.vagrant.boxfetch import missing_note
    notes = []
    drift = kvm_access_drift()
    if drift and any(not hv.remote for hv in hypervisors(lab)):
        notes.append(f"{drift} (no udev here?): libvirt probes QEMU again on every call, "
                     f"seconds each; fix: {KVM_FIX} "
                     f"(labgen create does it when run as root)")
    if settings_of(lab).emulated:
        notes.append("KVM is not usable here; VMs use software emulation (qemu driver), "
                     "about a minute per boot")
    note = missing_note(lab.box) if shutil.which("vagrant") else None
    # vagrant-libvirt's name for a box's image in a storage pool
    image = vagrant_cli.box_dir_name(lab.box.name) + "_vagrant_box_image_"
    for hv in hypervisors(lab):
        vols = virsh(hv.uri, "vol-list", "default") if hv.remote and shutil.which("virsh") else None
        if vols is not None and vols.returncode == 0 and image not in vols.stdout:
            notes.append(f"host {hv.name}: box {lab.box.name} is not in its storage pool yet; "
                         f"vagrant-libvirt copies it there on the first create")
    if settings_of(lab).split:
        a, b = settings_of(lab).links
        notes.append(f"the underlay crosses hosts as UDP {a.local_ip}:{a.local_port} <-> "
                     f"{b.local_ip}:{b.local_port}: both ports must pass the firewalls between "
                     f"them; underlay MTU {lab.underlay_mtu}")
    return notes + ([note] if note else [])

def name_problems(lab: Lab, lab_dir: Path) -> list[str]:
    problems = []
    ours = set(machine_ids(lab, lab_dir))
    for hv in hypervisors(lab):
        existing = names(virsh(hv.uri, "list", "--all", "--name"))
        taken = [d for d in domains(lab, hv) if d in existing
                 and d.removeprefix(lab.domain_prefix) not in ours]
        where = on_hypervisor(hv)
        if taken:
            problems.append(f"libvirt domain {', '.join(taken)} already exists{where} and is not "
                            f"this lab's: remove it (virsh destroy/undefine) or pass another --name")
        subnets = network_subnets(hv.uri)
        if not settings_of(lab).split:
            problems += network_problems(lab, subnets, bool(ours), where)
        problems += management_problems(lab, subnets, bool(ours) or _claimed(lab, lab_dir), where)
    for link in settings_of(lab).links:
        if link.node not in ours:
            problems += port_problem(link, hypervisor_of(lab, link.node))
    return problems

def network_problems(lab: Lab, subnets: dict[str, list[IPv4Network]], ours: bool,
                     where: str) -> list[str]:
    """The lab's underlay network: its name free or this lab's, its subnet used by no other
    libvirt network (`subnets`: virsh.network_subnets of the hypervisor)."""
    net = lab.libvirt_network
    return taken(net, IPv4Network(lab.underlay), subnets, ours, where,
                 f"remove it (virsh net-destroy {net}; virsh net-undefine {net}) or pass another --name",
                 f"the underlay {lab.underlay}: pick another --underlay or remove that network")


def taken(name: str, subnet: IPv4Network, subnets: dict[str, list[IPv4Network]], ours: bool,
          where: str, remove: str, uses: str) -> list[str]:
    """A network of the lab, `name` with `subnet`: a network of that name that is not this
    lab's (`remove`: how to fix it), and every other network whose subnet overlaps (`uses`:
    what that subnet is to the lab, and how to fix it)."""
    problems = []
    if name in subnets and not ours:
        problems.append(f"libvirt network {name} already exists{where} and is not this lab's: {remove}")
    for other in overlapping(subnets, subnet, but=name):
        problems.append(f"libvirt network {other}{where} already uses {uses}")
    return problems

def _claimed(lab: Lab, lab_dir: Path) -> bool:
    """Does labgen's registry hold this directory's claim on the lab (an up killed after it
    made the management network, before Vagrant made any machine)?"""
    from labgen.providers.libvirt.registry import read_registry
    from labgen.system.owner import read_claim
    record, mine = read_registry(lab.name), read_claim(lab_dir)
    return record is not None and mine is not None and record.id == mine.id

def management_problems(lab: Lab, subnets: dict[str, list[IPv4Network]], ours: bool,
                        where: str) -> list[str]:
    """The lab's management network (management.py): its name free or this lab's, its subnet
    used by no other libvirt network (`subnets`, as for network_problems)."""
    if not settings_of(lab).management:
        return []
    net = IPv4Network(settings_of(lab).management)
    return taken(lab.management_network, net, subnets, ours, where,
                 f"remove it (labgen destroy --name {lab.name} --provider libvirt, if "
                 f"`labgen list` shows its lab) or pass another --name",
                 f"{net}, the management subnet of lab {lab.name} (it follows the lab name): "
                 f"pass another --name or remove that network")

def port_problem(link: UdpLink, hv: Hypervisor) -> list[str]:
    """The UDP port of a node's underlay link must be free on its hypervisor (qemu binds it)."""
    if hv.remote:
        res = hypervisor_shell(hv, f"ss -Hlun 'sport = :{link.local_port}'")
        busy = res.returncode == 0 and bool(res.stdout.strip())
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((link.local_ip, link.local_port))
                busy = False
            except OSError:
                busy = True
    if not busy:
        return []
    return [f"UDP port {link.local_port} on {hv.name} ({link.local_ip}), {link.node}'s underlay "
            f"link, is taken: free it or pass another --name (the ports follow the lab name)"]
