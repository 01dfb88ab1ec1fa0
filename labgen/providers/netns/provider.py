"""The netns provider: every node is emulated on this host as a persistent net + mount + uts
namespace with its own Open vSwitch (userspace datapath), and runs the SAME rendered node
script as a VM would. The underlay is a Linux bridge in a small "switch" namespace, so the
host's own network namespace is never touched.

Host-side names come from the model (Lab.node_netns, underlay_switch, handle_dir) and carry
the lab name, so several labs with the same addresses run side by side. What finds and
removes a lab by its name alone (list, prune, destroy) is byname.py.
"""
from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labgen.errors import HostError, InputError
from labgen.lab.model import Lab, Node, Options
from labgen.nodes.runner import LocalRunner
from labgen.providers import Found, NodeStatus, Progress
from labgen.providers.netns.byname import (
    NETNS_DIR,
    RECORD,
    is_mountpoint,
    lab_names,
    lab_nodes,
    lab_resources,
    mount_points,
    node_up,
    read_record,
    remove_lab,
    sh,
)
from labgen.providers.nodescript import failure
from labgen.resources import resource_dir
from labgen.system.hostfacts import DEBIAN_PACKAGES, is_root, missing_line, missing_tools
from labgen.system.owner import Owner

if TYPE_CHECKING:
    import jinja2

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


class NetnsProvider:
    name: ClassVar[str] = "netns"
    default_box: ClassVar[str] = "host"
    datapaths: ClassVar[tuple[str, ...]] = ("netdev",)
    owns_system_files: ClassVar[bool] = False  # an emulated node must not touch the host's files
    script_sets_underlay_address: ClassVar[bool] = False   # netdev only: br-phy holds it
    peer_wait: ClassVar[float] = 20.0
    remote_nodes: ClassVar[bool] = False        # every node runs on this host
    stages_apart: ClassVar[bool] = False        # namespaces keep up: tunnel and mtu run together
    capture_wait: ClassVar[float] = 20.0
    templates: ClassVar[Path] = resource_dir("templates") / "netns"

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
        return lab.node_netns(node)

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
        return read_record(lab.name)

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
                and is_mountpoint(h / f"{node}.mnt"))

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
        if not is_mountpoint(h):
            h.mkdir(parents=True, exist_ok=True)
            # Mount-namespace handles may only be bind-mounted on a private mount.
            sh("mount", "--bind", str(h), str(h))
            sh("mount", "--make-private", str(h))

        sw = self.switch(lab)
        if not (NETNS_DIR / sw).exists():
            progress("lab", f"underlay switch {sw} ({lab.underlay})")
            sh("ip", "netns", "add", sw)
            sh("ip", "-n", sw, "link", "add", SWITCH_BRIDGE, "mtu", str(lab.underlay_mtu), "type", "bridge")
            sh("ip", "-n", sw, "link", "set", SWITCH_BRIDGE, "up")

    def _create_node(self, lab: Lab, node: Node, progress: Progress) -> None:
        if not self.node_running(lab, node.name):
            h, sw = self.handles(lab), self.switch(lab)
            progress(node.name, "creating namespaces")
            ns = self.netns(lab, node.name)
            for f in (NETNS_DIR / ns, h / f"{node.name}.mnt", h / f"{node.name}.uts"):
                f.touch()
            # (few processes: 8 nodes are made one after another while scripts run)
            mounts = "; ".join(f"mount -t tmpfs -o mode=0755 tmpfs {d}" for d in PRIVATE_DIRS)
            sh("unshare", f"--net={NETNS_DIR / ns}", f"--mount={h / (node.name + '.mnt')}",
                f"--uts={h / (node.name + '.uts')}", "--propagation", "private", "--",
                "sh", "-ec", f"mkdir -p {' '.join(PRIVATE_DIRS)}; {mounts}; mount -t sysfs sysfs /sys; "
                             f"echo {node.name} >/proc/sys/kernel/hostname")
            # The underlay cable: eth1 in the node, its peer on the switch's bridge. eth1 takes
            # the model's MAC (the other nodes' scripts know it in advance) and, as a VM's NIC,
            # no address: the node script finds it by its MAC and sets the address itself, after
            # its tunnel ports (the root node waits for that address: Lab.tunnels_last).
            sh("ip", "link", "add", "eth1", "netns", ns, "address", lab.underlay_mac(node.name),
                "mtu", str(lab.underlay_mtu), "type", "veth",
                "peer", "name", node.name, "netns", sw, "mtu", str(lab.underlay_mtu))
            sh("ip", "-n", sw, "link", "set", node.name, "master", SWITCH_BRIDGE, "up")
            sh("ip", "-n", ns, "-batch", "-", input="link set lo up\nlink set eth1 up\n")

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
        remove_lab(lab.name, [n.name for n in lab.nodes], progress)

    # ---- the whole host ---------------------------------------------------------------------
    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        """Every netns lab on this host, found by its names (the record may be gone)."""
        found = []
        for name in sorted(lab_names()):
            record = read_record(name)
            nodes = lab_nodes(name, record)
            mounts = mount_points()
            running = [n for n in nodes if node_up(name, n, mounts)]
            found.append(Found(name=name, provider=self.name, host="this host", record=record,
                               nodes=tuple(nodes), running=tuple(running),
                               resources=tuple(lab_resources(name, nodes, mounts))))
        return found

    def remove(self, found: Found, progress: Progress) -> None:
        remove_lab(found.name, list(found.nodes), progress)

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        result = []
        for node in lab.nodes:
            if not self.node_running(lab, node.name):
                result.append(NodeStatus(node.name, "absent", "no namespaces"))
                continue
            result.append(NodeStatus(node.name, "running", f"netns {self.netns(lab, node.name)}"))
        return result
