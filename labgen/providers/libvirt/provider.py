"""The libvirt provider: two (or more) VMs with Vagrant + vagrant-libvirt; verification over
SSH (paramiko) from `vagrant ssh-config`.

A lab runs on one libvirt host or, with --host, across several (labgen/providers/libvirt/hypervisors.py): one
Vagrant project per host, brought up side by side. Vagrant's output goes to logs/vagrant.log
(logs/vagrant-HOST.log per host of a lab across hosts) and is read line by line for per-node
progress; on failure the error shows the last lines and where the logs are.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labgen.errors import HostError, InputError, ProviderError
from labgen.lab.model import Lab, Options, host_prefix, node_names
from labgen.providers import Found, NodeStatus, Progress
from labgen.providers.libvirt.hypervisors import LOCAL_URI, Hypervisor, UdpLink, links, plan
from labgen.providers.libvirt.settings import LibvirtSettings
from labgen.providers.libvirt.settings import settings as _settings
from labgen.system.hostfacts import KVM_FIX, fix_kvm_access, is_root, kvm_access_drift, kvm_usable
from labgen.system.owner import Owner
from labgen.system.processes import start_ticks, stop
from labgen.vagrant import command as vagrant_cli

if TYPE_CHECKING:
    import jinja2

    from labgen.nodes.ssh import SSHRunner, SSHTarget

# What Vagrant prints -> the stage a node has reached.
STAGES = [
    (re.compile(r"Creating domain|Creating image \(snapshot"), "creating"),
    (re.compile(r"Starting domain"), "booting"),
    (re.compile(r"Waiting for domain to get an IP address"), "waiting for an IP address"),
    (re.compile(r"Waiting for machine to boot"), "waiting for SSH"),
    (re.compile(r"Machine booted and ready"), "SSH ready"),
    (re.compile(r"Configuring and enabling network interfaces"), "configuring the underlay NIC"),
]
# Stages before a guest has its address: `vagrant ssh-config` cannot answer for it yet.
BEFORE_ADDRESS = ("creating", "booting", "waiting for an IP address")
_NODE_LINE = re.compile(r"^(?:==> )?(node\d+): (.*)$")
TAIL = 12


def _virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"virsh -c {uri} gave no answer in 60 s")


def _ssh(hv: Hypervisor, command: str) -> subprocess.CompletedProcess[str]:
    """A shell command on a remote libvirt host, as the guests' proxy reaches it."""
    try:
        return subprocess.run([*hv.ssh_argv(), command], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", "no answer in 60 s")


def _names(res: subprocess.CompletedProcess[str]) -> set[str]:
    return {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}


def hosts(lab: Lab) -> tuple[Hypervisor, ...]:
    """The lab's libvirt hosts, each with its Vagrant project."""
    return _settings(lab).hosts


def _libvirt_host(hv: Hypervisor) -> str:
    """The name the libvirtd behind hv gives its machine (or its URI when it does not answer)."""
    res = _virsh(hv.uri, "hostname")
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else hv.uri


def _on(hv: Hypervisor) -> str:
    """' on HOST' for a remote host's lines, nothing for this machine's."""
    return f" on {hv.name}" if hv.remote else ""


# vagrant-libvirt's management network; an underlay on it would clash inside the VMs.
VAGRANT_MGMT_NET = ip_network("192.168.121.0/24")
DRIVERS = ("kvm", "qemu", "auto")
MIN_MEMORY_MB = 512


def resolve_driver(requested: str, usable: bool | None = None) -> str:
    """auto -> kvm only when /dev/kvm really runs guests here, else qemu (software emulation)."""
    if requested != "auto":
        return requested
    return "kvm" if (kvm_usable() if usable is None else usable) else "qemu"


class LibvirtProvider:
    name: ClassVar[str] = "libvirt"
    default_box: ClassVar[str] = "centos/stream9"
    datapaths: ClassVar[tuple[str, ...]] = ("system", "netdev")
    owns_system_files: ClassVar[bool] = True     # a VM is a whole machine of the lab's own
    # Vagrant leaves the underlay NIC unconfigured (auto_config false), NetworkManager may run.
    script_sets_underlay_address: ClassVar[bool] = True

    # ---- the model's questions ------------------------------------------------------------
    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        if opts.libvirt_driver not in DRIVERS:
            raise InputError(f"unknown libvirt driver {opts.libvirt_driver!r}: use {' or '.join(DRIVERS)}")
        if opts.memory < MIN_MEMORY_MB:
            raise InputError(f"--memory {opts.memory} MiB is too small for a node running Open "
                             f"vSwitch: use at least {MIN_MEMORY_MB}")
        if opts.memory > 1 << 20:      # 1 TiB; the host's own size is checked by host_problems
            raise InputError(f"--memory {opts.memory} MiB is out of range: use {MIN_MEMORY_MB} to "
                             f"{1 << 20} MiB per VM")
        if not 1 <= opts.cpus <= 64:
            raise InputError(f"--cpus {opts.cpus} is out of range: use 1 to 64")
        if underlay.overlaps(VAGRANT_MGMT_NET):
            raise InputError(f"underlay {underlay} overlaps vagrant-libvirt's management network "
                             f"{VAGRANT_MGMT_NET}: pick another, e.g. --underlay 10.10.10.0/24")

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> LibvirtSettings:
        names = node_names(opts.nodes)
        placed = plan(tuple(opts.hosts), names)
        if len(placed) > 1 and (len(placed) > 2 or opts.nodes != 2):
            raise InputError(f"--host puts {opts.nodes} nodes on {len(placed)} libvirt hosts: a lab "
                             f"across hosts has 2 nodes on 2 hosts (their underlay is one point-to-"
                             f"point UDP link): use --nodes 2 and one --host")
        return LibvirtSettings(memory=opts.memory, cpus=opts.cpus,
                               driver=resolve_driver(opts.libvirt_driver, kvm_usable), hosts=placed,
                               links=links(lab_name, placed, {n: k for k, n in enumerate(names, 1)}))

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> LibvirtSettings | None:
        return LibvirtSettings.read(lab_json, nodes)

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        tpl = env.get_template("libvirt/Vagrantfile.j2")
        out = {}
        for hv in hosts(lab):
            back = "/".join(".." for _ in Path(hv.project).parts) or "."
            out[str(Path(hv.project) / "Vagrantfile")] = tpl.render(lab=lab, hv=hv, lab_dir=back)
        return out

    def local_argv(self, lab: Lab, node: str) -> None:
        return None      # the nodes are VMs: exec and capture go over the runner's SSH

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        # VAGRANT_CWD: vagrant finds the node's Vagrantfile from any directory.
        # -c runs the command with a terminal (vagrant ssh's --tty is on by default).
        project = self._project(lab, lab_dir, self._host_of(lab, node))
        return ["env", f"VAGRANT_CWD={project.resolve()}", "vagrant", "ssh", node, "-c", "sudo -i"]

    def __init__(self) -> None:
        self._ssh: dict[str, SSHTarget] | None = None

    # ---- what belongs to this lab -------------------------------------------------------
    @staticmethod
    def _project(lab: Lab, lab_dir: Path, hv: Hypervisor) -> Path:
        return lab_dir / hv.project

    @staticmethod
    def _host_of(lab: Lab, node: str) -> Hypervisor:
        return next(hv for hv in hosts(lab) if node in hv.nodes)

    @staticmethod
    def _log(lab: Lab, lab_dir: Path, hv: Hypervisor) -> Path:
        return lab_dir / "logs" / (f"vagrant-{hv.name}.log" if _settings(lab).split else "vagrant.log")

    def domains(self, lab: Lab, hv: Hypervisor | None = None) -> list[str]:
        return [f"{lab.domain_prefix}{n}" for n in (hv.nodes if hv else [n.name for n in lab.nodes])]

    def machine_ids(self, lab: Lab, lab_dir: Path) -> dict[str, str]:
        """Domain UUIDs Vagrant recorded for this lab (what makes a domain ours), all hosts."""
        ids = {}
        for hv in hosts(lab):
            for f in (self._project(lab, lab_dir, hv) / ".vagrant" / "machines").glob("*/libvirt/id"):
                ids[f.parts[-3]] = f.read_text().strip()
        return ids

    # ---- contract ------------------------------------------------------------------------
    def check(self, lab: Lab, lab_dir: Path) -> None:
        """Every host problem, each with its fix, before anything is created."""
        problems = self.host_problems(lab)
        if not problems:
            problems += self._name_problems(lab, lab_dir)
        if problems:
            raise HostError("; ".join(problems))

    def host_problems(self, lab: Lab) -> list[str]:
        """One line per problem, each with its fix; every missing package in one apt command."""
        # Imported here: this method owns the host checks (hostfacts keeps the package map).
        from labgen.system.hostfacts import DEBIAN_PACKAGES, missing_line, missing_tools
        problems = []
        # What Vagrant, vagrant-libvirt and libvirtd run on this host. libvirtd finds qemu and
        # dnsmasq itself (sbin is on its PATH); labgen never runs those three.
        local = any(not hv.remote for hv in hosts(lab))
        needed = ("vagrant", "virsh") + (("libvirtd", "qemu-system-x86_64", "qemu-img", "dnsmasq") if local else ())
        tools = {cmd: DEBIAN_PACKAGES[cmd] for cmd in needed}
        missing = missing_tools(tools, system_dirs=("libvirtd", "qemu-system-x86_64", "dnsmasq"))
        vagrant = shutil.which("vagrant") is not None
        if not vagrant or not self._has_plugin():
            missing.append("vagrant plugin vagrant-libvirt (package vagrant-libvirt)")
        if missing:
            problems.append(missing_line(missing))
        # (`virsh uri` needs no QEMU capabilities: it answers at once even where `version` probes)
        if local and shutil.which("virsh") and not any(m.startswith("libvirtd ") for m in missing) \
                and _virsh(LOCAL_URI, "uri").returncode != 0:
            problems.append("libvirtd does not answer at qemu:///system: start it (systemctl start "
                            "libvirtd, or without systemd: virtlogd -d && libvirtd -d) "
                            "and make sure your user may use it (group libvirt, or sudo)")
        if shutil.which("virsh"):
            for hv in hosts(lab):
                if hv.remote:
                    problems += self._remote_problems(hv)
        if _settings(lab).driver == "kvm" and not kvm_usable():
            problems.append("KVM is not usable on this host: render with --libvirt-driver qemu "
                            "(software emulation, slower) or auto")
        if not problems:        # every host answers: are they big enough for their VMs?
            for hv in hosts(lab):
                problems += self._size_problems(lab, hv)
        if not problems:
            box = self._box_problem(lab)
            if box:
                problems.append(box)
        return problems

    @staticmethod
    def _size_problems(lab: Lab, hv: Hypervisor) -> list[str]:
        """The VMs a libvirt host is to run against its size (`virsh nodeinfo`): every VM's
        --memory together within the host's memory, each VM's --cpus within its CPUs. Free
        memory is not compared: QEMU takes a guest's memory as the guest touches it and the
        page cache gives way, so what is free now does not tell whether the VMs fit. A host
        that does not answer is another check's line."""
        res = _virsh(hv.uri, "nodeinfo")
        if res.returncode != 0:
            return []
        host_cpus = re.search(r"^CPU\(s\):\s*(\d+)\s*$", res.stdout, re.M)
        host_kib = re.search(r"^Memory size:\s*(\d+)\s*KiB\s*$", res.stdout, re.M)
        vm, count = _settings(lab), len(hv.nodes)
        where = f"libvirt host {hv.name}" if hv.remote else "this host"

        def gib(kib: int) -> str:
            return f"{kib / (1 << 20):.1f}".removesuffix(".0") + " GiB"
        problems = []
        need = vm.memory * 1024 * count
        if host_kib and need > int(host_kib.group(1)):
            vms, fewer = (f" x {count} nodes", " or fewer --nodes") if count > 1 else ("", "")
            problems.append(f"--memory {vm.memory}{vms} needs {gib(need)}; {where} has "
                            f"{gib(int(host_kib.group(1)))}: use a smaller --memory{fewer}")
        if host_cpus and vm.cpus > int(host_cpus.group(1)):
            n = host_cpus.group(1)
            problems.append(f"--cpus {vm.cpus} is more than the {n} CPUs of {where}: "
                            f"use --cpus {n} or fewer")
        return problems

    @staticmethod
    def _remote_problems(hv: Hypervisor) -> list[str]:
        """A host reached over SSH: SSH itself (Vagrant reaches the guests through it), its
        libvirtd, and the storage pool vagrant-libvirt puts the box and the disks in."""
        ssh = _ssh(hv, "true")
        if ssh.returncode != 0:
            return [f"libvirt host {hv.name} does not answer over SSH "
                    f"({vagrant_cli.last_line(ssh.stderr)}): check that "
                    f"`{' '.join(hv.ssh_argv())} true` works without a prompt (key, known host)"]
        version = _virsh(hv.uri, "uri")
        if version.returncode != 0:
            return [f"libvirt at {hv.uri} does not answer ({vagrant_cli.last_line(version.stderr)}): start "
                    f"libvirtd on {hv.name} and check that its user may use it"]
        if _virsh(hv.uri, "pool-info", "default").returncode != 0:
            return [f"libvirt at {hv.uri} has no storage pool 'default' (vagrant-libvirt keeps "
                    f"the box and the disks there): on {hv.name} run virsh pool-define-as default "
                    f"dir --target /var/lib/libvirt/images && virsh pool-start default && "
                    f"virsh pool-autostart default"]
        return []

    def _has_plugin(self) -> bool:
        return "vagrant-libvirt" in vagrant_cli.run(["plugin", "list"], timeout=60).stdout

    def _box_problem(self, lab: Lab) -> str | None:
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

    def host_notes(self, lab: Lab) -> list[str]:
        """What is fine but worth knowing before create (for labgen doctor)."""
        from labgen.vagrant.boxfetch import missing_note
        notes = []
        drift = kvm_access_drift()
        if drift and any(not hv.remote for hv in hosts(lab)):
            notes.append(f"{drift} (no udev here?): libvirt probes QEMU again on every call, "
                         f"seconds each; fix: {KVM_FIX} "
                         f"(labgen create does it when run as root)")
        if _settings(lab).driver == "qemu":
            notes.append("KVM is not usable here; VMs use software emulation (qemu driver), "
                         "about a minute per boot")
        note = missing_note(lab.box) if shutil.which("vagrant") else None
        # vagrant-libvirt's name for a box's image in a storage pool
        image = lab.box.name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
        for hv in hosts(lab):
            vols = _virsh(hv.uri, "vol-list", "default") if hv.remote and shutil.which("virsh") else None
            if vols is not None and vols.returncode == 0 and image not in vols.stdout:
                notes.append(f"host {hv.name}: box {lab.box.name} is not in its storage pool yet; "
                             f"vagrant-libvirt copies it there on the first create")
        if _settings(lab).split:
            a, b = _settings(lab).links
            notes.append(f"the underlay crosses hosts as UDP {a.local_ip}:{a.local_port} <-> "
                         f"{b.local_ip}:{b.local_port}: both ports must pass the firewalls between "
                         f"them; underlay MTU {lab.underlay_mtu}")
        return notes + ([note] if note else [])

    def _name_problems(self, lab: Lab, lab_dir: Path) -> list[str]:
        problems = []
        ours = set(self.machine_ids(lab, lab_dir))
        for hv in hosts(lab):
            existing = _names(_virsh(hv.uri, "list", "--all", "--name"))
            taken = [d for d in self.domains(lab, hv) if d in existing
                     and d.removeprefix(lab.domain_prefix) not in ours]
            where = _on(hv)
            if taken:
                problems.append(f"libvirt domain {', '.join(taken)} already exists{where} and is not "
                                f"this lab's: remove it (virsh destroy/undefine) or pass another --name")
            if not _settings(lab).split:
                problems += self._network_problems(lab, hv, bool(ours), where)
        for link in _settings(lab).links:
            if link.node not in ours:
                problems += self._port_problem(link, self._host_of(lab, link.node))
        return problems

    @staticmethod
    def _network_problems(lab: Lab, hv: Hypervisor, ours: bool, where: str) -> list[str]:
        import xml.etree.ElementTree as ET  # only doctor and up read libvirt's XML (render: ~3 ms)
        problems = []
        underlay = ip_network(lab.underlay)
        for net in _names(_virsh(hv.uri, "net-list", "--all", "--name")):
            xml = _virsh(hv.uri, "net-dumpxml", net).stdout
            try:
                ips = [e.get("address", "") for e in ET.fromstring(xml).iter("ip") if e.get("address")]
            except ET.ParseError:
                continue
            clash = any(ip_address(a) in underlay for a in ips if ":" not in a)
            if net == lab.libvirt_network and not ours:
                problems.append(f"libvirt network {net} already exists{where} and is not this lab's: "
                                f"remove it (virsh net-destroy {net}; virsh net-undefine {net}) "
                                f"or pass another --name")
            elif clash and net != lab.libvirt_network:
                problems.append(f"libvirt network {net}{where} already uses the underlay {lab.underlay}: "
                                f"pick another --underlay or remove that network")
        return problems

    @staticmethod
    def _port_problem(link: UdpLink, hv: Hypervisor) -> list[str]:
        """The UDP port of a node's underlay link must be free on its host (qemu binds it)."""
        if hv.remote:
            res = _ssh(hv, f"ss -Hlun 'sport = :{link.local_port}'")
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

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        if not self.machine_ids(lab, lab_dir) or shutil.which("virsh") is None:
            return False
        return any(set(self.domains(lab, hv)) & _names(_virsh(hv.uri, "list", "--all", "--name"))
                   for hv in hosts(lab))

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        from labgen.vagrant.boxfetch import ensure_box
        (lab_dir / "logs").mkdir(exist_ok=True)
        # The vagrant up of a create that was killed goes on, holding the machines' locks:
        # an up that resumes the lab stops it first.
        _stop_vagrants(lab.name, progress)
        # A box with a URL or catalog name that is not added yet: fetched once, with progress.
        ensure_box(lab.box, lambda message: progress("box", message),
                   log=self._log(lab, lab_dir, hosts(lab)[0]))
        if _settings(lab).driver == "qemu":
            progress("lab", "software emulation (qemu driver): about a minute per boot")
        drift = kvm_access_drift()
        if drift and is_root() and any(not hv.remote for hv in hosts(lab)):
            fix_kvm_access()    # what udev does at boot where there is one
            progress("lab", f"{drift} (no udev here): set it to group kvm, read-write, "
                            f"else libvirt probes QEMU again on every call")
        self._ssh = None
        scripts = {n.name: lab_dir / "provision" / f"{n.name}.sh" for n in lab.nodes}
        runs = [_Bringup(hv, self._project(lab, lab_dir, hv), self._log(lab, lab_dir, hv), progress,
                         scripts, lab_dir / "logs") for hv in hosts(lab)]
        for run in runs:
            run.peers = [r for r in runs if r is not run]
            run.started = lambda pid: _note_vagrant(lab.name, pid)
            _ssh_config_cache(run.project).unlink(missing_ok=True)
        # Two URIs may reach ONE libvirtd (the same machine by two names): then one host after
        # the other up to the domains' start, then side by side, so that its box volume and
        # management network are created once, not raced. Distinct hosts start together.
        shared = len({_libvirt_host(hv) for hv in hosts(lab)}) < len(runs)
        try:
            for before, run in zip([None, *runs], runs, strict=False):
                if before is not None and shared:
                    before.past_creation.wait()
                if any(r.failed for r in runs):
                    break
                run.start()
            for run in runs:
                run.join()
        except BaseException:
            for run in runs:
                run.kill()
            for run in runs:
                run.join()
            raise
        # The run that failed first is the cause; two that failed at once stopped each other.
        failed = [r for r in runs if r.failed and r.stopped_for is None] or [r for r in runs if r.failed]
        if failed:
            raise ProviderError("; ".join(self._failure(lab, lab_dir, r) for r in failed))
        progress("lab", "all nodes provisioned")

    def _failure(self, lab: Lab, lab_dir: Path, run: _Bringup) -> str:
        if run.script_errors:       # vagrant was stopped for it, if it still ran
            return "; ".join(run.script_errors)
        code, tail = run.error or (0, [])
        where = f" on host {run.hv.name}" if _settings(lab).split else ""
        msg = f"vagrant up failed{where} (exit {code}): {' | '.join(tail[-6:])} (full log: {run.log})"
        if any("Waiting for domain to get an IP" in ln for ln in tail[-5:]) or "IP address" in " ".join(tail):
            msg += f"; the guest never got an address: see the serial consoles {lab_dir / 'logs'}/node*-console.log"
        return msg

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        _stop_vagrants(lab.name, progress)      # a killed labgen's vagrant up holds the machines
        for hv in hosts(lab):
            project = self._project(lab, lab_dir, hv)
            if (project / ".vagrant").exists() and shutil.which("vagrant"):
                progress("lab", f"vagrant destroy{_on(hv)}")
                res = vagrant_cli.run(["destroy", "-f"], cwd=project, timeout=300)
                (lab_dir / "logs").mkdir(exist_ok=True)
                with open(self._log(lab, lab_dir, hv), "a") as log:
                    log.write(res.stdout + res.stderr)
        # Whatever Vagrant left (a crash half way, a network it no longer tracks): by name,
        # each host only its own nodes' (two URIs may reach one libvirtd and one pool).
        for hv in hosts(lab):
            if shutil.which("virsh"):
                self._remove_leftovers(lab, hv, progress)
            shutil.rmtree(self._project(lab, lab_dir, hv) / ".vagrant", ignore_errors=True)
        _registry_file(lab.name).with_suffix(".pids").unlink(missing_ok=True)
        _registry_file(lab.name).unlink(missing_ok=True)     # last: a killed destroy stays listed
        self._ssh = None

    def _remove_leftovers(self, lab: Lab, hv: Hypervisor, progress: Progress) -> None:
        ours = self.domains(lab, hv)
        mine = _read_registry(lab.name)
        for dom in sorted(set(ours) & _names(_virsh(hv.uri, "list", "--all", "--name"))):
            # A domain of this name whose description names another lab id is someone else's
            # (another machine's lab of the same name on a shared libvirt host): left alone.
            desc = Owner.from_json(_virsh(hv.uri, "desc", dom).stdout.strip())
            if desc is not None and mine is not None and desc.id != mine.id:
                progress("lab", f"leaving domain {dom}{_on(hv)}: it belongs to {desc.dir} (lab id {desc.id})")
                ours.remove(dom)
                continue
            progress("lab", f"removing leftover domain {dom}{_on(hv)}")
            _virsh(hv.uri, "destroy", dom)
            _virsh(hv.uri, "undefine", dom, "--remove-all-storage", "--nvram")
        if not _settings(lab).split and \
                lab.libvirt_network in _names(_virsh(hv.uri, "net-list", "--all", "--name")):
            progress("lab", f"removing network {lab.libvirt_network}{_on(hv)}")
            _virsh(hv.uri, "net-destroy", lab.libvirt_network)
            _virsh(hv.uri, "net-undefine", lab.libvirt_network)
        for vol in _volumes(hv.uri):
            # vagrant-libvirt names a domain's disks DOMAIN.img, DOMAIN-vdb.qcow2, ...
            if any(vol.startswith((f"{dom}.", f"{dom}-")) for dom in ours):
                progress("lab", f"removing leftover volume {vol}{_on(hv)}")
                _virsh(hv.uri, "vol-delete", vol, "--pool", "default")

    # ---- who the lab belongs to (labgen/system/owner.py) -----------------------------------------
    def record(self, lab: Lab) -> Owner | None:
        """labgen's registry on this machine; else the description of one of the lab's
        domains (written from the lab dir's claim when Vagrant defined it), on its host."""
        record = _read_registry(lab.name)
        if record is not None or shutil.which("virsh") is None:
            return record
        for hv in hosts(lab):
            existing = _names(_virsh(hv.uri, "list", "--all", "--name"))
            for dom in self.domains(lab, hv):
                if dom in existing:
                    found = Owner.from_json(_virsh(hv.uri, "desc", dom).stdout.strip())
                    if found is not None:
                        return found
        return None

    def write_record(self, lab: Lab, owner: Owner) -> None:
        _write_registry(lab.name, owner)

    # ---- the whole host ---------------------------------------------------------------------
    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        """Every lab with a labgen-named domain, volume or network on this host's libvirt
        (and at uris), or a record in labgen's registry; one entry per lab and host."""
        found: dict[tuple[str, str], dict[str, Any]] = {}

        def entry(name: str, uri: str) -> dict[str, Any]:
            return found.setdefault((name, uri), {"nodes": set(), "running": set(), "res": [], "desc": None})

        if shutil.which("virsh") is not None:
            for uri in dict.fromkeys((LOCAL_URI, *uris)):
                listed = _virsh(uri, "list", "--all", "--name")
                if listed.returncode != 0:
                    if uri != LOCAL_URI:
                        raise HostError(f"libvirt at {uri} does not answer: {vagrant_cli.last_line(listed.stderr)}")
                    continue
                running = _names(_virsh(uri, "list", "--name"))
                for dom in sorted(_names(listed)):
                    m = _DOMAIN.match(dom)
                    if m:
                        e = entry(m.group(1), uri)
                        e["nodes"].add(m.group(2))
                        if dom in running:
                            e["running"].add(m.group(2))
                        e["res"].append(f"domain {dom}")
                        if e["desc"] is None:
                            e["desc"] = Owner.from_json(_virsh(uri, "desc", dom).stdout.strip())
                for net in sorted(_names(_virsh(uri, "net-list", "--all", "--name"))):
                    m = _NETWORK.match(net)
                    if m:
                        entry(m.group(1), uri)["res"].append(f"network {net}")
                for vol in _volumes(uri):
                    m = _VOLUME.match(vol)
                    if m:
                        e = entry(m.group(1), uri)
                        e["nodes"].add(m.group(2))
                        e["res"].append(f"volume {vol}")
        for name in _registry_names():
            if not any(n == name for n, _ in found):
                entry(name, LOCAL_URI)["res"].append("its record in labgen's registry")
        out = []
        for (name, uri), e in sorted(found.items()):
            record = _read_registry(name) or e["desc"]
            nodes = set(e["nodes"]) | set(record.nodes if record else ())
            out.append(Found(name=name, provider=self.name, host="this host" if uri == LOCAL_URI else uri,
                             record=record, nodes=tuple(sorted(nodes)), running=tuple(sorted(e["running"])),
                             resources=tuple(e["res"])))
        return out

    def remove(self, found: Found, progress: Progress) -> None:
        """By name with virsh alone (the lab's Vagrant project may be gone): its domains with
        their disks, its leftover volumes, its network; then its record."""
        uri = LOCAL_URI if found.host == "this host" else found.host
        on = "" if uri == LOCAL_URI else f" on {uri}"
        _stop_vagrants(found.name, progress)
        removed: set[str] = set()       # the UUIDs of the domains removed
        if shutil.which("virsh") is not None:
            prefix = host_prefix(found.name)
            for dom in sorted(_names(_virsh(uri, "list", "--all", "--name"))):
                if (m := _DOMAIN.match(dom)) and m.group(1) == found.name:
                    progress("lab", f"removing domain {dom}{on}")
                    removed.add(_virsh(uri, "domuuid", dom).stdout.strip())
                    _virsh(uri, "destroy", dom)
                    _virsh(uri, "undefine", dom, "--remove-all-storage", "--nvram")
            for vol in _volumes(uri):
                if (m := _VOLUME.match(vol)) and m.group(1) == found.name:
                    progress("lab", f"removing volume {vol}{on}")
                    _virsh(uri, "vol-delete", vol, "--pool", "default")
            if prefix in _names(_virsh(uri, "net-list", "--all", "--name")):
                progress("lab", f"removing network {prefix}{on}")
                _virsh(uri, "net-destroy", prefix)
                _virsh(uri, "net-undefine", prefix)
        if found.record is not None and found.record.claimed_by_its_dir():
            forget_machines(Path(found.record.dir), removed - {""})
        _registry_file(found.name).with_suffix(".pids").unlink(missing_ok=True)
        _registry_file(found.name).unlink(missing_ok=True)

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        # libvirt answers in milliseconds; `vagrant status` takes seconds of Ruby start-up.
        if shutil.which("virsh") is None:
            return [NodeStatus(n.name, "unknown", "virsh is missing") for n in lab.nodes]
        ours = self.machine_ids(lab, lab_dir)
        out = {}
        for hv in hosts(lab):
            listed = _virsh(hv.uri, "list", "--all", "--name")
            existing = _names(listed)
            running = _names(_virsh(hv.uri, "list", "--name"))
            where = _on(hv)
            for node in hv.nodes:
                dom = f"{lab.domain_prefix}{node}"
                if listed.returncode != 0:
                    out[node] = NodeStatus(node, "unknown", f"libvirt at {hv.uri} does not answer")
                elif dom not in existing:
                    out[node] = NodeStatus(node, "absent", f"no domain {dom}{where}")
                elif node not in ours:
                    out[node] = NodeStatus(node, "foreign", f"domain {dom}{where} exists but is not this lab's")
                else:
                    out[node] = NodeStatus(node, "running" if dom in running else "stopped", f"domain {dom}{where}")
        return [out[n.name] for n in lab.nodes]

    def runner(self, lab: Lab, lab_dir: Path, node: str) -> SSHRunner:
        from labgen.nodes.ssh import SSHRunner, parse_ssh_config  # paramiko: only when a node is reached
        if self._ssh is None:
            self._ssh = {}
            for hv in hosts(lab):
                self._ssh |= parse_ssh_config(self._ssh_config(self._project(lab, lab_dir, hv)))
        if node not in self._ssh:
            raise ProviderError(f"vagrant ssh-config knows no {node}: is the lab up? (labgen up)")
        return SSHRunner(node, self._ssh[node])

    def _ssh_config(self, project: Path) -> str:
        cache = _ssh_config_cache(project)
        ids = list((project / ".vagrant" / "machines").glob("*/libvirt/id"))
        if cache.exists() and all(cache.stat().st_mtime >= f.stat().st_mtime for f in ids):
            return cache.read_text()
        return _fetch_ssh_config(project)


def _ssh_config_cache(project: Path) -> Path:
    return project / ".vagrant" / "labgen-ssh-config"


def _fetch_ssh_config(project: Path) -> str:
    """`vagrant ssh-config` costs seconds: taken once per up, kept beside Vagrant's state."""
    text = vagrant_cli.ssh_config(project)
    _ssh_config_cache(project).parent.mkdir(exist_ok=True)
    _ssh_config_cache(project).write_text(text)
    return text


class _Bringup:
    """`vagrant up --no-provision` of one host's project in a thread: its lines to the log and
    to progress, an event once its domains are past creation, each node's script run over SSH
    as soon as Vagrant reports the guest ready (labgen/providers/nodescript.py), and a kill
    for Ctrl-C or a failed peer."""

    def __init__(self, hv: Hypervisor, project: Path, log: Path, progress: Progress,
                 scripts: dict[str, Path], logs: Path):
        self.hv, self.project, self.log, self.progress = hv, project, log, progress
        self.scripts, self.logs = scripts, logs
        self.past_creation = threading.Event()
        self.error: tuple[int, list[str]] | None = None     # vagrant up's exit code and last lines
        self.script_errors: list[str] = []                  # node scripts that failed
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"vagrant-up-{hv.name}", daemon=True)
        self._prefetch: threading.Thread | None = None
        self._config_lock = threading.Lock()
        self._scripts: dict[str, threading.Thread] = {}
        self._runners: dict[str, SSHRunner] = {}
        self._halted = False
        self.peers: list[_Bringup] = []     # killed when this one fails: no point going on
        self.started: Callable[[int], None] = lambda pid: None     # told vagrant's PID
        self.stopped_for: str | None = None     # the peer whose failure stopped this one

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.script_errors)

    def start(self) -> None:
        # The scripts are labgen's to run (below), on a new lab and on a running one alike.
        self._proc = vagrant_cli.start(["up", "--provider", "libvirt", "--no-provision"], cwd=self.project,
                                       timeout=vagrant_cli.up_timeout(self.project))
        self.started(self._proc.pid)
        self._thread.start()

    def _run(self) -> None:
        assert self._proc is not None
        stage: dict[str, str] = {}
        tail: list[str] = []
        try:
            with open(self.log, "a") as log:
                log.write(f"\n=== labgen up {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                for line in vagrant_cli.lines(self._proc):
                    log.write(line + "\n")
                    log.flush()
                    tail = [*tail[-TAIL + 1:], line]
                    node = _track(line, stage, self.progress)
                    if any(s != "creating" for s in stage.values()):
                        self.past_creation.set()
                    if self._prefetch is None and set(stage) >= set(self.hv.nodes) and \
                            not any(s in BEFORE_ADDRESS for s in stage.values()):
                        self._prefetch = threading.Thread(target=self._prefetch_ssh_config, daemon=True)
                        self._prefetch.start()
                    if node is not None and stage[node] == "SSH ready":
                        self._start_script(node)
        except subprocess.CalledProcessError as exc:
            self.error = (exc.returncode, tail)
        except OSError as exc:
            self.error = (-1, [str(exc)])
        finally:
            self.past_creation.set()
        if self.error is not None:
            self._halt()        # vagrant up failed: the scripts that run have no lab to finish
        else:
            # A running lab: Vagrant reports no boot, and the scripts run now.
            for node in self.hv.nodes:
                self._start_script(node)
        for thread in list(self._scripts.values()):
            thread.join()
        if self._prefetch is not None:
            self._prefetch.join()
        if self.failed and self.stopped_for is None:
            for peer in self.peers:
                peer.kill(because=self.hv.name)

    def _prefetch_ssh_config(self) -> None:
        """How to reach the guests, asked once each has its address (while they boot):
        `vagrant ssh-config` costs ~3-4 s of Ruby and libvirt calls. It must not take the
        machine locks that `up` takes meanwhile (labgen/vagrant/command.py, ssh_config). On failure
        it is asked again when a node needs it."""
        try:
            with self._config_lock:
                _fetch_ssh_config(self.project)
        except (ProviderError, OSError, subprocess.SubprocessError):
            pass

    def _target(self, node: str) -> SSHTarget:
        from labgen.nodes.ssh import parse_ssh_config
        if self._prefetch is not None:
            self._prefetch.join()
        targets: dict[str, SSHTarget] = {}
        with self._config_lock:
            cache = _ssh_config_cache(self.project)
            try:
                if cache.exists():
                    targets = parse_ssh_config(cache.read_text())
                if node not in targets:
                    targets = parse_ssh_config(_fetch_ssh_config(self.project))
            except ValueError as exc:       # no Host block at all
                raise ProviderError(f"{node}: vagrant ssh-config gave no address: {exc}") from exc
        if node not in targets:
            raise ProviderError(f"{node}: vagrant ssh-config gave no address for it")
        return targets[node]

    def _start_script(self, node: str) -> None:
        if node in self._scripts or self._halted:
            return
        self._scripts[node] = threading.Thread(target=self._script, args=(node,),
                                               name=f"provision-{node}", daemon=True)
        self._scripts[node].start()

    def _script(self, node: str) -> None:
        from labgen.nodes.ssh import SSHRunner
        from labgen.providers.nodescript import provision
        try:
            runner = self._runners[node] = SSHRunner(node, self._target(node))
            self.progress(node, "provisioning")
            took = provision(runner, node, self.scripts[node], self.logs / f"{node}-provision.log")
        except Exception as exc:    # any failure must reach up(), not die with the thread
            if not self._halted:    # else: stopped by another failure, which is the cause
                self.script_errors.append(str(exc) if isinstance(exc, ProviderError)
                                          else f"{node}: provisioning failed: {exc}")
                self._halt()
                for peer in self.peers:
                    peer.kill(because=self.hv.name)
            return
        finally:
            if node in self._runners:
                self._runners[node].close()
        self.progress(node, f"provisioned in {took:.1f} s")

    def kill(self, because: str | None = None) -> None:
        """Stop vagrant and the scripts (Ctrl-C; or a failure of the peer `because`)."""
        if because is not None and self.stopped_for is None:
            self.stopped_for = because
        self._halt()

    def _halt(self) -> None:
        self._halted = True
        if self._proc is not None and self._proc.poll() is None:
            try:        # Vagrant runs in a session of its own: the whole group goes
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for runner in list(self._runners.values()):
            runner.close()      # a running script's channel closes: its run() returns

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join()


def _track(line: str, stage: dict[str, str], progress: Progress) -> str | None:
    """The node whose stage this line of Vagrant's changed, if any."""
    m = _NODE_LINE.match(line.strip())
    if not m:
        return None
    node, text = m.groups()
    for pattern, name in STAGES:
        if pattern.search(text) and stage.get(node) != name:
            stage[node] = name
            progress(node, name)
            return node
    return None


# ---- labs by name: labgen's registry and libvirt's labgen-named objects -----------------------
# Domains labgen-NAME-nodeK, their disks labgen-NAME-nodeK.img / -vdb.qcow2, the underlay
# network labgen-NAME. A box's image (labgen-VAGRANTSLASH-...) matches none of these.
_DOMAIN = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)$")
_VOLUME = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)[.-]")
_NETWORK = re.compile(r"^labgen-([a-z][a-z0-9-]*)$")


def forget_machines(lab_dir: Path, uuids: set[str]) -> list[Path]:
    """Drop Vagrant's record of machines removed behind its back (by prune) from the lab's
    projects: .vagrant/machines/NODE/libvirt, whose `id` names the domain's UUID. Left there,
    Vagrant counts them as live users of their box, and `vagrant box remove` asks their libvirt
    host about them: an error once that host is gone (a split lab's ssh URI). Only those UUIDs."""
    dropped = []
    for id_file in [*lab_dir.glob(".vagrant/machines/*/libvirt/id"),
                    *lab_dir.glob("hosts/*/.vagrant/machines/*/libvirt/id")]:
        try:
            ours = id_file.read_text().strip() in uuids
        except OSError:
            continue
        if ours:
            shutil.rmtree(id_file.parent, ignore_errors=True)
            dropped.append(id_file.parent)
    return dropped


def _volumes(uri: str) -> list[str]:
    lines = _virsh(uri, "vol-list", "default").stdout.splitlines()[2:]
    return [ln.split()[0] for ln in lines if ln.split()]


def registry_dir() -> Path:
    """Where labgen records the VM labs this machine started: root's is the system's, a
    user's (in group libvirt) their own."""
    if is_root():
        return Path("/var/lib/labgen/libvirt")
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "labgen" / "libvirt"


def _registry_file(name: str) -> Path:
    return registry_dir() / f"{name}.json"


def _read_registry(name: str) -> Owner | None:
    try:
        return Owner.from_json(_registry_file(name).read_text())
    except OSError:
        return None


def _write_registry(name: str, owner: Owner) -> None:
    path = _registry_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(owner.to_json() + "\n")
    tmp.replace(path)


def _registry_names() -> list[str]:
    d = registry_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def _note_vagrant(name: str, pid: int) -> None:
    """Remember a `vagrant up` this labgen started (PID and start time), so that a destroy or
    prune after labgen itself was killed can stop it: it would go on creating domains."""
    path = _registry_file(name).with_suffix(".pids")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(f"{pid} {start_ticks(pid)}\n")


def _stop_vagrants(name: str, progress: Progress) -> None:
    """Stop the `vagrant up` runs noted for lab `name` that still run (the same PID and start
    time: never a process that merely reuses the number), with their process groups."""
    path = _registry_file(name).with_suffix(".pids")
    try:
        noted = [tuple(map(int, ln.split())) for ln in path.read_text().splitlines() if len(ln.split()) == 2]
    except (OSError, ValueError):
        return
    alive = [pid for pid, ticks in noted if start_ticks(pid) == ticks]
    for pid in alive:
        progress("lab", f"stopping vagrant (pid {pid}) of an earlier labgen run")
    stop(alive, grace=10, groups=True)
    path.unlink(missing_ok=True)
