"""Paths through the spanning tree as it stands: which links a frame between two namespaces
crosses, and so which pair of namespaces a failover probe stream should run between to
cross the link being cut. Pure: the forwarding links come from spantree.forwarding_links."""
from __future__ import annotations

from collections import deque

from labgen.lab.model import Lab, Namespace
from labgen.verify.spantree import Link

Vertex = tuple[str, str]        # (node, bridge)


def path(links: list[Link], start: Vertex, goal: Vertex) -> list[Link] | None:
    """The links from bridge `start` to bridge `goal` over `links` (a tree: one path), or
    None when they are not connected."""
    nbrs: dict[Vertex, list[tuple[Vertex, Link]]] = {}
    for ln in links:
        nbrs.setdefault(ln.a[:2], []).append((ln.b[:2], ln))
        nbrs.setdefault(ln.b[:2], []).append((ln.a[:2], ln))
    came: dict[Vertex, tuple[Vertex, Link] | None] = {start: None}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        if v == goal:
            out = []
            while (step := came[v]) is not None:
                v, ln = step
                out.append(ln)
            return out[::-1]
        for w, ln in nbrs.get(v, []):
            if w not in came:
                came[w] = (v, ln)
                todo.append(w)
    return None


def probe_pair(lab: Lab, forwarding: list[Link], cut: Link, node: str) -> tuple[Namespace, Namespace, bool]:
    """(source, destination, crosses) for the probe stream of a cut: the source on `node`
    (the node that timestamps the cut, so one clock times both), the destination anywhere,
    the first pair whose path crosses `cut` (a destination on another node first: the
    overlay's own traffic). A link that forwards nothing (blocked) is on no path: then the
    source's first cross-node pair, and crosses=False."""
    sources = [ns for ns in lab.node(node).namespaces]
    others = [ns for n in lab.nodes if n.name != node for ns in n.namespaces]
    local = [ns for ns in lab.node(node).namespaces]
    for src in sources:
        for dst in others + [d for d in local if d is not src]:
            found = path(forwarding, (node, src.bridge), (_node_of(lab, dst), dst.bridge))
            if found and cut in found:
                return src, dst, True
    return sources[0], (others or local[1:])[0], False


def _node_of(lab: Lab, ns: Namespace) -> str:
    return next(n.name for n in lab.nodes if ns in n.namespaces)
