"""Comparator properties: any interleaving of observations from both origins, junk included, never crashes
and never yields a negative lead, lag or divergence."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot
from agent.shadow.comparator import Comparator
from agent.shadow.model import NoiseFloor, Sample
from agent.shadow.verdict import judge_window

T0 = 1_767_254_390_000  # 10 s before 08:00 UTC, so funding ignore rules come into play
SYMBOLS = ["BTCUSDT", "ETHUSDT", "XUSDT"]
JUNK = ["", "abc", "NaN", "sNaN", "-1", "0", "-0", "Infinity", "-Infinity", "1e999999", "1e-999999", "1E+5", " 5 "]

numbers = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=3).map(str)
prices = st.one_of(numbers, st.sampled_from(["100", "100.0", "100.1", "101"]), st.sampled_from(JUNK))
sizes = st.one_of(st.sampled_from(["0", "0.5", "0.50", "1", "2"]), numbers, st.sampled_from(JUNK))
exchange_ts = st.none() | st.integers(T0 - 100_000, T0 + 700_000)
symbols = st.sampled_from(SYMBOLS)

price_obs = st.builds(MarkPriceObs, symbol=symbols, mark_price=prices, ts_exchange_ms=exchange_ts)
position_obs = st.builds(PositionObs, symbol=symbols, position_idx=st.integers(0, 2),
                         side=st.sampled_from([None, "long", "short"]), size=sizes, ts_exchange_ms=exchange_ts)


@st.composite
def observation(draw: st.DrawFn, t_ms: int) -> MarkPriceBatch | PositionSnapshot:
    source = draw(st.sampled_from(["rest", "ws"]))
    if draw(st.booleans()):
        return MarkPriceBatch(prices=tuple(draw(st.lists(price_obs, max_size=4))), source=source,
                              ts_received_ms=t_ms)
    as_of = draw(st.none() | st.integers(t_ms - 5000, t_ms + 1000))
    return PositionSnapshot(positions=tuple(draw(st.lists(position_obs, max_size=4))), source=source,
                            ts_received_ms=t_ms, complete=draw(st.booleans()), as_of_ms=as_of)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A run: a clock that mostly moves forward, receive times around it (out of order, duplicated)."""
    now = T0
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 60))):
        now += draw(st.integers(-2000, 8000))
        t = now + draw(st.sampled_from([0, 0, 0, -1500, 300, -20_000]))
        choice = draw(st.integers(0, 9))
        if choice <= 6:
            ops.append(("observe", draw(st.sampled_from(["rest", "rest", "ws", "ws", "other"])),
                        draw(observation(t)), now))
        elif choice == 7 and ops and ops[-1][0] == "observe":
            ops.append(ops[-1])                                       # an exact duplicate
        elif choice == 7:
            ops.append(("error", draw(st.sampled_from(["price", "position"])), now))
        elif choice == 8:
            ops.append(("advance", now))
        else:
            ops.append(("flush", now))
    return ops


@st.composite
def comparators(draw: st.DrawFn) -> Comparator:
    floor = draw(st.none() | st.builds(
        NoiseFloor, calibration_q99_ratio=st.none() | st.floats(allow_nan=True, allow_infinity=True),
        tick_ratio_by_symbol=st.dictionaries(symbols, st.floats(0, 0.01), max_size=2)))
    rules = draw(st.lists(st.sampled_from([
        {"name": "funding", "kind": "price", "around_funding_seconds": 5},
        {"name": "x-delisted", "symbols": ["XUSDT"]},
        {"name": "maintenance", "start_utc": "2026-01-01T08:01:00Z", "end_utc": "2026-01-01T08:02:00Z",
         "mismatch_kinds": ["ghost", "ws_silent"]},
    ]), max_size=3, unique_by=lambda r: r["name"]))
    return Comparator(
        "bybit-main", poll_interval_seconds=draw(st.sampled_from([0.5, 5.0])),
        tick_size_by_symbol=draw(st.dictionaries(symbols, st.sampled_from([Decimal("0.1"), Decimal("0.001"),
                                                                           Decimal("0"), Decimal("NaN")]))),
        noise_floor=floor, ignore_rules=rules, max_ws_silence_seconds=draw(st.sampled_from([0.5, 3.0, 10.0])),
        grace_seconds=draw(st.none() | st.sampled_from([0.0, 2.0, 30.0])),
        trace_id_provider=draw(st.sampled_from([None, lambda: "abc"])),
        symbols=draw(st.none() | st.just({"BTCUSDT", "ETHUSDT"})),
        max_history_per_symbol=draw(st.sampled_from([2, 5, 2048])), max_examples_per_window=3)


def run(c: Comparator, ops: list[tuple[Any, ...]]) -> tuple[list[Sample], int]:
    samples, examples, now = [], 0, T0
    for op in ops:
        if op[0] == "observe":
            out = c.observe(op[1], op[2], op[3])
        elif op[0] == "error":
            out = c.observe_error(op[1], op[2], "boom")
        elif op[0] == "advance":
            out = c.advance(op[1])
        else:
            out = c.flush()
        now = op[-1]
        assert c.settled_until_ms(now) <= now
        samples += out.samples
        examples += len(out.examples)
    samples += c.flush().samples
    assert c.settled_until_ms(now) == now
    return samples, examples


def check(sample: Sample) -> None:
    for value in (sample.divergence_ratio, sample.ws_lead_seconds, sample.ws_lag_seconds, sample.tolerance_ratio):
        assert value is None or (math.isfinite(value) and value >= 0), sample
    assert sample.ws_lead_seconds is None or sample.ws_lag_seconds is None
    assert (sample.mismatch_kind is not None) == (sample.result in ("mismatch", "ignored")), sample
    assert (sample.ignored_by is not None) == (sample.result == "ignored")
    if sample.kind == "position" and sample.result != "error":
        assert sample.position_idx is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comparators(), operations())
def test_never_crashes_and_never_goes_negative(c: Comparator, ops: list[tuple[Any, ...]]) -> None:
    samples, examples = run(c, ops)

    for sample in samples:
        check(sample)
    assert examples <= sum(1 for s in samples if s.result == "mismatch")
    judge_window(samples, exchange="bybit-main", window_start_ms=T0 - 100_000, window_end_ms=T0 + 1_000_000,
                 min_samples=5, max_mismatch_ratio=0.01)


@st.composite
def identical_feeds(draw: st.DrawFn) -> list[tuple[int, int, str]]:
    """A price path as (time, WebSocket head start, price); REST polls see it as the WebSocket did, later."""
    t, path = T0, []
    for _ in range(draw(st.integers(1, 40))):
        step = draw(st.integers(1, 6000))
        t += step
        head_start = draw(st.integers(0, step - 1))   # after the previous REST poll, by then at the latest
        path.append((t, head_start, draw(st.sampled_from(["100", "100.5", "101", "99.5"]))))
    return path


@settings(max_examples=200, deadline=None)
@given(identical_feeds())
def test_identical_feeds_never_mismatch_or_lag(path: list[tuple[int, int, str]]) -> None:
    c = Comparator("bybit-main", poll_interval_seconds=5.0, tick_size_by_symbol={"BTCUSDT": Decimal("0.5")},
                   noise_floor=None, ignore_rules=(), max_ws_silence_seconds=3600.0)
    samples: list[Sample] = []
    for t, head_start, price in path:
        ws = MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price=price),), source="ws",
                            ts_received_ms=t - head_start)
        rest = MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price=price),), source="rest",
                              ts_received_ms=t)
        samples += c.observe("ws", ws, t - head_start).samples + c.observe("rest", rest, t).samples
    samples += c.flush().samples

    assert len(samples) == len(path)
    assert all(s.result == "match" and s.ws_lag_seconds is None for s in samples)
    assert all(s.ws_lead_seconds is None or s.ws_lead_seconds >= 0 for s in samples)
