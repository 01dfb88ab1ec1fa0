"""The spanning tree modes, one entry each (like tunnels.py's tunnel kinds): the OVS columns
that switch a mode on and tune it, and the provisioning order and settle time it needs. The
Lab reads its mode here (Lab.mode); nothing else compares the mode's name."""
from __future__ import annotations

from dataclasses import dataclass, field

from labgen.errors import InputError

TIMER_SETS = ("tuned", "standard")


@dataclass(frozen=True)
class StpMode:
    name: str
    enable: str             # the Bridge column that switches it on
    priority: str           # the Bridge key of its bridge priority
    show: str               # the ovs-appctl command that prints its state
    # Bridge columns of the "tuned" timer set, beside `enable`, and the same columns at the
    # protocol's defaults ("standard"): set, not left out, so that a lab provisioned again
    # with standard timers does not keep the tuned values OVS already has.
    tuned: dict[str, str] = field(default_factory=dict)
    standard: dict[str, str] = field(default_factory=dict)
    # Port columns for a bridge port whose far end is a namespace, never a bridge (Lab.ns_port_config).
    edge_port: dict[str, str] = field(default_factory=dict)
    # Whether the node script's steps the bridges do not need come at its end (Lab.hostname_steps_last).
    hostname_steps_last: bool = False
    # Whether the root node adds its tunnel ports last (Lab.tunnels_last).
    root_tunnels_last: bool = False
    # Seconds spanning tree may take to converge, by timer set, before verification gives up.
    settle: dict[str, float] = field(default_factory=dict)


MODES: dict[str, StpMode] = {m.name: m for m in (
    StpMode(
        "stp", enable="stp_enable", priority="other_config:stp-priority", show="stp/show",
        # 802.1D needs 2*(forward_delay-1) >= max_age, else OVS silently raises the delay.
        tuned={"other_config:stp-forward-delay": "4", "other_config:stp-max-age": "6"},
        standard={"other_config:stp-forward-delay": "15", "other_config:stp-max-age": "20"},
        # 802.1D times a tunnel port from its join and a veth port from its carrier (OVS's
        # stp.c) and forwards 2 x forward delay later: the other steps run while the timers do.
        hostname_steps_last=True,
        settle={"tuned": 40.0, "standard": 75.0},
    ),
    StpMode(
        "rstp", enable="rstp_enable", priority="other_config:rstp-priority", show="rstp/show",
        # RSTP's transmit hold count (802.1D-2004: 1-10, OVS default 6): the BPDUs a port may
        # send per tick. When the root's tunnels join, a port sends 3-5 at once; at 6 one left
        # over went out a tick later, carrying stale information, and the far port, which
        # counts its 3 ticks to forwarding from the last BPDU it received, started again
        # (8 nodes: converged 0.3-1 s later, runs apart).
        tuned={"other_config:rstp-transmit-hold-count": "10"},
        standard={"other_config:rstp-transmit-hold-count": "6"},
        # An edge port forwards at once. OVS takes the setting only while the port has no
        # carrier (the node script adds the ports before their veths come up); otherwise it
        # finds the edge only after the 3 s migrate time (docs/benchmarks.md).
        edge_port={"other_config:rstp-port-admin-edge": "true"},
        root_tunnels_last=True,
        settle={"tuned": 30.0, "standard": 30.0},
    ),
)}
NAMES = tuple(MODES)


def get(name: str) -> StpMode:
    try:
        return MODES[name]
    except KeyError:
        raise InputError(f"unknown spanning tree mode {name!r}: use {' or '.join(NAMES)}") from None
