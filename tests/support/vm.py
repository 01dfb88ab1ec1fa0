"""For the VM end-to-end tests: what libvirt holds of a lab, and the firewalls inside the
guests."""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from labgen.system.processes import start_ticks
from labgen.vagrant import command as vagrant
from support import bounds
from support.cli import labgen, labgen_started
from support.labs import kill_at

EMPTY = {"domains": [], "networks": [], "volumes": []}


def libvirt_names(prefix: str) -> dict[str, list[str]]:
    """The libvirt domains, networks and volumes whose names start with prefix."""
    def names(*args: str) -> list[str]:
        out = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                             text=True).stdout
        return [ln.split()[0] for ln in out.splitlines() if ln.strip().startswith(prefix)]
    return {"domains": names("list", "--all", "--name"), "networks": names("net-list", "--all", "--name"),
            "volumes": names("vol-list", "default")}


def noted_vagrants(name: str) -> list[tuple[int, int]]:
    """The vagrant runs labgen noted for the lab (PID, start time) in its registry."""
    from labgen.providers.libvirt.registry import registry_dir
    f = registry_dir() / f"{name}.pids"
    return [tuple(map(int, ln.split())) for ln in f.read_text().splitlines()] if f.exists() else []


def running(vagrants: list[tuple[int, int]]) -> bool:
    """Does any of those vagrant runs still run (the same PID with the same start time)?"""
    return any(start_ticks(pid) == ticks for pid, ticks in vagrants)


def killed_at(name: str, marker: str, *args: str) -> list[tuple[int, int]]:
    """`labgen ARGS` killed alone with SIGKILL once its progress reaches marker: its vagrant up
    goes on by itself, as when a CI job's main process dies, and that is what the clean-up
    must stop. Returns the vagrant runs labgen noted for lab `name` (one still running)."""
    proc = labgen_started(*args)
    try:
        kill_at(proc, marker, timeout=bounds.VM_CREATE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    vagrants = noted_vagrants(name)
    assert running(vagrants), vagrants
    return vagrants


# Networks the VM tests define themselves (not labgen-named): a killed run may leave them.
TEST_NETWORKS = ("someone-else",)


def sweep(name: str) -> list[str]:
    """Before a VM test starts its lab: remove what a killed earlier run left of it (labgen's
    own listing and removal: through its directory when that still holds it, by name when
    not), and the networks the tests define. Returns what was removed, for the log."""
    import json
    removed = []
    labs = json.loads(labgen("list", "--json", timeout=120).stdout)["labs"]
    for lab in labs:
        if lab["name"] != name or lab["provider"] != "libvirt":
            continue
        if lab["dir_exists"] and lab["state"] != "orphaned":
            proc = labgen("destroy", lab["dir"], timeout=bounds.VM_DESTROY)
        else:
            proc = labgen("destroy", "--name", name, "--provider", "libvirt", timeout=bounds.VM_DESTROY)
        assert proc.returncode == 0, proc.stderr
        removed.append(f"lab {name} ({lab['state']}, {lab['dir']}): {', '.join(lab['resources'])}")
    virsh = ["virsh", "-c", "qemu:///system"]
    for net in TEST_NETWORKS:
        if net in libvirt_names(net)["networks"]:
            subprocess.run([*virsh, "net-destroy", net], capture_output=True)
            subprocess.run([*virsh, "net-undefine", net], capture_output=True)
            removed.append(f"network {net}")
    if removed:
        print(f"swept before the test: {'; '.join(removed)}")
    assert libvirt_names(f"labgen-{name}-") == EMPTY and libvirt_names(f"labgen-{name}")["networks"] == []
    return removed


@contextlib.contextmanager
def vagrant_machine_locks(lab_dir) -> Iterator[int]:
    """Hold the lock of each of the lab's machines in the user's Vagrant machine index, as
    Vagrant takes it while a command reads a machine's state (flock on
    VAGRANT_HOME/data/machine-index/UUID.lock); yields how many are held."""
    index = vagrant.user_home() / "data" / "machine-index"
    held = []
    try:
        for uuid in Path(lab_dir).glob("**/.vagrant/machines/*/libvirt/index_uuid"):
            lock = index / f"{uuid.read_text().strip()}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT)
            held.append((fd, lock))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield len(held)
    finally:
        for fd, lock in held:
            os.close(fd)
            lock.unlink(missing_ok=True)     # as Vagrant does when it lets go


# ---- firewalls inside the guests --------------------------------------------------------
# The labgen/debian12 box boots with firewalld active (default zone rejects all but SSH and
# DHCPv6), as CentOS does. A test swaps it for an iptables INPUT policy of DROP that lets in
# only what a server keeps open: loopback, SSH and ICMP. No ESTABLISHED rule, so a tunnel
# flow admitted earlier is not let in by its conntrack entry.
IPTABLES_DROP = " && ".join([
    "systemctl stop firewalld", "iptables -P INPUT DROP", "iptables -A INPUT -i lo -j ACCEPT",
    "iptables -A INPUT -p tcp --dport 22 -j ACCEPT", "iptables -A INPUT -p icmp -j ACCEPT",
])


def on_node(lab_dir, node: str, cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell command as root on a VM node, through labgen exec (SSH)."""
    return labgen("exec", node, "--dir", str(lab_dir), "--", "sh", "-c", cmd, timeout=timeout)


def forget_tunnel_flows(lab_dir, node: str, kind) -> None:
    """Drop the conntrack entries of the tunnel on node, so only the rules decide again."""
    match = f"-p udp --dport {kind.udp_port}" if kind.udp_port else f"-p {kind.name}"
    on_node(lab_dir, node, f"conntrack -D {match} >/dev/null 2>&1 || true")


def firewalld_rules(lab_dir, node: str) -> dict[str, str]:
    """What firewalld admits on node: state, rich rules, and the broad openings labgen must
    never add (ports, protocols), runtime and permanent. One login and three firewall-cmd
    runs (a Python program: seconds each on an emulated guest)."""
    cmd = ("firewall-cmd --state; echo @@; firewall-cmd --list-all; echo @@; "
           "firewall-cmd --permanent --list-rich-rules")
    # firewall-cmd asks firewalld over D-Bus; once (CI run G) all three answered nothing at all
    # on a loaded machine, not even "not running": asked again, at most three times, and what
    # they said on stderr is kept for the failure.
    errors = []
    for _ in range(3):
        proc = on_node(lab_dir, node, cmd)
        state, listing, permanent = (part.strip() for part in (proc.stdout + "@@@@").split("@@")[:3])
        if state:
            break
        errors.append(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    else:
        raise AssertionError(f"{node}: firewall-cmd said nothing three times: {errors}")
    found = {"state": state, "rich": "", "ports": "", "protocols": "", "permanent": permanent}
    lines = listing.splitlines()
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(":")
        if key in ("ports", "protocols"):
            found[key] = value.strip()
        elif key == "rich rules":
            found["rich"] = "\n".join(ln.strip() for ln in lines[i + 1:] if ln.strip())
    return found


def back_to_firewalld(lab_dir, node: str) -> None:
    """Undo IPTABLES_DROP: the INPUT chain open and empty again, firewalld running (with its
    permanent rules) as the box boots it."""
    cmd = "iptables -P INPUT ACCEPT && iptables -F INPUT && systemctl start firewalld && firewall-cmd --state"
    proc = on_node(lab_dir, node, cmd)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("running"), proc.stdout + proc.stderr


def root_node(lab_dir, nodes=("node1", "node2")) -> str:
    """The node holding the spanning tree's root bridge: blocking the tunnel INTO it stops
    only data (the root hears no BPDUs from the others), so the overlay stage is what fails."""
    cmd = ("for b in br1 br2 br3; do echo $(ovs-vsctl get bridge $b status:stp_bridge_id) "
           "$(ovs-vsctl get bridge $b status:stp_designated_root); done")
    for node in nodes:
        for line in on_node(lab_dir, node, cmd).stdout.splitlines():
            ids = line.replace('"', "").split()
            if len(ids) == 2 and ids[0] == ids[1]:
                return node
    raise AssertionError("no node holds the root bridge")


def fails_at_overlay_naming(proc, node: str, firewall: str, kind) -> None:
    """verify --json failed at the overlay stage only (every cross-node ping unanswered) and
    its one finding names the node, the firewall and the tunnel it does not admit."""
    import json
    assert proc.returncode == 1, proc.stdout[-3000:]
    bad = [c for c in json.loads(proc.stdout)["checks"] if c["status"] in ("failed", "error")]
    assert {c["stage"] for c in bad} == {"overlay"}, bad
    assert all("across" in c["name"] and c["evidence"].startswith("no reply") for c in bad), bad
    where = "active zone" if firewall == "firewalld" else "INPUT chain (not wide open)"
    findings = json.loads(proc.stdout)["findings"]
    assert findings == [f"{node}: {firewall} has no rule in its {where} admitting {kind.label} "
                        f"from 10.10.10.0/24: run labgen up to add it (never switch the firewall off)"], findings
