"""The libvirt provider: two (or more) VMs with Vagrant + vagrant-libvirt; verification over
SSH (paramiko) from `vagrant ssh-config`.

A lab runs on one hypervisor or, with --host, across several (labgen/providers/libvirt/hypervisors.py): one
Vagrant project per hypervisor, brought up side by side. Vagrant's output goes to logs/vagrant.log
(logs/vagrant-NAME.log per hypervisor of a lab across hypervisors) and is read line by line for per-node
progress; on failure the error shows the last lines and where the logs are.

This module is the Provider; its jobs are beside it: settings.py (the lab.json record),
project.py (what belongs to a lab), hostchecks.py, bringup.py (vagrant up and the node
scripts), registry.py (labs this machine started), virsh.py (libvirt's command line).
"""
from __future__ import annotations

import shutil
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labgen.errors import HostError, InputError, ProviderError
from labgen.lab.build import node_names
from labgen.lab.model import Lab, Options, lab_prefix, management_network
from labgen.providers import Found, NodeStatus, Progress
from labgen.providers.libvirt import hostchecks, management
from labgen.providers.libvirt.bringup import (
    Bringup,
    drop_kept,
    fetch_ssh_config,
    hand_over,
    ssh_config_cache,
    take_over,
)
from labgen.providers.libvirt.directboot import direct_boot
from labgen.providers.libvirt.hypervisors import LOCAL_URI, Hypervisor, links, plan
from labgen.providers.libvirt.project import (
    domains,
    hypervisor_of,
    hypervisors,
    log_path,
    machine_ids,
    project_dir,
    running_as_recorded,
)
from labgen.providers.libvirt.registry import (
    forget_machines,
    note_vagrant,
    read_registry,
    registry_file,
    registry_names,
    stop_vagrants,
    write_registry,
)
from labgen.providers.libvirt.settings import LibvirtSettings, settings_of
from labgen.providers.libvirt.virsh import (
    DOMAIN,
    NETWORK,
    VOLUME,
    hypervisor_key,
    names,
    on_hypervisor,
    remove_network,
    virsh,
    volumes,
)
from labgen.resources import resource_dir
from labgen.system.hostfacts import fix_kvm_access, is_root, kvm_access_drift, kvm_usable
from labgen.system.owner import Owner
from labgen.vagrant import command as vagrant_cli

if TYPE_CHECKING:
    import jinja2

    from labgen.nodes.ssh import SSHRunner, SSHTarget

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
    peer_wait: ClassVar[float] = 120.0     # VMs boot and provision each at its own pace
    remote_nodes: ClassVar[bool] = True     # --host node2=qemu+ssh://...: a VM on another hypervisor
    stages_apart: ClassVar[bool] = True     # tunnel and mtu at once starve an emulated guest
    capture_wait: ClassVar[float] = 90.0
    templates: ClassVar[Path] = resource_dir("templates") / "libvirt"

    # ---- the model's questions ------------------------------------------------------------
    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        if opts.libvirt_driver not in DRIVERS:
            raise InputError(f"unknown libvirt driver {opts.libvirt_driver!r}: use {' or '.join(DRIVERS)}")
        if opts.memory < MIN_MEMORY_MB:
            raise InputError(f"--memory {opts.memory} MiB is too small for a node running Open "
                             f"vSwitch: use at least {MIN_MEMORY_MB}")
        if opts.memory > 1 << 20:      # 1 TiB; each hypervisor's own size is checked by host_problems
            raise InputError(f"--memory {opts.memory} MiB is out of range: use {MIN_MEMORY_MB} to "
                             f"{1 << 20} MiB per VM")
        if not 1 <= opts.cpus <= 64:
            raise InputError(f"--cpus {opts.cpus} is out of range: use 1 to 64")

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> LibvirtSettings:
        names = node_names(opts.nodes)
        placed = plan(tuple(opts.hosts), names)
        if len(placed) > 1 and (len(placed) > 2 or opts.nodes != 2):
            raise InputError(f"--host puts {opts.nodes} nodes on {len(placed)} libvirt hosts: a lab "
                             f"across hosts has 2 nodes on 2 hosts (their underlay is one point-to-"
                             f"point UDP link): use --nodes 2 and one --host")
        mgmt = management.subnet(lab_name)
        if ip_network(opts.underlay, strict=False).overlaps(mgmt):
            raise InputError(f"underlay {opts.underlay} overlaps {mgmt}, the management network "
                             f"of lab {lab_name} (its subnet follows the lab name): pick another "
                             f"--underlay, e.g. 10.10.10.0/24, or another --name")
        return LibvirtSettings(memory=opts.memory, cpus=opts.cpus,
                               driver=resolve_driver(opts.libvirt_driver, kvm_usable), hosts=placed,
                               links=links(lab_name, placed, {n: k for k, n in enumerate(names, 1)}),
                               management=str(mgmt))

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> LibvirtSettings | None:
        return LibvirtSettings.read(lab_json, nodes)

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        tpl = env.get_template("libvirt/Vagrantfile.j2")
        out = {}
        for hv in hypervisors(lab):
            back = "/".join(".." for _ in Path(hv.project).parts) or "."
            out[str(Path(hv.project) / "Vagrantfile")] = tpl.render(
                lab=lab, hv=hv, lab_dir=back, ssh_dir_env=vagrant_cli.SSH_DIR_ENV,
                boot=direct_boot(lab.box, hv, emulated=settings_of(lab).emulated))
        return out

    def local_argv(self, lab: Lab, node: str) -> None:
        return None      # the nodes are VMs: exec and capture go over the runner's SSH

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        # VAGRANT_CWD: vagrant finds the node's Vagrantfile from any directory.
        # -c runs the command with a terminal (vagrant ssh's --tty is on by default).
        project = project_dir(lab_dir, hypervisor_of(lab, node))
        return ["env", f"VAGRANT_CWD={project.resolve()}", "vagrant", "ssh", node, "-c", "sudo -i"]

    def __init__(self) -> None:
        self._ssh: dict[str, SSHTarget] | None = None

    # ---- the host ----------------------------------------------------------------------------
    def check(self, lab: Lab, lab_dir: Path) -> None:
        hostchecks.check(lab, lab_dir)

    def host_problems(self, lab: Lab) -> list[str]:
        return hostchecks.host_problems(lab)

    def host_notes(self, lab: Lab) -> list[str]:
        return hostchecks.host_notes(lab)

    # ---- the lab -------------------------------------------------------------------------
    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        if not machine_ids(lab, lab_dir) or shutil.which("virsh") is None:
            return False
        return any(set(domains(lab, hv)) & names(virsh(hv.uri, "list", "--all", "--name"))
                   for hv in hypervisors(lab))

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        from labgen.vagrant.boxfetch import ensure_box
        (lab_dir / "logs").mkdir(exist_ok=True)
        # The vagrant up of a create that was killed goes on, holding the machines' locks:
        # an up that resumes the lab stops it first.
        stop_vagrants(lab.name, progress)
        # A box with a URL or catalog name that is not added yet: fetched once, with progress.
        ensure_box(lab.box, lambda message: progress("box", message),
                   log=log_path(lab, lab_dir, hypervisors(lab)[0]))
        if settings_of(lab).emulated:
            progress("lab", "software emulation (qemu driver): about a minute per boot")
        drift = kvm_access_drift()
        if drift and is_root() and any(not hv.remote for hv in hypervisors(lab)):
            fix_kvm_access()    # what udev does at boot where there is one
            progress("lab", f"{drift} (no udev here): set it to group kvm, read-write, "
                            f"else libvirt probes QEMU again on every call")
        if settings_of(lab).management:
            for hv in hypervisors(lab):
                done = management.ensure(hv, lab.management_network, IPv4Network(settings_of(lab).management))
                if done:
                    progress("lab", done)
        self._ssh = None
        scripts = {n.name: lab_dir / "provision" / f"{n.name}.sh" for n in lab.nodes}
        runs = [Bringup(hv, project_dir(lab_dir, hv), log_path(lab, lab_dir, hv), progress,
                         scripts, lab_dir / "logs") for hv in hypervisors(lab)]
        for run in runs:
            run.peers = [r for r in runs if r is not run]
            run.started = lambda pid: note_vagrant(lab.name, pid)
            ssh_config_cache(run.project).unlink(missing_ok=True)
            run.running = running_as_recorded(lab, lab_dir, run.hv)
        # Two URIs may reach ONE libvirtd (the same machine by two names): then one hypervisor
        # after the other up to the domains' start, then side by side, so that its box volume and
        # management network are created once, not raced. Distinct hypervisors start together.
        shared = len({hypervisor_key(hv) for hv in hypervisors(lab)}) < len(runs)
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
            for run in runs:
                run.kill()      # closes the connections kept from the scripts that passed
            raise ProviderError("; ".join(self._failure(lab, lab_dir, r) for r in failed))
        # The scripts' connections, open with a root shell each: the next runner() of a node
        # in this process (create's verify) takes its connection over instead of opening one.
        hand_over(lab_dir, runs)
        progress("lab", "all nodes provisioned")

    def _failure(self, lab: Lab, lab_dir: Path, run: Bringup) -> str:
        if run.script_errors:       # vagrant was stopped for it, if it still ran
            return "; ".join(run.script_errors)
        code, tail = run.error or (0, [])
        where = f" on host {run.hv.name}" if settings_of(lab).split else ""
        msg = f"vagrant up failed{where} (exit {code}): {' | '.join(tail[-6:])} (full log: {run.log})"
        if any("Waiting for domain to get an IP" in ln for ln in tail[-5:]) or "IP address" in " ".join(tail):
            msg += f"; the guest never got an address: see the serial consoles {lab_dir / 'logs'}/node*-console.log"
        return msg

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        stop_vagrants(lab.name, progress)      # a killed labgen's vagrant up holds the machines
        for hv in hypervisors(lab):
            project = project_dir(lab_dir, hv)
            if (project / ".vagrant").exists() and shutil.which("vagrant"):
                progress("lab", f"vagrant destroy{on_hypervisor(hv)}")
                res = vagrant_cli.run(["destroy", "-f"], cwd=project, timeout=300)
                (lab_dir / "logs").mkdir(exist_ok=True)
                with open(log_path(lab, lab_dir, hv), "a") as log:
                    log.write(res.stdout + res.stderr)
        # Whatever Vagrant left (a crash half way, a network it no longer tracks): by name,
        # each hypervisor only its own nodes' (two URIs may reach one libvirtd and one pool).
        for hv in hypervisors(lab):
            if shutil.which("virsh"):
                self._remove_leftovers(lab, hv, progress)
            shutil.rmtree(project_dir(lab_dir, hv) / ".vagrant", ignore_errors=True)
        registry_file(lab.name).with_suffix(".pids").unlink(missing_ok=True)
        registry_file(lab.name).unlink(missing_ok=True)     # last: a killed destroy stays listed
        self._ssh = None
        drop_kept(lab_dir)

    def _remove_leftovers(self, lab: Lab, hv: Hypervisor, progress: Progress) -> None:
        ours = domains(lab, hv)
        mine = read_registry(lab.name)
        for dom in sorted(set(ours) & names(virsh(hv.uri, "list", "--all", "--name"))):
            # A domain of this name whose description names another lab id is someone else's
            # (another machine's lab of the same name on a shared hypervisor): left alone.
            desc = Owner.from_json(virsh(hv.uri, "desc", dom).stdout.strip())
            if desc is not None and mine is not None and desc.id != mine.id:
                progress("lab", f"leaving domain {dom}{on_hypervisor(hv)}: it belongs to {desc.dir} (lab id {desc.id})")
                ours.remove(dom)
                continue
            progress("lab", f"removing leftover domain {dom}{on_hypervisor(hv)}")
            virsh(hv.uri, "destroy", dom)
            virsh(hv.uri, "undefine", dom, "--remove-all-storage", "--nvram")
        for net in ((lab.libvirt_network,) if not settings_of(lab).split else ()) + (lab.management_network,):
            self._remove_network(hv.uri, net, on_hypervisor(hv), progress)
        for vol in volumes(hv.uri):
            # vagrant-libvirt names a domain's disks DOMAIN.img, DOMAIN-vdb.qcow2, ...
            if any(vol.startswith((f"{dom}.", f"{dom}-")) for dom in ours):
                progress("lab", f"removing leftover volume {vol}{on_hypervisor(hv)}")
                virsh(hv.uri, "vol-delete", vol, "--pool", "default")

    @staticmethod
    def _remove_network(uri: str, net: str, on: str, progress: Progress) -> None:
        """One of the lab's networks (underlay, management), once no domain uses it."""
        done = remove_network(uri, net)
        if done == "removed":
            progress("lab", f"removed network {net}{on}")
        elif done == "in use":
            progress("lab", f"leaving network {net}{on}: a domain still uses it")

    # ---- who the lab belongs to (labgen/system/owner.py) -----------------------------------------
    def record(self, lab: Lab) -> Owner | None:
        """labgen's registry on this machine; else the description of one of the lab's
        domains (written from the lab dir's claim when Vagrant defined it), on its hypervisor."""
        record = read_registry(lab.name)
        if record is not None or shutil.which("virsh") is None:
            return record
        for hv in hypervisors(lab):
            existing = names(virsh(hv.uri, "list", "--all", "--name"))
            for dom in domains(lab, hv):
                if dom in existing:
                    found = Owner.from_json(virsh(hv.uri, "desc", dom).stdout.strip())
                    if found is not None:
                        return found
        return None

    def write_record(self, lab: Lab, owner: Owner) -> None:
        write_registry(lab.name, owner)

    # ---- the whole host ---------------------------------------------------------------------
    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        """Every lab with a labgen-named domain, volume or network on this host's libvirt
        (and at uris), or a record in labgen's registry; one entry per lab and hypervisor."""
        found: dict[tuple[str, str], dict[str, Any]] = {}

        def entry(name: str, uri: str) -> dict[str, Any]:
            return found.setdefault((name, uri), {"nodes": set(), "running": set(), "res": [], "desc": None})

        if shutil.which("virsh") is not None:
            for uri in dict.fromkeys((LOCAL_URI, *uris)):
                listed = virsh(uri, "list", "--all", "--name")
                if listed.returncode != 0:
                    if uri != LOCAL_URI:
                        raise HostError(f"libvirt at {uri} does not answer: {vagrant_cli.last_line(listed.stderr)}")
                    continue
                running = names(virsh(uri, "list", "--name"))
                for dom in sorted(names(listed)):
                    m = DOMAIN.match(dom)
                    if m:
                        e = entry(m.group(1), uri)
                        e["nodes"].add(m.group(2))
                        if dom in running:
                            e["running"].add(m.group(2))
                        e["res"].append(f"domain {dom}")
                        if e["desc"] is None:
                            e["desc"] = Owner.from_json(virsh(uri, "desc", dom).stdout.strip())
                for net in sorted(names(virsh(uri, "net-list", "--all", "--name"))):
                    m = NETWORK.match(net)
                    if m:
                        entry(m.group(1), uri)["res"].append(f"network {net}")
                for vol in volumes(uri):
                    m = VOLUME.match(vol)
                    if m:
                        e = entry(m.group(1), uri)
                        e["nodes"].add(m.group(2))
                        e["res"].append(f"volume {vol}")
        for name in registry_names():
            if not any(n == name for n, _ in found):
                entry(name, LOCAL_URI)["res"].append("its record in labgen's registry")
        out = []
        for (name, uri), e in sorted(found.items()):
            record = read_registry(name) or e["desc"]
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
        stop_vagrants(found.name, progress)
        removed: set[str] = set()       # the UUIDs of the domains removed
        if shutil.which("virsh") is not None:
            prefix = lab_prefix(found.name)
            for dom in sorted(names(virsh(uri, "list", "--all", "--name"))):
                if (m := DOMAIN.match(dom)) and m.group(1) == found.name:
                    progress("lab", f"removing domain {dom}{on}")
                    removed.add(virsh(uri, "domuuid", dom).stdout.strip())
                    virsh(uri, "destroy", dom)
                    virsh(uri, "undefine", dom, "--remove-all-storage", "--nvram")
            for vol in volumes(uri):
                if (m := VOLUME.match(vol)) and m.group(1) == found.name:
                    progress("lab", f"removing volume {vol}{on}")
                    virsh(uri, "vol-delete", vol, "--pool", "default")
            for net in (prefix, management_network(found.name)):
                self._remove_network(uri, net, on, progress)
        if found.record is not None and found.record.claimed_by_its_dir():
            forget_machines(Path(found.record.dir), removed - {""})
        registry_file(found.name).with_suffix(".pids").unlink(missing_ok=True)
        registry_file(found.name).unlink(missing_ok=True)

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        # libvirt answers in milliseconds; `vagrant status` takes seconds of Ruby start-up.
        if shutil.which("virsh") is None:
            return [NodeStatus(n.name, "unknown", "virsh is missing") for n in lab.nodes]
        ours = machine_ids(lab, lab_dir)
        out = {}
        for hv in hypervisors(lab):
            listed = virsh(hv.uri, "list", "--all", "--name")
            existing = names(listed)
            running = names(virsh(hv.uri, "list", "--name"))
            where = on_hypervisor(hv)
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
        kept = take_over(lab_dir, node)
        if kept is not None:        # up's connection to it, handed over once
            return kept
        if self._ssh is None:
            self._ssh = {}
            for hv in hypervisors(lab):
                self._ssh |= parse_ssh_config(self._ssh_config(project_dir(lab_dir, hv)))
        if node not in self._ssh:
            raise ProviderError(f"vagrant ssh-config knows no {node}: is the lab up? (labgen up)")
        return SSHRunner(node, self._ssh[node])

    def _ssh_config(self, project: Path) -> str:
        cache = ssh_config_cache(project)
        ids = list((project / ".vagrant" / "machines").glob("*/libvirt/id"))
        if cache.exists() and all(cache.stat().st_mtime >= f.stat().st_mtime for f in ids):
            return cache.read_text()
        return fetch_ssh_config(project)


