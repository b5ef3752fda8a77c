"""ShadowStore: round trips, schema version and migrations, retention, example caps, crash safety."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.shadow import store as store_module
from agent.shadow.model import MismatchExample, NoiseFloor, Sample, SymbolStats, WindowVerdict
from agent.shadow.store import ModeTransition, ShadowStore, ShadowStoreError, schema_version

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_777_000_000_000


def sample(ts_ms: int, *, exchange: str = "bybit-main", symbol: str = "BTCUSDT", **kw) -> Sample:
    fields = dict(result="match", rest_value="64000.1", ws_value="64000.2", divergence_ratio=1.5e-6,
                  tolerance_ratio=2e-5, rest_staleness_seconds=0.4, ws_staleness_seconds=0.05,
                  ws_lead_seconds=0.3, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    fields.update(kw)
    return Sample(exchange=exchange, kind="price", symbol=symbol, ts_ms=ts_ms, **fields)


def window(start_ms: int, verdict: str = "pass", *, exchange: str = "bybit-main") -> WindowVerdict:
    return WindowVerdict(
        exchange=exchange, window_start_ms=start_ms, window_end_ms=start_ms + 300_000, verdict=verdict,
        reason=f"{verdict} because", samples=90, mismatches=1, ignored=2, errors=0, mismatch_ratio=1 / 90,
        wilson_low=0.002, wilson_high=0.06, max_mismatch_ratio=0.01, min_samples=50,
        critical={"missed_close": 1} if verdict == "fail" else {}, mismatches_by_kind={"price_divergence": 1},
        ignored_by_rule={"funding": 2},
        symbols=[SymbolStats(symbol="BTCUSDT", samples=90, mismatches=1, ignored=2, max_divergence_ratio=3e-5,
                             p99_divergence_ratio=2e-5)],
        noise_floor=NoiseFloor(tick_ratio_by_symbol={"BTCUSDT": 1.6e-6}, calibration_q99_ratio=2e-5,
                               calibration_samples=100, calibrated_at_ms=T0))


def example(ts_ms: int, kind: str = "price_divergence", *, window_start_ms: int = T0,
            exchange: str = "bybit-main") -> MismatchExample:
    return MismatchExample(exchange=exchange, window_start_ms=window_start_ms, ts_ms=ts_ms, kind=kind,
                           symbol="ETHUSDT", rest_value="3100.1", ws_value="3102.5", divergence_ratio=7.7e-4,
                           detail="drift", trace_id=f"trace-{ts_ms}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "shadow.sqlite3"


def test_everything_written_reads_back_after_reopen(db):
    samples = [sample(T0 + i, result="mismatch", mismatch_kind="price_divergence", ws_lead_seconds=None,
                      ws_lag_seconds=0.2, detail="ws behind") for i in range(3)]
    samples.append(Sample(exchange="bybit-main", kind="position", symbol="ETHUSDT", position_idx=2, ts_ms=T0 + 9,
                          result="ignored", ignored_by="funding_settlement"))
    floor = NoiseFloor(tick_ratio_by_symbol={"BTCUSDT": 1.6e-6}, calibration_q50_ratio=1e-6,
                       calibration_q99_ratio=2e-5, calibration_samples=600, calibrated_at_ms=T0 - 5)
    with ShadowStore(db) as store:
        store.add_samples(samples)
        store.add_window(window(T0))
        store.add_examples([example(T0 + 1), example(T0 + 2, "ghost")])
        store.add_transition(exchange="bybit-main", from_mode="hybrid", to_mode="rest", reason="ws_stale",
                             automatic=True, ts_ms=T0 + 7)
        store.add_calibration("bybit-main", floor)

    with ShadowStore(db) as store:
        assert store.samples("bybit-main") == samples
        assert store.windows("bybit-main") == [window(T0)]
        assert store.examples("bybit-main") == [example(T0 + 2, "ghost"), example(T0 + 1)]
        assert store.transitions("bybit-main") == [ModeTransition(
            exchange="bybit-main", from_mode="hybrid", to_mode="rest", reason="ws_stale", automatic=True,
            ts_ms=T0 + 7)]
        [calibration] = store.calibrations("bybit-main")
        assert (calibration.ts_ms, calibration.noise_floor) == (T0 - 5, floor)
        assert store.exchanges() == ["bybit-main"]


def test_fresh_file_is_wal_at_the_current_schema_version(db):
    with ShadowStore(db) as store:
        assert store.user_version == schema_version() >= 1
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_newer_schema_is_refused_with_a_clear_error(db):
    ShadowStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {schema_version() + 1}")
    conn.close()

    with pytest.raises(ShadowStoreError, match=r"schema version \d+ is newer than this agent supports"):
        ShadowStore(db)


def test_migrations_run_in_order_once_and_keep_data(db, monkeypatch):
    with ShadowStore(db) as store:
        store.add_samples([sample(T0)])
    ran: list[int] = []

    def to_v2(conn):
        ran.append(2)
        conn.execute("ALTER TABLE samples ADD COLUMN venue TEXT")

    def to_v3(conn):
        ran.append(3)
        conn.execute("UPDATE samples SET venue = 'bybit'")

    monkeypatch.setattr(store_module, "_MIGRATIONS", [*store_module._MIGRATIONS, to_v2, to_v3])
    base = len(store_module._MIGRATIONS) - 2

    with ShadowStore(db) as store:
        assert store.user_version == base + 2
        assert store.samples("bybit-main") == [sample(T0)]
    with ShadowStore(db) as store:
        assert store.user_version == base + 2
    assert ran == [2, 3]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT venue FROM samples").fetchall() == [("bybit",)]
    conn.close()


def test_a_failing_migration_leaves_the_file_at_its_version(db, monkeypatch):
    ShadowStore(db).close()

    def broken(conn):
        conn.execute("ALTER TABLE samples ADD COLUMN half_done TEXT")
        raise RuntimeError("boom")

    monkeypatch.setattr(store_module, "_MIGRATIONS", [*store_module._MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="boom"):
        ShadowStore(db)

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() - 1
    assert "half_done" not in {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
    conn.close()


def test_samples_older_than_retention_are_pruned_per_exchange(db):
    with ShadowStore(db, retain_samples_seconds=60) as store:
        store.add_samples([sample(T0 + s * 1000) for s in range(0, 100, 10)])
        store.add_samples([sample(T0, exchange="binance-main")])

        store.add_samples([sample(T0 + 150_000)])

        assert [s.ts_ms - T0 for s in store.samples("bybit-main")] == [90_000, 150_000]
        assert len(store.samples("binance-main")) == 1


def test_samples_beyond_the_row_cap_go_oldest_first(db):
    with ShadowStore(db, max_samples_per_exchange=100) as store:
        for batch in range(5):
            store.add_samples([sample(T0 + batch * 50 + i) for i in range(50)])
        store.add_samples([sample(T0, exchange="binance-main")])

        kept = store.samples("bybit-main")
        assert len(kept) == 100 and kept[0].ts_ms == T0 + 150 and kept[-1].ts_ms == T0 + 249
        assert len(store.samples("binance-main")) == 1


def test_examples_are_capped_per_window_and_kind_across_batches(db):
    with ShadowStore(db, max_examples_per_kind_per_window=50) as store:
        kept = store.add_examples([example(T0 + i) for i in range(80)] + [example(T0 + i, "missed_close")
                                                                             for i in range(3)])
        kept += store.add_examples([example(T0 + 100 + i) for i in range(30)])
        kept += store.add_examples([example(T0 + 400_000 + i, window_start_ms=T0 + 300_000) for i in range(10)])

        assert kept == 50 + 3 + 10
        stored = store.examples("bybit-main")
        assert sum(e.kind == "price_divergence" and e.window_start_ms == T0 for e in stored) == 50
        assert max(e.ts_ms for e in stored if e.kind == "price_divergence" and e.window_start_ms == T0) == T0 + 49
        assert store.count_examples("bybit-main") == 63


def test_examples_total_cap_drops_the_oldest(db):
    with ShadowStore(db, max_examples_per_kind_per_window=1000, max_examples_per_exchange=60) as store:
        store.add_examples([example(T0 + i) for i in range(100)])

        stored = store.examples("bybit-main")
        assert len(stored) == 60 and min(e.ts_ms for e in stored) == T0 + 40


def test_examples_critical_first_then_newest_with_limit(db):
    with ShadowStore(db) as store:
        store.add_examples([example(T0 + 1), example(T0 + 2, "ghost"), example(T0 + 3), example(T0 + 4)])

        picked = store.examples("bybit-main", T0, 3, critical_first=True)

        assert [(e.kind, e.ts_ms - T0) for e in picked] == [("ghost", 2), ("price_divergence", 4),
                                                             ("price_divergence", 3)]


def test_windows_replace_by_start_and_limit_keeps_the_latest(db):
    with ShadowStore(db) as store:
        for i in range(5):
            store.add_window(window(T0 + i * 300_000))
        store.add_window(window(T0 + 4 * 300_000, "fail"))
        store.add_window(window(T0, exchange="binance-main"))

        latest = store.windows("bybit-main", limit=2)
        ranged = store.windows("bybit-main", T0 + 600_000, T0 + 1_200_000)

        assert [w.window_start_ms - T0 for w in latest] == [900_000, 1_200_000]
        assert latest[-1].verdict == "fail"
        assert [w.window_end_ms - T0 for w in ranged] == [900_000, 1_200_000]     # ended after since, by until
        assert len(store.windows()) == 6
        assert store.exchanges() == ["binance-main", "bybit-main"]


def test_record_window_is_one_transaction(db):
    def examples_then_crash():
        yield example(T0)
        raise RuntimeError("comparator bug")

    with ShadowStore(db) as store:
        with pytest.raises(RuntimeError):
            store.record_window(window(T0), [sample(T0)], examples_then_crash())

        assert store.samples("bybit-main") == [] and store.windows() == [] and store.examples() == []
        store.record_window(window(T0), [sample(T0)], [example(T0)])
        assert len(store.samples("bybit-main")) == len(store.windows()) == len(store.examples()) == 1


def test_a_process_that_dies_without_close_loses_nothing_committed(db):
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from tests.shadow.test_store import sample, window, example, T0
        from agent.shadow.store import ShadowStore
        store = ShadowStore(Path({str(db)!r}))
        store.record_window(window(T0), [sample(T0 + i) for i in range(10)], [example(T0)])
        store.add_transition(exchange="bybit-main", from_mode="shadow", to_mode="rest", reason="crash test",
                             automatic=True, ts_ms=T0)
        os._exit(0)   # no close(), no checkpoint, no atexit
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert db.with_name(db.name + "-wal").exists()

    with ShadowStore(db) as store:
        assert len(store.samples("bybit-main")) == 10
        assert len(store.windows()) == len(store.examples()) == len(store.transitions()) == 1


def test_unknown_and_extra_columns_round_trip(db):
    with ShadowStore(db) as store:
        store.add_samples([sample(T0)])
    conn = sqlite3.connect(db)
    conn.execute("UPDATE samples SET trace_id = NULL, extra = ?",
                 ('{"trace_id": "from-extra", "field_from_the_future": 1}',))
    conn.commit()
    conn.close()

    with ShadowStore(db) as store:
        [back] = store.samples("bybit-main")

    assert back.trace_id == "from-extra"


def test_a_closed_store_says_so(db):
    store = ShadowStore(db)
    store.close()
    store.close()

    with pytest.raises(ShadowStoreError, match="closed"):
        store.samples("bybit-main")


async def test_calls_from_worker_threads_are_serialised(db):
    with ShadowStore(db) as store:
        await asyncio.gather(*(asyncio.to_thread(store.add_samples, [sample(T0 + b * 100 + i) for i in range(100)])
                               for b in range(8)))

        assert len(store.samples("bybit-main")) == 800
