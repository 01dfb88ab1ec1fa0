"""Formatting a verification Report: a table for people, JSON for scripts, JUnit for CI."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .results import Report

STYLE = {"passed": "green", "failed": "bold red", "skipped": "yellow"}


def table(report: Report) -> Table:
    t = Table(title=f"labgen verify: lab {report.lab} ({report.tunnel}, {report.provider})",
              title_justify="left", show_lines=False)
    t.add_column("stage")
    t.add_column("node")
    t.add_column("check", overflow="fold", ratio=1)
    t.add_column("result")
    t.add_column("s", justify="right")
    t.add_column("evidence", overflow="fold", ratio=1)
    for c in report.checks:
        # Passed checks show one line of evidence; failures show all of it.
        evidence = c.evidence if c.passed is not True else (c.evidence.splitlines() or [""])[-1]
        t.add_row(c.stage, c.node, c.name, f"[{STYLE[c.status]}]{c.status}[/]", f"{c.seconds:.2f}",
                  evidence, style=None)
    return t


def summary(report: Report) -> str:
    n_pass = sum(1 for c in report.checks if c.passed)
    n_fail = len(report.failed)
    n_skip = sum(1 for c in report.checks if c.passed is None)
    verdict = "VERIFIED" if report.passed else "NOT VERIFIED"
    line = f"{verdict}: {n_pass} passed, {n_fail} failed, {n_skip} skipped in {report.seconds:.1f} s"
    if report.failed:
        first = report.failed[0]
        line += f"; first failure: [{first.stage}] {first.name} on {first.node}"
    return line


def print_report(report: Report, console: Console) -> None:
    console.print(table(report))
    console.print(summary(report), style="bold green" if report.passed else "bold red",
                  markup=False, highlight=False)


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


def write_junit(report: Report, path: Path) -> None:
    # JUnit's own split: <failure> = the check ran and found a fault; <error> = it could not
    # run (node unreachable, timeout, missing binary).
    errors = len(report.errors)
    failures = len(report.failed) - errors
    skipped = sum(1 for c in report.checks if c.passed is None)
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
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
