"""Window verdicts and next actions (agent.shadow.verdict)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.shadow.model import NoiseFloor, Sample, WindowVerdict
from agent.shadow.verdict import judge_window, verdict_rank

START, END = 1_767_229_200_000, 1_767_229_500_000


def sample(result: str = "match", *, kind: str = "price", mismatch_kind: str | None = None, symbol: str = "BTCUSDT",
           i: int = 0, **extra: object) -> Sample:
    if result == "mismatch" and mismatch_kind is None:
        mismatch_kind = "price_divergence"
    return Sample(exchange="bybit-main", kind=kind, symbol=symbol,  # type: ignore[arg-type]
                  ts_ms=START + i, result=result, mismatch_kind=mismatch_kind, **extra)  # type: ignore[arg-type]


def window(matches: int = 0, mismatches: int = 0, errors: int = 0, ignored: int = 0, *,
           mismatch_kind: str = "price_divergence", symbol: str = "BTCUSDT") -> list[Sample]:
    return ([sample("match", i=i, tolerance_ratio=8e-5) for i in range(matches)]
            + [sample("mismatch", mismatch_kind=mismatch_kind, symbol=symbol, i=i, tolerance_ratio=8e-5,
                      divergence_ratio=1e-3) for i in range(mismatches)]
            + [sample("error", i=i) for i in range(errors)]
            + [sample("ignored", mismatch_kind="price_divergence", ignored_by="funding", i=i) for i in range(ignored)])


def judge(samples: list[Sample], *, min_samples: int = 50, max_ratio: float = 0.01,
          confidence: float = 0.95) -> WindowVerdict:
    return judge_window(samples, exchange="bybit-main", window_start_ms=START, window_end_ms=END,
                        min_samples=min_samples, max_mismatch_ratio=max_ratio, confidence=confidence,
                        noise_floor=NoiseFloor(tick_ratio_by_symbol={"BTCUSDT": 2e-6}), primary="rest")


def test_reason_states_the_numbers() -> None:
    verdict = judge(window(matches=468, mismatches=12))

    assert verdict.verdict == "fail"
    assert verdict.reason == ("12 of 480 price samples diverged beyond 0.8 bp (2.5%, 95% CI 1.4–4.3%) > 1%; "
                              "worst: BTCUSDT 12 of 480")
    assert (verdict.samples, verdict.mismatches) == (480, 12)
    assert 0.0143 < (verdict.wilson_low or 0) < 0.0144 and verdict.mismatch_ratio == 0.025


def test_a_clean_window_passes() -> None:
    verdict = judge(window(matches=400))

    assert verdict.verdict == "pass"
    assert verdict.reason == "0 of 400 price samples diverged beyond 0.8 bp (0%, 95% CI 0–0.95%) <= 1%"


def test_too_few_samples_is_inconclusive() -> None:
    verdict = judge(window(matches=30))

    assert verdict.verdict == "inconclusive"
    assert verdict.reason == "only 30 samples (min_samples 50); no data is not a pass"


def test_an_empty_window_is_inconclusive() -> None:
    assert judge([]).verdict == "inconclusive"


def test_straddling_the_limit_is_inconclusive() -> None:
    verdict = judge(window(matches=297, mismatches=3))

    assert verdict.verdict == "inconclusive" and "straddles 1%" in verdict.reason


def test_errors_only_or_a_majority_of_errors_is_an_error() -> None:
    assert judge(window(errors=5)).verdict == "error"
    assert judge(window(matches=100, errors=101)).verdict == "error"
    assert judge(window(matches=400, errors=100)).verdict == "pass"
    assert judge(window(errors=5)).reason == "the comparison itself could not be made: 5 of 5 samples were REST errors"


def test_a_critical_kind_fails_at_once_with_its_name() -> None:
    samples = window(matches=10_000) + [sample("mismatch", kind="position", mismatch_kind="ghost", symbol="ETHUSDT",
                                                position_idx=2)]

    verdict = judge(samples)

    assert verdict.verdict == "fail" and verdict.critical == {"ghost": 1}
    assert verdict.reason.startswith("critical: 1 ghost (ETHUSDT/2)")
    assert verdict.symbols[0].symbol == "ETHUSDT"


def test_websocket_silence_fails() -> None:
    verdict = judge(window(matches=1000, mismatches=1, mismatch_kind="ws_silent", symbol="ETHUSDT"))

    assert verdict.verdict == "fail"
    assert verdict.reason == "WebSocket silent while REST moved: 1 of 1001 samples (ETHUSDT)"


def test_ignored_samples_are_counted_apart() -> None:
    verdict = judge(window(matches=400, ignored=50))

    assert verdict.verdict == "pass"
    assert (verdict.samples, verdict.ignored, verdict.ignored_by_rule) == (400, 50, {"funding": 50})


def test_samples_outside_the_window_or_exchange_are_left_out() -> None:
    inside = window(matches=60)
    outside = [sample("mismatch", i=END - START), Sample(exchange="other", kind="price", symbol="X", ts_ms=START,
                                                         result="mismatch", mismatch_kind="ghost")]

    assert judge(inside + outside, max_ratio=0.1).verdict == judge(inside, max_ratio=0.1).verdict == "pass"


def test_symbol_table_is_worst_first() -> None:
    samples = (window(matches=100, symbol="BTCUSDT")
               + [sample("match", symbol="ETHUSDT")] * 50 + [sample("mismatch", symbol="ETHUSDT")] * 5
               + [sample("match", symbol="SOLUSDT")] * 10 + [sample("mismatch", symbol="SOLUSDT")] * 5)

    table = judge(samples).symbols

    assert [row.symbol for row in table] == ["SOLUSDT", "ETHUSDT", "BTCUSDT"]
    assert (table[0].samples, table[0].mismatches) == (15, 5)


def test_lead_lag_and_staleness_summaries() -> None:
    samples = [sample("match", i=i, ws_lead_seconds=0.1 * i, rest_staleness_seconds=0.05) for i in range(10)]
    samples.append(sample("match", ws_lag_seconds=2.0, ws_staleness_seconds=0.2))

    verdict = judge(samples, min_samples=1)

    assert verdict.ws_lead_p50_seconds == 0.45 and verdict.ws_lag_p99_seconds == 2.0
    assert verdict.rest_staleness_p99_seconds == 0.05 and verdict.ws_staleness_p99_seconds == 0.2


# -- monotonicity: adding mismatches never improves a verdict ---------------------------------------

@st.composite
def windows(draw: st.DrawFn) -> tuple[dict[str, int], int, float, float]:
    counts = {"matches": draw(st.integers(0, 600)), "mismatches": draw(st.integers(0, 60)),
              "errors": draw(st.integers(0, 200)), "ignored": draw(st.integers(0, 20))}
    return (counts, draw(st.integers(1, 400)), draw(st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 0.9])),
            draw(st.sampled_from([0.8, 0.95, 0.99])))


@given(windows(), st.integers(1, 100), st.sampled_from(["price_divergence", "size_mismatch", "missed_open",
                                                        "ghost", "ws_silent"]))
def test_adding_mismatches_never_improves_the_verdict(drawn: tuple[dict[str, int], int, float, float], added: int,
                                                      kind: str) -> None:
    # Arrange
    counts, min_samples, max_ratio, confidence = drawn
    before_samples = window(**counts)
    after_samples = before_samples + [sample("mismatch", mismatch_kind=kind, i=i) for i in range(added)]

    # Act
    before = judge(before_samples, min_samples=min_samples, max_ratio=max_ratio, confidence=confidence)
    after = judge(after_samples, min_samples=min_samples, max_ratio=max_ratio, confidence=confidence)

    # Assert: error is off the pass > inconclusive > fail scale, and mismatches never create one
    assert not (after.verdict == "error" and before.verdict != "error")
    if before.verdict != "error" and after.verdict != "error":
        assert verdict_rank(after.verdict) >= verdict_rank(before.verdict)  # type: ignore[operator]
    assert (after.wilson_low or 0) >= (before.wilson_low or 0)


@given(windows())
def test_counts_add_up(drawn: tuple[dict[str, int], int, float, float]) -> None:
    counts, min_samples, max_ratio, confidence = drawn

    verdict = judge(window(**counts), min_samples=min_samples, max_ratio=max_ratio, confidence=confidence)

    assert verdict.samples == counts["matches"] + counts["mismatches"]
    assert (verdict.mismatches, verdict.errors, verdict.ignored) == (counts["mismatches"], counts["errors"],
                                                                      counts["ignored"])
    if verdict.verdict == "pass":
        assert verdict.samples - verdict.mismatches >= min_samples and (verdict.wilson_high or 0) <= max_ratio
