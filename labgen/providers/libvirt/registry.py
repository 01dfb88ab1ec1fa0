"""labgen's registry of the VM labs this machine started (owner records, the PIDs of their
`vagrant up` runs), and Vagrant's records of machines removed behind its back."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from labgen.providers import Progress
from labgen.system.hostfacts import is_root
from labgen.system.owner import Owner
from labgen.system.processes import start_ticks, stop


def forget_machines(lab_dir: Path, uuids: set[str]) -> list[Path]:
    """Drop Vagrant's record of machines removed behind its back (by prune) from the lab's
    projects: .vagrant/machines/NODE/libvirt, whose `id` names the domain's UUID. Left there,
    Vagrant counts them as live users of their box, and `vagrant box remove` asks their
    hypervisor about them: an error once it is gone (a split lab's ssh URI). Only those UUIDs."""
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


def registry_dir() -> Path:
    """Where labgen records the VM labs this machine started: root's is the system's, a
    user's (in group libvirt) their own."""
    if is_root():
        return Path("/var/lib/labgen/libvirt")
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "labgen" / "libvirt"


def registry_file(name: str) -> Path:
    return registry_dir() / f"{name}.json"


def read_registry(name: str) -> Owner | None:
    try:
        return Owner.from_json(registry_file(name).read_text())
    except OSError:
        return None


def write_registry(name: str, owner: Owner) -> None:
    path = registry_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(owner.to_json() + "\n")
    tmp.replace(path)


def registry_names() -> list[str]:
    d = registry_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def note_vagrant(name: str, pid: int) -> None:
    """Remember a `vagrant up` this labgen started (PID and start time), so that a destroy or
    prune after labgen itself was killed can stop it: it would go on creating domains."""
    path = registry_file(name).with_suffix(".pids")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(f"{pid} {start_ticks(pid)}\n")


def stop_vagrants(name: str, progress: Progress) -> None:
    """Stop the `vagrant up` runs noted for lab `name` that still run (the same PID and start
    time: never a process that merely reuses the number), with their process groups."""
    path = registry_file(name).with_suffix(".pids")
    try:
        noted = [tuple(map(int, ln.split())) for ln in path.read_text().splitlines() if len(ln.split()) == 2]
    except (OSError, ValueError):
        return
    alive = [pid for pid, ticks in noted if start_ticks(pid) == ticks]
    for pid in alive:
        progress("lab", f"stopping vagrant (pid {pid}) of an earlier labgen run")
    stop(alive, grace=10, groups=True)
    path.unlink(missing_ok=True)
