"""What the report states must be what was done: tolerance per symbol, price-only staleness, the SQL of the
guide against a real store, and a first report early (not a 404 for the first hour)."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot
from agent.shadow.comparator import Comparator
from agent.shadow.model import NoiseFloor, Sample, WindowVerdict
from agent.shadow.report import build_report
from agent.shadow.reports import ReportWriter
from agent.shadow.store import ShadowStore
from agent.shadow.verdict import judge_window

T0 = 1_777_000_000_000
EXCHANGE = "bybit-main"
DOC = Path(__file__).resolve().parents[2] / "docs" / "shadow-report.md"


@pytest.fixture
def store(tmp_path):
    with ShadowStore(tmp_path / "shadow.sqlite3") as s:
        yield s


def report(store: ShadowStore, now_ms: int = T0 + 600_000) -> dict:
    return build_report(store, exchange=None, since_ms=T0 - 1, now_ms=now_ms, agent_version="t",
                        config_sha256="0" * 64, consecutive_passes_to_promote=3)


def window(samples: list[Sample], floor: NoiseFloor, end_ms: int = T0 + 300_000) -> WindowVerdict:
    return judge_window(samples, exchange=EXCHANGE, window_start_ms=T0, window_end_ms=end_ms, min_samples=1,
                        max_mismatch_ratio=0.5, noise_floor=floor)


def test_the_tolerance_used_is_one_tick_plus_the_noise_floor_and_the_report_shows_it(store):
    c = Comparator(EXCHANGE, poll_interval_seconds=5, tick_size_by_symbol={"BTCUSDT": Decimal("0.10")},
                   noise_floor=NoiseFloor(calibration_q99_ratio=1e-5), max_ws_lag_seconds=0)
    c.update_tick_sizes({"ETHUSDT": "0.01", "BAD": "0"})
    samples = []
    for i, (btc_ws, eth_ws) in enumerate([("50000.6", "3000.04"), ("50000.7", "3000.05")]):
        t = T0 + i * 5000
        c.observe("ws", MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price=btc_ws),
                                               MarkPriceObs(symbol="ETHUSDT", mark_price=eth_ws),
                                               MarkPriceObs(symbol="SOLUSDT", mark_price="150")),
                                       source="ws", ts_received_ms=t), t)
        samples += c.observe("rest", MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="50000.0"),
                                                            MarkPriceObs(symbol="ETHUSDT", mark_price="3000.00"),
                                                            MarkPriceObs(symbol="SOLUSDT", mark_price="150")),
                                                    source="rest", ts_received_ms=t + 10), t + 10).samples
    # BTC: 0.10 + 1e-5 x 50000 = 0.60 -> 0.6 matches, 0.7 does not; ETH: 0.01 + 0.03 = 0.04 likewise
    assert [(s.symbol, s.result) for s in samples if s.symbol != "SOLUSDT"] == [
        ("BTCUSDT", "match"), ("ETHUSDT", "match"), ("BTCUSDT", "mismatch"), ("ETHUSDT", "mismatch")]
    store.record_window(window(samples, c.noise_floor()), samples, [])

    section = report(store)["exchanges"][0]
    floor = section["noise_floor"]
    assert floor["tick_size_by_symbol"] == {"BTCUSDT": "0.10", "ETHUSDT": "0.01"}
    assert floor["tolerance_bp_by_symbol"]["BTCUSDT"] == pytest.approx((0.10 / 50000 + 1e-5) * 1e4)
    assert floor["noise_bp_by_symbol"]["BTCUSDT"] == pytest.approx(0.1)
    rows = {r["symbol"]: r for r in section["symbols"]}
    assert rows["BTCUSDT"]["tolerance_bp"] == pytest.approx(0.12)  # 0.60 of 50,000, as judged
    assert rows["SOLUSDT"]["tolerance_bp"] == pytest.approx(0.1)   # no tick known: the noise floor alone
    assert any("Tick size unknown for SOLUSDT" in n for n in section["headline"]["notes"])


def test_rest_staleness_is_from_price_samples_only(store):
    c = Comparator(EXCHANGE, poll_interval_seconds=5, grace_seconds=0)
    old_row = PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="1", ts_exchange_ms=T0 - 86_400_000)
    c.observe("ws", PositionSnapshot(positions=(old_row,), source="ws", ts_received_ms=T0), T0)
    samples = c.observe("rest", PositionSnapshot(positions=(old_row,), source="rest", ts_received_ms=T0 + 5), T0 + 5)
    c.observe("ws", MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="1"),), source="ws",
                                   ts_received_ms=T0), T0)
    prices = c.observe("rest", MarkPriceBatch(prices=(MarkPriceObs(symbol="BTCUSDT", mark_price="1",
                                                                   ts_exchange_ms=T0 - 300),),
                                              source="rest", ts_received_ms=T0 + 10), T0 + 10)
    everything = samples.samples + prices.samples
    [position] = [s for s in everything if s.kind == "position"]
    assert position.rest_staleness_seconds is None  # a day-old updatedTime is not a day of staleness
    store.record_window(window(everything, NoiseFloor()), everything, [])

    staleness = report(store)["exchanges"][0]["staleness"]["rest"]
    assert (staleness["count"], staleness["max_seconds"]) == (1, pytest.approx(0.31))
    assert store.windows(EXCHANGE)[0].rest_staleness_p99_seconds == pytest.approx(0.31)


def _doc_sql() -> str:
    block = re.search(r'sqlite3 var/shadow\.sqlite3 "(.+?)"\n', DOC.read_text())
    assert block, "the guide's sqlite3 example"
    return block.group(1)


def test_the_sql_in_the_guide_runs_against_a_real_store(store, tmp_path):
    sample = Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0, result="match")
    store.record_window(window([sample], NoiseFloor()), [sample], [])
    sql = _doc_sql()

    with sqlite3.connect(tmp_path / "shadow.sqlite3") as conn:
        rows = conn.execute(sql).fetchall()

    [stored] = store.windows(EXCHANGE)
    assert rows == [(EXCHANGE, stored.verdict, stored.reason)]
    if cli := shutil.which("sqlite3"):  # the very command of the guide, when the tool is here
        out = subprocess.run([cli, str(tmp_path / "shadow.sqlite3"), sql], check=True, capture_output=True,
                             text=True).stdout
        assert out.startswith(f"{EXCHANGE}|{stored.verdict}|")


def test_a_first_report_is_written_early_and_again_after_the_first_window(store, tmp_path):
    writer = ReportWriter(store, tmp_path / "reports", config_sha256="0" * 64)
    assert writer.write_first(T0) is False and writer.latest() is None  # nothing in shadow yet: nothing to say

    store.add_transition(exchange=EXCHANGE, from_mode="none", to_mode="shadow", reason="start (configured)",
                         automatic=False, ts_ms=T0)
    assert writer.write_first(T0 + 1000) is False
    first = writer.latest()
    assert first is not None and "NO DATA" in first.read_text()
    assert writer.write_first(T0 + 2000) is False and writer.latest() == first, "no new data, no new file"

    sample = Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0 + 5000, result="match")
    store.record_window(window([sample], NoiseFloor(), end_ms=T0 + 10_000), [sample], [])
    assert writer.write_first(T0 + 11_000) is True
    second = writer.latest()
    assert second != first and '"no_data": false' in second.read_text()


def test_headline_mode_comes_from_the_start_record(store):
    store.add_transition(exchange=EXCHANGE, from_mode="none", to_mode="shadow", reason="start (configured)",
                         automatic=False, ts_ms=T0)
    mode = report(store)["exchanges"][0]["headline"]["mode"]
    assert (mode["current"], mode["reason"], mode["since_ms"]) == ("shadow", "start (configured)", T0)
