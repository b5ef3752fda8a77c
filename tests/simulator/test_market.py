"""The market model as pure logic: lifecycle record, position modes, prices, determinism."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from agent.simulator.autopilot import Autopilot
from agent.simulator.config import SimulatorConfig
from agent.simulator.instruments import round_to_step
from agent.simulator.market import BookSizeWalk, MarketError, MarketModel
from agent.simulator.positions import PositionChange, PriceTick, position_metrics

T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def make_market(seed: int = 1, **overrides) -> MarketModel:
    return MarketModel(SimulatorConfig(seed=seed, **overrides), seed=seed, clock=FakeClock())


def changes(market: MarketModel) -> list[tuple]:
    return [(c.venue, c.symbol, c.position_idx, c.change, c.side, str(c.size)) for c in market.record]


def test_one_way_lifecycle_is_recorded() -> None:
    market = make_market()

    market.open_position("bybit", "BTCUSDT", "long", "0.010")
    market.set_size("bybit", "BTCUSDT", "0.025")
    market.close_position("bybit", "BTCUSDT")

    assert changes(market) == [
        ("bybit", "BTCUSDT", 0, "opened", "long", "0.010"),
        ("bybit", "BTCUSDT", 0, "updated", "long", "0.025"),
        ("bybit", "BTCUSDT", 0, "closed", "long", "0"),
    ]
    assert market.positions("bybit") == []
    assert all(c.ts_ms == T0 for c in market.record)


def test_hedge_mode_uses_idx_1_for_long_and_2_for_short() -> None:
    market = make_market(bybit_hedge_symbols=("ETHUSDT",))

    market.open_position("bybit", "ETHUSDT", "long", "1.00")
    market.open_position("bybit", "ETHUSDT", "short", "2.00")
    market.set_size("bybit", "ETHUSDT", "0.50", side="short")
    market.close_position("bybit", "ETHUSDT", position_idx=2)

    assert changes(market) == [
        ("bybit", "ETHUSDT", 1, "opened", "long", "1.00"),
        ("bybit", "ETHUSDT", 2, "opened", "short", "2.00"),
        ("bybit", "ETHUSDT", 2, "updated", "short", "0.50"),
        ("bybit", "ETHUSDT", 2, "closed", "short", "0"),
    ]
    assert [p.position_idx for p in market.positions("bybit")] == [1]


def test_hedge_mode_refuses_inconsistent_idx_and_ambiguous_close() -> None:
    market = make_market(bybit_hedge_symbols=("ETHUSDT",))
    market.open_position("bybit", "ETHUSDT", "long", "1.00")
    market.open_position("bybit", "ETHUSDT", "short", "1.00")

    with pytest.raises(MarketError):
        market.open_position("bybit", "BTCUSDT", "long", "0.001", position_idx=1)  # BTCUSDT is one-way
    with pytest.raises(MarketError):
        market.close_position("bybit", "ETHUSDT")  # two sides open: which one?
    with pytest.raises(MarketError):
        market.resolve_idx("bybit", "ETHUSDT", side="long", position_idx=2)


def test_binance_both_then_dual_side_long_short() -> None:
    market = make_market()
    market.open_position("binance", "BNBUSDT", "short", "3.00")
    market.close_position("binance", "BNBUSDT")

    market.set_hedge_mode("binance", True)
    market.open_position("binance", "BNBUSDT", "long", "1.00")
    market.open_position("binance", "BNBUSDT", "short", "2.00")

    assert changes(market) == [
        ("binance", "BNBUSDT", 0, "opened", "short", "3.00"),
        ("binance", "BNBUSDT", 0, "closed", "short", "0"),
        ("binance", "BNBUSDT", 1, "opened", "long", "1.00"),
        ("binance", "BNBUSDT", 2, "opened", "short", "2.00"),
    ]
    assert market.is_hedge_mode("binance")


def test_mode_switch_is_refused_while_positions_are_open() -> None:
    market = make_market()
    market.open_position("binance", "ETHUSDT", "long", "0.100")
    with pytest.raises(MarketError):
        market.set_hedge_mode("binance", True)
    market.open_position("bybit", "SOLUSDT", "long", "1.0")
    with pytest.raises(MarketError):
        market.set_hedge_mode("bybit", True, symbol="SOLUSDT")
    market.set_hedge_mode("bybit", True, symbol="XRPUSDT")  # other symbols may switch
    assert market.is_hedge_mode("bybit", "XRPUSDT") and not market.is_hedge_mode("bybit", "SOLUSDT")


def test_sizes_must_fit_the_qty_step_and_slots_must_be_free() -> None:
    market = make_market()
    with pytest.raises(MarketError):
        market.open_position("bybit", "BTCUSDT", "long", "0.0015")
    market.open_position("bybit", "BTCUSDT", "long", "0.002")
    with pytest.raises(MarketError):
        market.open_position("bybit", "BTCUSDT", "short", "0.002")
    with pytest.raises(MarketError):
        market.set_size("bybit", "ETHUSDT", "1")  # not open
    with pytest.raises(MarketError):
        market.open_position("bybit", "DOGEUSDT", "long", "1")


def test_adding_to_a_position_averages_the_entry_price() -> None:
    market = make_market()
    market.set_mark_price("bybit", "BTCUSDT", "60000")
    market.open_position("bybit", "BTCUSDT", "long", "0.010")
    market.set_mark_price("bybit", "BTCUSDT", "62000")
    market.set_size("bybit", "BTCUSDT", "0.020")

    pos = market.position("bybit", "BTCUSDT", 0)
    assert pos is not None and pos.entry_price == Decimal("61000")


def test_unrealised_pnl_follows_the_mark_with_the_side_sign() -> None:
    market = make_market()
    market.set_mark_price("binance", "ETHUSDT", "3000.00")
    market.open_position("binance", "ETHUSDT", "short", "2.000")
    pos = market.position("binance", "ETHUSDT", 0)
    assert pos is not None
    spec = market.spec("binance", "ETHUSDT")

    assert position_metrics(pos, Decimal("2900.00"), spec).unrealised_pnl == Decimal("200")
    assert position_metrics(pos, Decimal("3100.00"), spec).unrealised_pnl == Decimal("-200")
    assert position_metrics(pos, Decimal("3000.00"), spec).liq_price > Decimal("3000")


def test_set_mark_price_rounds_to_the_tick_size() -> None:
    market = make_market()
    assert market.set_mark_price("bybit", "BTCUSDT", "67250.123").mark_price == Decimal("67250.10")
    assert str(market.quote("bybit", "XRPUSDT").mark_price) == "0.5230"
    assert round_to_step(Decimal("0.52346"), Decimal("0.0001")) == Decimal("0.5235")


def test_price_walk_stays_on_ticks_and_within_the_band() -> None:
    market = make_market(price_band_ratio=0.01, max_price_step_ratio=0.005)
    for i in range(500):
        market.step(T0 + i * 100)
    for venue in ("bybit", "binance"):
        for symbol in market.symbols(venue):
            spec, quote = market.spec(venue, symbol), market.quote(venue, symbol)
            start = Decimal(spec.start_price)
            for price in (quote.mark_price, quote.index_price):
                assert price % spec.tick == 0
            assert start * Decimal("0.99") - spec.tick <= quote.mark_price <= start * Decimal("1.01") + spec.tick


def run(seed: int) -> tuple[list[tuple], list[str]]:
    market = make_market(seed)
    pilot = Autopilot(market, seed=seed, max_positions_per_venue=4)
    for i in range(300):
        market.step(T0 + i * 100)
        if i % 5 == 0:
            pilot.step(T0 + i * 100)
    prices = [str(market.quote(v, s).mark_price) for v in ("bybit", "binance") for s in market.symbols(v)]
    return changes(market), prices


def test_same_seed_same_run_different_seed_different_run() -> None:
    assert run(42) == run(42)
    assert run(42) != run(43)


def test_autopilot_goes_through_the_whole_lifecycle_within_its_cap() -> None:
    market = make_market(3, bybit_hedge_symbols=("BTCUSDT",))
    pilot = Autopilot(market, seed=3, max_positions_per_venue=3)
    for _ in range(200):
        pilot.step()
        assert all(len(market.positions(v)) <= 3 for v in ("bybit", "binance"))
    kinds = {(c.venue, c.change) for c in market.record}
    assert kinds == {(v, k) for v in ("bybit", "binance") for k in ("opened", "updated", "closed")}
    assert {c.position_idx for c in market.record if c.symbol == "BTCUSDT" and c.venue == "bybit"} <= {1, 2}


def test_listeners_get_ticks_and_changes_and_a_broken_one_is_isolated() -> None:
    market = make_market()
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    market.add_listener(broken)
    market.add_listener(seen.append)
    market.set_mark_price("bybit", "SOLUSDT", "150.000")
    change = market.open_position("bybit", "SOLUSDT", "short", "1.0")
    market.remove_listener(seen.append)
    market.close_position("bybit", "SOLUSDT")

    assert isinstance(seen[0], PriceTick) and seen[0].mark_price == Decimal("150.000")
    assert seen[1:] == [change] and isinstance(change, PositionChange)


def test_pause_stops_the_walk_and_the_autopilot_but_not_explicit_control() -> None:
    market = make_market()
    pilot = Autopilot(market, seed=1, max_positions_per_venue=3)
    market.pause()
    assert market.step(T0 + 100) == []
    assert pilot.step() is None
    market.open_position("bybit", "BTCUSDT", "long", "0.001")
    market.resume(autopilot=False)
    assert market.step(T0 + 200) != [] and pilot.step() is None
    market.resume()
    assert pilot.step() is not None


def test_seq_grows_and_a_never_traded_slot_has_minus_one() -> None:
    market = make_market()
    assert market.last_seq("bybit", "ETHUSDT", 0) == -1
    market.open_position("bybit", "ETHUSDT", "long", "0.10")
    first = market.last_seq("bybit", "ETHUSDT", 0)
    market.set_size("bybit", "ETHUSDT", "0.20")
    assert market.last_seq("bybit", "ETHUSDT", 0) > first > 0


def test_book_sizes_stay_bounded_over_hours_of_beats() -> None:
    # 100 ms beats for 3 hours: the sizes must stay on the qty grid and within a sane band of where
    # they start (a walk that drifts overflows Decimal's 28 digits after ~6 minutes).
    walk = BookSizeWalk(seed=5)
    specs = SimulatorConfig().bybit_symbols
    seen: set[Decimal] = set()
    for _ in range(108_000):
        for spec in specs:
            bid, ask = walk.step(spec)
        seen.add(bid)
    assert len(seen) > 20, "the sizes still move"
    for spec in specs:
        bid, ask = walk.sizes(spec)
        for size in (bid, ask):
            assert size % spec.step == 0
            assert spec.step <= size <= spec.step * 52 * 20, (spec.symbol, size)


def test_book_sizes_replay_with_the_same_seed() -> None:
    spec = SimulatorConfig().bybit_symbols[0]
    runs = []
    for seed in (5, 5, 6):
        walk = BookSizeWalk(seed=seed)
        runs.append([walk.step(spec) for _ in range(200)])
    assert runs[0] == runs[1] != runs[2]


def test_binance_mark_price_moves_once_per_second_bybit_every_step() -> None:
    market = make_market(max_price_step_ratio=0.005)
    ticks = [t for i in range(50) for t in market.step(T0 + i * 100)]  # 5 s of 100 ms steps
    binance = Counter((t.symbol, t.ts_ms // 1000) for t in ticks if t.venue == "binance")
    assert set(binance.values()) == {1}, "one computation per symbol per clock second"
    assert len({second for _, second in binance}) == 5
    assert len([t for t in ticks if t.venue == "bybit" and t.symbol == "BTCUSDT"]) >= 40
