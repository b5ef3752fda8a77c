"""Comparator, price side: as-of join, tolerance, lead/lag, WebSocket silence, errors, ignore rules."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from agent.core.observations import MarkPriceBatch, MarkPriceObs
from agent.shadow.calibration import calibrate, tick_ratios
from agent.shadow.comparator import Comparator
from agent.shadow.model import NoiseFloor, Sample
from agent.shadow.verdict import judge_window

T0 = 1_767_229_200_000        # 2026-01-01 01:00:00 UTC, far from funding
FUNDING_8H = 1_767_254_400_000  # 2026-01-01 08:00:00 UTC
TICKS = {"BTCUSDT": Decimal("0.1"), "ETHUSDT": Decimal("0.01")}


def batch(t_ms: int, source: str = "rest", **prices: str) -> MarkPriceBatch:
    return MarkPriceBatch(prices=tuple(MarkPriceObs(symbol=s, mark_price=p, ts_exchange_ms=t_ms - 20)
                                       for s, p in prices.items()), source=source, ts_received_ms=t_ms)


def comparator(**overrides: object) -> Comparator:
    options: dict[str, object] = dict(poll_interval_seconds=5.0, tick_size_by_symbol=TICKS, noise_floor=None,
                                      ignore_rules=(), max_ws_silence_seconds=10.0, max_ws_lag_seconds=0.0)
    options.update(overrides)
    return Comparator("bybit-main", **options)  # type: ignore[arg-type]


def price_at(symbol: str, t_ms: int) -> Decimal:
    """A market that steps every 2 s: BTC by 0.5, ETH by 0.05."""
    step = (t_ms - T0) // 2000 % 10
    return Decimal("50000") + step * Decimal("0.5") if symbol == "BTCUSDT" else Decimal("3000") + step * Decimal("0.05")


def run_market(c: Comparator, *, seconds: int, ws_factor: dict[str, Decimal] | None = None,
               ws_latency_ms: int = 20, rest_age_ms: int = 50) -> list[Sample]:
    """WS pushes every 500 ms, REST polls every 5 s; returns every sample emitted (flushed at the end)."""
    factor = ws_factor or {}
    samples: list[Sample] = []
    for t in range(T0, T0 + seconds * 1000, 500):
        ws = {s: str(price_at(s, t) * factor.get(s, Decimal(1))) for s in TICKS}
        samples += c.observe("ws", batch(t + ws_latency_ms, "ws", **ws), t + ws_latency_ms).samples
        if (t - T0) % 5000 == 0 and t > T0:
            rest = {s: str(price_at(s, t - rest_age_ms)) for s in TICKS}
            samples += c.observe("rest", batch(t, **rest), t).samples
    return samples + c.flush().samples


def test_same_price_within_a_tick_matches_and_beyond_mismatches() -> None:
    # Arrange
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.1", ETHUSDT="3000.02"), T0)

    # Act
    samples = c.observe("rest", batch(T0 + 100, BTCUSDT="50000.0", ETHUSDT="3000.00"), T0 + 100).samples

    # Assert
    by_symbol = {s.symbol: s for s in samples}
    assert by_symbol["BTCUSDT"].result == "match"           # one tick apart
    assert by_symbol["ETHUSDT"].result == "mismatch"        # two ticks apart
    assert by_symbol["ETHUSDT"].mismatch_kind == "price_divergence"
    assert by_symbol["ETHUSDT"].divergence_ratio == pytest.approx(0.02 / 3000)
    assert by_symbol["BTCUSDT"].tolerance_ratio == pytest.approx(0.1 / 50000)
    assert by_symbol["BTCUSDT"].ws_staleness_seconds == pytest.approx(0.02)


def test_join_is_as_of_the_rest_receive_time() -> None:
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)
    c.observe("ws", batch(T0 + 2000, "ws", BTCUSDT="50100.0"), T0 + 2000)   # arrives after REST's receive time

    [sample] = c.observe("rest", batch(T0 + 1000, BTCUSDT="50000.0"), T0 + 2000).samples

    assert sample.result == "match" and sample.ws_value == "50000.0"


def test_a_half_percent_drift_fails_the_window_and_names_the_symbol_first() -> None:
    c = comparator(trace_id_provider=lambda: "4bf92f3577b34da6a3ce929d0e0e4736")

    samples = run_market(c, seconds=300, ws_factor={"ETHUSDT": Decimal("1.005")})
    verdict = judge_window(samples, exchange="bybit-main", window_start_ms=T0, window_end_ms=T0 + 300_000,
                           min_samples=50, max_mismatch_ratio=0.01, confidence=0.95,
                           noise_floor=c.noise_floor(), primary="rest")

    eth = [s for s in samples if s.symbol == "ETHUSDT"]
    assert all(s.result == "mismatch" and s.divergence_ratio == pytest.approx(0.005, rel=1e-3) for s in eth)
    assert all(s.result == "match" for s in samples if s.symbol == "BTCUSDT")
    assert verdict.verdict == "fail"
    assert verdict.symbols[0].symbol == "ETHUSDT" and verdict.symbols[0].mismatches == len(eth)
    assert "ETHUSDT" in verdict.reason and "price samples diverged" in verdict.reason
    assert {s.trace_id for s in samples} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


def test_a_healthy_feed_passes_with_leads_recorded() -> None:
    c = comparator()

    samples = run_market(c, seconds=1500)   # 299 polls x 2 symbols
    verdict = judge_window(samples, exchange="bybit-main", window_start_ms=T0, window_end_ms=T0 + 1_500_000,
                           min_samples=50, max_mismatch_ratio=0.01)

    assert verdict.verdict == "pass", verdict.reason
    leads = [s.ws_lead_seconds for s in samples if s.ws_lead_seconds is not None]
    assert leads and all(0 < lead <= 2.0 for lead in leads)
    assert not any(s.ws_lag_seconds for s in samples)


def test_ws_lead_when_the_websocket_showed_the_new_price_first() -> None:
    c = comparator()
    c.observe("rest", batch(T0, BTCUSDT="50000.0"), T0)
    c.observe("ws", batch(T0 + 1000, "ws", BTCUSDT="50010.0"), T0 + 1000)
    c.observe("ws", batch(T0 + 2000, "ws", BTCUSDT="50010.0"), T0 + 2000)

    [sample] = c.observe("rest", batch(T0 + 5000, BTCUSDT="50010.0"), T0 + 5000).samples

    assert sample.result == "match"
    assert sample.ws_lead_seconds == pytest.approx(4.0) and sample.ws_lag_seconds is None


def test_ws_lag_is_reported_on_the_held_sample_once_the_websocket_catches_up() -> None:
    # Arrange: REST shows a new price the WebSocket has not shown yet
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)
    c.observe("rest", batch(T0 + 100, BTCUSDT="50000.0"), T0 + 100)

    # Act
    during = c.observe("rest", batch(T0 + 5000, BTCUSDT="50010.0"), T0 + 5000).samples
    settled = c.settled_until_ms(T0 + 5100)
    after = c.observe("ws", batch(T0 + 5300, "ws", BTCUSDT="50010.0"), T0 + 5300).samples

    # Assert
    assert during == [] and settled == T0 + 5000
    [sample] = after
    assert sample.ts_ms == T0 + 5000 and sample.result == "mismatch"   # judged as of REST's receive time
    assert sample.ws_lag_seconds == pytest.approx(0.3) and sample.ws_lead_seconds is None
    assert c.settled_until_ms(T0 + 5400) == T0 + 5400


def test_a_lag_never_resolved_is_released_unknown_after_the_silence_limit() -> None:
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)
    c.observe("rest", batch(T0 + 100, BTCUSDT="50000.0"), T0 + 100)
    c.observe("rest", batch(T0 + 5000, BTCUSDT="50010.0"), T0 + 5000)

    early = c.advance(T0 + 14_000).samples
    [sample] = c.advance(T0 + 15_001).samples

    assert early == []
    assert sample.ws_lag_seconds is None and sample.ws_lead_seconds is None
    assert c.counters["lag_unresolved"] == 1


def test_websocket_silent_while_rest_moves_is_a_failure() -> None:
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)
    results = []
    for i, price in enumerate(["50000.0", "50001.0", "50002.0", "50003.0"]):
        t = T0 + 100 + i * 5000
        results += c.observe("rest", batch(t, BTCUSDT=price), t).samples
    results += c.flush().samples
    verdict = judge_window(results, exchange="bybit-main", window_start_ms=T0, window_end_ms=T0 + 60_000,
                           min_samples=1, max_mismatch_ratio=0.5)

    silent = [s for s in results if s.mismatch_kind == "ws_silent"]
    assert [s.ts_ms for s in silent] == [T0 + 10_100, T0 + 15_100]     # silence > 10 s only from here
    assert verdict.verdict == "fail" and verdict.reason.startswith("WebSocket silent while REST moved")


def test_websocket_quiet_while_rest_is_flat_is_not_silence() -> None:
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)

    samples = [s for i in range(6) for s in
               c.observe("rest", batch(T0 + i * 5000, BTCUSDT="50000.0"), T0 + i * 5000).samples]

    assert [s.result for s in samples] == ["match"] * 6


def test_no_websocket_data_ever_is_silence_after_the_limit() -> None:
    c = comparator()

    samples = [s for i in range(4) for s in
               c.observe("rest", batch(T0 + i * 5000, BTCUSDT="50000.0"), T0 + i * 5000).samples]

    assert [s.mismatch_kind for s in samples] == ["ws_silent"]      # at 15 s; before: no data, no sample
    assert c.counters["no_ws_data"] == 3


def test_rest_poll_error_gives_error_samples_and_an_error_window() -> None:
    c = comparator()
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0", ETHUSDT="3000.00"), T0)
    ok = c.observe("rest", batch(T0 + 100, BTCUSDT="50000.0", ETHUSDT="3000.00"), T0 + 100).samples

    errors = [s for i in range(1, 4) for s in c.observe_error("price", T0 + i * 5000, "HTTP 503").samples]
    verdict = judge_window(ok + errors, exchange="bybit-main", window_start_ms=T0, window_end_ms=T0 + 60_000,
                           min_samples=1, max_mismatch_ratio=0.01)

    assert {(s.symbol, s.result, s.detail) for s in errors} == {("BTCUSDT", "error", "HTTP 503"),
                                                                 ("ETHUSDT", "error", "HTTP 503")}
    assert verdict.verdict == "error" and "could not be made" in verdict.reason


def test_funding_ignore_rule_counts_separately() -> None:
    rule = {"name": "funding-settlement", "kind": "price", "around_funding_seconds": 5}
    c = comparator(ignore_rules=[rule])
    c.observe("ws", batch(FUNDING_8H - 60_000, "ws", BTCUSDT="50100.0"), FUNDING_8H - 60_000)

    near = c.observe("rest", batch(FUNDING_8H + 3000, BTCUSDT="50000.0"), FUNDING_8H + 3000)
    far = c.observe("rest", batch(FUNDING_8H + 8000, BTCUSDT="50000.0"), FUNDING_8H + 8000)
    verdict = judge_window(near.samples + far.samples, exchange="bybit-main", window_start_ms=FUNDING_8H - 60_000,
                           window_end_ms=FUNDING_8H + 60_000, min_samples=1, max_mismatch_ratio=0.5)

    [ignored], [mismatch] = near.samples, far.samples
    assert ignored.result == "ignored" and ignored.ignored_by == "funding-settlement"
    assert ignored.mismatch_kind == "price_divergence" and near.examples == []
    assert mismatch.result == "mismatch" and len(far.examples) == 1
    assert (verdict.ignored, verdict.mismatches, verdict.samples) == (1, 1, 1)
    assert verdict.ignored_by_rule == {"funding-settlement": 1}


def test_tolerance_is_one_tick_plus_the_calibrated_noise_floor() -> None:
    # Arrange: REST-vs-REST one round trip apart moves ~1 bp; a tick is 0.02 bp
    pairs = [("BTCUSDT", "50000.0", str(Decimal("50000.0") + Decimal(i % 6))) for i in range(200)]
    floor = calibrate(pairs, now_ms=T0, tick_ratio_by_symbol=tick_ratios(TICKS, {"BTCUSDT": "50000"}))
    tick_only, calibrated = comparator(), comparator(noise_floor=floor)
    for c in (tick_only, calibrated):
        c.observe("ws", batch(T0, "ws", BTCUSDT="50003.0"), T0)

    # Act
    [by_tick] = tick_only.observe("rest", batch(T0 + 100, BTCUSDT="50000.0"), T0 + 100).samples
    [by_floor] = calibrated.observe("rest", batch(T0 + 100, BTCUSDT="50000.0"), T0 + 100).samples

    # Assert
    assert floor.calibration_q99_ratio == pytest.approx(5 / 50000)
    assert floor.tolerance_ratio("BTCUSDT") > floor.tick_ratio_by_symbol["BTCUSDT"]
    assert by_tick.result == "mismatch" and by_floor.result == "match"
    assert by_floor.tolerance_ratio == pytest.approx(1e-4 + 0.1 / 50000)  # one tick plus the noise floor


def test_symbols_filter_and_junk_rest_price() -> None:
    followed = {"BTCUSDT"}
    c = comparator(symbols=lambda: followed)
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0", ETHUSDT="3000"), T0)

    samples = c.observe("rest", batch(T0 + 100, BTCUSDT="", ETHUSDT="3000"), T0 + 100).samples

    [sample] = samples
    assert sample.symbol == "BTCUSDT" and sample.result == "error"


@pytest.mark.parametrize("make", [lambda: NoiseFloor(calibration_q99_ratio=float("nan")),
                                  lambda: NoiseFloor(calibration_q99_ratio=float("inf"))])
def test_a_broken_noise_floor_falls_back_to_the_tick(make: Callable[[], NoiseFloor]) -> None:
    c = comparator(noise_floor=make())
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.1"), T0)

    [sample] = c.observe("rest", batch(T0 + 100, BTCUSDT="50000.0"), T0 + 100).samples

    assert sample.result == "match"


def test_examples_are_capped_per_window() -> None:
    c = comparator(max_examples_per_window=2, window_seconds=300)
    c.observe("ws", batch(T0, "ws", BTCUSDT="51000.0"), T0)

    outputs = [c.observe("rest", batch(T0 + i * 1000, BTCUSDT="50000.0"), T0 + i * 1000) for i in range(1, 6)]

    assert sum(len(o.examples) for o in outputs) == 2 and c.counters["examples_dropped"] == 3
    assert outputs[0].examples[0].window_start_ms == T0 - T0 % 300_000


def test_value_the_websocket_shows_within_the_lag_budget_is_a_match_not_a_divergence() -> None:
    c = comparator(max_ws_lag_seconds=2.0)
    c.observe("ws", batch(T0, "ws", BTCUSDT="50000.0"), T0)
    c.observe("ws", batch(T0 + 900, "ws", BTCUSDT="50010.0"), T0 + 900)       # WS moves first
    early = c.observe("rest", batch(T0 + 1000, BTCUSDT="50000.0"), T0 + 1000)  # REST still shows the old value
    assert [s.result for s in early.samples] == ["match"]
    c.observe("rest", batch(T0 + 2000, BTCUSDT="50020.0"), T0 + 2000)          # REST ahead of WS: held
    late = c.observe("ws", batch(T0 + 2500, "ws", BTCUSDT="50020.0"), T0 + 2500)
    assert [(s.result, s.ws_lag_seconds) for s in late.samples] == [("match", 0.5)]
    c.observe("rest", batch(T0 + 3000, BTCUSDT="50900.0"), T0 + 3000)          # WS never shows it
    expired = c.advance(T0 + 13_100)  # a moved value is held up to the silence limit, to learn its lag
    assert [(s.result, s.mismatch_kind) for s in expired.samples] == [("mismatch", "price_divergence")]


def test_a_symbol_followed_again_starts_afresh_not_silent_and_not_stale() -> None:
    # a position opens on SOL (followed), closes (not followed), opens again minutes later: its topic is new
    followed = {"BTCUSDT", "SOLUSDT"}
    c = comparator(symbols=lambda: followed, max_ws_silence_seconds=2.0, max_ws_lag_seconds=1.0)
    c.observe("ws", batch(T0, "ws", SOLUSDT="150.0"), T0)
    assert c.observe("rest", batch(T0 + 100, SOLUSDT="150.0"), T0 + 100).samples[0].result == "match"
    followed.discard("SOLUSDT")
    c.observe("rest", batch(T0 + 200), T0 + 200)
    followed.add("SOLUSDT")
    t = T0 + 300_000

    # Act: REST sees SOL again (moved) before the resubscribed topic has pushed anything
    early = [s for i in range(10) for s in c.observe("rest", batch(t + i * 200, SOLUSDT=str(151 + i % 2)),
                                                     t + i * 200).samples]
    c.observe("ws", batch(t + 2100, "ws", SOLUSDT="151.0"), t + 2100)
    later = c.observe("rest", batch(t + 2200, SOLUSDT="151.0"), t + 2200).samples

    assert [s for s in early if s.result == "mismatch"] == [], "neither silent (new topic) nor the stale 150"
    assert [s.result for s in later if s.symbol == "SOLUSDT"] == ["match"]
