"""What verification produces: one Check per command judged, gathered in a Report.
Plain data; report.py formats it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    stage: str
    name: str
    node: str
    command: str
    passed: bool | None          # None: skipped because an earlier stage failed
    evidence: str
    seconds: float = 0.0
    error: bool = False          # could not run at all (node unreachable, timeout, no binary)

    @property
    def status(self) -> str:
        if self.passed is None:
            return "skipped"
        if self.passed:
            return "passed"
        return "error" if self.error else "failed"


@dataclass
class Report:
    lab: str
    provider: str
    tunnel: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)   # read from the diagnostics of a failed run

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """Checks that did not pass, whether they failed or could not run."""
        return [c for c in self.checks if c.passed is False]

    def stage_status(self, stage: str) -> str:
        return stage_status_of([c for c in self.checks if c.stage == stage])

    @property
    def errors(self) -> list[Check]:
        return [c for c in self.checks if c.status == "error"]


def stage_status_of(checks: list[Check]) -> str:
    if not checks:
        return "absent"
    if all(c.passed is None for c in checks):
        return "skipped"
    return "passed" if all(c.passed for c in checks) else "failed"
