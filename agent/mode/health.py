"""Health checks of one exchange's WebSocket path (pure: readings in, verdicts out).

Each check compares one reading with its threshold. A check is ``failing``
after ``consecutive`` bad readings in a row (minimum evidence); a critical
check fails on its first bad reading. A reading of None means "not
applicable now" (e.g. no heartbeat RTT on a stream without application
pings) and neither counts as bad nor breaks a streak.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

CheckState = Literal["ok", "bad", "failing", "n/a"]


@dataclass(frozen=True)
class CheckSpec:
    """One check: bad when the reading exceeds ``threshold``; failing after ``consecutive`` bad readings."""

    name: str
    threshold: float
    consecutive: int = 3
    critical: bool = False
    trips: bool = True  # False: shown on /status and alerted on, never a reason to leave the WebSocket path


@dataclass
class CheckResult:
    """What /status shows of one check."""

    name: str
    value: float | None
    threshold: float
    consecutive: int
    bad_streak: int
    state: CheckState
    critical: bool
    trips: bool


@dataclass
class HealthReport:
    """The result of one evaluation: every check, and the names that should move the breaker."""

    checks: dict[str, CheckResult] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.failing and not self.critical


class HealthEvaluator:
    """Keeps the bad streak of each check across evaluations."""

    def __init__(self, specs: list[CheckSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self._streaks = dict.fromkeys(self.specs, 0)
        self.last: HealthReport = HealthReport()

    def reset(self) -> None:
        """Forget every streak (after a mode change: the old evidence was about another setup)."""
        self._streaks = dict.fromkeys(self.specs, 0)

    def evaluate(self, readings: Mapping[str, float | None]) -> HealthReport:
        """Judge one set of readings; names missing from ``readings`` count as not applicable."""
        report = HealthReport()
        for name, spec in self.specs.items():
            value = readings.get(name)
            if value is None:
                state: CheckState = "n/a"
            elif value > spec.threshold:
                self._streaks[name] += 1
                needed = 1 if spec.critical else spec.consecutive
                state = "failing" if self._streaks[name] >= needed else "bad"
            else:
                self._streaks[name] = 0
                state = "ok"
            report.checks[name] = CheckResult(name, value, spec.threshold, spec.consecutive, self._streaks[name],
                                              state, spec.critical, spec.trips)
            if state == "failing" and spec.trips:
                (report.critical if spec.critical else report.failing).append(name)
        self.last = report
        return report
