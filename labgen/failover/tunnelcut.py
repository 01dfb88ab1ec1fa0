"""Cutting a tunnel the way an underlay failure looks: on each of the two nodes, the
encapsulated traffic to the other node's underlay address is dropped on the underlay NIC's
egress. A tunnel port has no carrier to take away (a userspace tunnel port stays "up"
whatever happens to its remote), so spanning tree learns of the cut only when the far end's
BPDUs stop arriving and age out, as it would after a real underlay failure.

Why the NIC's egress, with tc: every frame a node sends to the underlay goes through it.
The userspace datapath (netdev; the netns provider's only one) sends through an AF_PACKET
socket on the NIC under br-phy, and such sends pass the device's egress hook; the kernel
datapath routes the encapsulated packet out of the NIC the same way. The NIC's ingress
would not do: an AF_PACKET receiver (OVS userspace) gets the frame before the ingress hook.
Dropping on both nodes' egress stops both directions.

The drop is a classic BPF program in cls_bpf, direct-action (returns TC_ACT_STOLEN: gone, and the send succeeds), on a
clsact qdisc: it needs neither cls_flower nor act_gact (kernels without them exist; the
CI's has neither), only sch_ingress (clsact) and cls_bpf, which every distribution kernel
builds. The program matches IPv4 to the remote's underlay address and the tunnel's own
encapsulation (GRE: IP protocol 47; VXLAN, Geneve: UDP to their port), nothing else.

Restoring deletes exactly what the cut added: the filter (its own preference), and the
clsact qdisc only when the cut created it; the same lines undo a cut that a killed
failover left (leftovers.py). The NIC is the one the node script chose,
remembered in OVS's database (external_ids:labgen-underlay-nic, templates/node.sh.j2)."""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

from labgen.failover import marks
from labgen.lab.tunnels import TunnelKind

# The filter's preference on the NIC's egress: fixed, so a restore (or a later clean-up)
# deletes exactly this filter and nothing another tool put there.
PREF = 49141
NIC_KEY = "external_ids:labgen-underlay-nic"
# What the cut prints about the clsact qdisc: the restore deletes it only after "added".
ADDED, FOUND = "clsact=added", "clsact=found"

# Classic BPF opcodes (linux/filter.h).
LD_H_ABS, LD_W_ABS, LD_B_ABS = 0x28, 0x20, 0x30
LDX_B_MSH, LD_H_IND = 0xB1, 0x48
JEQ_K, RET_K = 0x15, 0x06
ETH_P_IP = 0x0800
# cls_bpf direct-action verdicts (linux/pkt_cls.h): taken (dropped, the sender told it was
# sent), and "no verdict: go on". Not TC_ACT_SHOT: at egress that makes the send fail
# (ENOBUFS), and OVS userspace sends a flooded frame's copies in one sendmmsg, which stops at
# the first error: the copy to the cut node's address failed and the copies to every other
# node behind it were never sent (ARP broadcasts did not reach the tunnel that took over;
# measured). A wire that loses a frame tells the sender nothing.
TC_ACT_STOLEN, TC_ACT_UNSPEC = 4, 0xFFFFFFFF
# Offsets in an Ethernet frame (the NIC's egress sees the Ethernet header).
OFF_ETHERTYPE, OFF_IP, OFF_PROTO, OFF_DST = 12, 14, 23, 30

Insn = tuple[int, int, int, int]        # (code, jt, jf, k)


def drop_program(remote_ip: str, kind: TunnelKind) -> list[Insn]:
    """The classic BPF program: TC_ACT_STOLEN for an IPv4 frame to `remote_ip` carrying the
    tunnel's encapsulation, TC_ACT_UNSPEC (the next filter decides) for anything else."""
    dst = int(ipaddress.IPv4Address(remote_ip))
    body: list[tuple[int, int | None, int]] = [     # (code, jump to fail when not equal?, k)
        (LD_H_ABS, None, OFF_ETHERTYPE), (JEQ_K, 1, ETH_P_IP),
        (LD_W_ABS, None, OFF_DST), (JEQ_K, 1, dst),
        (LD_B_ABS, None, OFF_PROTO), (JEQ_K, 1, kind.ip_proto),
    ]
    if kind.udp_port:
        # X = the IPv4 header's length; the UDP destination port is 2 bytes into the UDP header.
        body += [(LDX_B_MSH, None, OFF_IP), (LD_H_IND, None, OFF_IP + 2), (JEQ_K, 1, kind.udp_port)]
    fail = len(body) + 1                # the index of the last instruction: ret UNSPEC
    out: list[Insn] = []
    for i, (code, jumps, k) in enumerate(body):
        out.append((code, 0, fail - i - 1, k) if jumps else (code, 0, 0, k))
    return out + [(RET_K, 0, 0, TC_ACT_STOLEN), (RET_K, 0, 0, TC_ACT_UNSPEC)]


def bytecode(program: list[Insn]) -> str:
    """tc's `bytecode` text (as `tcpdump -ddd` prints it): the count, then one
    "code jt jf k" per instruction, comma-separated."""
    return ",".join([str(len(program)), *(f"{c} {jt} {jf} {k}" for c, jt, jf, k in program)])


@dataclass(frozen=True)
class End:
    """One node's half of a tunnel cut: drop what it sends to `remote_ip`."""
    node: str
    remote_ip: str


def nic_command() -> str:
    """Shell (sh): the underlay NIC into $nic, from OVS's database; exits 1 when it is not
    recorded there."""
    return (f"nic=$(ovs-vsctl --timeout=5 get Open_vSwitch . {NIC_KEY} | tr -d '\"')\n"
            f'[ -n "$nic" ] || {{ echo "no underlay NIC recorded in OVS ({NIC_KEY})" >&2; exit 1; }}')


def cut_command(end: End, kind: TunnelKind) -> str:
    """Installs the drop on the node's underlay NIC; prints the node's time just before the
    drop took effect (date +%s.%N, ping -D's clock), then ADDED or FOUND (the clsact qdisc)."""
    code = shlex.quote(bytecode(drop_program(end.remote_ip, kind)))
    return "\n".join([
        nic_command(),
        'if tc qdisc show dev "$nic" | grep -q "^qdisc clsact "; then q=' + FOUND + "; else q=" + ADDED + "; fi",
        # Marked before anything changes: a kill from here on leaves what the next run undoes.
        marks.tunnel("q") + " || exit 1",
        f'if [ $q = {ADDED} ]; then tc qdisc add dev "$nic" clsact || {{ {marks.CLEAR}; exit 1; }}; fi',
        "t=$(date +%s.%N)",
        f'tc filter add dev "$nic" egress pref {PREF} protocol all bpf bytecode {code} da '
        f'|| {{ [ $q = {ADDED} ] && tc qdisc del dev "$nic" clsact; {marks.CLEAR}; exit 1; }}',
        'echo "$t"; echo "$q"',
    ])


def restore_command(added_qdisc: bool) -> str:
    """Deletes the cut's filter, and the clsact qdisc when the cut added it; prints the
    node's time just before (taken right before the delete: the restore's outage starts
    there)."""
    return "\n".join([nic_command(), "t=$(date +%s.%N)",
                      *undo_lines("true" if added_qdisc else None), 'echo "$t"'])


def undo_lines(qdisc_if: str | None, if_there: bool = False) -> list[str]:
    """Shell, with $nic set: what a cut added taken away, and the node's mark cleared: the
    filter, and the clsact qdisc when the shell test `qdisc_if` holds ("true", or one that
    reads a leftover mark; None: the cut found the qdisc, it stays). `if_there`: each only
    if it is there (a cut killed part way, leftovers.py); else a missing one is an error."""
    def delete(what: str, present: str) -> list[str]:
        if not if_there:
            return [f"{what} || exit 1"]
        return [f"if {present}; then", f"  {what} || exit 1", "fi"]
    lines = delete(f'tc filter del dev "$nic" egress pref {PREF}',
                   f'tc filter show dev "$nic" egress pref {PREF} | grep -q .')
    if qdisc_if is not None:
        qdisc = delete('tc qdisc del dev "$nic" clsact', 'tc qdisc show dev "$nic" | grep -q "^qdisc clsact "')
        lines += [f"if {qdisc_if}; then", *("  " + q for q in qdisc), "fi"]
    return lines + [marks.CLEAR + " || exit 1"]


def parse_cut(stdout: str) -> tuple[float, bool]:
    """cut_command's output -> (time, whether it added the clsact qdisc). ValueError when it
    is not that."""
    lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
    if len(lines) < 2 or lines[-1] not in (ADDED, FOUND):
        raise ValueError(f"unexpected output: {stdout.strip()!r}")
    return float(lines[-2]), lines[-1] == ADDED


def parse_time(stdout: str) -> float:
    lines = stdout.strip().splitlines()
    if not lines:
        raise ValueError("no output")
    return float(lines[-1])
