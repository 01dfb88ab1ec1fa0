"""The verification stages, declared once: verify runs this table, the JSON report lists it,
docs/design.md's list is generated from it (`python -m labgen.verify.stages`) and the tests read it.

The order follows Open vSwitch's own system tests: nodes and OVS first, then the underlay,
spanning tree, the overlay, proof that traffic crossed the tunnel, and path MTU. Stages with
the same `group` may run at the same time (they need the groups before them, not each
other). A stage marked `apart` runs in a group of its own, after its group, on a provider
whose `stages_apart` says so (Pace): tunnel and mtu share a group on namespaces, but on an
emulated VM both at once starve the guest.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from labgen.lab.model import Lab
from labgen.nodes.runner import Runner
from labgen.verify import judges
from labgen.verify.batch import run_planned
from labgen.verify.checks import (
    plan_config,
    plan_mtu,
    plan_nodes,
    plan_overlay,
    plan_underlay,
    run_stp_checks,
    run_tunnel_checks,
)
from labgen.verify.results import Check


class Pace(Protocol):
    """What verification asks of the lab's provider (labgen/providers: Provider has it):
    facts about how its nodes keep up, never its name."""

    @property
    def stages_apart(self) -> bool:
        """Do the stages marked `apart` run in a group of their own (an emulated VM)?"""

    @property
    def capture_wait(self) -> float:
        """How long a tunnel capture may wait for its packets before its check fails (only a
        failing check waits this long: a capture ends once it has them)."""


Run = Callable[[Lab, Mapping[str, Runner], float, Pace], list[Check]]


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def span(values: list[float], unit: str) -> str:
    """'0.3-5.3 ms', or '0.3 ms' when they round alike."""
    low, high = _number(min(values)), _number(max(values))
    return f"{low} {unit}" if low == high else f"{low}-{high} {unit}"


def no_figure(checks: list[Check]) -> str:
    return ""


def reply_times(checks: list[Check]) -> str:
    """The round trips ping_reply read, when every check given is one of its passes."""
    ms = [judges.reply_ms(c.evidence) for c in checks]
    return f"replies in {span([m for m in ms if m is not None], 'ms')}" \
        if ms and None not in ms else ""


def vswitchd_versions(checks: list[Check]) -> str:
    """What ovs-vswitchd itself said on every node (judges.ovs_daemons' evidence)."""
    found = [judges.vswitchd_version(c.evidence) for c in checks]
    if not found or None in found:
        return ""
    return "ovs-vswitchd " + ", ".join(sorted({v for v in found if v}))


def tree_seconds(checks: list[Check]) -> str:
    """The stp checks share one poll: how long until the tree held twice in a row."""
    return f"held after {_number(max(c.seconds for c in checks))} s" if checks else ""


def capture_seconds(checks: list[Check]) -> str:
    return f"{span([c.seconds for c in checks], 's')} each" if checks else ""


@dataclass(frozen=True)
class Stage:
    name: str
    group: int
    proves: str         # what passing this stage proves, in one sentence (docs/design.md, JSON)
    run: Run            # (lab, runners, settle timeout, the provider's pace) -> checks
    apart: bool = False     # on a provider whose stages_apart, it does not share its group
    # The stage's line in the human report: its checks counted ({n}, and {s} for a plural),
    # then its figure, read from its passed checks (the judges' own evidence, or the seconds
    # labgen measured), "" when there is none.
    counted: str = "{n} check{s}"
    figure: Callable[[list[Check]], str] = no_figure

    def line(self, n: int) -> str:
        return self.counted.format(n=n, s="" if n == 1 else "s")


STAGES: tuple[Stage, ...] = (
    Stage("nodes", 1, "every node answers, and both Open vSwitch daemons answer for themselves: "
          "ovsdb-server with the version in its database, ovs-vswitchd on its own control socket "
          "(a failure names the daemon that does not answer)",
          lambda lab, r, _, __: run_planned(plan_nodes(lab), r),
          counted="{n} node{s}, both OVS daemons answer", figure=vswitchd_versions),
    Stage("config", 2, "the underlay NIC is up with its address; every port the model puts on a "
          "bridge (loop and namespace veth ends, tunnel ports) is on that bridge and opened by OVS; "
          "every veth pair exists with each end paired to its own other end; every tunnel port has "
          "the right type, remote address and key or VNI, and no tunnel port the model lacks is left "
          "(a lab provisioned again as another kind); every namespace interface is "
          "up with its address (each failure says what was expected and what was found; none of "
          "this changes by itself, so a fault here fails at once instead of in a later stage's poll)",
          lambda lab, r, _, __: run_planned(plan_config(lab), r),
          counted="{n} check{s}: NICs, ports, veths, tunnels, addresses"),
    Stage("underlay", 3, "each node pings every other node's underlay address",
          lambda lab, r, _, __: run_planned(plan_underlay(lab), r),
          counted="{n} ping{s} between underlay addresses", figure=reply_times),
    Stage("stp", 4, "STP/RSTP is on for every bridge of every node and every port reports its "
          "role and state; from all nodes together, the links whose both ends forward (loop veths "
          "and tunnels) form one spanning tree: no loop, no bridge cut off, one root; every port has "
          "reached its state, with RSTP a designated port facing a discarding alternate or backup "
          "port too (its link carries nothing either way, but echo requests were lost while such "
          "ports moved); polled until "
          "it holds twice in a row, with a timeout (with STP each poll first wakes ovs-vswitchd, which "
          "runs its STP timers only when its loop wakes: else a port forwards up to a second late "
          "at each state change)",
          lambda lab, r, settle, _: run_stp_checks(lab, r, settle),
          counted="{n} check{s}: spanning tree on, one tree", figure=tree_seconds),
    Stage("overlay", 5, "every namespace pings every other namespace, on its own node and across",
          lambda lab, r, settle, _: run_planned(plan_overlay(lab, min(settle, 15.0)), r),
          counted="{n} ping{s} within and across nodes", figure=reply_times),
    Stage("tunnel", 6, "a capture on the receiving node's underlay NIC sees the encapsulated "
          "echo requests of a cross-node ping, each with the tunnel's protocol or port and its key "
          "or VNI as tcpdump decodes them (tunnel kinds table); the pings start once tcpdump says it is listening, never after a fixed delay",
          lambda lab, r, _, pace: run_tunnel_checks(lab, r, pace.capture_wait),
          counted="{n} capture{s} saw the pings encapsulated", figure=capture_seconds),
    Stage("mtu", 6, "no frame can be black-holed: no interface on an overlay path (namespace and "
          "bridge ends, loop veths, bridge ports) is above the inner MTU, the underlay carries the "
          "inner MTU plus the tunnel overhead, a don't-fragment frame of exactly the inner MTU "
          "crosses the tunnel both ways, and one byte more is refused by the sender's kernel "
          "naming that MTU",
          lambda lab, r, _, __: run_planned(plan_mtu(lab), r), apart=True,
          counted="{n} check{s}: inner-MTU frames cross, one byte more refused"),
)

NAMES = tuple(s.name for s in STAGES)


def groups(apart: bool = False) -> list[list[Stage]]:
    """The stages in the groups they run in, in order, for a lab whose provider's
    stages_apart is `apart`."""
    out: dict[tuple[int, int], list[Stage]] = {}
    for i, s in enumerate(STAGES):
        out.setdefault((s.group, i if apart and s.apart else -1), []).append(s)
    return [out[g] for g in sorted(out)]


def markdown() -> str:
    """docs/design.md's numbered list of what "verified" means."""
    return "\n".join(f"{i}. **{s.name}**: {s.proves};" if i < len(STAGES) else
                     f"{i}. **{s.name}**: {s.proves}."
                     for i, s in enumerate(STAGES, 1))


if __name__ == "__main__":
    print(markdown())
