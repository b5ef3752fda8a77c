"""The Markdown shadow report: headline first, compact worst-first table, top examples, escaped cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.shadow.model import Sample
from agent.shadow.report import render_markdown
from agent.shadow.store import ShadowStore
from tests.shadow.test_report_scenarios import T0, critical_run, fail_run, populate, report_of


@pytest.fixture
def store(tmp_path: Path):
    with ShadowStore(tmp_path / "shadow.sqlite3") as s:
        yield s


def test_headline_first_then_table_then_examples(store):
    fail_run(store)

    text = render_markdown(report_of(store))

    lines = text.splitlines()
    assert lines[0] == "**bybit-main: FAIL — roll back**"
    assert lines[2].startswith("Next action: **roll back** · verdict ✗ fail · The latest window failed")
    header = lines.index("| symbol | samples | mismatched | rate | kinds | max divergence |")
    assert lines[header + 2].startswith("| ETHUSDT |") and lines[header + 3].startswith("| SOLUSDT |")
    examples = lines.index(next(line for line in lines if line.startswith("Top examples")))
    assert examples > header and lines[examples + 1].startswith("- 2026-04-24")
    assert "trace `" in lines[examples + 1]


def test_critical_headline_names_the_kind(store):
    critical_run(store)

    text = render_markdown(report_of(store))

    assert text.startswith("**bybit-main: 1 critical — roll back**\n")
    assert "missed\\_close" not in text.splitlines()[0]
    assert "`missed_close` **critical** BTCUSDT" in text


def test_empty_store_says_no_data(store):
    text = render_markdown(report_of(store, exchange=None))

    assert text.startswith("**No shadow data — hold**")
    assert "No data is not a pass" in text


def test_table_cells_cannot_break_the_table(store):
    populate(store, [("fail", "bad | reason", {})], exchange="ex|change")
    store.add_samples([Sample(exchange="ex|change", kind="price", symbol="A|B*C", ts_ms=T0 + 1, result="mismatch",
                              mismatch_kind="price_divergence", divergence_ratio=0.1)])

    text = render_markdown(report_of(store, exchange="ex|change"))

    row = next(line for line in text.splitlines() if line.startswith("| A"))
    assert row.startswith("| A\\|B\\*C |")
    assert row.replace("\\|", "").count("|") == 7
    assert text.splitlines()[0] == "**ex\\|change: FAIL — roll back**"
