"""The lab model: every name and address of the article's topology, built and validated here.

Rendering, providers and verification only read a Lab; they never invent a name or an
address. `build_lab(Options, providers)` (build.py) is the one place that checks user input; `Lab.to_dict` /
`Lab.from_dict` are what lab.json holds, so later commands see exactly what was rendered.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from labgen import __version__
from labgen.lab import stp as stp_modes
from labgen.lab import tunnels
from labgen.lab.boxes import Box
from labgen.lab.stp import StpMode
from labgen.lab.tunnels import TunnelKind

DATAPATHS = ("system", "netdev")
MIN_NODES, MAX_NODES = 2, 8
# --timeout of create and verify: seconds spanning tree may take (default: Lab.settle_timeout).
MAX_TIMEOUT = 3600
DEFAULT_UNDERLAY_MTU = 1500
# Where the netns provider keeps a lab's namespace handles (derived names: see Lab).
HANDLE_ROOT = Path("/run/labgen")


def lab_prefix(lab_name: str) -> str:
    """Prefix of every name a lab creates (namespaces, domains, networks): two labs never
    collide."""
    return f"labgen-{lab_name}"


def node_netns(lab_name: str, node: str) -> str:
    """The host's name for an emulated node's network namespace."""
    return f"{lab_prefix(lab_name)}-{node}"


def management_network(lab_name: str) -> str:
    """A VM lab's own management network ('.' is no character of a lab name: never another
    lab's underlay network labgen-NAME)."""
    return f"{lab_prefix(lab_name)}.mgmt"


def underlay_switch(lab_name: str) -> str:
    """The emulated underlay switch's namespace."""
    return f"{lab_prefix(lab_name)}-underlay"


def handle_dir(lab_name: str) -> Path:
    """Where the emulated nodes' namespace handles and the lab's owner record live."""
    return HANDLE_ROOT / lab_name

# A lab name becomes a libvirt network, a domain prefix and part of host namespace names:
# lowercase (Vagrant and libvirt trip over uppercase), no shell metacharacters, short.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")

# The article's three bridges: br1 carries the tunnels, br2/br3 hold the namespaces.
TUNNEL_BRIDGE = "br1"
# Bridge priorities (lower wins; RSTP takes multiples of 4096, the default is 32768).
ROOT_PRIORITY, NODE_ROOT_PRIORITY = "4096", "8192"
BRIDGES = ("br1", "br2", "br3")
# The article's bridge loop: (pair name, bridge of end .1, bridge of end .2).
LOOP = (("b12", "br2", "br1"), ("b13", "br3", "br1"), ("b23", "br3", "br2"))


@dataclass(frozen=True)
class Options:
    """What the user asked for, before validation (CLI flags or a spec)."""

    tunnel: str
    nodes: int = 2
    provider: str = "libvirt"
    box: str | None = None
    datapath: str | None = None
    stp: str = "stp"
    stp_timers: str = "tuned"
    underlay: str = "10.10.10.0/24"
    overlay: str = "192.168.10.0/24"
    underlay_mtu: int | None = None     # default: DEFAULT_UNDERLAY_MTU, less on a lab across hypervisors
    key: int | None = None          # VXLAN VNI or GRE key
    memory: int = 1024
    cpus: int = 1
    libvirt_driver: str = "auto"
    name: str | None = None
    hosts: tuple[str, ...] = ()     # --host "NODE=URI": nodes on other hypervisors (hypervisors.py)
    # The fields the user set (the CLI's flags; the others hold their defaults): a provider
    # refuses one that means nothing to it. Empty when not known (Options built in code).
    given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Veth:
    """A veth pair: end `a` sits on bridge_a; end `b` on bridge_b or inside namespace."""

    a: str
    bridge_a: str
    b: str
    bridge_b: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    address: str        # e.g. 192.168.10.1
    interface: str      # the veth end inside it
    bridge: str


@dataclass(frozen=True)
class Tunnel:
    port: str           # OVS port name on br1
    type: str           # the OVS interface type (tunnels.py)
    remote_node: str
    remote_ip: str


@dataclass(frozen=True)
class Node:
    index: int
    name: str
    underlay_ip: str
    namespaces: tuple[Namespace, ...]
    veths: tuple[Veth, ...]
    tunnels: tuple[Tunnel, ...]

    @property
    def veth_ends(self) -> tuple[str, ...]:
        """Both ends of every veth: each is made on the node itself (a namespace end is
        moved into its namespace afterwards)."""
        return tuple(v.a for v in self.veths) + tuple(v.b for v in self.veths)


class ProviderSettings(Protocol):
    """A provider's own record of a lab (e.g. the VMs' size), kept in lab.json under the
    provider's name. The model holds it without knowing what is in it."""

    @property
    def underlay_mtu(self) -> int | None:
        """The underlay MTU this provider needs by default (None: DEFAULT_UNDERLAY_MTU)."""

    def to_dict(self) -> dict[str, Any]: ...


class LabProvider(Protocol):
    """What the model asks of a provider (labgen/providers: Provider has all of it)."""

    @property
    def name(self) -> str: ...
    @property
    def default_box(self) -> str: ...
    @property
    def datapaths(self) -> tuple[str, ...]: ...

    def validate(self, opts: Options, underlay: ipaddress.IPv4Network, datapath: str) -> None: ...

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> ProviderSettings | None: ...

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> ProviderSettings | None: ...


class Providers(Protocol):
    """The providers there are: handed in by the caller, so the model imports none."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def get(self, name: str) -> LabProvider: ...


@dataclass(frozen=True)
class Lab:
    name: str
    tunnel: str
    key: int | None
    provider: str
    datapath: str
    stp: str
    stp_timers: str
    underlay: str           # network, e.g. 10.10.10.0/24
    underlay_hypervisor_ip: str  # the hypervisor's address on it (libvirt), never a node's
    underlay_mtu: int
    overlay: str
    inner_mtu: int
    bridges: tuple[str, ...]
    tunnel_bridge: str
    nodes: tuple[Node, ...]
    box: Box
    settings: ProviderSettings | None   # the provider's own record; None when it has none
    version: str = field(default=__version__)

    # ---- names of what the lab creates, all derived from the lab name ----------------------
    @property
    def lab_prefix(self) -> str:
        return lab_prefix(self.name)

    @property
    def libvirt_network(self) -> str:
        return self.lab_prefix

    @property
    def management_network(self) -> str:
        return management_network(self.name)

    @property
    def domain_prefix(self) -> str:
        return f"{self.lab_prefix}-"

    def underlay_mac(self, node: str) -> str:
        """The MAC of a node's underlay NIC, set by the Vagrantfile or the netns provider: the
        node script finds a VM's NIC by it (Vagrant leaves that NIC alone), and on the
        userspace datapath tells OVS the other nodes' MACs up front. QEMU's prefix, two bytes
        of the lab name, the node's number: distinct within a lab and, mostly, across labs."""
        import zlib
        h = zlib.crc32(self.name.encode()) & 0xFFFF
        k = [n.name for n in self.nodes].index(node) + 1
        return f"52:54:00:{h >> 8:02x}:{h & 0xFF:02x}:{k:02x}"

    def node_netns(self, node: str) -> str:
        return node_netns(self.name, node)

    @property
    def underlay_switch(self) -> str:
        return underlay_switch(self.name)

    @property
    def handle_dir(self) -> Path:
        return handle_dir(self.name)

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.ip_network(self.underlay).prefixlen

    @property
    def underlay_netmask(self) -> str:
        return str(ipaddress.ip_network(self.underlay).netmask)

    @property
    def overlay_prefixlen(self) -> int:
        return ipaddress.ip_network(self.overlay).prefixlen

    @property
    def mode(self) -> StpMode:
        """The lab's spanning tree mode (labgen/lab/stp.py)."""
        return stp_modes.get(self.stp)

    @property
    def stp_config(self) -> dict[str, str]:
        """OVS Bridge columns that switch loop protection on (applied at bridge creation, and
        again when a running lab is provisioned again): the lab's mode on, every other mode
        off (OVS runs RSTP when both are on, so a lab rendered again from RSTP to STP kept
        RSTP and reported no STP state), its timer set written out."""
        others = {m.enable: "false" for m in stp_modes.MODES.values() if m != self.mode}
        timers = self.mode.tuned if self.stp_timers == "tuned" else self.mode.standard
        return others | {self.mode.enable: "true"} | timers

    @property
    def root_node(self) -> str:
        """The node whose br1 is the root of the lab's spanning tree (bridge_config)."""
        return self.nodes[0].name

    def bridge_config(self, node: str, bridge: str) -> dict[str, str]:
        """OVS Bridge columns for one bridge of one node: loop protection on, and a pinned
        root. node1's br1 is the root of the whole lab and every other node's br1 the root of
        its own bridges until its tunnel comes up, so a tunnel joining changes the root ID
        only, not which ports block: no second round of handshakes (docs/benchmarks.md)."""
        cfg = dict(self.stp_config)
        if bridge == TUNNEL_BRIDGE:
            cfg[self.mode.priority] = ROOT_PRIORITY if node == self.root_node else NODE_ROOT_PRIORITY
        return cfg

    @property
    def hostname_steps_last(self) -> bool:
        """Whether the node script's steps the bridges do not need (hostname, the SSH user's
        linger, the firewall) come at its end. 802.1D: yes. It times a tunnel port from its
        join and a veth port from its carrier (OVS's stp.c) and forwards 2 x forward delay
        later, so those steps run while the timers do (on an emulated VM ~1-1.5 s). RSTP: no,
        they come first: the firewall must be open before the root node's tunnels join
        (tunnels_last), whose first BPDUs must reach every node."""
        return self.mode.hostname_steps_last

    def tunnels_last(self, node: str) -> bool:
        """Whether `node` adds its tunnel ports at the end of its script, once every other
        node's underlay address answers; every other node adds them in its bridges'
        transaction, before it sets that address. RSTP only, root node only.

        OVS's RSTP forwards a designated port that faces an alternate one only 3 ticks after
        the last BPDU it received (docs/benchmarks.md), and a BPDU sent before the far
        tunnel port exists is lost until the next hello (2 s). When the root's tunnels join
        last, every far port exists: the root's first BPDUs change the root on every other
        node, whose ports all send their new information at once, and the whole mesh
        settles in one exchange."""
        return self.mode.root_tunnels_last and node == self.root_node

    @property
    def ns_port_config(self) -> dict[str, str]:
        """OVS Port columns for a bridge port whose far end is a namespace (StpMode.edge_port)."""
        return dict(self.mode.edge_port)

    @property
    def settle_timeout(self) -> float:
        """How long spanning tree may take to converge before verification gives up."""
        return self.mode.settle[self.stp_timers]

    @property
    def kind(self) -> TunnelKind:
        """What this lab's tunnel kind looks like on the wire, its key, its firewall rule."""
        return tunnels.get(self.tunnel)

    @property
    def overhead(self) -> int:
        """Bytes the tunnel adds to an inner frame (= where the inner IPv4 header starts)."""
        return self.kind.overhead(self.key is not None)

    @property
    def max_ping_payload(self) -> int:
        """Largest ICMP payload that fits the inner MTU: minus IPv4 20 and ICMP 8 headers."""
        return self.inner_mtu - 28

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def namespaces(self) -> list[tuple[Node, Namespace]]:
        return [(n, ns) for n in self.nodes for ns in n.namespaces]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "settings":   # under the provider's own name
                if self.settings is not None:
                    d[self.provider] = self.settings.to_dict()
            else:
                d[key] = value
        d["box"] = self.box.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], providers: Providers) -> Lab:
        nodes = tuple(
            Node(
                index=n["index"], name=n["name"], underlay_ip=n["underlay_ip"],
                namespaces=tuple(Namespace(**x) for x in n["namespaces"]),
                veths=tuple(Veth(**x) for x in n["veths"]),
                tunnels=tuple(Tunnel(**x) for x in n["tunnels"]),
            )
            for n in d["nodes"]
        )
        simple = {f.name: d[f.name] for f in fields(cls) if f.name not in ("nodes", "box", "settings")}
        simple["bridges"] = tuple(simple["bridges"])
        settings = providers.get(d["provider"]).read_settings(d, [n.name for n in nodes])
        return cls(**simple, nodes=nodes, box=Box.from_dict(d["box"]), settings=settings)
