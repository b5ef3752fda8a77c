"""Shadow report content for pass, fail, critical, inconclusive and empty runs (JSON document).

The scenario builders here write Samples, WindowVerdicts, examples and mode
transitions straight into a ShadowStore; the HTML and Markdown tests reuse them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agent.shadow.model import MismatchExample, NoiseFloor, Sample, SymbolStats, WindowVerdict
from agent.shadow.report import REPORT_SCHEMA_VERSION, build_report, render_json
from agent.shadow.store import ShadowStore

T0 = 1_777_000_000_000          # 2026-04-24T03:06:40Z
WINDOW_MS = 300_000
EXCHANGE = "bybit-main"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PRICES = {"BTCUSDT": 64_000.0, "ETHUSDT": 3_100.0, "SOLUSDT": 150.0}
FLOOR = NoiseFloor(tick_ratio_by_symbol={"BTCUSDT": 0.1 / 64_000, "ETHUSDT": 0.01 / 3_100, "SOLUSDT": 0.001 / 150},
                   calibration_q50_ratio=0.4e-5, calibration_q99_ratio=2.0e-5, calibration_samples=1_200,
                   calibrated_at_ms=T0 - 600_000)
N_PROMOTE = 6


def report_of(store: ShadowStore, *, exchange: str | None = EXCHANGE, windows: int = 8, **kw) -> dict:
    return build_report(store, exchange=exchange, since_ms=T0 - 600_000, now_ms=T0 + windows * WINDOW_MS + 1_000,
                        agent_version="0.1.0", config_sha256="ab" * 32, consecutive_passes_to_promote=N_PROMOTE, **kw)


def _sample(rng: random.Random, symbol: str, ts: int, *, drift_bp: float = 0.0, exchange: str = EXCHANGE) -> Sample:
    rest = PRICES[symbol] * (1 + rng.uniform(-1e-3, 1e-3))
    divergence = abs(drift_bp * 1e-4 + rng.gauss(0, 0.5e-5)) if rng.random() > 0.3 else 0.0
    tolerance = FLOOR.tolerance_ratio(symbol)
    mismatch = divergence > tolerance
    led = rng.random() < 0.9
    return Sample(
        exchange=exchange, kind="price", symbol=symbol, ts_ms=ts,
        result="mismatch" if mismatch else "match", mismatch_kind="price_divergence" if mismatch else None,
        rest_value=f"{rest:.2f}", ws_value=f"{rest * (1 + divergence):.2f}", divergence_ratio=divergence,
        tolerance_ratio=tolerance, rest_staleness_seconds=rng.uniform(0.2, 0.6),
        ws_staleness_seconds=rng.uniform(0.01, 0.15),
        ws_lead_seconds=rng.uniform(0.05, 1.5) if led else None, ws_lag_seconds=None if led else rng.uniform(0.05, 0.8),
        trace_id=f"{rng.getrandbits(128):032x}")


def _window(i: int, samples: list[Sample], verdict: str, reason: str, *, critical: dict[str, int] | None = None,
            exchange: str = EXCHANGE) -> WindowVerdict:
    mismatches = sum(s.result == "mismatch" for s in samples)
    by_kind: dict[str, int] = {}
    for s in samples:
        if s.result == "mismatch":
            by_kind[s.mismatch_kind or "unknown"] = by_kind.get(s.mismatch_kind or "unknown", 0) + 1
    n = len(samples)
    return WindowVerdict(
        exchange=exchange, window_start_ms=T0 + i * WINDOW_MS, window_end_ms=T0 + (i + 1) * WINDOW_MS,
        verdict=verdict, reason=reason, samples=n, mismatches=mismatches,
        ignored=sum(s.result == "ignored" for s in samples), errors=sum(s.result == "error" for s in samples),
        mismatch_ratio=mismatches / n if n else None, wilson_low=0.0, wilson_high=min(1.0, 3 / n) if n else None,
        max_mismatch_ratio=0.01, min_samples=50, critical=critical or {}, mismatches_by_kind=by_kind,
        symbols=[SymbolStats(symbol=s, samples=0, mismatches=0, ignored=0, max_divergence_ratio=None,
                             p99_divergence_ratio=None) for s in SYMBOLS],
        noise_floor=FLOOR)


def _examples(samples: list[Sample], window_start_ms: int) -> list[MismatchExample]:
    return [MismatchExample(exchange=s.exchange, window_start_ms=window_start_ms, ts_ms=s.ts_ms,
                            kind=s.mismatch_kind or "price_divergence", symbol=s.symbol, rest_value=s.rest_value,
                            ws_value=s.ws_value, divergence_ratio=s.divergence_ratio, trace_id=s.trace_id,
                            detail="WS mark price away from REST beyond the noise floor")
            for s in samples if s.result == "mismatch"]


def populate(store: ShadowStore, plan: list[tuple[str, str, dict[str, float]]], *, per_symbol: int = 30,
             seed: int = 7, exchange: str = EXCHANGE) -> None:
    """One window per plan entry: (verdict, reason, drift in bp per symbol)."""
    rng = random.Random(seed)
    store.add_transition(exchange=exchange, from_mode="rest", to_mode="shadow", reason="canary start",
                         automatic=False, ts_ms=T0 - 1_000)
    for i, (verdict, reason, drift) in enumerate(plan):
        start = T0 + i * WINDOW_MS
        samples = [_sample(rng, sym, start + k * (WINDOW_MS // per_symbol) + j * 97, drift_bp=drift.get(sym, 0.0),
                           exchange=exchange)
                   for k in range(per_symbol) for j, sym in enumerate(SYMBOLS)]
        store.record_window(_window(i, samples, verdict, reason, exchange=exchange), samples,
                            _examples(samples, start))


PASS_REASON = "mismatch rate 0.00% (95% upper bound 1.1%) within 1% over 90 samples"


def pass_run(store: ShadowStore, windows: int = 8) -> None:
    populate(store, [("pass", PASS_REASON, {})] * windows)


def fail_run(store: ShadowStore) -> None:
    drift = {"ETHUSDT": 6.0, "SOLUSDT": 2.5}
    plan = [("pass", PASS_REASON, {})] * 5 + [
        ("fail", "mismatch rate 31% (95% CI 22–41%) above 1%", drift)] * 3
    populate(store, plan)


def critical_run(store: ShadowStore) -> None:
    plan = [("pass", PASS_REASON, {})] * 7
    populate(store, plan)
    start = T0 + 7 * WINDOW_MS
    close = Sample(exchange=EXCHANGE, kind="position", symbol="BTCUSDT", position_idx=0, ts_ms=start + 42_000,
                   result="mismatch", mismatch_kind="missed_close", rest_value="0", ws_value="0.5",
                   trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    example = MismatchExample(exchange=EXCHANGE, window_start_ms=start, ts_ms=start + 42_000, kind="missed_close",
                              symbol="BTCUSDT", position_idx=0, rest_value="0", ws_value="0.5",
                              detail="REST shows the position closed; WS still holds long 0.5 after the grace period",
                              trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    store.record_window(_window(7, [close], "fail", "critical: 1 missed_close", critical={"missed_close": 1}),
                        [close], [example])
    store.add_transition(exchange=EXCHANGE, from_mode="shadow", to_mode="rest", reason="shadow_critical",
                         automatic=True, ts_ms=start + WINDOW_MS + 200)


def inconclusive_run(store: ShadowStore) -> None:
    plan = [("pass", PASS_REASON, {})] * 2 + [("inconclusive", "12 samples, fewer than min_samples 50", {})] * 2
    populate(store, plan, per_symbol=4)


@pytest.fixture
def store(tmp_path: Path):
    with ShadowStore(tmp_path / "shadow.sqlite3") as s:
        yield s


def test_pass_run_promotes_after_n_consecutive_passes(store):
    pass_run(store)

    report = report_of(store)

    head = report["exchanges"][0]["headline"]
    assert report["schema_version"] == REPORT_SCHEMA_VERSION
    assert (head["verdict"], head["next_action"]) == ("pass", "promote")
    assert report["subject"] == "bybit-main: PASS — promote"
    assert head["consecutive_passes"] == N_PROMOTE
    assert "6 consecutive passing windows" in head["why"]
    section = report["exchanges"][0]
    assert section["counts"]["mismatched"] == 0
    assert section["counts"]["samples"] == 8 * 90 == section["counts"]["matched"]
    assert section["counts"]["windows"] == {"total": 8, "pass": 8, "fail": 0, "inconclusive": 0, "error": 0}
    assert section["noise_floor"]["calibrated"] and section["noise_floor"]["calibration_samples"] == 1_200
    assert section["noise_floor"]["calibration_q99_bp"] == pytest.approx(0.2)
    assert section["primary"] == "rest"


def test_pass_run_holds_until_enough_passes(store):
    pass_run(store, windows=3)

    head = report_of(store, windows=3)["exchanges"][0]["headline"]

    assert (head["verdict"], head["next_action"]) == ("pass", "hold")
    assert head["subject"] == "bybit-main: PASS (3/6) — hold"
    assert head["why"].startswith("3 of 6 consecutive passing windows")


def test_passes_before_the_last_mode_change_do_not_count(store):
    pass_run(store, windows=8)
    store.add_transition(exchange=EXCHANGE, from_mode="shadow", to_mode="rest", reason="ws_stale",
                         automatic=True, ts_ms=T0 + 5 * WINDOW_MS + 10)
    store.add_transition(exchange=EXCHANGE, from_mode="rest", to_mode="shadow", reason="cool-down over",
                         automatic=True, ts_ms=T0 + 6 * WINDOW_MS - 10)

    head = report_of(store)["exchanges"][0]["headline"]

    assert head["consecutive_passes"] == 2 and head["next_action"] == "hold"
    assert head["mode"]["current"] == "shadow"


def test_fail_run_rolls_back_and_names_drifting_symbols_first(store):
    fail_run(store)

    section = report_of(store)["exchanges"][0]

    head = section["headline"]
    assert (head["verdict"], head["next_action"]) == ("fail", "roll_back")
    assert head["subject"] == "bybit-main: FAIL — roll back"
    assert "31%" in head["why"]
    assert [r["symbol"] for r in section["symbols"]] == ["ETHUSDT", "SOLUSDT", "BTCUSDT"]
    assert section["symbols"][0]["mismatched_by_kind"] == {"price_divergence": section["symbols"][0]["mismatched"]}
    assert section["counts"]["mismatched"] == sum(r["mismatched"] for r in section["symbols"]) > 0
    div = section["divergence"]
    assert sum(b["count"] for b in div["buckets"]) == div["count"] == section["counts"]["samples"]
    assert sum(b["mismatched"] for b in div["buckets"]) == section["counts"]["mismatched"]
    assert div["buckets"][0] == {"gt_bp": None, "le_bp": 0.0, "count": div["buckets"][0]["count"], "mismatched": 0}
    assert div["buckets"][-1]["le_bp"] is None
    shown = section["examples"]["items"]
    assert 0 < len(shown) <= 50 and all(e["trace_id"] and e["ts_utc"].endswith("Z") for e in shown)
    assert shown[0]["ts_ms"] >= shown[-1]["ts_ms"]


def test_critical_run_rolls_back_and_says_why(store):
    critical_run(store)

    report = report_of(store)

    section = report["exchanges"][0]
    head = section["headline"]
    assert head["next_action"] == "roll_back"
    assert head["critical"] == {"missed_close": 1} and head["critical_total"] == 1
    assert report["subject"] == "bybit-main: 1 critical — roll back"
    assert "missed_close" in head["why"] and "BTCUSDT" in head["why"]
    assert report["decision"] == {"verdict": "fail", "next_action": "roll_back", "critical_total": 1, "no_data": False}
    first = section["examples"]["items"][0]
    assert first["kind"] == "missed_close" and first["critical"]
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert section["symbols"][0]["symbol"] == "BTCUSDT" and section["symbols"][0]["critical"] == 1
    assert [(t["from"], t["to"], t["automatic"]) for t in section["timeline"]["transitions"]] == [
        ("rest", "shadow", False), ("shadow", "rest", True)]


def test_inconclusive_run_holds(store):
    inconclusive_run(store)

    section = report_of(store, windows=4)["exchanges"][0]

    head = section["headline"]
    assert (head["verdict"], head["next_action"]) == ("inconclusive", "hold")
    assert "fewer than min_samples" in head["why"]
    assert head["recent_verdicts"] == ["pass", "pass", "inconclusive", "inconclusive"]
    assert [w["verdict"] for w in section["timeline"]["windows"]] == head["recent_verdicts"]


def test_empty_store_is_a_clear_no_data_report(store):
    report = report_of(store, exchange=None)

    assert report["exchanges"] == []
    assert report["subject"] == "No shadow data — hold"
    assert report["decision"] == {"verdict": "inconclusive", "next_action": "hold", "critical_total": 0,
                                  "no_data": True}
    json.loads(render_json(report))


def test_named_exchange_without_data_holds(store):
    report = report_of(store)

    head = report["exchanges"][0]["headline"]
    assert head["no_data"] and head["next_action"] == "hold"
    assert head["subject"] == "bybit-main: NO DATA — hold"
    assert "no data is not a pass" in head["why"]
    section = report["exchanges"][0]
    assert section["divergence"]["count"] == 0 and section["symbols"] == [] and section["examples"]["items"] == []


def test_several_exchanges_worst_first(store):
    pass_run(store)
    populate(store, [("fail", "mismatch rate 40% above 1%", {"BTCUSDT": 9.0})] * 2, exchange="binance-main")

    report = report_of(store, exchange=None)

    assert [s["exchange"] for s in report["exchanges"]] == ["binance-main", "bybit-main"]
    assert report["subject"] == "binance-main: FAIL — roll back · bybit-main: PASS — promote"
    assert report["decision"]["next_action"] == "roll_back"
    assert report["metadata"]["exchanges"] == ["binance-main", "bybit-main"]


def test_json_document_is_strict_json_with_documented_top_level(store):
    fail_run(store)
    store.add_samples([Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0 + 10,
                              result="mismatch", mismatch_kind="price_divergence",
                              divergence_ratio=float("inf"))])

    text = render_json(report_of(store))

    doc = json.loads(text)
    assert list(doc) == ["schema", "schema_version", "subject", "decision", "metadata", "exchanges"]
    assert set(doc["exchanges"][0]) == {
        "exchange", "primary", "window_range", "headline", "noise_floor", "counts", "divergence", "lead_lag",
        "staleness", "timeline", "symbols", "examples"}
    assert doc["metadata"]["since_utc"].endswith("Z") and doc["metadata"]["config_sha256"] == "ab" * 32
    lead = doc["exchanges"][0]["lead_lag"]
    assert lead["ws_lead_seconds"]["count"] > lead["ws_lag_seconds"]["count"] > 0
    assert all(b["count"] >= 0 for b in lead["ws_lag_seconds"]["buckets"])
    stale = doc["exchanges"][0]["staleness"]
    assert stale["ws"]["p99_seconds"] < stale["rest"]["p50_seconds"]


def test_streak_looks_back_before_the_range(store):
    pass_run(store)

    report = build_report(store, exchange=EXCHANGE, since_ms=T0 + 6 * WINDOW_MS, now_ms=T0 + 8 * WINDOW_MS,
                          agent_version="0.1.0", config_sha256="ab" * 32, consecutive_passes_to_promote=N_PROMOTE)

    section = report["exchanges"][0]
    assert len(section["timeline"]["windows"]) == 2
    assert section["headline"]["next_action"] == "promote"


def test_notes_flag_ignored_errors_quiet_windows_and_missing_calibration(store):
    populate(store, [("pass", PASS_REASON, {})])
    store.add_samples([
        Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0 + 5, result="ignored",
               ignored_by="funding_settlement"),
        Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0 + 6, result="error", detail="HTTP 503"),
    ])
    store.add_calibration("binance-main", NoiseFloor(tick_ratio_by_symbol={"BTCUSDT": 1e-6}), ts_ms=T0)

    notes = report_of(store)["exchanges"][0]["headline"]["notes"]
    other = report_of(store, exchange="binance-main")["exchanges"][0]

    assert any("1 samples ignored by rule: funding_settlement (1)" in n for n in notes)
    assert any("errors never count toward a pass" in n for n in notes)
    assert any(n.startswith("No window has closed for 35 min") for n in notes)
    assert other["noise_floor"]["source"] == "calibration" and not other["noise_floor"]["calibrated"]
    assert "No REST-vs-REST calibration: a price matches within one tick only." in other["headline"]["notes"]


def test_exchanges_idle_in_the_range_are_left_out_of_the_all_exchanges_report(store):
    pass_run(store)
    store.add_transition(exchange="binance-main", from_mode="hybrid", to_mode="rest", reason="ws_stale",
                         automatic=True, ts_ms=T0 - 86_400_000)

    report = report_of(store, exchange=None)

    assert report["metadata"]["exchanges"] == ["bybit-main"]
    assert report["subject"] == "bybit-main: PASS — promote"


_DATA_MAPS = {"critical", "mismatched_by_kind", "mismatches_by_kind", "ignored_by_rule", "tick_bp_by_symbol",
              "tolerance_bp_by_symbol", "calibration_q99_bp_by_symbol", "tick_size_by_symbol", "noise_bp_by_symbol"}


def _keys(node, found: set[str]) -> set[str]:
    """Field names in the document; the keys of maps keyed by data (symbols, kinds, rules) are not fields."""
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key not in _DATA_MAPS:
                _keys(value, found)
    elif isinstance(node, list):
        for item in node:
            _keys(item, found)
    return found


def _documented(key: str, doc: str) -> bool:
    if f"`{key}`" in doc or f".{key}`" in doc or f"`{key}[]`" in doc or f"`{key}." in doc:
        return True
    stem = key.removesuffix("_utc")
    return key.endswith("_utc") and any(f"{stem}_ms`{sep}" in doc for sep in ("/`_utc`", " / `_utc`", " / `"))


def test_every_report_field_is_documented(store):
    critical_run(store)
    store.add_samples([Sample(exchange=EXCHANGE, kind="price", symbol="BTCUSDT", ts_ms=T0 + 3, result="ignored",
                              ignored_by="funding")])
    doc = (Path(__file__).resolve().parents[2] / "docs" / "shadow-report.md").read_text()

    keys = _keys(report_of(store), set())

    assert len(keys) > 100
    assert sorted(k for k in keys if not _documented(k, doc)) == []
