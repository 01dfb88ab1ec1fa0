"""A netns lab by its name alone, what destroy, list and prune share: its namespaces, handle
mounts, processes and owner record on this host, found and removed without its lab directory;
and the shell helpers the provider runs them with."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from labgen.errors import ProviderError
from labgen.lab.model import HANDLE_ROOT, handle_dir, node_netns, underlay_switch
from labgen.providers import Progress
from labgen.system.owner import Owner
from labgen.system.processes import stop

NETNS_DIR = Path("/run/netns")


def sh(*argv: str, check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise ProviderError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def is_mountpoint(path: Path) -> bool:
    return sh("mountpoint", "-q", str(path), check=False).returncode == 0


def unmount_all(path: Path) -> None:
    # A handle can be mounted more than once (a retried create): peel every layer.
    for _ in range(8):
        if not is_mountpoint(path):
            return
        sh("umount", str(path), check=False)


RECORD = "owner.json"       # the lab's Owner, in its handle directory
_NODE_NS = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)$")
_SWITCH_NS = re.compile(r"^labgen-([a-z][a-z0-9-]*)-underlay$")


def read_record(name: str) -> Owner | None:
    try:
        return Owner.from_json((handle_dir(name) / RECORD).read_text())
    except OSError:
        return None


def _netns_entries() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def lab_names() -> set[str]:
    """Every lab name that has a handle directory or a labgen-named namespace here."""
    names = {p.name for p in HANDLE_ROOT.iterdir() if p.is_dir()} if HANDLE_ROOT.is_dir() else set()
    for entry in _netns_entries():
        m = _NODE_NS.match(entry) or _SWITCH_NS.match(entry)
        if m:
            names.add(m.group(1))
    return names


def lab_nodes(name: str, record: Owner | None) -> list[str]:
    """The lab's nodes: those its record names, and any other its namespaces or handles show."""
    nodes = set(record.nodes if record else ())
    nodes |= {m.group(2) for e in _netns_entries() if (m := _NODE_NS.match(e)) and m.group(1) == name}
    h = handle_dir(name)
    if h.is_dir():
        nodes |= {p.stem for p in h.glob("node*.mnt")}
    return sorted(nodes, key=lambda n: int(n[4:]) if n[4:].isdigit() else 0)


def mount_points() -> set[str]:
    """Every mount point of this mount namespace (one read, no process per path)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    # field 5 is the mount point, with spaces and the like escaped as octal
    return {ln.split()[4].encode().decode("unicode_escape") for ln in lines if len(ln.split()) > 4}


def node_up(name: str, node: str, mounts: set[str]) -> bool:
    return (str(NETNS_DIR / node_netns(name, node)) in mounts
            and str(handle_dir(name) / f"{node}.mnt") in mounts)


def _ns_inode(path: Path, mounts: set[str]) -> int | None:
    """The namespace a handle holds (only a mounted handle holds one)."""
    if str(path) not in mounts:
        return None
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _lab_processes(name: str, nodes: list[str]) -> list[int]:
    """Every process that lives in the lab: in a node's network or mount namespace (its OVS
    daemons, a node script a killed labgen left running) or in a namespace inside a node (a
    ping or capture of a killed verify). Found by namespace, never by process name."""
    mounts = mount_points()
    h = handle_dir(name)
    net = {_ns_inode(NETNS_DIR / node_netns(name, n), mounts) for n in nodes}
    net.add(_ns_inode(NETNS_DIR / underlay_switch(name), mounts))
    mnt = {_ns_inode(h / f"{n}.mnt", mounts) for n in nodes}
    for n in nodes:
        if _ns_inode(h / f"{n}.mnt", mounts) is not None:
            inner = sh("nsenter", f"--mount={h / (n + '.mnt')}", "--", "sh", "-c",
                        "stat -L -c %i /run/netns/* 2>/dev/null", check=False).stdout
            net |= {int(tok) for tok in inner.split() if tok.isdigit()}
    net.discard(None)
    mnt.discard(None)
    pids = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            if os.stat(proc / "ns" / "net").st_ino in net or os.stat(proc / "ns" / "mnt").st_ino in mnt:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def lab_resources(name: str, nodes: list[str], mounts: set[str]) -> list[str]:
    """What removing the lab takes away, in words (labgen list, labgen prune)."""
    h = handle_dir(name)
    out = [f"namespace {e}" for e in _netns_entries()
           if (m := _NODE_NS.match(e) or _SWITCH_NS.match(e)) and m.group(1) == name]
    procs = _lab_processes(name, nodes)
    if procs:
        out.append(f"{len(procs)} process{'es' if len(procs) > 1 else ''} (pids {', '.join(map(str, procs))})")
    if h.exists():
        out.append(f"handles {h}" + (" (mounted)" if str(h) in mounts else ""))
    return out


def remove_lab(name: str, nodes: list[str], progress: Progress) -> None:
    """Remove everything of lab `name` on this host, whatever state a killed create or
    destroy left it in. The owner record goes last: a destroy killed part way leaves a lab
    that is still listed, and removed by the next destroy or prune."""
    nodes = sorted(set(nodes) | set(lab_nodes(name, read_record(name))))
    h = handle_dir(name)
    # Again until none is left: a node script that a killed labgen left running may start a
    # daemon between one look and the next.
    for _ in range(10):
        pids = _lab_processes(name, nodes)
        if not pids:
            break
        progress("lab", f"stopping {len(pids)} processes of the lab (Open vSwitch, scripts)")
        stop(pids)
    for node in nodes:
        if is_mountpoint(h / f"{node}.mnt"):
            progress(node, "removing namespaces")
            sh("nsenter", f"--mount={h / (node + '.mnt')}", "--", "ip", "-all", "netns", "delete", check=False)
        for suffix in (".mnt", ".uts"):
            unmount_all(h / f"{node}{suffix}")
            (h / f"{node}{suffix}").unlink(missing_ok=True)
        _del_netns(NETNS_DIR / node_netns(name, node))
    _del_netns(NETNS_DIR / underlay_switch(name))
    unmount_all(h)
    (h / (RECORD + ".tmp")).unlink(missing_ok=True)
    (h / RECORD).unlink(missing_ok=True)
    (h / "owner").unlink(missing_ok=True)     # an older labgen's record
    for d in (h, HANDLE_ROOT):      # the root only when no other lab uses it
        try:
            d.rmdir()
        except OSError:
            pass


def _del_netns(path: Path) -> None:
    unmount_all(path)
    path.unlink(missing_ok=True)
