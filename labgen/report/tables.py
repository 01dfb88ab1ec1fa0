"""Formatting a verification Report: a line per stage (or a row per check) for people, JSON
for scripts, JUnit for CI."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labgen.system.owner import ago
from labgen.verify.results import Report

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from pathlib import Path as _Path

    from rich.console import Console
    from rich.table import Table

    from labgen.lab.boxes import Box
    from labgen.lab.model import Lab
    from labgen.providers import Found, NodeStatus

STYLE = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
# The widest a table gets when stdout is not a terminal (CI logs, pipes) and COLUMNS is unset.
PLAIN_WIDTH = 100


def is_plain(console: Console) -> bool:
    """Not a terminal: no colours, no box-drawing characters, ASCII only."""
    return not console.is_terminal


def new_table(title: str, plain: bool) -> Table:
    """A table that reads well where it goes: coloured, with a ruled header, in a terminal;
    in a log or a pipe, plain space-separated columns (box=None: no box-drawing at all)."""
    # rich only where a table is printed: the other commands do without it (labgen/term.py).
    from rich import box as rich_box
    from rich.table import Table
    if plain:
        return Table(title=title, title_justify="left", box=None, pad_edge=False,
                     title_style="", header_style="", safe_box=True)
    return Table(title=title, title_justify="left", box=rich_box.SIMPLE_HEAD, pad_edge=False,
                 show_edge=False)


def one_line(text: str, width: int, ascii_only: bool = True) -> str:
    """The first non-empty line of text, whitespace squeezed, cut to width (the full text
    stays in the JSON report and the lab's diagnostics)."""
    line = next((" ".join(ln.split()) for ln in text.splitlines() if ln.strip()), "")
    if len(line) <= width:
        return line
    mark = "..." if ascii_only else "\u2026"
    return line[:max(0, width - len(mark))].rstrip() + mark


# Fixed columns of the verification table; check and evidence share what is left.
_FIXED = {"stage": 8, "node": 5, "result": 7, "s": 5}


def table(report: Report, width: int = PLAIN_WIDTH, plain: bool = True) -> Table:
    """One row per check, every evidence cell one line, the whole table within `width`."""
    from rich.text import Text
    title = f"labgen verify: lab {report.lab} ({report.tunnel}, {report.provider})"
    t = new_table(title, plain)
    # One space of padding either side of each column, none at the outer edges; a boxed
    # table also draws a (blank) divider between columns.
    ncols = len(_FIXED) + 2
    gaps = 2 * ncols - 2 + (0 if plain else ncols - 1)
    free = max(30, width - sum(_FIXED.values()) - gaps)
    # The check names get what the evidence does not need, and at least half.
    check_need = max((len(c.name) for c in report.checks), default=10)
    evid_need = max((len(one_line(c.evidence, 10**4)) for c in report.checks), default=10)
    check_w = min(check_need, max(free // 2, free - evid_need))
    evid_w = free - check_w
    t.add_column("stage", width=_FIXED["stage"], no_wrap=True)
    t.add_column("node", width=_FIXED["node"], no_wrap=True)
    t.add_column("check", width=check_w, overflow="fold")
    t.add_column("result", width=_FIXED["result"], no_wrap=True)
    t.add_column("s", width=_FIXED["s"], justify="right", no_wrap=True)
    t.add_column("evidence", width=evid_w, no_wrap=True, overflow="crop")
    for c in report.checks:
        # Text, not markup: evidence like "Flags [DF]" must print as it is.
        t.add_row(Text(c.stage), Text(c.node), Text(c.name),
                  Text(c.status, style="" if plain else STYLE[c.status]), Text(f"{c.seconds:.2f}"),
                  Text(one_line(c.evidence, evid_w, ascii_only=plain)))
    return t


def stage_lines(report: Report) -> list[tuple[str, str, str]]:
    """(stage, status, what its checks showed) for each stage the report has, in the order of
    labgen/verify/stages.py (a stage it does not know comes after, in the report's order):
    its checks counted and, when all passed, its figure (the range of round trips, the seconds
    until the tree held ...), else how many passed, failed, could not run or were skipped; a
    stage that did not run at all, why."""
    from labgen.verify.results import stage_status_of
    from labgen.verify.stages import STAGES, Stage, no_figure
    known = {s.name: s for s in STAGES}
    names = [s.name for s in STAGES]
    names += [n for n in dict.fromkeys(c.stage for c in report.checks) if n not in known]
    lines = []
    for name in names:
        checks = [c for c in report.checks if c.stage == name]
        if not checks:
            continue
        stage = known.get(name) or Stage(name, 0, "", lambda *_: [], figure=no_figure)
        ran = [c for c in checks if c.passed is not None]
        skipped = len(checks) - len(ran)
        if not ran:
            lines.append((name, "skipped", one_line(checks[0].evidence, 10**4) or "not run"))
            continue
        text = stage.line(len(checks))
        passed = [c for c in ran if c.passed]
        if len(passed) < len(checks):
            # What went wrong, counted; no figure (it would be read as the stage's).
            text += ": " + ", ".join(f"{n} {word}" for n, word in (
                (len(passed), "passed"),
                (sum(1 for c in ran if c.status == "failed"), "failed"),
                (sum(1 for c in ran if c.status == "error"), "could not run"),
                (skipped, "skipped")) if n)
        else:
            figure = stage.figure(passed)
            text += f", {figure}" if figure else ""
        lines.append((name, stage_status_of(checks), text))
    return lines


_STAGE_FIXED = {"stage": 8, "result": 7}


def stage_table(report: Report, width: int = PLAIN_WIDTH, plain: bool = True) -> Table:
    """One row per stage (stage_lines), every row one line, the whole table within `width`."""
    from rich.text import Text
    t = new_table(f"labgen verify: lab {report.lab} ({report.tunnel}, {report.provider})", plain)
    ncols = len(_STAGE_FIXED) + 1
    gaps = 2 * ncols - 2 + (0 if plain else ncols - 1)
    what_w = max(20, width - sum(_STAGE_FIXED.values()) - gaps)
    t.add_column("stage", width=_STAGE_FIXED["stage"], no_wrap=True)
    t.add_column("result", width=_STAGE_FIXED["result"], no_wrap=True)
    rows = [(name, status, one_line(text, what_w, ascii_only=plain)) for name, status, text in stage_lines(report)]
    # As wide as its longest line (a log gets no trailing blanks), at most what is left.
    t.add_column("checks", width=min(what_w, max((len(r[2]) for r in rows), default=6)),
                 no_wrap=True, overflow="crop")
    for name, status, text in rows:
        t.add_row(Text(name), Text(status, style="" if plain else STYLE.get(status, "")), Text(text))
    return t


def summary(report: Report) -> str:
    """One line: the verdict, the counts, and the first failure if any."""
    n_pass = sum(1 for c in report.checks if c.passed)
    n_fail = len(report.failed)
    n_skip = sum(1 for c in report.checks if c.passed is None)
    verdict = "VERIFIED" if report.passed else "NOT VERIFIED"
    line = f"{verdict}: {n_pass} passed, {n_fail} failed, {n_skip} skipped in {report.seconds:.1f} s"
    if report.failed:
        first = report.failed[0]
        line += f"; first failure: [{first.stage}] {first.name} on {first.node}"
    return line


def print_report(report: Report, console: Console, verbose: bool = False) -> None:
    """One line per stage (or, verbose, one row per check), then every check that failed or
    could not run with what it saw (a few lines each), then the verdict."""
    plain = is_plain(console)
    width = console.width
    shown = table(report, width, plain) if verbose else stage_table(report, width, plain)
    if plain:       # a log or a pipe: rich pads every row to the table's width; no trailing blanks
        with console.capture() as captured:
            console.print(shown, highlight=False)
        console.print("\n".join(ln.rstrip() for ln in captured.get().splitlines()), markup=False,
                      highlight=False, soft_wrap=True)
    else:
        console.print(shown, highlight=False)
    for c in report.failed:
        said = "could not run" if c.error else "failed"
        # Whole, wrapped at the width if need be: the stage line no longer names the check.
        console.print(f"{c.stage} {c.node}: {c.name}: {said}", markup=False, highlight=False,
                      style=None if plain else STYLE["failed"])
        lines = [ln.rstrip() for ln in c.evidence.splitlines() if ln.strip()]
        for ln in lines[:6]:
            console.print("    " + one_line(ln, width - 4, ascii_only=plain), markup=False,
                          highlight=False)
        if len(lines) > 6:
            console.print(f"    ... {len(lines) - 6} more lines in --json", markup=False,
                          highlight=False)
    console.print(one_line(summary(report), width, ascii_only=plain),
                  style=None if plain else ("bold green" if report.passed else "bold red"),
                  markup=False, highlight=False, soft_wrap=True)


def to_dict(report: Report) -> dict[str, Any]:
    """The JSON report: every stage of the table, in order, with its status; every check."""
    from labgen.verify.stages import STAGES  # the checks: only the verbs that verify load them
    return {"lab": report.lab, "provider": report.provider, "tunnel": report.tunnel,
            "passed": report.passed, "seconds": round(report.seconds, 3),
            "stages": [{"name": s.name, "proves": s.proves,
                        "status": report.stage_status(s.name)} for s in STAGES],
            "checks": [{**asdict(c), "status": c.status, "seconds": round(c.seconds, 3)}
                       for c in report.checks],
            "findings": list(report.findings)}


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2)


def unwritable(path: Path, flag: str, example: str) -> str | None:
    """Why the file an option names (--junit, capture's --write) cannot be written, or None:
    asked before anything is created, and leaving nothing behind. An existing file must open
    for writing (not truncated here); a new one must be creatable in its directory (a probe,
    removed at once: only trying tells, e.g. /proc refuses new files even to root); missing
    directories are made when writing, so the nearest existing one must take a new entry.
    `example`: a file name to suggest when the path is a directory."""
    import os
    import tempfile
    fix = f"choose another {flag} path"
    try:
        if path.is_dir():
            return f"{flag} {path} is a directory: give a file name in it, e.g. {flag} {path / example}"
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
            return None
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            return f"cannot write {flag} {path}: {parent} is a file, not a directory: {fix}"
        if parent == path.absolute().parent:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            path.unlink()
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".labgen-probe-", dir=parent))
    except FileExistsError:
        return None     # made meanwhile (or a dangling link): writing will follow it
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and path.absolute().parent.exists():
            return f"cannot write {flag} {path}: {path.absolute().parent} takes no new files: {fix}"
        return f"cannot write {flag} {path}: {(exc.strerror or str(exc)).lower()}: {fix}"
    return None


def junit_suite(report: Report) -> ET.Element:
    # JUnit's own split: <failure> = the check ran and found a fault; <error> = it could not
    # run (node unreachable, timeout, missing binary).
    errors = len(report.errors)
    failures = len(report.failed) - errors
    skipped = sum(1 for c in report.checks if c.passed is None)
    import xml.etree.ElementTree as ET  # only for --junit
    suite = ET.Element("testsuite", name=f"labgen.{report.lab}", tests=str(len(report.checks)),
                       failures=str(failures), errors=str(errors), skipped=str(skipped),
                       time=f"{report.seconds:.3f}")
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"labgen.{report.lab}.{c.stage}",
                             name=f"{c.node}: {c.name}", time=f"{c.seconds:.3f}")
        if c.passed is False:
            fail = ET.SubElement(case, "error" if c.error else "failure",
                                 message=(c.evidence.splitlines() or ["failed"])[0])
            fail.text = f"$ {c.command}\n{c.evidence}"
        elif c.passed is None:
            ET.SubElement(case, "skipped", message=c.evidence)
        else:
            ET.SubElement(case, "system-out").text = c.evidence
    return suite


def write_suites(suites: list[ET.Element], path: Path) -> None:
    """A JUnit file of these test suites (verify's, failover's)."""
    import xml.etree.ElementTree as ET
    root = ET.Element("testsuites")
    root.extend(suites)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report, path: Path) -> None:
    write_suites([junit_suite(report)], path)


# ---- the other tables of the command line -------------------------------------------------
def status_table(lab: Lab, lab_dir: _Path, states: list[NodeStatus], plain: bool) -> Table:
    t = new_table(f"lab {lab.name} ({lab.tunnel}, {lab.provider}) in {lab_dir}", plain)
    for col in ("node", "state", "ovs", "tunnels", "stp", "detail"):
        t.add_column(col)
    for s in states:
        t.add_row(s.node, s.state, s.facts.get("ovs", "-"), s.facts.get("tunnels", "-"),
                  s.facts.get("stp", "-"), s.detail)
    return t


def status_json(states: list[NodeStatus]) -> str:
    return json.dumps([{"node": s.node, "state": s.state, "detail": s.detail, **s.facts}
                       for s in states], indent=2)


def labs_table(found: list[Found], plain: bool) -> Table:
    import time
    t = new_table("labgen labs on this host", plain)
    for col in ("name", "provider", "state", "nodes", "age", "directory"):
        t.add_column(col, overflow="fold")
    for f in found:
        rec = f.record
        where = (rec.dir if rec.dir_exists else f"{rec.dir} (gone)") if rec else "-"
        age = ago(time.time() - rec.created) if rec else "-"
        on = "" if f.host == "this host" else f" on {f.host}"
        t.add_row(f.name, f.provider + on, f.state, f"{len(f.running)}/{len(f.nodes)}", age, where)
    return t


def boxes_table(catalog: dict[str, Box], plain: bool) -> Table:
    t = new_table("labgen boxes", plain)
    for col in ("name", "family", "providers", "description", "source"):
        t.add_column(col, overflow="fold")
    for b in catalog.values():
        source = f"labgen box build {b.build}" if b.build else (b.url and "URL in catalog") or \
            ("this host" if b.family == "host" else "Vagrant catalog")
        t.add_row(b.name, b.family, ", ".join(b.providers),
                  b.description + (f" [yellow]({b.note})[/]" if b.note else ""), source)
    return t
