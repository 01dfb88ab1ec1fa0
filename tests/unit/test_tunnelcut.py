"""Tunnel cuts (failover/tunnelcut.py, failover/cuts.py's TunnelCut): the classic BPF program
that drops a tunnel's underlay traffic, run here by a small interpreter on frames built
byte by byte; the commands that install and remove it (exactly what they added); and the
tree judged while a tunnel is cut (spantree.judge_tree's `cut`): absent, not a loop, its
ports not waited for. Three-node labs from the model, states built as the cut leaves them."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from labgen.failover import tunnelcut
from labgen.failover.cuts import CutError, TunnelCut
from labgen.failover.redundancy import lab_links
from labgen.failover.run import _took_over
from labgen.lab import tunnels
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.nodes.runner import Result
from labgen.verify.spantree import BridgeState, PortState, forwarding_links, judge_tree, links

REMOTE, OTHER, LOCAL = "10.0.0.3", "10.0.0.2", "10.0.0.1"


# ---- the program --------------------------------------------------------------------------
def run_bpf(program, frame: bytes) -> int:
    """A classic BPF interpreter for the instructions drop_program uses (out-of-range loads
    end the program with 0, as the kernel does)."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        try:
            if code == tunnelcut.LD_H_ABS:
                a = struct.unpack_from("!H", frame, k)[0]
            elif code == tunnelcut.LD_W_ABS:
                a = struct.unpack_from("!I", frame, k)[0]
            elif code == tunnelcut.LD_B_ABS:
                a = frame[k]
            elif code == tunnelcut.LDX_B_MSH:
                x = 4 * (frame[k] & 0xF)
            elif code == tunnelcut.LD_H_IND:
                a = struct.unpack_from("!H", frame, x + k)[0]
            elif code == tunnelcut.JEQ_K:
                pc += jt if a == k else jf
            elif code == tunnelcut.RET_K:
                return k
            else:
                raise AssertionError(f"opcode {code:#x} not interpreted")
        except (struct.error, IndexError):
            return 0


def frame(dst: str, proto: int, dport: int = 0, ihl: int = 5, ethertype: int = 0x0800) -> bytes:
    eth = bytes(6) + bytes(6) + struct.pack("!H", ethertype)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 * 4, 0, 0x4000, 64, proto, 0,
                     ipaddress.IPv4Address(LOCAL).packed, ipaddress.IPv4Address(dst).packed)
    ip += bytes(4 * ihl - 20)                       # options
    l4 = struct.pack("!HHHH", 54321, dport, 8, 0) if proto == 17 else struct.pack("!HH", 0, 0x6558)
    return eth + ip + l4 + bytes(40)


DROP, UNSPEC = tunnelcut.TC_ACT_STOLEN, tunnelcut.TC_ACT_UNSPEC


@pytest.mark.parametrize("kind", tunnels.NAMES)
def test_the_program_drops_exactly_the_tunnels_traffic_to_the_remote(kind):
    k = tunnels.get(kind)
    prog = tunnelcut.drop_program(REMOTE, k)
    own = frame(REMOTE, k.ip_proto, k.udp_port or 0)
    assert run_bpf(prog, own) == DROP
    assert run_bpf(prog, frame(REMOTE, k.ip_proto, k.udp_port or 0, ihl=7)) == DROP    # IP options
    assert run_bpf(prog, frame(OTHER, k.ip_proto, k.udp_port or 0)) == UNSPEC          # another node
    assert run_bpf(prog, frame(REMOTE, 6)) == UNSPEC                                   # not the tunnel
    assert run_bpf(prog, frame(REMOTE, 1)) == UNSPEC                                   # ICMP
    assert run_bpf(prog, own[:12] + struct.pack("!H", 0x0806) + own[14:]) == UNSPEC   # ARP
    if k.udp_port:
        assert run_bpf(prog, frame(REMOTE, 17, 53)) == UNSPEC                          # other UDP
    else:
        assert run_bpf(prog, frame(REMOTE, 17, 4789)) == UNSPEC
    # Every jump lands inside the program; it ends in the two verdicts.
    assert prog[-2:] == [(tunnelcut.RET_K, 0, 0, DROP), (tunnelcut.RET_K, 0, 0, UNSPEC)]
    for i, (code, jt, jf, _) in enumerate(prog):
        if code == tunnelcut.JEQ_K:
            assert i + 1 + jf == len(prog) - 1 and jt == 0


def test_bytecode_is_what_tc_reads():
    prog = tunnelcut.drop_program(REMOTE, tunnels.get("gre"))
    text = tunnelcut.bytecode(prog)
    count, *insns = text.split(",")
    assert int(count) == len(prog) == len(insns)
    assert insns[3] == f"21 0 3 {int(ipaddress.IPv4Address(REMOTE))}"
    assert insns[-1] == "6 0 0 4294967295"


# ---- the commands ---------------------------------------------------------------------------
def test_the_cut_adds_its_filter_on_the_recorded_nic_and_says_whether_it_added_clsact():
    cmd = tunnelcut.cut_command(tunnelcut.End("node1", REMOTE), tunnels.get("vxlan"))
    assert "external_ids:labgen-underlay-nic" in cmd and "eth1" not in cmd
    assert f"egress pref {tunnelcut.PREF} protocol all bpf bytecode '" in cmd and cmd.rstrip().endswith('echo "$q"')
    assert " da " in cmd and "flower" not in cmd and "action drop" not in cmd
    # A failed filter removes a clsact the cut itself added, and nothing else.
    assert f'[ $q = {tunnelcut.ADDED} ] && tc qdisc del dev "$nic" clsact' in cmd
    assert cmd.index("t=$(date +%s.%N)") < cmd.index("tc filter add")
    assert tunnelcut.parse_cut("1764950000.123\nclsact=added\n") == (1764950000.123, True)
    assert tunnelcut.parse_cut("1764950000.5\nclsact=found") == (1764950000.5, False)
    with pytest.raises(ValueError):
        tunnelcut.parse_cut("Error: ...")


def test_the_restore_deletes_its_filter_and_clsact_only_if_the_cut_added_it():
    kept = tunnelcut.restore_command(False)
    assert f"tc filter del dev \"$nic\" egress pref {tunnelcut.PREF}" in kept and "qdisc del" not in kept
    assert 'tc qdisc del dev "$nic" clsact' in tunnelcut.restore_command(True)
    assert tunnelcut.parse_time("x\n1764950001.25\n") == 1764950001.25


def three(mode: str = "rstp", tunnel: str = "gre"):
    return build_lab(Options(tunnel=tunnel, provider="netns", stp=mode, nodes=3))


class FakeRunner:
    """Answers cut and restore commands like a node; `fail` makes the cut fail."""
    timeout_scale = 1.0

    def __init__(self, node: str, log: list, clsact: bool = False, fail: bool = False):
        self.node, self.log, self.clsact, self.fail = node, log, clsact, fail

    def run(self, command: str, timeout: float = 30.0) -> Result:
        self.log.append((self.node, command))
        if "tc filter add" in command:
            if self.fail:
                return Result(command, 1, "", "Error: cls_bpf: no such module")
            return Result(command, 0, f"100.5\n{tunnelcut.FOUND if self.clsact else tunnelcut.ADDED}\n", "")
        return Result(command, 0, "200.5\n", "")


def test_a_tunnel_cut_drops_on_both_nodes_to_each_others_address_and_restores_exactly():
    the_lab = three()
    ln = next(x for x in lab_links(the_lab) if x.key == "node1:gre-node3")
    log: list = []
    runners = {"node1": FakeRunner("node1", log), "node3": FakeRunner("node3", log, clsact=True)}
    cut = TunnelCut(the_lab, runners, ln)
    assert [(e.node, e.remote_ip) for e in cut.ends] == [
        ("node1", the_lab.node("node3").underlay_ip), ("node3", the_lab.node("node1").underlay_ip)]
    assert cut.cut() == 100.5
    assert [n for n, _ in log] == ["node1", "node3"] and cut.installed == {"node1": True, "node3": False}
    assert tunnelcut.bytecode(tunnelcut.drop_program(the_lab.node("node3").underlay_ip, the_lab.kind)) in log[0][1]
    log.clear()
    assert cut.restore() == 200.5 and cut.installed == {}
    assert "qdisc del" in log[0][1] and "qdisc del" not in log[1][1]      # node3's clsact was there before
    log.clear()
    assert cut.restore() is None and log == []                             # nothing left to remove


def test_a_cut_that_fails_on_the_second_node_leaves_the_first_to_restore():
    the_lab = three()
    ln = next(x for x in lab_links(the_lab) if x.key == "node1:gre-node2")
    log: list = []
    cut = TunnelCut(the_lab, {"node1": FakeRunner("node1", log), "node2": FakeRunner("node2", log, fail=True)}, ln)
    with pytest.raises(CutError, match="node2: .*no such module"):
        cut.cut()
    assert cut.installed == {"node1": True}
    cut.restore()
    assert cut.installed == {} and log[-1][0] == "node1" and "tc filter del" in log[-1][1]


# ---- the tree while a tunnel is cut -----------------------------------------------------------
def tree_state(the_lab):
    """A converged state built from the model: Kruskal over the links, the first link that
    joins two parts forwards, the far end of any other is a discarding alternate port.
    Returns (state, tree links, blocked links)."""
    state = {n.name: {b: BridgeState(n.name, b, False, True, f"id-{n.name}-{b}", "id-node1-br1")
                      for b in the_lab.bridges} for n in the_lab.nodes}
    parent = {(n.name, b): (n.name, b) for n in the_lab.nodes for b in the_lab.bridges}

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v
    tree, blocked = [], []
    for ln in links(the_lab):
        ra, rb = find(ln.a[:2]), find(ln.b[:2])
        if ra != rb:
            parent[ra] = rb
            tree.append(ln)
            set_port(state, ln.a, "designated", "forwarding")
            set_port(state, ln.b, "root", "forwarding")
        else:
            blocked.append(ln)
            set_port(state, ln.a, "designated", "forwarding")
            set_port(state, ln.b, "alternate", "discarding")
    return state, tree, blocked


def set_port(state, end, role, st):
    state[end[0]][end[1]].ports[end[2]] = PortState(role, st)


def test_a_cut_blocked_tunnel_whose_ends_both_forward_is_absent_not_a_loop():
    the_lab = three()
    state, _, blocked = tree_state(the_lab)
    assert judge_tree(the_lab, state).ok
    ln = next(x for x in blocked if x.a[0] != x.b[0])
    # Its BPDUs aged out: both ends designated, and in time both forward.
    set_port(state, ln.b, "designated", "forwarding")
    verdict = judge_tree(the_lab, state)
    assert not verdict.ok and any(p.startswith("loop:") for p in verdict.problems)
    verdict = judge_tree(the_lab, state, cut=[ln])
    assert verdict.ok and verdict.settled, verdict.problems
    assert ln not in forwarding_links(the_lab, state, [ln]) and ln in forwarding_links(the_lab, state)
    # On the way there (designated, discarding: moving) it is not waited for either.
    set_port(state, ln.b, "designated", "discarding")
    assert not judge_tree(the_lab, state).settled
    assert judge_tree(the_lab, state, cut=[ln]).ok
    # Nothing took over: the link carried nothing before either.
    before, _, _ = tree_state(the_lab)
    assert _took_over(the_lab, before, state, (ln,)) == []


def test_a_cut_tunnel_of_the_tree_is_judged_whole_only_once_another_link_took_over():
    the_lab = three()
    before, tree, blocked = tree_state(the_lab)
    ln = next(x for x in tree if x.a[0] != x.b[0])
    after, _, _ = tree_state(the_lab)
    set_port(after, ln.b, "designated", "discarding")     # the root port's information aged out
    # Still forwarding on the designated end, but the link carries nothing: a part is cut off.
    verdict = judge_tree(the_lab, after, cut=[ln])
    assert not verdict.ok and any(p.startswith("cut off") for p in verdict.problems)
    # The alternate port that reconnects the two parts takes over.
    rest = [x for x in tree if x != ln]
    joins = next(x for x in blocked if _connected_without(the_lab, rest + [x]))
    set_port(after, joins.b, "root", "forwarding")
    verdict = judge_tree(the_lab, after, cut=[ln])
    assert verdict.ok and verdict.settled, verdict.problems
    assert not judge_tree(the_lab, after).settled      # without the cut: a designated port moving
    assert _took_over(the_lab, before, after, (ln,)) == [joins.b]


def _connected_without(the_lab, used) -> bool:
    parent = {(n.name, b): (n.name, b) for n in the_lab.nodes for b in the_lab.bridges}

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v
    for x in used:
        parent[find(x.a[:2])] = find(x.b[:2])
    return len({find(v) for v in parent}) == 1
