"""Comparator, position side: missed opens and closes, ghosts, size mismatches, and the grace period."""

from __future__ import annotations

from decimal import Decimal

from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot
from agent.shadow.comparator import Comparator
from agent.shadow.model import Sample
from agent.shadow.verdict import judge_window

T0 = 1_767_229_200_000  # 2026-01-01 01:00:00 UTC
POLL_MS = 5000
LONG = PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="0.5")
FLAT = PositionObs(symbol="BTCUSDT", position_idx=0, side=None, size="0")


def snap(t_ms: int, *rows: PositionObs, source: str = "rest", complete: bool = True,
         as_of_ms: int | None = None) -> PositionSnapshot:
    return PositionSnapshot(positions=rows, source=source,  # type: ignore[arg-type]
                            ts_received_ms=t_ms, complete=complete, as_of_ms=as_of_ms)


def ws_delta(t_ms: int, *rows: PositionObs) -> PositionSnapshot:
    return snap(t_ms, *rows, source="ws", complete=False)


def comparator(**overrides: object) -> Comparator:
    options: dict[str, object] = dict(poll_interval_seconds=POLL_MS / 1000, tick_size_by_symbol={},
                                      noise_floor=None, ignore_rules=(), max_ws_silence_seconds=10.0)
    options.update(overrides)
    return Comparator("bybit-main", **options)  # type: ignore[arg-type]


def poll(c: Comparator, i: int, *rows: PositionObs) -> list[Sample]:
    t = T0 + i * POLL_MS
    return c.observe("rest", snap(t, *rows), t).samples


def judge(samples: list[Sample]) -> str:
    verdict = judge_window(samples, exchange="bybit-main", window_start_ms=T0, window_end_ms=T0 + 3_600_000,
                           min_samples=1, max_mismatch_ratio=0.5)
    return f"{verdict.verdict}: {verdict.reason}"


def test_a_dropped_websocket_close_is_a_missed_close_and_fails_at_once() -> None:
    # Arrange: both sides see the position open (WS via the hybrid source's REST snapshot on connect)
    c = comparator()
    c.observe("ws", snap(T0 - 1000, LONG, source="rest"), T0 - 1000)
    samples = poll(c, 0, LONG) + poll(c, 1, LONG)

    # Act: REST sees the close at poll 2; the WebSocket never does
    later = [s for i in range(2, 6) for s in poll(c, i)]

    # Assert: pending at polls 2 and 3 (not yet longer than the grace of one poll), then critical
    assert [s.result for s in samples] == ["match", "match"]
    assert [(s.ts_ms - T0) // POLL_MS for s in later] == [4, 5]
    assert {s.mismatch_kind for s in later} == {"missed_close"}
    assert later[0].rest_value == "0" and later[0].ws_value == "0.5" and later[0].detail == "REST flat, WS long 0.5"
    assert judge(samples + later).startswith("fail: critical: 2 missed_close (BTCUSDT/0)")


def test_a_websocket_position_rest_never_had_is_a_ghost() -> None:
    c = comparator()
    c.observe("ws", ws_delta(T0 + 2000, LONG), T0 + 2000)

    samples = [s for i in range(1, 5) for s in poll(c, i)]

    assert [s.mismatch_kind for s in samples] == ["ghost", "ghost"]
    assert "ghost" in judge(samples) and judge(samples).startswith("fail")


def test_propagation_delay_within_grace_is_not_a_mismatch() -> None:
    # REST sees the open at poll 1, the WebSocket 2 s later; the close likewise, the WebSocket 1 s later
    c = comparator()
    samples = poll(c, 0)
    samples += poll(c, 1, LONG)
    c.observe("ws", ws_delta(T0 + POLL_MS + 2000, LONG), T0 + POLL_MS + 2000)
    samples += poll(c, 2, LONG) + poll(c, 3, LONG)
    c.observe("ws", ws_delta(T0 + 3 * POLL_MS + 1000, FLAT), T0 + 3 * POLL_MS + 1000)  # exchange closed at 3.x
    samples += poll(c, 4) + poll(c, 5)

    assert all(s.result == "match" for s in samples)
    assert [(s.ts_ms - T0) // POLL_MS for s in samples] == [2, 3, 4]  # poll 1 pending; poll 5 both flat again
    assert judge(samples) == ("inconclusive: 0 of 3 position samples mismatched (0%, 95% CI 0–56.1%): "
                              "the interval straddles 50%")


def test_the_websocket_leading_rest_is_not_a_mismatch_either() -> None:
    c = comparator()
    c.observe("ws", ws_delta(T0 + 4900, LONG), T0 + 4900)

    samples = poll(c, 1) + poll(c, 2, LONG)

    assert [s.result for s in samples] == ["match"]


def test_missed_open_and_size_mismatch_are_counted_after_grace() -> None:
    c = comparator()
    eth = PositionObs(symbol="ETHUSDT", position_idx=2, side="short", size="3")
    c.observe("ws", ws_delta(T0, LONG), T0)

    bigger = PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="0.7")

    samples = [s for i in range(0, 4) for s in poll(c, i, bigger, eth)]

    kinds = sorted((s.symbol, s.mismatch_kind) for s in samples)
    assert kinds == [("BTCUSDT", "size_mismatch"), ("BTCUSDT", "size_mismatch"),
                     ("ETHUSDT", "missed_open"), ("ETHUSDT", "missed_open")]
    assert judge(samples).startswith("fail: 4 of 4 position samples mismatched")


def test_same_size_written_differently_matches() -> None:
    c = comparator()
    c.observe("ws", ws_delta(T0, PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="0.50")), T0)

    [sample] = poll(c, 1, LONG)

    assert sample.result == "match"


def test_grace_grows_with_the_observed_websocket_lag() -> None:
    # Arrange: the WebSocket shows REST's price changes 12 s late, so p99 lag = 12 s > the 5 s poll
    c = comparator(max_ws_silence_seconds=30.0)
    for i, price in enumerate(["100", "101", "102", "103"]):
        t = T0 + i * 20_000
        c.observe("rest", MarkPriceBatch(prices=(MarkPriceObs(symbol="XUSDT", mark_price=price),), source="rest",
                                         ts_received_ms=t), t)
        c.observe("ws", MarkPriceBatch(prices=(MarkPriceObs(symbol="XUSDT", mark_price=price),), source="ws",
                                       ts_received_ms=t + 12_000), t + 12_000)

    # Act / Assert
    assert c.ws_lag_p99_seconds == 12.0 and c.grace_ms == 12_000
    assert comparator(grace_seconds=1.5).grace_ms == 1500


def test_grace_override_holds_disagreements_longer() -> None:
    c = comparator(grace_seconds=20.0)
    c.observe("ws", ws_delta(T0, LONG), T0)

    samples = [s for i in range(0, 6) for s in poll(c, i)]

    assert [(s.ts_ms - T0) // POLL_MS for s in samples] == [5]   # 25 s > 20 s of grace


def test_a_complete_ws_side_snapshot_closes_what_it_does_not_carry_unless_news_came_since() -> None:
    eth = PositionObs(symbol="ETHUSDT", position_idx=0, side="long", size="1")
    c = comparator()
    c.observe("ws", ws_delta(T0, LONG), T0)
    c.observe("ws", ws_delta(T0 + 300, eth), T0 + 300)

    # reconciliation asked at T0 + 200, answered at T0 + 500 with neither row: BTC closed, ETH was news since
    c.observe("ws", snap(T0 + 500, source="rest", as_of_ms=T0 + 200), T0 + 500)
    samples = poll(c, 1, eth)

    assert {(s.symbol, s.result) for s in samples} == {("ETHUSDT", "match")}


def test_out_of_order_rest_snapshot_is_skipped() -> None:
    c = comparator()
    poll(c, 3)

    assert poll(c, 2, LONG) == [] and c.counters["rest_out_of_order"] == 1


def test_position_poll_error_marks_the_keys_in_play() -> None:
    c = comparator()
    c.observe("ws", ws_delta(T0, LONG), T0)
    poll(c, 1, LONG)

    [sample] = c.observe_error("position", T0 + 2 * POLL_MS).samples
    [anonymous] = comparator().observe_error("position", T0).samples

    assert (sample.symbol, sample.position_idx, sample.result) == ("BTCUSDT", 0, "error")
    assert anonymous.symbol == "*"


def test_decimal_sizes_compare_by_value() -> None:
    assert Decimal("0.5") == Decimal("0.50")  # the comparator relies on this, not on the strings


def test_junk_sizes_count_as_flat() -> None:
    c = comparator()
    junk = [PositionObs(symbol=f"X{i}USDT", position_idx=0, side="long", size=size)
            for i, size in enumerate(["sNaN", "NaN", "Infinity", "", "abc"])]
    c.observe("ws", ws_delta(T0, *junk), T0)

    assert poll(c, 1, *junk) == []      # flat on both sides: nothing in play, no sample
