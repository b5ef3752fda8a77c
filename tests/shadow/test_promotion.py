"""The one promotion rule, and the three places that use it agreeing: breaker, report headline, /status."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.mode.breaker import Breaker, BreakerSettings
from agent.shadow.model import WindowVerdict
from agent.shadow.promotion import NO_WINDOW, Promotion, promotion, promotion_json, promotion_step
from agent.shadow.report import build_report
from agent.shadow.store import ShadowStore

START = 1_767_229_200_000
WINDOW_MS = 300_000
EXCHANGE = "bybit-main"


def judged(verdict: str, i: int, *, critical: dict[str, int] | None = None) -> WindowVerdict:
    return WindowVerdict(exchange=EXCHANGE, window_start_ms=START + i * WINDOW_MS,
                         window_end_ms=START + (i + 1) * WINDOW_MS,
                         verdict=verdict, reason=f"window {i}",  # type: ignore[arg-type]
                         samples=100, mismatches=0, ignored=0, errors=0, mismatch_ratio=0.0, wilson_low=0.0,
                         wilson_high=0.03, max_mismatch_ratio=0.01, min_samples=50, critical=critical or {})


def test_promote_only_after_n_consecutive_passes() -> None:
    history = [judged("pass", 0), judged("inconclusive", 1), judged("pass", 2), judged("pass", 3)]

    assert promotion(history, 3) == ("hold", 2, "2 of 3 consecutive passing windows needed to promote")
    assert promotion(history + [judged("pass", 4)], 3) == ("promote", 3, "3 consecutive passing windows (3 needed)")


def test_critical_rolls_back_whatever_the_verdict_then_fail() -> None:
    assert promotion([judged("pass", 0), judged("fail", 1, critical={"missed_close": 1})], 1).reason == (
        "a critical mismatch in the latest window")
    # a critical kind is a roll back even on a window whose verdict was not fail (an ignore rule, an error)
    assert promotion([judged("error", 0, critical={"ghost": 1})], 1).action == "roll_back"
    assert promotion([judged("pass", 0), judged("fail", 1)], 1) == ("roll_back", 0, "the latest window failed")


def test_hold_on_nothing_inconclusive_or_error_and_the_streak_starts_again() -> None:
    assert promotion([], 3) == NO_WINDOW
    assert promotion([judged("pass", 0), judged("error", 1)], 1) == (
        "hold", 0, "the latest window was error; the pass streak starts again")
    assert promotion([judged("fail", 0), judged("inconclusive", 1)], 1).action == "hold"
    assert promotion([judged("pass", 0), judged("inconclusive", 1), judged("pass", 2)], 2).action == "hold"


def test_windows_are_taken_in_time_order() -> None:
    assert promotion([judged("pass", 2), judged("fail", 0), judged("pass", 1)], 2).action == "promote"


def test_status_view_before_and_after_a_window() -> None:
    assert promotion_json(None, 3) == {"next_action": None, "consecutive_passes": 0,
                                       "consecutive_passes_to_promote": 3, "reason": NO_WINDOW.reason}
    assert promotion_json(Promotion("hold", 2, "x"), 3)["consecutive_passes"] == 2


VERDICTS = st.tuples(st.sampled_from(["pass", "pass", "pass", "fail", "inconclusive", "error"]),
                     st.booleans().map(lambda b: {"ghost": 1} if b else {}) | st.just({}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VERDICTS, min_size=1, max_size=8), st.integers(1, 4))
def test_breaker_report_and_status_agree_window_by_window(history: list[tuple[str, dict[str, int]]],
                                                          needed: int) -> None:
    breaker = Breaker(BreakerSettings(auto_recover=True, promote_after_passing_windows=needed,
                                      max_transitions_per_day=1000), "shadow")
    with tempfile.TemporaryDirectory() as tmp, ShadowStore(Path(tmp) / "shadow.sqlite3") as store:
        store.add_transition(exchange=EXCHANGE, from_mode="rest", to_mode="shadow", reason="operator",
                             automatic=False, ts_ms=START - 1)
        windows: list[WindowVerdict] = []
        for i, (verdict, critical) in enumerate(history):
            window = judged(verdict, i, critical=critical)
            windows.append(window)
            store.record_window(window, [], [])
            decision = breaker.on_verdict(window.window_end_ms, verdict, critical=bool(critical))
            rule = promotion(windows, needed)
            head = build_report(store, exchange=EXCHANGE, since_ms=START - 1, now_ms=window.window_end_ms,
                                agent_version="t", config_sha256="0" * 64,
                                consecutive_passes_to_promote=needed)["exchanges"][0]["headline"]
            status = promotion_json(breaker.last_promotion, needed)

            assert head["next_action"] == rule.action == status["next_action"]
            assert head["consecutive_passes"] == rule.streak == status["consecutive_passes"]
            expected_mode = {"roll_back": "rest", "promote": "hybrid"}.get(rule.action)
            assert (decision.mode if decision else None) == expected_mode
            if decision is not None:
                break  # the mode changed: later windows belong to another probation


def test_promotion_step_is_the_fold_of_promotion() -> None:
    assert promotion_step(2, "pass", critical=False, needed=3).action == "promote"
    assert promotion_step(2, "pass", critical=True, needed=3).action == "roll_back"
