"""Verification: data in (the Lab, a Runner per node), results out (a list of Checks).

The stages follow Open vSwitch's own system tests: nodes and OVS first, then the underlay,
then spanning tree (polled, never a fixed sleep), then the overlay, then proof that the
traffic really crossed the tunnel, then path MTU. A failed stage stops the run: later
stages are reported as skipped instead of timing out one by one. Formatting lives in report.py.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

from .batch import run_planned
from .checks import (
    plan_config,
    plan_mtu,
    plan_nodes,
    plan_overlay,
    plan_underlay,
    run_stp_checks,
    run_tunnel_checks,
)
from .model import Lab
from .results import Check, Report
from .runner import Runner

STAGES = ("nodes", "config", "underlay", "stp", "overlay", "tunnel", "mtu")


def verify(lab: Lab, runners: Mapping[str, Runner], timeout: float | None = None,
           progress: Callable[[str], None] = lambda _: None) -> Report:
    """Run the stages in order and stop at the first failing one. Stages in one group only
    depend on the groups before them, so they run at the same time (tunnel proof and MTU
    both need a working overlay, not each other)."""
    started = time.monotonic()
    settle = timeout if timeout is not None else lab.settle_timeout
    report = Report(lab.name, lab.provider, lab.tunnel)
    groups: list[list[tuple[str, Callable[[], list[Check]]]]] = [
        [("nodes", lambda: run_planned(plan_nodes(lab), runners))],
        [("config", lambda: run_planned(plan_config(lab), runners))],
        [("underlay", lambda: run_planned(plan_underlay(lab), runners))],
        [("stp", lambda: run_stp_checks(lab, runners, settle))],
        [("overlay", lambda: run_planned(plan_overlay(lab, min(settle, 15.0)), runners))],
        [("tunnel", lambda: run_tunnel_checks(lab, runners)),
         ("mtu", lambda: run_planned(plan_mtu(lab), runners))],
    ]
    failed_stage = None
    for group in groups:
        if failed_stage:
            report.checks += [Check(stage, f"{stage} checks", "-", "", None,
                                    f"not run: stage '{failed_stage}' failed") for stage, _ in group]
            continue
        progress(", ".join(stage for stage, _ in group))
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            results = list(pool.map(lambda item: item[1](), group))
        for (stage, _), checks in zip(group, results):
            report.checks.extend(checks)
            if not all(c.passed for c in checks):
                failed_stage = failed_stage or stage
    report.seconds = time.monotonic() - started
    return report
