"""What verification produces: one Check per command judged, gathered in a Report.
Plain data; report.py formats it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

EVIDENCE_LINES = 8


@dataclass
class Check:
    stage: str
    name: str
    node: str
    command: str
    passed: bool | None          # None: skipped because an earlier stage failed
    evidence: str
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "skipped" if self.passed is None else ("passed" if self.passed else "failed")


@dataclass
class Report:
    lab: str
    provider: str
    tunnel: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def to_dict(self) -> dict:
        return {"lab": self.lab, "provider": self.provider, "tunnel": self.tunnel,
                "passed": self.passed, "seconds": round(self.seconds, 3),
                "checks": [{**asdict(c), "status": c.status, "seconds": round(c.seconds, 3)}
                           for c in self.checks]}


def excerpt(text: str, lines: int = EVIDENCE_LINES) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(kept) > lines:
        kept = kept[:2] + ["..."] + kept[-(lines - 3):]
    return "\n".join(kept)
