"""The netns provider: every node is emulated on this host as a persistent net + mount + uts
namespace with its own Open vSwitch (userspace datapath), and runs the SAME rendered node
script as a VM would. The underlay is a Linux bridge in a small "switch" namespace, so the
host's own network namespace is never touched.

Host-side names come from the model (Lab.host_netns, underlay_switch, handle_dir) and carry
the lab name, so several labs with the same addresses run side by side.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labgen.errors import HostError, InputError, ProviderError
from labgen.lab.model import HANDLE_ROOT, Lab, Node, Options, handle_dir, host_netns, underlay_switch
from labgen.nodes.runner import LocalRunner
from labgen.providers import Found, NodeStatus, Progress
from labgen.providers.nodescript import failure
from labgen.system.hostfacts import DEBIAN_PACKAGES, is_root, missing_line, missing_tools
from labgen.system.owner import Owner
from labgen.system.processes import stop

if TYPE_CHECKING:
    import jinja2

NETNS_DIR = Path("/run/netns")
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
# Directories that hold a node's private state: its inner namespaces and its OVS instance.
PRIVATE_DIRS = ("/run/netns", "/run/openvswitch", "/etc/openvswitch",
                "/var/lib/openvswitch", "/var/log/openvswitch")
# Every command the provider and the node script run on this host, and the one file it
# starts OVS with: labgen tells the Debian package of each (hostfacts.DEBIAN_PACKAGES).
TOOLS = {cmd: DEBIAN_PACKAGES[cmd] for cmd in (
    "ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovsdb-tool", OVS_SCHEMA, "ip", "tcpdump", "ethtool", "ping", "sysctl",
    "unshare", "nsenter", "mountpoint", "mount", "umount")}
SWITCH_BRIDGE = "ul"


def _sh(*argv: str, check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise ProviderError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _is_mountpoint(path: Path) -> bool:
    return _sh("mountpoint", "-q", str(path), check=False).returncode == 0


def _unmount_all(path: Path) -> None:
    # A handle can be mounted more than once (a retried create): peel every layer.
    for _ in range(8):
        if not _is_mountpoint(path):
            return
        _sh("umount", str(path), check=False)


class NetnsProvider:
    name: ClassVar[str] = "netns"
    default_box: ClassVar[str] = "host"
    datapaths: ClassVar[tuple[str, ...]] = ("netdev",)
    owns_system_files: ClassVar[bool] = False  # an emulated node must not touch the host's files
    script_sets_underlay_address: ClassVar[bool] = False   # netdev only: br-phy holds it
    peer_wait: ClassVar[float] = 20.0

    # ---- the model's questions ------------------------------------------------------------
    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        if datapath not in self.datapaths:
            raise InputError("--datapath system needs a kernel Open vSwitch module; the netns "
                             "provider uses the userspace datapath: drop --datapath or use netdev")
        if opts.hosts:
            raise InputError("--host places VMs on libvirt hosts; the netns provider runs every "
                             "node on this machine: drop --host or use --provider libvirt")
        # Options that only size VMs: refused when given, whatever the value (`--memory 1024`
        # means nothing here either).
        vm_only = {"memory": "--memory sets a VM's memory", "cpus": "--cpus sets a VM's vCPUs",
                   "libvirt_driver": "--libvirt-driver picks how libvirt runs the VMs (kvm or qemu)"}
        for field, what in vm_only.items():
            if field in opts.given:
                raise InputError(f"{what}; the netns provider runs no VMs: drop it or use "
                                 f"--provider libvirt")

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> None:
        return None

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> None:
        return None

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        return {}

    # ---- names (all from the model) -----------------------------------------------------
    def netns(self, lab: Lab, node: str) -> str:
        return lab.host_netns(node)

    def switch(self, lab: Lab) -> str:
        return lab.underlay_switch

    def handles(self, lab: Lab) -> Path:
        return lab.handle_dir

    def enter(self, lab: Lab, node: str) -> list[str]:
        h = self.handles(lab)
        return ["nsenter", f"--net={NETNS_DIR / self.netns(lab, node)}",
                f"--mount={h / (node + '.mnt')}", f"--uts={h / (node + '.uts')}", "--"]

    def local_argv(self, lab: Lab, node: str) -> list[str]:
        return self.enter(lab, node)

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        return [*self.enter(lab, node), os.environ.get("SHELL", "/bin/bash")]

    def _enter_mount(self, lab: Lab, node: str) -> list[str]:
        """nsenter into the node's mount namespace only (its own /run/netns, /run/openvswitch)."""
        return ["nsenter", f"--mount={self.handles(lab) / (node + '.mnt')}", "--"]

    def runner(self, lab: Lab, lab_dir: Path, node: str) -> LocalRunner:
        return LocalRunner(node, self.enter(lab, node))

    # ---- contract ------------------------------------------------------------------------
    def host_problems(self, lab: Lab) -> list[str]:
        """One line per problem: root, then every missing package with one apt command."""
        problems = []
        if not is_root():
            problems.append("the netns provider creates namespaces and needs root: run it with sudo")
        missing = missing_tools(TOOLS)
        if missing:
            problems.append(missing_line(missing))
        return problems

    def host_notes(self, lab: Lab) -> list[str]:
        return []

    def check(self, lab: Lab, lab_dir: Path) -> None:
        problems = self.host_problems(lab)
        if problems:
            raise HostError(problems[0])

    # ---- who the lab belongs to (labgen/system/owner.py) -----------------------------------------
    def record(self, lab: Lab) -> Owner | None:
        return _read_record(lab.name)

    def write_record(self, lab: Lab, owner: Owner) -> None:
        """Before anything else of the lab exists: a create killed at any later point leaves
        a lab that `labgen list` can attribute and `labgen destroy` can remove."""
        h = self.handles(lab)
        h.mkdir(parents=True, exist_ok=True)
        tmp = h / (RECORD + ".tmp")
        tmp.write_text(owner.to_json() + "\n")
        os.replace(tmp, h / RECORD)

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        names = [self.switch(lab)] + [self.netns(lab, n.name) for n in lab.nodes]
        return self.handles(lab).exists() or any((NETNS_DIR / n).exists() for n in names)

    def node_running(self, lab: Lab, node: str) -> bool:
        h = self.handles(lab)
        return ((NETNS_DIR / self.netns(lab, node)).exists()
                and _is_mountpoint(h / f"{node}.mnt"))

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        """Each node's script starts as soon as its namespaces exist, while the next node's
        are made: creating them is one process after another, and the second core would
        otherwise idle. A failure waits for the scripts already started (the pool's exit),
        then the caller tears down what was created."""
        self.check(lab, lab_dir)
        self._create_switch(lab, lab_dir, progress)
        with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
            started = []
            for node in lab.nodes:
                self._create_node(lab, node, progress)
                started.append(pool.submit(self._provision, lab, lab_dir, node.name, progress))
            for future in started:
                future.result()

    def _create_switch(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        h = self.handles(lab)
        if not _is_mountpoint(h):
            h.mkdir(parents=True, exist_ok=True)
            # Mount-namespace handles may only be bind-mounted on a private mount.
            _sh("mount", "--bind", str(h), str(h))
            _sh("mount", "--make-private", str(h))

        sw = self.switch(lab)
        if not (NETNS_DIR / sw).exists():
            progress("lab", f"underlay switch {sw} ({lab.underlay})")
            _sh("ip", "netns", "add", sw)
            _sh("ip", "-n", sw, "link", "add", SWITCH_BRIDGE, "mtu", str(lab.underlay_mtu), "type", "bridge")
            _sh("ip", "-n", sw, "link", "set", SWITCH_BRIDGE, "up")

    def _create_node(self, lab: Lab, node: Node, progress: Progress) -> None:
        if not self.node_running(lab, node.name):
            h, sw = self.handles(lab), self.switch(lab)
            progress(node.name, "creating namespaces")
            ns = self.netns(lab, node.name)
            for f in (NETNS_DIR / ns, h / f"{node.name}.mnt", h / f"{node.name}.uts"):
                f.touch()
            # (few processes: 8 nodes are made one after another while scripts run)
            mounts = "; ".join(f"mount -t tmpfs -o mode=0755 tmpfs {d}" for d in PRIVATE_DIRS)
            _sh("unshare", f"--net={NETNS_DIR / ns}", f"--mount={h / (node.name + '.mnt')}",
                f"--uts={h / (node.name + '.uts')}", "--propagation", "private", "--",
                "sh", "-ec", f"mkdir -p {' '.join(PRIVATE_DIRS)}; {mounts}; mount -t sysfs sysfs /sys; "
                             f"echo {node.name} >/proc/sys/kernel/hostname")
            # The underlay cable: eth1 in the node, its peer on the switch's bridge. eth1 takes
            # the model's MAC (the other nodes' scripts know it in advance) and, as a VM's NIC,
            # no address: the node script finds it by its MAC and sets the address itself, after
            # its tunnel ports (the root node waits for that address: Lab.tunnels_last).
            _sh("ip", "link", "add", "eth1", "netns", ns, "address", lab.underlay_mac(node.name),
                "mtu", str(lab.underlay_mtu), "type", "veth",
                "peer", "name", node.name, "netns", sw, "mtu", str(lab.underlay_mtu))
            _sh("ip", "-n", sw, "link", "set", node.name, "master", SWITCH_BRIDGE, "up")
            _sh("ip", "-n", ns, "-batch", "-", input="link set lo up\nlink set eth1 up\n")

    def _provision(self, lab: Lab, lab_dir: Path, node: str, progress: Progress) -> None:
        progress(node, "provisioning")
        script = (lab_dir / "provision" / f"{node}.sh").resolve()
        log = lab_dir / "logs" / f"{node}-provision.log"
        log.parent.mkdir(exist_ok=True)
        started = time.monotonic()
        with open(log, "w") as fh:
            proc = subprocess.run([*self.enter(lab, node), "bash", str(script)],
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=300)
        if proc.returncode != 0:
            raise failure(node, proc.returncode, log, log.read_text())
        progress(node, f"provisioned in {time.monotonic() - started:.1f} s")

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        _remove(lab.name, [n.name for n in lab.nodes], progress)

    # ---- the whole host ---------------------------------------------------------------------
    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        """Every netns lab on this host, found by its names (the record may be gone)."""
        found = []
        for name in sorted(_lab_names()):
            record = _read_record(name)
            nodes = _node_names(name, record)
            mounts = _mounts()
            running = [n for n in nodes if _node_up(name, n, mounts)]
            found.append(Found(name=name, provider=self.name, host="this host", record=record,
                               nodes=tuple(nodes), running=tuple(running),
                               resources=tuple(_resources(name, nodes, mounts))))
        return found

    def remove(self, found: Found, progress: Progress) -> None:
        _remove(found.name, list(found.nodes), progress)

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        result = []
        for node in lab.nodes:
            if not self.node_running(lab, node.name):
                result.append(NodeStatus(node.name, "absent", "no namespaces"))
                continue
            result.append(NodeStatus(node.name, "running", f"netns {self.netns(lab, node.name)}"))
        return result


# ---- a lab by its name alone: what destroy, list and prune share ------------------------------
RECORD = "owner.json"       # the lab's Owner, in its handle directory
_NODE_NS = re.compile(r"^labgen-([a-z][a-z0-9-]*)-(node\d+)$")
_SWITCH_NS = re.compile(r"^labgen-([a-z][a-z0-9-]*)-underlay$")


def _read_record(name: str) -> Owner | None:
    try:
        return Owner.from_json((handle_dir(name) / RECORD).read_text())
    except OSError:
        return None


def _netns_entries() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def _lab_names() -> set[str]:
    """Every lab name that has a handle directory or a labgen-named namespace here."""
    names = {p.name for p in HANDLE_ROOT.iterdir() if p.is_dir()} if HANDLE_ROOT.is_dir() else set()
    for entry in _netns_entries():
        m = _NODE_NS.match(entry) or _SWITCH_NS.match(entry)
        if m:
            names.add(m.group(1))
    return names


def _node_names(name: str, record: Owner | None) -> list[str]:
    """The lab's nodes: those its record names, and any other its namespaces or handles show."""
    nodes = set(record.nodes if record else ())
    nodes |= {m.group(2) for e in _netns_entries() if (m := _NODE_NS.match(e)) and m.group(1) == name}
    h = handle_dir(name)
    if h.is_dir():
        nodes |= {p.stem for p in h.glob("node*.mnt")}
    return sorted(nodes, key=lambda n: int(n[4:]) if n[4:].isdigit() else 0)


def _mounts() -> set[str]:
    """Every mount point of this mount namespace (one read, no process per path)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    # field 5 is the mount point, with spaces and the like escaped as octal
    return {ln.split()[4].encode().decode("unicode_escape") for ln in lines if len(ln.split()) > 4}


def _node_up(name: str, node: str, mounts: set[str]) -> bool:
    return (str(NETNS_DIR / host_netns(name, node)) in mounts
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
    mounts = _mounts()
    h = handle_dir(name)
    net = {_ns_inode(NETNS_DIR / host_netns(name, n), mounts) for n in nodes}
    net.add(_ns_inode(NETNS_DIR / underlay_switch(name), mounts))
    mnt = {_ns_inode(h / f"{n}.mnt", mounts) for n in nodes}
    for n in nodes:
        if _ns_inode(h / f"{n}.mnt", mounts) is not None:
            inner = _sh("nsenter", f"--mount={h / (n + '.mnt')}", "--", "sh", "-c",
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


def _resources(name: str, nodes: list[str], mounts: set[str]) -> list[str]:
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


def _remove(name: str, nodes: list[str], progress: Progress) -> None:
    """Remove everything of lab `name` on this host, whatever state a killed create or
    destroy left it in. The owner record goes last: a destroy killed part way leaves a lab
    that is still listed, and removed by the next destroy or prune."""
    nodes = sorted(set(nodes) | set(_node_names(name, _read_record(name))))
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
        if _is_mountpoint(h / f"{node}.mnt"):
            progress(node, "removing namespaces")
            _sh("nsenter", f"--mount={h / (node + '.mnt')}", "--", "ip", "-all", "netns", "delete", check=False)
        for suffix in (".mnt", ".uts"):
            _unmount_all(h / f"{node}{suffix}")
            (h / f"{node}{suffix}").unlink(missing_ok=True)
        _del_netns(NETNS_DIR / host_netns(name, node))
    _del_netns(NETNS_DIR / underlay_switch(name))
    _unmount_all(h)
    (h / (RECORD + ".tmp")).unlink(missing_ok=True)
    (h / RECORD).unlink(missing_ok=True)
    (h / "owner").unlink(missing_ok=True)     # an older labgen's record
    for d in (h, HANDLE_ROOT):      # the root only when no other lab uses it
        try:
            d.rmdir()
        except OSError:
            pass


def _del_netns(path: Path) -> None:
    _unmount_all(path)
    path.unlink(missing_ok=True)
