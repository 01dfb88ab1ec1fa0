"""What belongs to a VM lab: its hypervisors, each with its Vagrant project and log, its
domains, and the machines Vagrant recorded for it."""
from __future__ import annotations

from pathlib import Path

from labgen.lab.model import Lab
from labgen.providers.libvirt.hypervisors import Hypervisor
from labgen.providers.libvirt.settings import settings_of


def hypervisors(lab: Lab) -> tuple[Hypervisor, ...]:
    """The lab's hypervisors, each with its Vagrant project."""
    return settings_of(lab).hosts


def project_dir(lab_dir: Path, hv: Hypervisor) -> Path:
    return lab_dir / hv.project

def hypervisor_of(lab: Lab, node: str) -> Hypervisor:
    return next(hv for hv in hypervisors(lab) if node in hv.nodes)

def log_path(lab: Lab, lab_dir: Path, hv: Hypervisor) -> Path:
    return lab_dir / "logs" / (f"vagrant-{hv.name}.log" if settings_of(lab).split else "vagrant.log")

def domains(lab: Lab, hv: Hypervisor | None = None) -> list[str]:
    return [f"{lab.domain_prefix}{n}" for n in (hv.nodes if hv else [n.name for n in lab.nodes])]

def machine_ids(lab: Lab, lab_dir: Path) -> dict[str, str]:
    """Domain UUIDs Vagrant recorded for this lab (what makes a domain ours), all hypervisors."""
    ids = {}
    for hv in hypervisors(lab):
        for f in (project_dir(lab_dir, hv) / ".vagrant" / "machines").glob("*/libvirt/id"):
            ids[f.parts[-3]] = f.read_text().strip()
    return ids


def provisioned_mark(project: Path) -> Path:
    """Written once an up of this project provisioned every node: the domains it did it on."""
    return project / ".vagrant" / "labgen-provisioned"


def recorded_domains(project: Path, hv: Hypervisor) -> str | None:
    """'NODE UUID' lines of the domains Vagrant recorded for hv's nodes, None if one has none."""
    files = [project / ".vagrant" / "machines" / n / "libvirt" / "id" for n in hv.nodes]
    if not all(f.is_file() for f in files):
        return None
    return "".join(f"{n} {f.read_text().strip()}\n" for n, f in zip(hv.nodes, files, strict=True))


def running_as_recorded(lab: Lab, lab_dir: Path, hv: Hypervisor) -> bool:
    """Does every node of hv run in the very domain Vagrant recorded for it, one that an
    earlier up booted and provisioned to the end? Then `vagrant up` has nothing to do (it
    spent ~25 s of Ruby and libvirt calls saying so). A guest still booting (an up stopped
    half way) has no mark: Vagrant waits for its SSH."""
    from labgen.providers.libvirt.virsh import virsh
    recorded = recorded_domains(project_dir(lab_dir, hv), hv)
    mark = provisioned_mark(project_dir(lab_dir, hv))
    if recorded is None or not mark.is_file() or mark.read_text() != recorded:
        return False
    res = virsh(hv.uri, "list", "--uuid")
    running = {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}
    return res.returncode == 0 and all(ln.split()[1] in running for ln in recorded.splitlines())
