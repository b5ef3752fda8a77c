"""Restart reconciliation and honest degradation as pure logic: PositionBook.restore, trust, the store."""

from __future__ import annotations

from agent.core.events import PositionEvent, StatusEvent
from agent.core.identity import SeqAllocator
from agent.core.lifecycle_store import HeldPosition, LifecycleStore, PersistedLifecycle, account_fingerprint
from agent.core.observations import MarkPriceBatch, MarkPriceObs
from agent.core.position_book import PositionBook
from tests.core.test_position_book import changes, pos, snap


def restored_book(*rows) -> PositionBook:
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0)
    book.restore([(r, "rest", 500) for r in rows])
    return book


def test_restore_emits_nothing_and_unchanged_positions_are_not_sent_again():
    book = restored_book(pos("BTCUSDT", size="1"), pos("ETHUSDT", size="2"))
    assert book.apply_positions(snap(pos("BTCUSDT", size="1"), pos("ETHUSDT", size="2"))) == []


def test_first_snapshot_after_restart_closes_what_went_and_updates_what_changed():
    book = restored_book(pos("BTCUSDT", size="1"), pos("ETHUSDT", size="2"), pos("SOLUSDT", size="3"))
    events = book.apply_positions(snap(pos("ETHUSDT", size="5", ts=2), pos("SOLUSDT", size="3"),
                                       pos("XRPUSDT", size="9"), as_of=900))
    assert sorted(changes(events)) == [("closed", "BTCUSDT", 0, "long", "0"), ("opened", "XRPUSDT", 0, "long", "9"),
                                       ("updated", "ETHUSDT", 0, "long", "5")]


def test_an_incomplete_snapshot_after_restart_closes_nothing():
    book = restored_book(pos("BTCUSDT"), pos("ETHUSDT"))
    assert book.apply_positions(snap(pos("ETHUSDT"), complete=False)) == []
    assert {p.symbol for p in book.positions()} == {"BTCUSDT", "ETHUSDT"}


def test_untrusted_positions_get_no_price_driven_updates_until_trusted_again():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0)
    book.apply_positions(snap(pos("BTCUSDT", size="1")))
    book.positions_trusted = False
    batch = MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="101", ts_exchange_ms=5),),
                           source="ws", ts_received_ms=1000)
    events = book.apply_mark_prices(batch, now_ms=1000)
    assert [type(e).__name__ for e in events] == ["MarkPriceEvent"], "a stale size must not go out as fresh"
    assert book.next_flush_ms() is None
    book.positions_trusted = True
    released = book.flush_due(now_ms=2000)
    assert [(e.change, e.mark_price) for e in released if isinstance(e, PositionEvent)] == [("updated", "101")]


def test_every_event_kind_shares_the_owner_numbering():
    ids = SeqAllocator("bybit-a")
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0, ids=ids)
    opened = book.apply_positions(snap(pos("BTCUSDT")))
    prices = book.apply_mark_prices(MarkPriceBatch(
        prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="101", ts_exchange_ms=5),), source="ws",
        ts_received_ms=1), now_ms=1)
    seqs = [e.seq for e in [*opened, *prices]]
    assert seqs == [1, 2, 3]
    assert [e.id for e in [*opened, *prices]] == ["bybit-a:1", "bybit-a:2", "bybit-a:3"]
    assert book.seq == 3


def test_pnl_overflow_is_unknown_not_fatal():
    book = PositionBook("bybit-a", "bybit", min_emit_interval_ms=0)
    book.apply_positions(snap(pos("BTCUSDT", entry="-9e999999", size="9e999999")))
    events = book.apply_mark_prices(MarkPriceBatch(
        prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="9e999999", ts_exchange_ms=5),), source="ws",
        ts_received_ms=1), now_ms=1)
    updated = [e for e in events if isinstance(e, PositionEvent)]
    assert updated and updated[0].mark_price == "9e999999"  # the PnL that overflowed is not computed


def test_store_round_trip_keeps_positions_status_and_outbox(tmp_path):
    account = account_fingerprint("bybit", "linear", "KEY")
    store = LifecycleStore(tmp_path / "l.json", exchange="bybit-a", account=account)
    outbox = [StatusEvent(id="bybit-a:7", seq=7, exchange="bybit-a", scope="positions", state="degraded",
                          reason="rest_rate_limited", ts_ms=1)]
    store.save(PersistedLifecycle(exchange="bybit-a", account=account, saved_ms=5,
                                  positions=[HeldPosition(obs=pos(), source="ws", ts_received_ms=3)],
                                  status={"positions": "degraded"}, outbox=outbox))
    loaded = store.load()
    assert loaded is not None
    assert loaded.positions[0].obs == pos() and loaded.outbox == outbox and loaded.status == {"positions": "degraded"}


def test_state_of_another_account_or_a_torn_file_is_ignored(tmp_path):
    path = tmp_path / "l.json"
    LifecycleStore(path, exchange="x", account=account_fingerprint("bybit", "linear", "A")).save(
        PersistedLifecycle(exchange="x", account=account_fingerprint("bybit", "linear", "A"), saved_ms=1))
    assert LifecycleStore(path, exchange="x", account=account_fingerprint("bybit", "linear", "B")).load() is None
    path.write_bytes(b'{"version":1,"exch')
    assert LifecycleStore(path, exchange="x", account="a").load() is None
    assert "KEY" not in account_fingerprint("bybit", "linear", "KEY")
