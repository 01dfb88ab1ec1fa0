"""Choosing the probe pair from the spanning tree as it stands (treepath.py), which port
took over after a cut, and the stp stage's judge on a lab with a link cut (failover.py):
recorded converged states of a two-node netns lab (tests/data/outputs), edited as a cut
leaves them."""
from __future__ import annotations

import copy

from support import OUTPUTS

from labgen.failover.redundancy import lab_links
from labgen.failover.run import _took_over
from labgen.failover.treepath import path, probe_pair
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.verify.spantree import PortState, forwarding_links, judge_tree, parse_state


def lab(mode: str):
    return build_lab(Options(tunnel="gre" if mode == "rstp" else "vxlan", provider="netns", stp=mode))


def recorded(mode: str):
    the_lab = lab(mode)
    return {n: parse_state(n, (OUTPUTS / f"{mode}-{n}.json").read_text(), mode, the_lab.bridges)
            for n in ("node1", "node2")}


def link(the_lab, key):
    return next(ln for ln in lab_links(the_lab) if ln.key == key)


def blocked_loop_link(the_lab, state, node):
    fwd = forwarding_links(the_lab, state)
    return next(ln for ln in lab_links(the_lab) if ln.node == node and ln.bridges
                and not ln.tunnel and ln.bridges not in fwd)


def cut(state, ln, roles):
    """The state OVS reports once a link's both ends are down: disabled."""
    out = copy.deepcopy(state)
    for node, bridge, port in (ln.bridges.a, ln.bridges.b):
        out[node][bridge].ports[port] = PortState("disabled", "disabled")
    for (node, bridge, port), (role, st) in roles.items():
        out[node][bridge].ports[port] = PortState(role, st)
    return out


def test_a_tree_has_one_path_between_two_bridges():
    the_lab, state = lab("rstp"), recorded("rstp")
    fwd = forwarding_links(the_lab, state)
    assert len(fwd) == 5
    hops = path(fwd, ("node1", "br2"), ("node2", "br3"))
    assert hops is not None and any(h.a[0] != h.b[0] for h in hops)     # through the tunnel
    assert path(fwd, ("node1", "br2"), ("node1", "br2")) == []
    assert path([], ("node1", "br2"), ("node2", "br3")) is None


def test_the_probe_pair_starts_on_the_links_node_and_crosses_it():
    the_lab, state = lab("rstp"), recorded("rstp")
    fwd = forwarding_links(the_lab, state)
    for ln in lab_links(the_lab):
        if ln.spof or ln.tunnel:
            continue
        src, dst, crosses = probe_pair(the_lab, fwd, ln.bridges, ln.node)
        assert src in the_lab.node(ln.node).namespaces
        assert crosses == (ln.bridges in fwd), ln.key
        if crosses:
            dst_node = next(n.name for n in the_lab.nodes if dst in n.namespaces)
            assert ln.bridges in path(fwd, (ln.node, src.bridge), (dst_node, dst.bridge))


def test_a_blocked_link_is_on_no_path_and_gets_a_cross_node_pair():
    the_lab, state = lab("rstp"), recorded("rstp")
    ln = blocked_loop_link(the_lab, state, "node2")
    src, dst, crosses = probe_pair(the_lab, forwarding_links(the_lab, state), ln.bridges, "node2")
    assert not crosses and src.name == "A2" and dst.name == "A1"


def cut_next_to_the_blocked_end(the_lab, before):
    """On node1: the blocked loop link, its blocked end, a forwarding loop link on that end's
    bridge (the one cut), and the state after the cut with the blocked end forwarding as root
    port. Returns (alternate link, blocked end, cut link, state after)."""
    alt = blocked_loop_link(the_lab, before, "node1")
    blocked_end = next(e for e in (alt.bridges.a, alt.bridges.b)
                       if not before[e[0]][e[1]].ports[e[2]].forwarding)
    fwd = forwarding_links(the_lab, before)
    gone = next(ln for ln in lab_links(the_lab) if ln.node == "node1" and ln.bridges in fwd
                and not ln.tunnel and blocked_end[1] in (ln.bridges.a[1], ln.bridges.b[1]))
    return alt, blocked_end, gone, cut(before, gone, {blocked_end: ("root", "forwarding")})


def test_the_port_that_took_over_is_the_blocked_end_that_forwards_after_the_cut():
    the_lab, before = lab("rstp"), recorded("rstp")
    alt, blocked_end, gone, after = cut_next_to_the_blocked_end(the_lab, before)
    assert _took_over(the_lab, before, after) == [blocked_end]
    assert _took_over(the_lab, before, before) == []
    # RSTP: the designated end facing the alternate may itself have been discarding (on its
    # way to forwarding); it forwards after the cut too but took over from nothing.
    other = alt.bridges.b if blocked_end == alt.bridges.a else alt.bridges.a
    waiting = copy.deepcopy(before)
    waiting[other[0]][other[1]].ports[other[2]] = PortState("designated", "discarding")
    assert _took_over(the_lab, waiting, after) == [blocked_end]


def test_the_stp_judge_holds_a_tree_with_a_cut_link_and_its_down_ports_are_not_settling():
    """802.1D in OVS reports a port whose link is down as state disabled with its old role
    (designated): not a port on its way anywhere."""
    the_lab, before = lab("stp"), recorded("stp")
    alt, blocked_end, gone, after = cut_next_to_the_blocked_end(the_lab, before)
    for node, bridge, port in (gone.bridges.a, gone.bridges.b):
        after[node][bridge].ports[port] = PortState("designated", "disabled")
    verdict = judge_tree(the_lab, after)
    assert verdict.ok, verdict.problems
    # The same cut while the port that takes over is still learning: not settled.
    after[blocked_end[0]][blocked_end[1]].ports[blocked_end[2]] = PortState("root", "learning")
    verdict = judge_tree(the_lab, after)
    assert not verdict.ok and any("still settling" in p for p in verdict.problems)


def test_the_live_picture_marks_the_root_the_blocked_link_the_cut_and_the_port_that_took_over():
    from labgen.verify.livetree import dot_text
    the_lab, before = lab("rstp"), recorded("rstp")
    text = dot_text(the_lab, before, "before any cut")
    # (recorded before node1's br1 was pinned as the root: the root is whichever it was)
    (root,) = [(n, b) for n, bridges in before.items() for b, br in bridges.items() if br.bridge_id == br.root_id]
    assert f'"{root[0]}_{root[1]}" [label="{root[1]} (root)", penwidth=3]' in text
    assert text.count("(root)") == 1
    assert text.count("style=dashed") == 2 and text.count("(blocked at ") == 2   # one per node
    assert "CUT" not in text and "took over" not in text
    alt, blocked_end, gone, after = cut_next_to_the_blocked_end(the_lab, before)
    text = dot_text(the_lab, after, f"{gone.key} cut", gone.bridges.a, (blocked_end,))
    assert f'label="{gone.bridges.a[2]} / {gone.bridges.b[2]} CUT"' in text
    assert f"(took over: {blocked_end[2]})" in text and text.count("style=dashed") == 1
