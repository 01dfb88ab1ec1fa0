"""Verification: data in (the Lab, a Runner per node), results out (a Report of Checks).

The stages and their order are the table in stages.py. A failed stage stops the run: later
stages are reported as skipped instead of timing out one by one. Formatting is report.py's.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from labgen.lab.model import Lab
from labgen.nodes.runner import Runner
from labgen.verify.results import Check, Report
from labgen.verify.stages import Pace, groups


def verify(lab: Lab, runners: Mapping[str, Runner], pace: Pace, timeout: float | None = None,
           progress: Callable[[str], None] = lambda _: None) -> Report:
    """Run the stage groups in order and stop after the first group with a failing check.
    `pace`: the lab's provider (how its nodes keep up: stages.Pace)."""
    started = time.monotonic()
    settle = timeout if timeout is not None else lab.settle_timeout
    report = Report(lab.name, lab.provider, lab.tunnel)
    failed_stage = None
    for group in groups(pace.stages_apart):
        if failed_stage:
            report.checks += [Check(s.name, f"{s.name} checks", "-", "", None,
                                    f"not run: stage '{failed_stage}' failed") for s in group]
            continue
        progress(", ".join(s.name for s in group))
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            results = list(pool.map(lambda s: s.run(lab, runners, settle, pace), group))
        for stage, checks in zip(group, results, strict=False):
            report.checks.extend(checks)
            if not all(c.passed for c in checks):
                failed_stage = failed_stage or stage.name
    report.seconds = time.monotonic() - started
    return report
