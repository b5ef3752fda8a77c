"""PositionBook: lifecycle derivation as pure logic."""

from __future__ import annotations

from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot
from agent.core.position_book import PositionBook


def pos(symbol="BTCUSDT", idx=0, side="long", size="1", entry="100", mark="100", **kw) -> PositionObs:
    return PositionObs(symbol=symbol, position_idx=idx, side=side, size=size, entry_price=entry,
                       mark_price=mark, unrealized_pnl=kw.pop("pnl", "0"), leverage=kw.pop("leverage", "10"),
                       liquidation_price=kw.pop("liq", None), ts_exchange_ms=kw.pop("ts", 1), **kw)


def snap(*rows: PositionObs, complete=True, source="rest", ts=1000, as_of=None) -> PositionSnapshot:
    return PositionSnapshot(positions=rows, source=source, ts_received_ms=ts, complete=complete, as_of_ms=as_of)


def changes(events):
    return [(e.change, e.symbol, e.position_idx, e.side, e.size) for e in events]


def test_open_update_close_one_way():
    book = PositionBook("bybit-a", "bybit")
    assert changes(book.apply_positions(snap(pos(size="1")))) == [("opened", "BTCUSDT", 0, "long", "1")]
    assert book.apply_positions(snap(pos(size="1"))) == []  # nothing changed, nothing emitted
    assert changes(book.apply_positions(snap(pos(size="2")))) == [("updated", "BTCUSDT", 0, "long", "2")]
    assert changes(book.apply_positions(snap())) == [("closed", "BTCUSDT", 0, "long", "0")]
    assert book.positions() == []


def test_closed_by_zero_row_keeps_last_side_and_is_sent_once():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(side="short", size="3")))
    flat = PositionObs(symbol="BTCUSDT", position_idx=0, side=None, size="0")
    events = book.apply_positions(snap(flat))
    assert changes(events) == [("closed", "BTCUSDT", 0, "short", "0")]
    assert book.apply_positions(snap(flat)) == []


def test_hedge_mode_sides_are_independent_positions():
    book = PositionBook("bybit-a", "bybit")
    events = book.apply_positions(snap(pos(idx=1, side="long", size="1"), pos(idx=2, side="short", size="2")))
    assert changes(events) == [("opened", "BTCUSDT", 1, "long", "1"), ("opened", "BTCUSDT", 2, "short", "2")]
    # a zero row for one side never touches the other side
    events = book.apply_positions(snap(PositionObs(symbol="BTCUSDT", position_idx=1, side=None, size="0"),
                                       pos(idx=2, side="short", size="2")))
    assert changes(events) == [("closed", "BTCUSDT", 1, "long", "0")]
    assert [p.key for p in book.positions()] == [("BTCUSDT", 2)]


def test_partial_snapshot_speaks_only_for_its_rows():
    book = PositionBook("binance-a", "binance")
    book.apply_positions(snap(pos("BTCUSDT"), pos("ETHUSDT")))
    events = book.apply_positions(snap(pos("ETHUSDT", size="5"), complete=False, source="ws"))
    assert changes(events) == [("updated", "ETHUSDT", 0, "long", "5")]
    assert {p.symbol for p in book.positions()} == {"BTCUSDT", "ETHUSDT"}


def test_direction_flip_is_close_then_open():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(side="long", size="1")))
    events = book.apply_positions(snap(pos(side="short", size="1")))
    assert changes(events) == [("closed", "BTCUSDT", 0, "long", "0"), ("opened", "BTCUSDT", 0, "short", "1")]


def test_equal_numbers_in_other_spelling_are_not_a_change():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(size="0.50", entry="100.0")))
    assert book.apply_positions(snap(pos(size="0.5", entry="100"))) == []


def test_sequence_numbers_increase_by_one_per_position_event():
    book = PositionBook("bybit-a", "bybit")
    events = book.apply_positions(snap(pos("BTCUSDT"), pos("ETHUSDT")))
    events += book.apply_positions(snap())
    assert [e.seq for e in events] == [1, 2, 3, 4]


def prices(*pairs, ts=10, source="rest", received=2000):
    return MarkPriceBatch(prices=tuple(MarkPriceObs(symbol=s, mark_price=p, ts_exchange_ms=ts) for s, p in pairs),
                          source=source, ts_received_ms=received)


def test_mark_price_moves_open_position_and_recomputes_pnl():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=100)
    book.apply_positions(snap(pos(size="2", entry="100", mark="100", pnl="0")))
    events = book.apply_mark_prices(prices(("BTCUSDT", "105")), now_ms=5000)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["MarkPriceEvent", "PositionEvent"]
    update = events[1]
    assert (update.change, update.mark_price, update.unrealized_pnl) == ("updated", "105", "10")


def test_short_pnl_sign():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0)
    book.apply_positions(snap(pos(side="short", size="2", entry="100")))
    update = book.apply_mark_prices(prices(("BTCUSDT", "95.5")), now_ms=1)[-1]
    assert update.unrealized_pnl == "9"


def test_prices_and_price_driven_updates_are_coalesced_and_released_later():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=100)
    book.apply_positions(snap(pos()))
    first = book.apply_mark_prices(prices(("BTCUSDT", "101"), ts=11), now_ms=1000)
    second = book.apply_mark_prices(prices(("BTCUSDT", "102"), ts=12), now_ms=1050)
    third = book.apply_mark_prices(prices(("BTCUSDT", "103"), ts=13), now_ms=1060)
    assert [type(e).__name__ for e in first] == ["MarkPriceEvent", "PositionEvent"]
    assert second == [] and third == []  # held back inside the interval
    assert book.next_flush_ms() == 1100
    assert book.flush_due(1099) == []
    released = book.flush_due(1100)
    assert [(type(e).__name__, e.mark_price) for e in released] == [("MarkPriceEvent", "103"),
                                                                    ("PositionEvent", "103")]  # latest wins
    assert book.flush_due(2000) == []
    assert book.next_flush_ms() is None


def test_symbols_are_coalesced_independently():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=100)
    book.apply_mark_prices(prices(("BTCUSDT", "1")), now_ms=1000)
    events = book.apply_mark_prices(prices(("ETHUSDT", "2")), now_ms=1010)
    assert [e.symbol for e in events] == ["ETHUSDT"]


def test_late_mark_price_never_moves_time_backwards():
    book = PositionBook("bybit-a", "bybit")
    book.apply_mark_prices(prices(("BTCUSDT", "101"), ts=20), now_ms=1)
    assert book.apply_mark_prices(prices(("BTCUSDT", "99"), ts=19), now_ms=2) == []
    assert book.mark_prices()["BTCUSDT"].mark_price == "101"


def test_position_event_carries_latest_known_mark_price():
    book = PositionBook("bybit-a", "bybit")
    book.apply_mark_prices(prices(("BTCUSDT", "120"), ts=50), now_ms=1)
    opened = book.apply_positions(snap(pos(mark="110", ts=40)))[0]
    assert opened.mark_price == "120"


def test_identical_mark_observation_twice_is_emitted_once():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0)
    assert len(book.apply_mark_prices(prices(("BTCUSDT", "101"), ts=20), now_ms=1)) == 1
    assert book.apply_mark_prices(prices(("BTCUSDT", "101"), ts=20), now_ms=2) == []
    assert len(book.apply_mark_prices(prices(("BTCUSDT", "101"), ts=21), now_ms=3)) == 1  # fresh, same price


def test_older_row_from_another_source_never_reverts_newer_news():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(size="1", ts=100), source="rest", ts=1000))
    book.apply_positions(snap(pos(size="2", ts=200), complete=False, source="ws", ts=1100))
    # a REST snapshot asked for before the WS delta arrives after it
    assert book.apply_positions(snap(pos(size="1", ts=100), source="rest", ts=1150, as_of=1050)) == []
    assert book.positions()[0].size == "2"
    assert book.stale_rows_ignored == 1


def test_snapshot_in_flight_does_not_close_a_position_opened_meanwhile():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(ts=200), complete=False, source="ws", ts=1100))
    assert book.apply_positions(snap(source="rest", ts=1150, as_of=1050)) == []
    assert [p.symbol for p in book.positions()] == ["BTCUSDT"]
    # a snapshot asked for after the open does close it
    assert changes(book.apply_positions(snap(source="rest", ts=1300, as_of=1200))) == [("closed", "BTCUSDT", 0, "long", "0")]


def test_late_news_of_a_closed_position_does_not_reopen_it():
    book = PositionBook("bybit-a", "bybit")
    book.apply_positions(snap(pos(ts=100), source="rest", ts=1000))
    flat = PositionObs(symbol="BTCUSDT", position_idx=0, side=None, size="0", ts_exchange_ms=300)
    book.apply_positions(snap(flat, complete=False, source="ws", ts=1100))
    assert book.apply_positions(snap(pos(ts=100), source="rest", ts=1150, as_of=1050)) == []
    # a genuinely new open afterwards is reported
    assert changes(book.apply_positions(snap(pos(ts=400), complete=False, source="ws", ts=1200))) == [
        ("opened", "BTCUSDT", 0, "long", "1")]
