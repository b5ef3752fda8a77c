"""SinkQueue: bounded, never blocking, latest-wins events coalesced, lifecycle events never dropped."""

from __future__ import annotations

import itertools

from agent.core.events import MarkPriceEvent, PositionEvent
from agent.sinks.queue import SinkQueue

_mark_seq = itertools.count(1_000_000)  # mark prices share the owner's numbering; keep them clear of positions


def mark(symbol: str, price: str) -> MarkPriceEvent:
    seq = next(_mark_seq)
    return MarkPriceEvent(id=f"x:{seq}", seq=seq, exchange="x", venue="bybit", symbol=symbol, mark_price=price,
                          index_price=None, funding_rate=None, source="rest", ts_exchange_ms=None, ts_received_ms=0)


def position(seq: int) -> PositionEvent:
    return PositionEvent(id=f"x:{seq}", seq=seq, change="opened", exchange="x", venue="bybit", symbol="BTCUSDT",
                         position_idx=0, side="long", size="1", entry_price=None, mark_price=None,
                         unrealized_pnl=None, leverage=None, liquidation_price=None, source="rest",
                         ts_exchange_ms=None, ts_received_ms=0)


def test_mark_prices_coalesce_latest_wins():
    q = SinkQueue(10)
    first = mark("BTCUSDT", "1")
    q.put(first)
    q.put(position(1))
    put = q.put(mark("BTCUSDT", "2"))
    q.put(mark("ETHUSDT", "3"))
    batch = q.take(10)
    assert [getattr(e, "mark_price", None) or e.seq for e in batch] == ["2", 1, "3"]
    assert (put.accepted, put.dropped, put.reason) == (True, first, "coalesced")
    assert len(q) == 0


def test_full_queue_drops_mark_prices_before_lifecycle_events():
    q = SinkQueue(3)
    q.put(position(1))
    q.put(mark("BTCUSDT", "1"))
    q.put(position(2))
    put = q.put(position(3))
    assert put.accepted and isinstance(put.dropped, MarkPriceEvent) and put.reason == "queue_full"
    assert [e.seq for e in q.take(10)] == [1, 2, 3]


def test_a_queue_full_of_lifecycle_events_refuses_rather_than_drops():
    q = SinkQueue(2)
    q.put(position(1))
    q.put(position(2))
    refused = q.put(position(3))
    newest_price = mark("BTCUSDT", "1")
    price = q.put(newest_price)
    assert (refused.accepted, refused.dropped) == (False, None)
    assert (price.accepted, price.dropped, price.reason) == (False, newest_price, "queue_full")
    assert [e.seq for e in q.take(10)] == [1, 2]


def test_after_take_a_new_price_is_queued_again():
    q = SinkQueue(5)
    q.put(mark("BTCUSDT", "1"))
    assert len(q.take(10)) == 1
    q.put(mark("BTCUSDT", "2"))
    assert [e.mark_price for e in q.take(10)] == ["2"]
