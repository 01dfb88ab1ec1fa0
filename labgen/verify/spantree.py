"""Loop protection, proven from all nodes' Open vSwitch state together.

Polling port states is not a proof: a bridge with STP switched off reports no ports at all,
and every port it has forwards. So each bridge must have the lab's mode enabled and report
every port; then the bridges and the links between them (the loop veths on each node and the
tunnel ports across nodes, all from the model) form a graph, and the links whose both ends
forward must form a spanning tree: acyclic, and every bridge reaches the root.

State comes from OVS's database (`ovs-vsctl -f json list bridge/port`): ovs-vswitchd writes
each port's role and state there, with full port names (`ovs-appctl stp/show` cuts names
at 10 characters, which makes `vxlan-node2` and `vxlan-node3` the same).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from labgen.lab.model import Lab, Node
from labgen.verify.ovsdb import documents, rows

# Prints one node's bridges and ports as two JSON documents: two commands of ONE ovs-vsctl
# (one read of the database, and one process: on an emulated guest each costs ~0.3-0.5 s,
# and spanning tree is polled until it holds twice in a row).
STATE_COMMAND = ("ovs-vsctl --timeout=5 -f json"
                 " -- --columns=name,stp_enable,rstp_enable,status,rstp_status,ports list bridge"
                 " -- --columns=_uuid,name,status,rstp_status list port")

# ovs-vswitchd advances its 802.1D timers only when its main loop runs, at least once a
# second (stp_wait in ofproto/ofproto-dpif.c of Open vSwitch): a port whose forward delay ran
# out waits for that wake-up, up to a second at each of its two state changes (measured:
# forwarding 8.45-8.67 s after the ports joined, forward delay 4 s). A request on its control
# socket wakes the loop, so each poll asks it something first; the timers then run on time
# (8.0-8.1 s). RSTP ticks once a second whatever wakes it: no request there.
# Best effort: a vswitchd that does not answer shows in the state read after it.
WAKE_COMMAND = "ovs-appctl --timeout=5 version >/dev/null 2>&1"


def state_command(mode: str) -> str:
    """What one poll runs on a node: STATE_COMMAND, after a wake-up for 802.1D."""
    return f"{WAKE_COMMAND}; {STATE_COMMAND}" if mode == "stp" else STATE_COMMAND


# States a port passes through; a port in one of them is still settling.
TRANSITIONAL = {"listening", "learning"}
STABLE_BLOCKED = {"blocking", "discarding", "disabled"}
# A port whose link is down: 802.1D in OVS keeps its role (designated) but it waits for
# nothing; it is not on its way anywhere until its link comes back (failover cuts links).
DOWN = {"disabled"}


@dataclass(frozen=True)
class PortState:
    role: str | None        # root, designated, alternate, backup, disabled; None: not reported
    state: str | None       # forwarding, blocking, discarding, listening, learning, ...

    @property
    def forwarding(self) -> bool:
        return self.state == "forwarding"


@dataclass
class BridgeState:
    node: str
    name: str
    stp_enable: bool
    rstp_enable: bool
    bridge_id: str | None
    root_id: str | None
    ports: dict[str, PortState] = field(default_factory=dict)

    def enabled(self, mode: str) -> bool:
        return self.rstp_enable if mode == "rstp" else self.stp_enable

    def unreported(self) -> list[str]:
        return sorted(p for p, s in self.ports.items() if s.state is None)


def parse_state(node: str, text: str, mode: str, bridges: tuple[str, ...]) -> dict[str, BridgeState]:
    """One node's STATE_COMMAND output -> its loop bridges. Raises ValueError on anything
    that is not the two JSON documents (the caller turns that into failed evidence)."""
    bridges_doc, ports_doc = documents(text, 2)
    port_rows = {r["_uuid"]: r for r in rows(ports_doc)}
    out: dict[str, BridgeState] = {}
    for row in rows(bridges_doc):
        if row["name"] not in bridges:
            continue
        status = row["rstp_status"] if mode == "rstp" else row["status"]
        bridge_id = status.get("rstp_bridge_id" if mode == "rstp" else "stp_bridge_id")
        root_id = status.get("rstp_root_id" if mode == "rstp" else "stp_designated_root")
        br = BridgeState(node, row["name"], row["stp_enable"] is True, row["rstp_enable"] is True,
                         bridge_id, root_id)
        for uuid in row["ports"] if isinstance(row["ports"], list) else [row["ports"]]:
            port = port_rows.get(uuid)
            if port is None or port["name"] == row["name"]:
                continue        # the bridge's own internal port takes no part in the tree
            st = port["rstp_status"] if mode == "rstp" else port["status"]
            role = st.get("rstp_port_role" if mode == "rstp" else "stp_role")
            state = st.get("rstp_port_state" if mode == "rstp" else "stp_state")
            br.ports[port["name"]] = PortState(role and role.lower(), state and state.lower())
        out[br.name] = br
    return out


@dataclass(frozen=True)
class Link:
    """A cable between two bridge ports: a loop veth on one node, or a tunnel across two."""
    a: tuple[str, str, str]     # (node, bridge, port)
    b: tuple[str, str, str]

    def label(self) -> str:
        (na, ba, pa), (nb, bb, pb) = self.a, self.b
        if na == nb:
            return f"{na} {pa} ({ba}) <-> {pb} ({bb})"
        return f"{na} {pa} ({ba}) <-> {nb} {pb} ({bb})"


def model_ports(lab: Lab, node: Node) -> dict[str, list[str]]:
    """{bridge: the ports the model puts on it} on one node: the bridge end of every veth
    (loop veths: both ends), and the tunnel ports on the tunnel bridge. None of them comes or
    goes by itself: a port missing is a fault no wait heals."""
    out: dict[str, list[str]] = {b: [] for b in lab.bridges}
    for v in node.veths:
        out[v.bridge_a].append(v.a)
        if v.bridge_b:
            out[v.bridge_b].append(v.b)
    out[lab.tunnel_bridge] += [t.port for t in node.tunnels]
    return out


def links(lab: Lab) -> list[Link]:
    """Every bridge-to-bridge link of the lab, from the model."""
    out = []
    for node in lab.nodes:
        for v in node.veths:
            if v.bridge_b:
                out.append(Link((node.name, v.bridge_a, v.a), (node.name, v.bridge_b, v.b)))
    port_to = {(n.name, t.remote_node): t.port for n in lab.nodes for t in n.tunnels}
    for node in lab.nodes:
        for t in node.tunnels:
            if node.name < t.remote_node:       # each tunnel once
                out.append(Link((node.name, lab.tunnel_bridge, t.port),
                                (t.remote_node, lab.tunnel_bridge, port_to[(t.remote_node, node.name)])))
    return out


@dataclass
class TreeVerdict:
    settled: bool               # no port is still moving
    is_tree: bool               # forwarding links: acyclic and connected
    problems: list[str]
    root: str | None
    forwarding_links: int

    @property
    def ok(self) -> bool:
        return self.settled and self.is_tree and not self.problems


def port_state(lab: Lab, state: dict[str, dict[str, BridgeState]],
               end: tuple[str, str, str]) -> PortState | None:
    """One end of a link as its traffic sees it (None: not on its bridge): a bridge without
    the lab's mode enabled forwards on every port, whatever it reports."""
    node, bridge, name = end
    br = state.get(node, {}).get(bridge)
    if br is None or name not in br.ports:
        return None
    if not br.enabled(lab.stp):
        return PortState(None, "forwarding")
    return br.ports[name]


def forwarding_links(lab: Lab, state: dict[str, dict[str, BridgeState]],
                     cut: Collection[Link] = ()) -> list[Link]:
    """The links of the model whose both ends forward: what traffic can cross. A link in
    `cut` (failover dropped its traffic) carries nothing whatever its ends report."""
    out = []
    for link in links(lab):
        if link in cut:
            continue
        a, b = port_state(lab, state, link.a), port_state(lab, state, link.b)
        if a is not None and b is not None and a.forwarding and b.forwarding:
            out.append(link)
    return out


def judge_tree(lab: Lab, state: dict[str, dict[str, BridgeState]],
               cut: Collection[Link] = ()) -> TreeVerdict:
    """Are the forwarding links of all nodes together one spanning tree of all bridges?
    A bridge without the lab's mode enabled forwards on every port, so it counts that way
    (that is what its traffic does): the loop it closes is then named.

    `cut`: links whose traffic failover drops (a tunnel cut in the underlay: its ports keep
    their carrier). Such a link is absent from the graph: it carries nothing, so both its
    ends designated and forwarding (neither receives the other's BPDUs) is no loop, and its
    ports, whose state is on its way nowhere useful, are not waited for."""
    mode = lab.stp
    problems: list[str] = []
    vertices = [(n.name, b) for n in lab.nodes for b in lab.bridges]
    missing = [f"{n} {b}" for n, b in vertices if b not in state.get(n, {})]
    if missing:
        return TreeVerdict(False, False, [f"bridge missing: {', '.join(missing)}"], None, 0)

    def port(node: str, bridge: str, name: str) -> PortState | None:
        return port_state(lab, state, (node, bridge, name))

    # Every port must reach its state, a designated port facing an alternate too (its link
    # carries nothing either way, but first echo requests were lost while such ports moved:
    # docs/benchmarks.md, "RSTP: every port waited for"). Only a cut link's ends are not.
    cut_ends = {end for link in cut for end in (link.a, link.b)}
    moving = [f"{n} {b} {p} {s.state}" for n, b in vertices
              for p, s in state[n][b].ports.items()
              if state[n][b].enabled(mode) and (n, b, p) not in cut_ends and (s.state in TRANSITIONAL or (
                  s.role in ("root", "designated") and s.state in STABLE_BLOCKED - DOWN))]
    roots = {state[n][b].root_id for n, b in vertices if state[n][b].enabled(mode)}
    root = next(iter(roots)) if len(roots) == 1 else None
    if len(roots) > 1:
        problems.append(f"the bridges follow {len(roots)} different roots ({', '.join(sorted(map(str, roots)))}): "
                        f"the trees have not merged")

    for n, b in vertices:
        if not state[n][b].enabled(mode):
            problems.append(f"{n} {b} runs no {mode.upper()}: it forwards on every port, "
                            f"nothing stops a loop through it")
    parent = {v: v for v in vertices}

    def find(v: tuple[str, str]) -> tuple[str, str]:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    used = loops = 0
    for link in links(lab):
        if link in cut:
            continue
        pa, pb = port(*link.a), port(*link.b)
        if pa is None or pb is None:
            absent = link.a if pa is None else link.b
            problems.append(f"port {absent[2]} is not on {absent[0]} {absent[1]}: link {link.label()} is cut")
            continue
        if not (pa.forwarding and pb.forwarding):
            continue
        va, vb = link.a[:2], link.b[:2]
        ra, rb = find(va), find(vb)
        if ra == rb:
            problems.append(f"loop: {link.label()} forwards, but both ends are already connected")
            loops += 1
            continue
        parent[ra] = rb
        used += 1
    components: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for v in vertices:
        components.setdefault(find(v), []).append(v)
    if len(components) > 1:
        # The largest part is "the tree"; what is not in it is cut off (ties: the root's part).
        root_v = next((v for v in vertices if state[v[0]][v[1]].bridge_id == root), None)
        main = max(components, key=lambda c: (len(components[c]), root_v in components[c]))
        apart = sorted(f"{n} {b}" for c, vs in components.items() if c != main for n, b in vs)
        problems.append(f"cut off from the other bridges: {', '.join(apart)}")
    is_tree = not loops and used == len(vertices) - 1 and len(components) == 1
    return TreeVerdict(not moving, is_tree, problems + ([f"still settling: {', '.join(moving)}"]
                                                       if moving else []), root, used)


def bridge_problems(lab: Lab, bridges: dict[str, BridgeState]) -> list[str]:
    """One node: the lab's mode on every bridge, every port of the model on its bridge, and
    every port reporting a role and state. A problem ending in " missing" or "=false" does
    not heal by waiting (run_stp_checks stops polling at once)."""
    problems = []
    node = next(iter(bridges.values())).node if bridges else None
    want = model_ports(lab, lab.node(node)) if node is not None else {}
    for name in lab.bridges:
        br = bridges.get(name)
        if br is None:
            problems.append(f"{name} missing")
            continue
        absent = [p for p in want.get(name, []) if p not in br.ports]
        if absent:
            problems.append(f"{name}: port {', '.join(absent)} missing")
        if not br.enabled(lab.stp):
            col = lab.mode.enable
            problems.append(f"{name}: {col}=false")
            continue
        silent = br.unreported()
        if silent:
            problems.append(f"{name}: no {lab.stp.upper()} state for {', '.join(silent)}")
        if not br.ports:
            problems.append(f"{name}: no ports")
    return problems
