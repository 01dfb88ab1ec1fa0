"""The libvirt provider: two (or more) VMs with Vagrant + vagrant-libvirt, driven through
python-vagrant; verification over SSH (paramiko) from `vagrant ssh-config`.

Vagrant's output goes to logs/vagrant.log in the lab dir and is read line by line for
per-node progress; on failure the error shows the last lines and where the logs are.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from ipaddress import IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .. import vagrant as vagrant_cli
from ..errors import HostError, InputError, ProviderError
from ..hostfacts import kvm_usable
from ..model import Lab, LibvirtSettings, Options
from ..vagrant import ENV as VAGRANT_ENV
from . import NodeStatus, Progress

if TYPE_CHECKING:
    import jinja2

    from ..ssh import SSHRunner, SSHTarget

VIRSH = ["virsh", "-c", "qemu:///system"]
# What Vagrant prints -> the stage a node has reached.
STAGES = [
    (re.compile(r"Creating domain|Creating image \(snapshot"), "creating"),
    (re.compile(r"Starting domain"), "booting"),
    (re.compile(r"Waiting for domain to get an IP address"), "waiting for an IP address"),
    (re.compile(r"Waiting for machine to boot"), "waiting for SSH"),
    (re.compile(r"Machine booted and ready"), "SSH ready"),
    (re.compile(r"Configuring and enabling network interfaces"), "configuring the underlay NIC"),
    (re.compile(r"Machine already provisioned|Running provisioner"), "provisioning"),
    (re.compile(r"labgen\[node\d+\]: provisioned"), "provisioned"),
]
_NODE_LINE = re.compile(r"^(?:==> )?(node\d+): (.*)$")
TAIL = 12


def _settings(lab: Lab) -> LibvirtSettings:
    if lab.libvirt is None:
        raise ProviderError(f"lab {lab.name} has no libvirt settings: render it again")
    return lab.libvirt


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=60)


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
    persist_hostname: ClassVar[bool] = True      # VMs keep their hostname across reboots

    # ---- the model's questions ------------------------------------------------------------
    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        if opts.libvirt_driver not in DRIVERS:
            raise InputError(f"unknown libvirt driver {opts.libvirt_driver!r}: use {' or '.join(DRIVERS)}")
        if opts.memory < MIN_MEMORY_MB:
            raise InputError(f"--memory {opts.memory} MiB is too small for a node running Open "
                             f"vSwitch: use at least {MIN_MEMORY_MB}")
        if not 1 <= opts.cpus <= 64:
            raise InputError(f"--cpus {opts.cpus} is out of range: use 1 to 64")
        if underlay.overlaps(VAGRANT_MGMT_NET):
            raise InputError(f"underlay {underlay} overlaps vagrant-libvirt's management network "
                             f"{VAGRANT_MGMT_NET}: pick another, e.g. --underlay 10.10.10.0/24")

    def settings(self, opts: Options, kvm_usable: bool | None) -> LibvirtSettings:
        return LibvirtSettings(memory=opts.memory, cpus=opts.cpus,
                               driver=resolve_driver(opts.libvirt_driver, kvm_usable))

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        return {"Vagrantfile": env.get_template("libvirt/Vagrantfile.j2").render(lab=lab)}

    def local_argv(self, lab: Lab, node: str) -> None:
        return None      # the nodes are VMs: exec and capture go over the runner's SSH

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        # VAGRANT_CWD: vagrant finds the lab's Vagrantfile from any directory.
        # -c runs the command with a terminal (vagrant ssh's --tty is on by default).
        return ["env", f"VAGRANT_CWD={lab_dir.resolve()}", "vagrant", "ssh", node, "-c", "sudo -i"]

    def __init__(self) -> None:
        self._ssh: dict[str, SSHTarget] | None = None

    # ---- what belongs to this lab -------------------------------------------------------
    def domains(self, lab: Lab) -> list[str]:
        return [f"{lab.domain_prefix}{n.name}" for n in lab.nodes]

    def machine_ids(self, lab_dir: Path) -> dict[str, str]:
        """Domain UUIDs Vagrant recorded for this lab dir (what makes a domain ours)."""
        ids = {}
        for f in (lab_dir / ".vagrant" / "machines").glob("*/libvirt/id"):
            ids[f.parts[-3]] = f.read_text().strip()
        return ids

    def _existing_domains(self) -> set[str]:
        res = _virsh("list", "--all", "--name")
        return {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}

    def _existing_networks(self) -> set[str]:
        res = _virsh("net-list", "--all", "--name")
        return {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}

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
        from ..hostfacts import DEBIAN_PACKAGES, missing_line, missing_tools
        problems = []
        # What Vagrant, vagrant-libvirt and libvirtd run on this host. libvirtd finds qemu and
        # dnsmasq itself (sbin is on its PATH); labgen never runs those three.
        tools = {cmd: DEBIAN_PACKAGES[cmd] for cmd in
                 ("vagrant", "virsh", "libvirtd", "qemu-system-x86_64", "qemu-img", "dnsmasq")}
        missing = missing_tools(tools, system_dirs=("libvirtd", "qemu-system-x86_64", "dnsmasq"))
        vagrant = shutil.which("vagrant") is not None
        if not vagrant or not self._has_plugin():
            missing.append("vagrant plugin vagrant-libvirt (package vagrant-libvirt)")
        if missing:
            problems.append(missing_line(missing))
        if shutil.which("virsh") and not any(m.startswith("libvirtd ") for m in missing) \
                and _virsh("version").returncode != 0:
            problems.append("libvirtd does not answer at qemu:///system: start it (systemctl start "
                            "libvirtd, or without systemd: virtlogd -d && libvirtd -d) "
                            "and make sure your user may use it (group libvirt, or sudo)")
        if _settings(lab).driver == "kvm" and not kvm_usable():
            problems.append("KVM is not usable on this host: render with --libvirt-driver qemu "
                            "(software emulation, slower) or auto")
        if not problems:
            box = self._box_problem(lab)
            if box:
                problems.append(box)
        return problems

    def _has_plugin(self) -> bool:
        return "vagrant-libvirt" in vagrant_cli.run(["plugin", "list"], timeout=60).stdout

    def _box_problem(self, lab: Lab) -> str | None:
        """Only a box that is not in Vagrant AND has no download source stops the run: one
        with a URL or a Vagrant catalog name is fetched by up() (see host_notes)."""
        from ..boxfetch import is_added, source
        if source(lab.box) is not None or is_added(lab.box.name):
            return None
        if lab.box.build:
            how = f"build it here with: sudo labgen box build {lab.box.build}"
        else:
            how = f"add it with: vagrant box add --name {lab.box.name} --provider libvirt <URL>"
        return f"box {lab.box.name} (libvirt) is not in Vagrant: {how}; or pick another with --box"

    def host_notes(self, lab: Lab) -> list[str]:
        """What is fine but worth knowing before create (for labgen doctor)."""
        from ..boxfetch import missing_note
        notes = []
        if _settings(lab).driver == "qemu":
            notes.append("KVM is not usable here; VMs use software emulation (qemu driver), "
                         "about a minute per boot")
        note = missing_note(lab.box) if shutil.which("vagrant") else None
        return notes + ([note] if note else [])

    def _name_problems(self, lab: Lab, lab_dir: Path) -> list[str]:
        problems = []
        ours = set(self.machine_ids(lab_dir))
        taken = [d for d in self.domains(lab) if d in self._existing_domains()
                 and d.removeprefix(lab.domain_prefix) not in ours]
        if taken:
            problems.append(f"libvirt domain {', '.join(taken)} already exists and is not this lab's: "
                            f"remove it (virsh destroy/undefine) or pass another --name")
        underlay = ip_network(lab.underlay)
        for net in self._existing_networks():
            xml = _virsh("net-dumpxml", net).stdout
            try:
                ips = [e.get("address", "") for e in ET.fromstring(xml).iter("ip") if e.get("address")]
            except ET.ParseError:
                continue
            clash = any(ip_address(a) in underlay for a in ips if ":" not in a)
            if net == lab.libvirt_network and not ours:
                problems.append(f"libvirt network {net} already exists and is not this lab's: "
                                f"remove it (virsh net-destroy {net}; virsh net-undefine {net}) "
                                f"or pass another --name")
            elif clash and net != lab.libvirt_network:
                problems.append(f"libvirt network {net} already uses the underlay {lab.underlay}: "
                                f"pick another --underlay or remove that network")
        return problems

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        if not self.machine_ids(lab_dir) or shutil.which("virsh") is None:
            return False
        return bool(set(self.domains(lab)) & self._existing_domains())

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        import vagrant

        from ..boxfetch import ensure_box
        log_path = lab_dir / "logs" / "vagrant.log"
        log_path.parent.mkdir(exist_ok=True)
        # A box with a URL or catalog name that is not added yet: fetched once, with progress.
        ensure_box(lab.box, lambda message: progress("box", message), log=log_path)
        if _settings(lab).driver == "qemu":
            progress("lab", "software emulation (qemu driver): about a minute per boot")
        self._ssh = None
        (lab_dir / ".vagrant" / "labgen-ssh-config").unlink(missing_ok=True)
        v = vagrant.Vagrant(root=str(lab_dir), quiet_stdout=False, quiet_stderr=False,
                            env={**os.environ, **VAGRANT_ENV},
                            err_cm=lambda: open(lab_dir / "logs" / "vagrant.stderr.log", "a"))
        stage: dict[str, str] = {}
        lines: list[str] = []
        try:
            with open(log_path, "a") as log:
                log.write(f"\n=== labgen up {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                # --provision: a running lab is provisioned again (the scripts change nothing).
                for line in v.up(provider="libvirt", provision=True, stream_output=True):
                    log.write(line)
                    log.flush()
                    lines.append(line.rstrip())
                    self._track(line, stage, progress)
        except subprocess.CalledProcessError as exc:
            raise ProviderError(self._failure(lab, lab_dir, lines, exc.returncode)) from None
        progress("lab", "all nodes provisioned")

    @staticmethod
    def _track(line: str, stage: dict[str, str], progress: Progress) -> None:
        m = _NODE_LINE.match(line.strip())
        if not m:
            return
        node, text = m.groups()
        for pattern, name in STAGES:
            if pattern.search(text) and stage.get(node) != name:
                stage[node] = name
                progress(node, name)
                return

    def _failure(self, lab: Lab, lab_dir: Path, lines: list[str], code: int) -> str:
        err_log = lab_dir / "logs" / "vagrant.stderr.log"
        err_tail = err_log.read_text().strip().splitlines()[-TAIL:] if err_log.exists() else []
        tail = " | ".join((err_tail or lines[-TAIL:])[-6:])
        msg = f"vagrant up failed (exit {code}): {tail} (full log: {lab_dir / 'logs'}/vagrant.log)"
        if any("Waiting for domain to get an IP" in ln for ln in lines[-5:]) or "IP address" in tail:
            msg += f"; the guest never got an address: see the serial consoles {lab_dir / 'logs'}/node*-console.log"
        return msg

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        if (lab_dir / ".vagrant").exists() and shutil.which("vagrant"):
            progress("lab", "vagrant destroy")
            res = vagrant_cli.run(["destroy", "-f"], cwd=lab_dir, timeout=300)
            with open(lab_dir / "logs" / "vagrant.log", "a") as log:
                log.write(res.stdout + res.stderr)
        # Whatever Vagrant left (a crash half way, a network it no longer tracks): by name.
        if shutil.which("virsh"):
            ours = set(self.domains(lab))
            for dom in sorted(ours & self._existing_domains()):
                progress("lab", f"removing leftover domain {dom}")
                _virsh("destroy", dom)
                _virsh("undefine", dom, "--remove-all-storage", "--nvram")
            if lab.libvirt_network in self._existing_networks():
                progress("lab", f"removing network {lab.libvirt_network}")
                _virsh("net-destroy", lab.libvirt_network)
                _virsh("net-undefine", lab.libvirt_network)
            vols = _virsh("vol-list", "default").stdout
            for line in vols.splitlines()[2:]:
                vol = line.split()[0] if line.split() else ""
                if vol.startswith(lab.domain_prefix):
                    progress("lab", f"removing leftover volume {vol}")
                    _virsh("vol-delete", vol, "--pool", "default")
        shutil.rmtree(lab_dir / ".vagrant", ignore_errors=True)
        self._ssh = None

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        # libvirt answers in milliseconds; `vagrant status` takes seconds of Ruby start-up.
        if shutil.which("virsh") is None:
            return [NodeStatus(n.name, "unknown", "virsh is missing") for n in lab.nodes]
        existing = self._existing_domains()
        running = {ln.strip() for ln in _virsh("list", "--name").stdout.splitlines() if ln.strip()}
        ours = self.machine_ids(lab_dir)
        out = []
        for n in lab.nodes:
            dom = f"{lab.domain_prefix}{n.name}"
            if dom not in existing:
                out.append(NodeStatus(n.name, "absent", f"no domain {dom}"))
            elif n.name not in ours:
                out.append(NodeStatus(n.name, "foreign", f"domain {dom} exists but is not this lab's"))
            else:
                out.append(NodeStatus(n.name, "running" if dom in running else "stopped", f"domain {dom}"))
        return out

    def runner(self, lab: Lab, lab_dir: Path, node: str) -> SSHRunner:
        from ..ssh import SSHRunner, parse_ssh_config  # paramiko: only when a node is reached
        if self._ssh is None:
            self._ssh = parse_ssh_config(self._ssh_config(lab_dir))
        if node not in self._ssh:
            raise ProviderError(f"vagrant ssh-config knows no {node}: is the lab up? (labgen up)")
        return SSHRunner(node, self._ssh[node])

    def _ssh_config(self, lab_dir: Path) -> str:
        """`vagrant ssh-config` costs seconds: take it once per up, keep it beside Vagrant's state."""
        cache = lab_dir / ".vagrant" / "labgen-ssh-config"
        ids = list((lab_dir / ".vagrant" / "machines").glob("*/libvirt/id"))
        if cache.exists() and all(cache.stat().st_mtime >= f.stat().st_mtime for f in ids):
            return cache.read_text()
        text = vagrant_cli.ssh_config(lab_dir)
        cache.write_text(text)
        return text
