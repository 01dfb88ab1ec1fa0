"""The spanning tree as it stands, drawn: topology-live.dot (and .svg when Graphviz is
installed) in the lab directory, from the same state the stp judge reads. Forwarding links
solid, blocked ones dashed and marked, the root bridge marked; under failover the cut link
red and the ports that took over named. Written after verify (the tree read once more when
its stages are done) and by failover after each step."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from labgen.lab.model import Lab
from labgen.nodes.runner import Runner, RunnerError
from labgen.verify.checks import read_bridges
from labgen.verify.spantree import BridgeState, forwarding_links, links, port_state

State = dict[str, dict[str, BridgeState]]
DOT, SVG = "topology-live.dot", "topology-live.svg"


def _q(text: str) -> str:
    return '"' + text.replace('"', r"\"") + '"'


def dot_text(lab: Lab, state: State, step: str, cut: tuple[str, str, str] | None = None,
             took_over: tuple[tuple[str, str, str], ...] = ()) -> str:
    """The picture's Graphviz text. `cut`: one end of the link that is cut; `step`: what the
    picture shows (its title)."""
    fwd = set(forwarding_links(lab, state))
    roots = {br.root_id for n in state.values() for br in n.values()}
    lines = [f"// Lab {lab.name}: the spanning tree as labgen read it ({step}). Render: dot -Tsvg {DOT}",
             f"graph {_q(lab.name)} {{",
             f'  graph [fontname="Helvetica", labelloc=t, label={_q(f"lab {lab.name}, {lab.stp.upper()}: {step}")}];',
             '  node [fontname="Helvetica", fontsize=10, shape=box];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for n in lab.nodes:
        lines.append(f"  subgraph {_q('cluster_' + n.name)} {{")
        lines.append(f"    label={_q(n.name)};")
        for b in lab.bridges:
            br = state.get(n.name, {}).get(b)
            root = br is not None and br.bridge_id is not None and br.bridge_id in roots \
                and br.bridge_id == br.root_id
            lines.append(f"    {_q(n.name + '_' + b)} [label={_q(b + (' (root)' if root else ''))}"
                         + (", penwidth=3" if root else "") + "];")
        lines.append("  }")
    for ln in links(lab):
        pa, pb = port_state(lab, state, ln.a), port_state(lab, state, ln.b)
        label = f"{ln.a[2]} / {ln.b[2]}"
        if cut in (ln.a, ln.b):
            style = 'color=red, style=dotted, label=' + _q(label + " CUT")
        elif ln in fwd:
            took = [e[2] for e in (ln.a, ln.b) if e in took_over]
            style = ("penwidth=2" + (", color=darkgreen" if took else "") + ", label="
                     + _q(label + (f" (took over: {', '.join(took)})" if took else "")))
        else:
            blocked = [e[2] for e, p in ((ln.a, pa), (ln.b, pb)) if p is None or not p.forwarding]
            style = "style=dashed, color=gray, label=" + _q(f"{label} (blocked at {', '.join(blocked)})")
        lines.append(f"  {_q(ln.a[0] + '_' + ln.a[1])} -- {_q(ln.b[0] + '_' + ln.b[1])} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(lab_dir: Path, text: str) -> None:
    """topology-live.dot, and .svg from it when Graphviz is installed (best effort: the
    picture is for people, nothing depends on it)."""
    from labgen.render.svg import finish_svg, start_svg
    try:
        (lab_dir / DOT).write_text(text)
    except OSError:
        return
    proc = start_svg(lab_dir / SVG, text)
    if proc is not None:
        finish_svg(proc, lab_dir / SVG)


def snapshot(lab: Lab, runners: Mapping[str, Runner]) -> State | None:
    """Every node's bridges as OVS reports them now, or None when a node does not answer."""
    state: State = {}
    for n in lab.nodes:
        try:
            bridges = read_bridges(lab, runners[n.name], n.name)
        except RunnerError:
            return None
        if bridges is None:
            return None
        state[n.name] = bridges
    return state


def draw_after_verify(lab: Lab, lab_dir: Path, runners: Mapping[str, Runner]) -> None:
    """The tree as verify leaves it (nothing drawn when a node does not answer)."""
    state = snapshot(lab, runners)
    if state is not None:
        write(lab_dir, dot_text(lab, state, "after verify"))
