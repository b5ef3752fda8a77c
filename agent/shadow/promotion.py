"""The promotion rule, in one place (pure): what the shadow windows so far say to do next.

The breaker acts on it, the report's headline states it and ``/status`` shows it; all three call
``promotion_step`` (window by window) or ``promotion`` (over a list of windows), so they cannot
disagree. Over the windows since the exchange's last mode change, for the latest one, in this order
(``reference/ops.md`` §1: Kayenta's critical metrics, Argo's inconclusive, Flagger's no-data):

1. a critical mismatch (``missed_close``, ``ghost``): ``roll_back``, whatever the verdict says;
2. ``fail``: ``roll_back``;
3. ``pass``: one more in the streak; ``promote`` once the streak reaches N, else ``hold``;
4. ``inconclusive`` or ``error``: ``hold``, and the streak starts again (no evidence is not a pass).

No window at all: ``hold``. N is ``rollback.promote_after_passing_windows``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from agent.shadow.model import CRITICAL_KINDS, NextAction, WindowVerdict


class Promotion(NamedTuple):
    """The next action, the pass streak it rests on, and why (prose for people)."""

    action: NextAction
    streak: int
    reason: str


NO_WINDOW = Promotion("hold", 0, "no window judged yet; no data is not a pass")


def promotion_step(streak: int, verdict: str, *, critical: bool, needed: int) -> Promotion:
    """The rule for one more window: ``streak`` passes before it, its ``verdict`` and whether it was critical."""
    if critical:
        return Promotion("roll_back", 0, "a critical mismatch in the latest window")
    if verdict == "fail":
        return Promotion("roll_back", 0, "the latest window failed")
    if verdict == "pass":
        streak += 1
        if streak >= needed:
            return Promotion("promote", streak, f"{streak} consecutive passing windows ({needed} needed)")
        return Promotion("hold", streak, f"{streak} of {needed} consecutive passing windows needed to promote")
    return Promotion("hold", 0, f"the latest window was {verdict}; the pass streak starts again")


def is_critical(window: WindowVerdict) -> bool:
    """Whether a window saw a critical mismatch kind (missed close, ghost)."""
    return any(window.critical.get(kind) for kind in CRITICAL_KINDS)


def promotion(windows: Iterable[WindowVerdict], needed: int) -> Promotion:
    """The rule over ``windows`` (those since the last mode change), taken in time order."""
    result = NO_WINDOW
    for window in sorted(windows, key=lambda w: w.window_end_ms):
        result = promotion_step(result.streak, window.verdict, critical=is_critical(window), needed=needed)
    return result


def promotion_json(result: Promotion | None, needed: int) -> dict[str, object]:
    """What ``/status`` shows of the rule: ``next_action`` (null before the first window), streak, N, why."""
    return {"next_action": result.action if result else None, "consecutive_passes": result.streak if result else 0,
            "consecutive_passes_to_promote": needed, "reason": result.reason if result else NO_WINDOW.reason}
