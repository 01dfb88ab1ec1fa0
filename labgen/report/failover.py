"""Formatting a FailoverReport: a table for people, JSON for pipelines that gate on it,
JUnit for CI (the split of report.py: a failure found something, an error could not run)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from labgen.failover.probes import INTERVAL
from labgen.failover.run import FailoverReport, LinkResult
from labgen.report.tables import new_table, one_line

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from rich.console import Console
    from rich.table import Table


def _took_over(r: LinkResult) -> str | None:
    return ", ".join(p for _, _, p in r.took_over) or None


def link_dict(r: LinkResult) -> dict[str, Any]:
    co, ro = r.cut_outage, r.restore_outage
    lost = None if co is None or ro is None else co.lost + ro.lost
    return {"link": r.link.name, "node": r.link.node, "label": r.link.label,
            "spof": bool(r.link.spof), "cut": r.cut, "note": r.note,
            "probe": {"from": r.src, "to": r.dst, "crosses": r.crosses} if r.cut else None,
            "cut_outage_ms": co.ms if co else None, "restore_outage_ms": ro.ms if ro else None,
            "lost_probes": lost, "lost_on_cut": co.lost if co else None,
            "lost_on_restore": ro.lost if ro else None,
            "took_over": _took_over(r),
            "took_over_ports": [{"node": n, "bridge": b, "port": p} for n, b, p in r.took_over],
            "tree_after_cut": r.tree_after_cut.status if r.tree_after_cut else None,
            "tree_after_restore": r.tree_after_restore.status if r.tree_after_restore else None,
            "duplicates": r.duplicates, "passed": r.passed, "error": r.error,
            "problems": list(r.problems), "seconds": round(r.seconds, 3)}


def to_dict(report: FailoverReport) -> dict[str, Any]:
    tree = report.tree_before
    return {"lab": report.lab, "provider": report.provider, "tunnel": report.tunnel,
            "mode": report.mode, "stp_timers": report.timers,
            "probe_interval_ms": INTERVAL * 1000,
            "max_outage_ms": None if report.max_outage is None else report.max_outage * 1000,
            "passed": report.passed, "seconds": round(report.seconds, 3),
            "tree_before": {"status": tree.status, "evidence": tree.evidence} if tree else None,
            "undone_first": report.undone,
            "links": [link_dict(r) for r in report.links]}


def to_json(report: FailoverReport) -> str:
    return json.dumps(to_dict(report), indent=2)


def _ms(o: Any) -> str:
    if o is None:
        return "-"
    return "none back" if o.seconds is None else f"{o.ms:.0f}"


def _result(r: LinkResult) -> str:
    if r.passed is None:
        return "spof" if r.link.spof else "-"
    return "passed" if r.passed else ("error" if r.error else "failed")


def table(report: FailoverReport, plain: bool = True) -> Table:
    from rich.text import Text
    mode = report.mode.upper() + ("" if report.mode == "rstp" else f" {report.timers}")
    t = new_table(f"labgen failover: lab {report.lab} ({report.tunnel}, {report.provider}, {mode})", plain)
    for col, just in (("node", "left"), ("link", "left"), ("cut ms", "right"), ("restore ms", "right"),
                      ("lost", "right"), ("took over", "left"), ("tree", "left"), ("result", "left")):
        t.add_column(col, justify=just, no_wrap=True)     # type: ignore[arg-type]
    for r in report.links:
        co, ro = r.cut_outage, r.restore_outage
        lost = "-" if co is None or ro is None else str(co.lost + ro.lost)
        trees = [c for c in (r.tree_after_cut, r.tree_after_restore) if c is not None]
        tree = "-" if not trees else ("ok" if all(c.passed for c in trees) else "NOT ONE TREE")
        t.add_row(Text(r.link.node), Text(r.link.name), Text(_ms(co)), Text(_ms(ro)), Text(lost),
                  Text(_took_over(r) or "-"), Text(tree), Text(_result(r)))
    return t


def summary(report: FailoverReport) -> str:
    cut = [r for r in report.links if r.cut]
    failed = [r for r in cut if not r.passed]
    worst = max((o.seconds for r in cut for o in (r.cut_outage, r.restore_outage)
                 if o is not None and o.seconds is not None), default=None)
    verdict = "FAILOVER PROVEN" if report.passed else "FAILOVER NOT PROVEN"
    line = (f"{verdict}: {len(cut) - len(failed)} of {len(cut)} links cut and healed"
            + (f", longest outage {worst * 1000:.0f} ms" if worst is not None else "")
            + f", {sum(1 for r in report.links if r.link.spof)} single points of failure not cut"
            + f" in {report.seconds:.1f} s")
    tree = report.tree_before
    if tree is not None and not tree.passed:
        line += f"; the spanning tree did not hold before any cut: {tree.evidence}"
    elif failed:
        line += f"; first failure: {failed[0].link.key}: {failed[0].problems[0] if failed[0].problems else ''}"
    return line


def print_report(report: FailoverReport, console: Console) -> None:
    from labgen.report.tables import is_plain
    plain = is_plain(console)
    console.print(table(report, plain), highlight=False)
    width = console.width
    for what in report.undone:
        console.print(one_line(f"left by an interrupted failover, undone first: {what}", width),
                      markup=False, highlight=False)
    tree = report.tree_before
    if tree is not None and not tree.passed:
        console.print(f"before any cut: {tree.name}: {tree.status}", markup=False, highlight=False)
        for part in tree.evidence.split("; ")[:8]:
            console.print("    " + one_line(part, width - 4), markup=False, highlight=False)
    for r in report.links:
        if r.passed is False:
            console.print(f"{r.link.key} ({r.link.label}): {_result(r)}", markup=False, highlight=False)
            for p in r.problems[:6]:
                console.print("    " + one_line(p, width - 4), markup=False, highlight=False)
    console.print(one_line(summary(report), width), markup=False, highlight=False, soft_wrap=True,
                  style=None if plain else ("bold green" if report.passed else "bold red"))


def junit_suite(report: FailoverReport) -> ET.Element:
    """One testsuite: the tree before any cut, then one test case per link (a single point of
    failure is a skipped case that says why)."""
    import xml.etree.ElementTree as ET
    cases = []
    for c in report.before:
        cases.append((f"labgen.{report.lab}.failover", f"before any cut: {c.node}: {c.name}",
                      c.seconds, None if c.passed else ("error" if c.error else "failure"), c.evidence))
    for r in report.links:
        kind = None if r.passed else ("skipped" if r.passed is None else ("error" if r.error else "failure"))
        text = r.note if r.passed is None else ("; ".join(r.problems) or
                                               f"outage on cut {_ms(r.cut_outage)} ms, on restore "
                                               f"{_ms(r.restore_outage)} ms")
        cases.append((f"labgen.{report.lab}.failover", f"{r.link.key}: cut and restore ({r.link.label})",
                      r.seconds, kind, text))
    counts = {k: sum(1 for c in cases if c[3] == k) for k in ("failure", "error", "skipped")}
    suite = ET.Element("testsuite", name=f"labgen.{report.lab}.failover", tests=str(len(cases)),
                       failures=str(counts["failure"]), errors=str(counts["error"]),
                       skipped=str(counts["skipped"]), time=f"{report.seconds:.3f}")
    for classname, name, seconds, kind, text in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
        if kind is None:
            ET.SubElement(case, "system-out").text = text
        else:
            ET.SubElement(case, kind, message=(text.splitlines() or [kind])[0]).text = text
    return suite
