"""Which links of a lab are redundant and which are single points of failure, from the
model alone: the links failover cuts (failover.py) and the ones it only names.

Every bridge-to-bridge link of the model (spantree.links: the loop veths on each node, the
tunnels across nodes) is an edge between two bridges; a link whose loss leaves the bridges
in two parts (a bridge in the graph's sense) is a single point of failure. A namespace's
own veth always is: it is the namespace's only way in."""
from __future__ import annotations

from dataclasses import dataclass

from labgen.errors import InputError
from labgen.lab.model import Lab
from labgen.verify.spantree import Link, links

Vertex = tuple[str, str]        # (node, bridge)


@dataclass(frozen=True)
class LabLink:
    name: str                   # the veth pair's stem (b12, a1) or a tunnel's port on `node`
    node: str                   # the node it is on (a tunnel: the node of its first end)
    ends: tuple[tuple[str, str], ...]   # (node, interface): what a cut takes down
    bridges: Link | None        # the bridge-to-bridge link; None: a namespace's own veth
    spof: str = ""              # why its loss cuts something off ("": it does not)
    where: str = ""             # a namespace's veth: "a1.1 (br2) <-> a1.2 in A1"

    @property
    def key(self) -> str:
        """How --link names it on one node: NODE:NAME."""
        return f"{self.node}:{self.name}"

    @property
    def tunnel(self) -> bool:
        return self.bridges is not None and self.bridges.a[0] != self.bridges.b[0]

    @property
    def label(self) -> str:
        return self.bridges.label() if self.bridges else f"{self.node} {self.where}"


def _stem(veth_end: str) -> str:
    return veth_end.rsplit(".", 1)[0]


def _parts(vertices: list[Vertex], edges: list[Link]) -> list[set[Vertex]]:
    """The connected parts of the bridge graph."""
    parent = {v: v for v in vertices}

    def find(v: Vertex) -> Vertex:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v
    for e in edges:
        parent[find(e.a[:2])] = find(e.b[:2])
    out: dict[Vertex, set[Vertex]] = {}
    for v in vertices:
        out.setdefault(find(v), set()).add(v)
    return list(out.values())


def _cut_off(vertices: list[Vertex], edges: list[Link], lost: Link) -> set[Vertex]:
    """The bridges that losing `lost` cuts off from the root node's br1 (empty: none)."""
    parts = _parts(vertices, [e for e in edges if e != lost])
    if len(parts) == 1:
        return set()
    main = next(p for p in parts if vertices[0] in p)
    return set(vertices) - main


def lab_links(lab: Lab) -> list[LabLink]:
    """Every link of the lab in a stable order (node by node: its namespaces' veths, its loop
    veths; then the tunnels), each marked with why it is a single point of failure."""
    vertices = [(n.name, b) for n in lab.nodes for b in lab.bridges]
    edges = links(lab)
    out = []
    for node in lab.nodes:
        for v in node.veths:
            if v.bridge_b is None:
                out.append(LabLink(_stem(v.a), node.name, ((node.name, v.a),), None,
                                   f"the only link of namespace {v.namespace}",
                                   f"{v.a} ({v.bridge_a}) <-> {v.b} in {v.namespace}"))
    for e in edges:
        cut = _cut_off(vertices, edges, e)
        why = ""
        if cut:
            nodes = sorted({n for n, _ in cut})
            whole = [n for n in nodes if all((n, b) in cut for b in lab.bridges)]
            why = "its loss cuts " + (f"{', '.join(whole)} off" if whole == nodes else
                                      f"{', '.join(f'{n} {b}' for n, b in sorted(cut))} off")
        (na, _, pa), (nb, _, pb) = e.a, e.b
        name = pa if na != nb else _stem(pa)
        out.append(LabLink(name, na, ((na, pa), (nb, pb)), e, why))
    return out


def select(found: list[LabLink], wanted: tuple[str, ...]) -> list[LabLink]:
    """The links --link names: NAME on every node that has it, or NODE:NAME. Every name must
    match a link of the model (InputError lists them)."""
    if not wanted:
        return found
    out = []
    for w in wanted:
        hit = [ln for ln in found if w in (ln.name, ln.key)]
        if not hit:
            raise InputError(f"--link {w}: no such link in this lab; links: "
                             f"{', '.join(ln.key for ln in found)}")
        out += [ln for ln in hit if ln not in out]
    return out
