"""Which links failover cuts and which it only names: from the model alone (redundancy.py)."""
from __future__ import annotations

import pytest

from labgen.errors import InputError
from labgen.failover.redundancy import lab_links, select
from labgen.lab.model import Options
from labgen.lifecycle import build_lab


def lab(nodes: int = 2):
    return build_lab(Options(tunnel="gre", provider="netns", stp="rstp", nodes=nodes))


def test_two_nodes_every_loop_link_is_redundant_and_the_one_tunnel_is_not():
    found = lab_links(lab(2))
    redundant = [ln.key for ln in found if not ln.spof]
    assert redundant == [f"node{k}:{p}" for k in (1, 2) for p in ("b12", "b13", "b23")]
    spof = {ln.key: ln.spof for ln in found if ln.spof}
    assert spof["node1:a1"] == "the only link of namespace A1"
    assert next(ln for ln in found if ln.key == "node1:a1").label == "node1 a1.1 (br2) <-> a1.2 in A1"
    assert spof["node2:b2"] == "the only link of namespace B2"
    # The only tunnel between the two nodes: its loss cuts node2 off (from the root node's br1).
    assert spof["node1:gre-node2"] == "its loss cuts node2 off"
    assert len(found) == 6 + 4 + 1


def test_a_cut_takes_down_both_ends_of_the_veth_pair():
    b12 = next(ln for ln in lab_links(lab(2)) if ln.key == "node2:b12")
    assert b12.ends == (("node2", "b12.1"), ("node2", "b12.2"))
    assert b12.bridges is not None and b12.bridges.a == ("node2", "br2", "b12.1")
    assert not b12.tunnel and b12.label == "node2 b12.1 (br2) <-> b12.2 (br1)"


@pytest.mark.parametrize("nodes", [3, 4, 8])
def test_with_three_or_more_nodes_every_tunnel_of_the_mesh_is_redundant(nodes):
    found = lab_links(lab(nodes))
    tunnels = [ln for ln in found if ln.tunnel]
    assert len(tunnels) == nodes * (nodes - 1) // 2
    assert all(not ln.spof for ln in tunnels)
    assert len([ln for ln in found if ln.spof]) == 2 * nodes        # the namespaces' own veths
    t = next(ln for ln in tunnels if ln.key == "node1:gre-node3")
    assert t.ends == (("node1", "gre-node3"), ("node3", "gre-node1"))


def test_a_link_whose_loss_splits_a_node_is_named_with_the_bridges_it_cuts_off():
    """The model's graph with node2's b12 taken away: br1-b13-br3-b23-br2 is then a chain, so
    losing b13 cuts br3 and br2 off, losing b23 only br2."""
    from labgen.failover import redundancy
    the_lab = lab(2)
    vertices = [(n.name, b) for n in the_lab.nodes for b in the_lab.bridges]
    edges = [ln.bridges for ln in lab_links(the_lab) if ln.bridges and ln.key != "node2:b12"]
    b13 = next(e for e in edges if e.a == ("node2", "br3", "b13.1"))
    assert redundancy._cut_off(vertices, edges, b13) == {("node2", "br2"), ("node2", "br3")}
    b23 = next(e for e in edges if e.a == ("node2", "br3", "b23.1"))
    assert redundancy._cut_off(vertices, edges, b23) == {("node2", "br2")}


def test_link_selection_by_name_or_node_and_name():
    found = lab_links(lab(2))
    assert [ln.key for ln in select(found, ("b12",))] == ["node1:b12", "node2:b12"]
    assert [ln.key for ln in select(found, ("node2:b23", "node2:b23"))] == ["node2:b23"]
    assert select(found, ()) == found
    with pytest.raises(InputError, match="--link b99: no such link in this lab; links: node1:a1"):
        select(found, ("b99",))
