"""Failover: the other half of what the loop is for. Each redundant link is cut in turn under
a steady probe stream, and restored: how long traffic stopped each time, and whether the
forwarding links form one spanning tree again, judged by the stp stage's own poll
(checks.poll_tree). Everything on a node goes through its Runner, as verify's checks do, so
either provider runs it.

Per link: the tree as it stands picks two namespaces whose path crosses the link (the source
on the link's node: it timestamps the cut, so one clock times the cut and the probes); the
stream runs; both ends go down in one `ip -batch` (to OVS, a cable pulled: no carrier on
either end); once OVS reports the ends down, the tree is judged, and traffic must come back;
then both ends come up, the tree is judged again and traffic must come back again. Whatever
happens, a link that was cut is brought back up before the next one is touched, and on the
way out (failure, Ctrl-C).

A tunnel has no carrier: it is cut in the underlay (tunnelcut.py: each node drops what it
sends to the other's underlay address), and spanning tree notices only when the far end's
BPDUs age out: "seen" is then both ends designated (neither hears the other), and while it
is cut the tree is judged with the tunnel absent (it carries nothing, whatever its ends
report). The restore deletes exactly the filters the cut added."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from labgen.failover import leftovers, outage, probes
from labgen.failover.cuts import CutError, cutter, poll_until
from labgen.failover.redundancy import LabLink, lab_links
from labgen.failover.treepath import probe_pair
from labgen.lab.model import Lab
from labgen.nodes.runner import Runner, RunnerError
from labgen.verify.checks import poll_tree
from labgen.verify.judges import one_line
from labgen.verify.results import Check
from labgen.verify.spantree import (
    BridgeState,
    Link,
    forwarding_links,
    port_state,
)

State = dict[str, dict[str, BridgeState]]
Say = Callable[[str, str], None]
# Draws the tree as it stands: (state, what step, an end of the cut link, the ports that took over).
Draw = Callable[[State, str, "tuple[str, str, str] | None", "tuple[tuple[str, str, str], ...]"], None]


def _no_picture(state: State, step: str, cut: tuple[str, str, str] | None,
                took_over: tuple[tuple[str, str, str], ...]) -> None:
    pass


# Answered probes the stream must have before a cut: it crosses the tree as it stands.
BASELINE = 5


@dataclass
class LinkResult:
    link: LabLink
    cut: bool = False                   # False: only listed (a single point of failure, ...)
    note: str = ""
    src: str | None = None
    dst: str | None = None
    crosses: bool = False               # the probe path crossed the link before the cut
    cut_outage: outage.Outage | None = None
    restore_outage: outage.Outage | None = None
    took_over: list[tuple[str, str, str]] = field(default_factory=list)    # (node, bridge, port)
    tree_after_cut: Check | None = None
    tree_after_restore: Check | None = None
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    error: bool = False                 # could not run (a node did not answer, a cut failed)
    seconds: float = 0.0

    @property
    def passed(self) -> bool | None:
        """None: not cut."""
        return None if not self.cut else not self.problems


@dataclass
class FailoverReport:
    lab: str
    provider: str
    tunnel: str
    mode: str
    timers: str
    max_outage: float | None
    before: list[Check] = field(default_factory=list)
    links: list[LinkResult] = field(default_factory=list)
    seconds: float = 0.0
    undone: list[str] = field(default_factory=list)     # left by a killed run, undone first

    @property
    def tree_before(self) -> Check | None:
        return next((c for c in self.before if c.node == "all"), None)

    @property
    def passed(self) -> bool:
        return bool(self.before) and all(c.passed for c in self.before) and \
            any(r.cut for r in self.links) and all(r.passed is not False for r in self.links)


def _wait_stream(stream: probes.Stream, until: Callable[[outage.Record], bool],
                 timeout: float) -> outage.Record | None:
    """Read the stream until `until` holds for what it has printed (the record), or None
    after `timeout` seconds."""
    def holds() -> outage.Record | None:
        rec = outage.parse(stream.read(), probes.INTERVAL)
        return rec if until(rec) else None
    return poll_until(holds, timeout)


def _took_over(lab: Lab, before: State, after: State,
               cut: tuple[Link, ...] = ()) -> list[tuple[str, str, str]]:
    """The ports that took over: of the links that forward after a change and did not
    before, the ends that were alternate or backup ports (blocked by the tree); else every
    end that did not forward. (With RSTP the designated end facing an alternate port may
    also have been discarding: it did not take over from anything.) A link in `cut` carries
    nothing after the change, whatever its ends report (a tunnel cut in the underlay)."""
    was = set(forwarding_links(lab, before))
    moved = []
    for ln in forwarding_links(lab, after, cut):
        if ln in was:
            continue
        for end in (ln.a, ln.b):
            p = port_state(lab, before, end)
            if p is None or not p.forwarding:
                moved.append((end, p))
    blocked = [end for end, p in moved if p is not None and p.role in ("alternate", "backup")]
    return blocked or [end for end, _ in moved]


def _link_of(lab: Lab, end: tuple[str, str, str]) -> LabLink | None:
    return next((ln for ln in lab_links(lab) if ln.bridges and end in (ln.bridges.a, ln.bridges.b)), None)


def _tree(checks: list[Check]) -> Check:
    bad = [c for c in checks if not c.passed and c.node != "all"]
    tree = next(c for c in checks if c.node == "all")
    if bad and tree.passed:     # a node's own problem: the tree check alone would hide it
        return Check(tree.stage, tree.name, tree.node, tree.command, False,
                     "; ".join(f"{c.node}: {c.evidence}" for c in bad), tree.seconds)
    return tree


def cut_one(lab: Lab, runners: Mapping[str, Runner], link: LabLink, state: State,
            settle: float, max_outage: float | None, say: Say,
            draw: Draw = _no_picture) -> tuple[LinkResult, State]:
    """Cut one link under a probe stream and restore it. Returns the result and the tree
    state after the restore (the next link's "as it stands")."""
    assert link.bridges is not None
    started = time.monotonic()
    r = LinkResult(link, cut=True)
    src, dst, r.crosses = probe_pair(lab, forwarding_links(lab, state), link.bridges, link.node)
    r.src, r.dst = src.name, f"{dst.name} {dst.address}"
    runner = runners[link.node]
    where = link.key
    stream: probes.Stream | None = None
    down = False
    cuts = cutter(lab, runners, link)
    try:
        # The stream ends by itself even if labgen dies: four waits of `settle` and a margin.
        stream = probes.start(runner, src.name, dst.address, 4 * settle + 30, tag=lab.name)
        say(where, f"probing {src.name} -> {dst.name} {dst.address} every "
                   f"{probes.INTERVAL * 1000:g} ms ({'crosses' if r.crosses else 'does not cross: blocked'})")
        if _wait_stream(stream, lambda rec: rec.answered_after(0) >= BASELINE, settle) is None:
            r.problems.append(f"no steady stream before the cut: fewer than {BASELINE} probes "
                              f"from {src.name} to {dst.address} answered within {settle:g} s")
            return r, state
        down = True         # from the first change on: the finally undoes what is there
        t_cut = cuts.cut()
        m_cut = time.monotonic()
        say(where, cuts.said.format(label=link.label, kind=lab.kind.title))
        if not cuts.seen(True, settle):
            r.problems.append(cuts.not_seen[0].format(label=link.label, s=settle))
        checks, after = poll_tree(lab, runners, settle, cut=cuts.absent)
        r.tree_after_cut = _tree(checks)
        r.took_over = _took_over(lab, state, after, cuts.absent)
        draw(after, f"{link.key} cut", link.bridges.a, tuple(r.took_over))
        if not r.tree_after_cut.passed:
            r.problems.append(f"after the cut: {r.tree_after_cut.evidence}")
        mark = outage.parse(stream.read(), probes.INTERVAL).last_seq
        say(where, f"tree {'holds' if r.tree_after_cut.passed else 'does NOT hold'}; "
                   f"took over: {', '.join(f'{n} {p}' for n, _, p in r.took_over) or 'none'}")
        back_after_cut = _wait_stream(stream, lambda rec: rec.answered_after(mark) > 0, settle) is not None
        if not back_after_cut:
            r.problems.append(_not_carried(lab, r, settle))
        restored_at = cuts.restore()
        assert restored_at is not None
        t_restore = restored_at
        m_restore = time.monotonic()
        down = False
        say(where, "restored")
        if not cuts.seen(False, settle):
            r.problems.append(cuts.not_seen[1].format(label=link.label, s=settle))
        checks, state = poll_tree(lab, runners, settle)
        r.tree_after_restore = _tree(checks)
        draw(state, f"{link.key} restored", None, ())
        if not r.tree_after_restore.passed:
            r.problems.append(f"after the restore: {r.tree_after_restore.evidence}")
        mark = outage.parse(stream.read(), probes.INTERVAL).last_seq
        back = _wait_stream(stream, lambda rec: rec.answered_after(mark) > 0, settle) is not None
        if not back:
            r.problems.append(f"no probe from {src.name} to {dst.address} answered within "
                              f"{settle:g} s of the tree holding again after the restore")
        record = outage.parse(stream.stop(), probes.INTERVAL)
        m_stop = time.monotonic()
        stream = None
        if back:
            record = record.through_last_answer()
        r.duplicates = record.duplicates
        r.cut_outage, r.restore_outage = outage.cut_and_restore(record, t_cut, t_restore, back_after_cut)
        # The node's wall clock times the outage (ping -D has no other); this machine's
        # monotonic clock bounds it: an outage longer than the time that passed means the
        # wall clock stepped in between, and the figure is not a measurement.
        for what, o, passed in (("cut", r.cut_outage, m_restore - m_cut), ("restore", r.restore_outage, m_stop - m_restore)):
            if o.seconds is not None and o.seconds > passed + 1.0:
                r.problems.append(f"outage on {what} {o.ms:g} ms is longer than the {passed:.1f} s that "
                                  "passed: the node's clock stepped; not measured")
                r.error = True
        for what, o in (("cut", r.cut_outage), ("restore", r.restore_outage)):
            if o.seconds is None and not r.problems:
                r.problems.append(f"traffic did not come back after the {what}: {o.lost} probes lost")
            if o.seconds is not None and max_outage is not None and o.seconds > max_outage:
                r.problems.append(f"outage on {what} {o.ms:g} ms is above --max-outage "
                                  f"{max_outage * 1000:g} ms")
        say(where, f"outage on cut {_ms(r.cut_outage)}, on restore {_ms(r.restore_outage)}")
    except (RunnerError, CutError, RuntimeError) as exc:
        r.problems.append(str(exc))
        r.error = True
    finally:
        # Leave the lab as it was found, whatever ended this (a failure, Ctrl-C).
        if down:
            try:
                cuts.restore()
                say(where, "restored")
            except (RunnerError, CutError) as exc:
                r.problems.append(f"could not restore {link.key}: {exc}")
        if stream is not None:
            try:
                stream.stop()
            except RunnerError:
                pass
        r.seconds = time.monotonic() - started
    return r, state


def _ms(o: outage.Outage | None) -> str:
    if o is None:
        return "-"
    return "no recovery" if o.seconds is None else f"{o.ms:g} ms ({o.lost} lost)"


def _not_carried(lab: Lab, r: LinkResult, settle: float) -> str:
    """Traffic did not come back after a cut: name the link that took over in the tree."""
    waited = f"no probe from {r.src} to {r.dst} answered within {settle:g} s of the tree after the cut"
    if not r.took_over:
        return f"{waited}; no port took over"
    names = []
    for end in r.took_over:
        ln = _link_of(lab, end)
        names.append(f"{ln.key if ln else end[2]} ({end[0]} {end[2]} on {end[1]})")
    return f"{', '.join(names)} took over in the spanning tree but carries nothing: {waited}"


def _undo_leftovers(lab: Lab, runners: Mapping[str, Runner], report: FailoverReport,
                    say: Say) -> str:
    """Undo what a failover killed mid-cut left on each node (leftovers.py), before the
    tree is judged; why nothing may be cut ("" when all is clean)."""
    for node, r in runners.items():
        res = r.run(leftovers.sweep_command(lab.name), timeout=30 * r.timeout_scale)
        for what in leftovers.parse_sweep(res.stdout):
            report.undone.append(f"{node}: {what}")
            say(node, f"left by an interrupted failover: {what}")
        if not res.ok:
            return (f"not cut: what an interrupted failover left on {node} could not be undone: "
                    f"{one_line(res.output) or f'exit {res.exit_code}'}")
    return ""


def run_failover(lab: Lab, runners: Mapping[str, Runner], chosen: list[LabLink], settle: float,
                 max_outage: float | None, say: Say = lambda *_: None,
                 draw: Draw = _no_picture) -> FailoverReport:
    """The tree must hold first (else nothing is cut: a lab with a loop is not made worse);
    then each chosen redundant link in turn. Once the tree does not hold after a restore,
    no further link is cut."""
    started = time.monotonic()
    report = FailoverReport(lab.name, lab.provider, lab.tunnel, lab.stp, lab.stp_timers, max_outage)
    stop = _undo_leftovers(lab, runners, report, say)
    say("failover", "judging the spanning tree before any cut")
    report.before, state = poll_tree(lab, runners, settle)
    if len(state) == len(lab.nodes):
        draw(state, "before any cut", None, ())
    if not stop and not all(c.passed for c in report.before):
        stop = "not cut: the spanning tree did not hold before any cut"
    for link in chosen:
        if link.spof:
            report.links.append(LinkResult(link, note=f"single point of failure: {link.spof}; not cut"))
        elif stop:
            report.links.append(LinkResult(link, note=stop))
        else:
            result, state = cut_one(lab, runners, link, state, settle, max_outage, say, draw)
            report.links.append(result)
            if result.tree_after_restore is None or not result.tree_after_restore.passed:
                stop = f"not cut: the spanning tree did not hold after {link.key} was restored"
    report.seconds = time.monotonic() - started
    return report

