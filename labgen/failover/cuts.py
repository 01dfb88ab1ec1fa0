"""Cutting one redundant link and bringing it back, the two ways failover does it: a veth
pair's ends down and up (to OVS, a cable pulled: no carrier on either end), or a tunnel cut in
the underlay (tunnelcut.py). Each kind also says when spanning tree has seen the change. Both
give the time of the cut and of the restore from the link's node's clock (the one the probes'
timestamps use)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from labgen.failover import marks, tunnelcut
from labgen.failover.redundancy import LabLink
from labgen.lab.model import Lab
from labgen.nodes.runner import Runner
from labgen.verify.checks import read_bridges
from labgen.verify.judges import one_line
from labgen.verify.spantree import STATE_COMMAND, Link, port_state

T = TypeVar("T")


class CutError(Exception):
    """A node did not do what a cut or restore asked (the link is then in an unknown state)."""


def _switch_command(link: LabLink, node: str, how: str) -> str:
    """Both ends of a link on `node` down or up in one `ip` process, after a timestamp from
    the node's clock (the clock ping -D uses). Down is marked on the node first and up
    clears the mark (marks.py: what a killed run leaves, the next one undoes)."""
    ifaces = [iface for n, iface in link.ends if n == node]
    batch = "".join(f"link set dev {iface} {how}\\n" for iface in ifaces)
    switch = f"t=$(date +%s.%N) && printf '{batch}' | ip -batch -"
    if how == "down":
        return f"{marks.veth(ifaces)} && {switch} && echo \"$t\""
    return f"{switch} && {marks.CLEAR} && echo \"$t\""


def switch(runners: Mapping[str, Runner], link: LabLink, how: str) -> float:
    """Take a link's ends down or up; the time (the link's node's clock) just before."""
    t = None
    for node in dict.fromkeys(n for n, _ in link.ends):
        res = runners[node].run(_switch_command(link, node, how), timeout=15 * runners[node].timeout_scale)
        if not res.ok:
            raise CutError(f"{link.key}: setting {how} failed on {node}: "
                           f"{one_line(res.output) or f'exit {res.exit_code}'}")
        if node == link.node:
            t = float(res.stdout.strip().splitlines()[-1])
    assert t is not None
    return t


class TunnelCut:
    """A tunnel cut in the underlay on both its nodes (tunnelcut.py), and what the cut added
    on each (restore removes exactly that; `installed` is what is still to remove)."""

    said = "cut ({label}: the underlay drops its {kind} both ways)"
    not_seen = ("spanning tree did not see {label} cut (both ends designated, the far end's BPDUs "
                "aged out) within {s:g} s of the cut",
                "spanning tree did not see {label} back (BPDUs crossing: one end no longer "
                "designated) within {s:g} s of the restore")

    def __init__(self, lab: Lab, runners: Mapping[str, Runner], link: LabLink):
        assert link.bridges is not None
        self.lab, self.runners, self.link = lab, runners, link
        self.kind = lab.kind
        # While it is cut the tree is judged without it: it carries nothing, whatever its ends say.
        self.absent: tuple[Link, ...] = (link.bridges,)
        (na, _, _), (nb, _, _) = link.bridges.a, link.bridges.b
        self.ends = [tunnelcut.End(n, _remote_ip(lab, n, m)) for n, m in ((na, nb), (nb, na))]
        self.installed: dict[str, bool] = {}      # node -> whether its clsact qdisc was added

    def cut(self) -> float:
        """Drop on both nodes, the link's node first; its time just before its drop."""
        t = None
        for end in self.ends:
            r = self.runners[end.node]
            res = r.run(tunnelcut.cut_command(end, self.kind), timeout=15 * r.timeout_scale)
            try:
                if not res.ok:
                    raise ValueError(one_line(res.output) or f"exit {res.exit_code}")
                at, added = tunnelcut.parse_cut(res.stdout)
            except ValueError as exc:
                raise CutError(f"{self.link.key}: dropping the tunnel's underlay traffic failed "
                               f"on {end.node}: {exc}") from None
            self.installed[end.node] = added
            if end.node == self.link.node:
                t = at
        assert t is not None
        return t

    def restore(self) -> float | None:
        """Remove what the cut added, on each node where it is; the link's node's time just
        before its removal (None: nothing was there to remove on it)."""
        t = None
        for node, added in list(self.installed.items()):
            r = self.runners[node]
            res = r.run(tunnelcut.restore_command(added), timeout=15 * r.timeout_scale)
            if not res.ok:
                raise CutError(f"{self.link.key}: removing the underlay drop failed on {node}: "
                               f"{one_line(res.output) or f'exit {res.exit_code}'}")
            del self.installed[node]
            if node == self.link.node:
                t = tunnelcut.parse_time(res.stdout)
        return t

    def seen(self, cut: bool, timeout: float) -> bool:
        return _tunnel_seen(self.lab, self.runners, self.link, cut, timeout)


def _remote_ip(lab: Lab, node: str, remote: str) -> str:
    """The address `node`'s tunnel to `remote` sends to."""
    return next(t.remote_ip for t in lab.node(node).tunnels if t.remote_node == remote)


def _tunnel_seen(lab: Lab, runners: Mapping[str, Runner], link: LabLink, cut: bool,
                 timeout: float) -> bool:
    """Poll OVS on both nodes until spanning tree has seen a tunnel cut (both ends
    designated: neither receives the other's BPDUs, whose information aged out) or its
    restore (one end no longer designated: BPDUs cross again)."""
    assert link.bridges is not None
    ends = (link.bridges.a, link.bridges.b)

    def seen() -> bool | None:
        designated = []
        for end in ends:
            node = end[0]
            bridges = read_bridges(lab, runners[node], node)
            p = port_state(lab, {node: bridges}, end) if bridges is not None else None
            if p is None:
                return None
            designated.append(p.role == "designated")
        return True if (all(designated) if cut else not all(designated)) else None
    return poll_until(seen, timeout) is not None


def _ends_seen(lab: Lab, runners: Mapping[str, Runner], link: LabLink, down: bool,
               timeout: float) -> bool:
    """Poll OVS on the link's node until its spanning tree reports both ends disabled (down)
    or taking part again (up): the tree is judged only once OVS has seen the change."""
    node = link.node

    def seen() -> bool | None:
        bridges = read_bridges(lab, runners[node], node, STATE_COMMAND)
        if bridges is None:
            return None
        assert link.bridges is not None
        ends = [port_state(lab, {node: bridges}, e) for e in (link.bridges.a, link.bridges.b)]
        off = [p is not None and (p.role == "disabled" or p.state == "disabled") for p in ends]
        return True if (all(off) if down else not any(off)) else None
    return poll_until(seen, timeout) is not None


def poll_until(probe: Callable[[], T | None], timeout: float) -> T | None:
    """probe() again until it gives something (returned), or None once `timeout` seconds
    have passed: the tree and the stream are read, there is no event to block on."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)    # a poll interval, not a wait for an assumed duration


class VethCut:
    """A loop link's veth ends down, then up again."""
    said = "cut ({label})"
    not_seen = ("OVS did not report {label} down within {s:g} s of the cut",
                "OVS did not report {label} back within {s:g} s of the restore")

    def __init__(self, lab: Lab, runners: Mapping[str, Runner], link: LabLink):
        self.lab, self.runners, self.link = lab, runners, link
        self.absent: tuple[Link, ...] = ()      # judged as is: its ends report themselves down

    def cut(self) -> float:
        return switch(self.runners, self.link, "down")

    def restore(self) -> float | None:
        return switch(self.runners, self.link, "up")

    def seen(self, cut: bool, timeout: float) -> bool:
        return _ends_seen(self.lab, self.runners, self.link, cut, timeout)


def cutter(lab: Lab, runners: Mapping[str, Runner], link: LabLink) -> VethCut | TunnelCut:
    return TunnelCut(lab, runners, link) if link.tunnel else VethCut(lab, runners, link)
