"""SinkQueue: bounded, never blocking, mark prices coalesced, lifecycle drops counted."""

from __future__ import annotations

from agent.core.events import MarkPriceEvent, PositionEvent
from agent.sinks.queue import SinkQueue


def mark(symbol: str, price: str) -> MarkPriceEvent:
    return MarkPriceEvent(exchange="x", venue="bybit", symbol=symbol, mark_price=price, index_price=None,
                          funding_rate=None, source="rest", ts_exchange_ms=None, ts_received_ms=0)


def position(seq: int) -> PositionEvent:
    return PositionEvent(change="opened", exchange="x", venue="bybit", symbol="BTCUSDT", position_idx=0,
                         side="long", size="1", entry_price=None, mark_price=None, unrealized_pnl=None,
                         leverage=None, liquidation_price=None, source="rest", ts_exchange_ms=None,
                         ts_received_ms=0, seq=seq)


def test_mark_prices_coalesce_latest_wins():
    q = SinkQueue(10)
    q.put(mark("BTCUSDT", "1"))
    q.put(position(1))
    q.put(mark("BTCUSDT", "2"))
    q.put(mark("ETHUSDT", "3"))
    batch = q.take(10)
    assert [getattr(e, "mark_price", None) or e.seq for e in batch] == ["2", 1, "3"]
    assert q.coalesced == 1 and len(q) == 0


def test_full_queue_drops_mark_prices_before_lifecycle_events():
    q = SinkQueue(3)
    q.put(position(1))
    q.put(mark("BTCUSDT", "1"))
    q.put(position(2))
    dropped = q.put(position(3))
    assert isinstance(dropped, MarkPriceEvent)
    assert [e.seq for e in q.take(10)] == [1, 2, 3]
    assert q.dropped == {"mark_price": 1}


def test_lifecycle_dropped_only_when_nothing_else_and_counted():
    q = SinkQueue(2)
    q.put(position(1))
    q.put(position(2))
    dropped = q.put(position(3))
    assert dropped.seq == 1
    assert q.dropped == {"position": 1}
    assert [e.seq for e in q.take(10)] == [2, 3]


def test_after_take_a_new_price_is_queued_again():
    q = SinkQueue(5)
    q.put(mark("BTCUSDT", "1"))
    assert len(q.take(10)) == 1
    q.put(mark("BTCUSDT", "2"))
    assert [e.mark_price for e in q.take(10)] == ["2"]
