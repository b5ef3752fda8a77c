"""The shadow section's comparator settings: defaults, ignore rules from YAML, and their errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.config.models import FeedAgentConfig
from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot
from agent.shadow.comparator import Comparator
from agent.shadow.ignore import compile_rules, near_funding

T0 = 1_767_229_200_000  # 2026-01-01 01:00:00 UTC

CONFIG = """\
exchanges:
  bybit-main:
    venue: bybit
    mode: shadow
    shadow:
      max_ws_silence_seconds: 5
      ignore:
        - name: funding-settlement
          kind: price
          around_funding_seconds: 5
        - name: delisting
          symbols: [XUSDT]
        - name: maintenance
          start_utc: 2026-01-01T00:30:00Z
          end_utc: 2026-01-01T01:30:00Z
          mismatch_kinds: [ghost]
"""


def load(tmp_path: Path, text: str) -> FeedAgentConfig:
    path = tmp_path / "feedagent.yaml"
    path.write_text(text)
    return load_config(path, {}).config


def test_defaults_are_pinned() -> None:
    shadow = FeedAgentConfig.model_validate({"exchanges": {"x": {"venue": "bybit"}}}).exchanges["x"].shadow

    assert (shadow.confidence, shadow.max_ws_silence_seconds, shadow.grace_seconds) == (0.95, 10.0, None)
    assert (shadow.max_examples_per_window, shadow.ignore) == (1000, [])
    assert (shadow.window_seconds, shadow.min_samples) == (None, None)  # sized by agent.shadow.sizing


def test_the_unused_promotion_key_is_refused(tmp_path: Path) -> None:
    # the promotion count is rollback.promote_after_passing_windows; a second key would be ignored
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "exchanges:\n  x:\n    venue: bybit\n    shadow:\n      consecutive_passes_to_promote: 3\n")
    assert "shadow.consecutive_passes_to_promote" in str(caught.value)


def test_rules_from_yaml_drive_the_comparator(tmp_path: Path) -> None:
    # Arrange
    shadow = load(tmp_path, CONFIG).exchanges["bybit-main"].shadow
    c = Comparator("bybit-main", poll_interval_seconds=5.0, tick_size_by_symbol={"XUSDT": Decimal("0.1")},
                   noise_floor=None, ignore_rules=shadow.ignore,
                   max_ws_silence_seconds=shadow.max_ws_silence_seconds, grace_seconds=shadow.grace_seconds,
                   max_ws_lag_seconds=0)
    c.observe("ws", MarkPriceBatch(prices=(MarkPriceObs(symbol="XUSDT", mark_price="120"),), source="ws",
                                   ts_received_ms=T0), T0)
    c.observe("ws", PositionSnapshot(positions=(PositionObs(symbol="BTCUSDT", position_idx=0, side="long",
                                                            size="1"),), source="ws", ts_received_ms=T0,
                                     complete=False), T0)

    # Act
    price = c.observe("rest", MarkPriceBatch(prices=(MarkPriceObs(symbol="XUSDT", mark_price="100"),),
                                             source="rest", ts_received_ms=T0 + 100), T0 + 100).samples
    ghosts = [s for i in range(1, 4) for s in
              c.observe("rest", PositionSnapshot(positions=(), source="rest", ts_received_ms=T0 + i * 5000),
                        T0 + i * 5000).samples]

    # Assert
    assert [(s.result, s.ignored_by) for s in price] == [("ignored", "delisting")]
    assert [(s.mismatch_kind, s.result, s.ignored_by) for s in ghosts] == [("ghost", "ignored", "maintenance")]


def test_critical_kinds_are_ignored_only_when_named() -> None:
    [rule] = compile_rules([{"name": "x", "symbols": ["BTCUSDT"]}])

    assert rule.matches(sample_kind="price", mismatch_kind="ws_silent", symbol="BTCUSDT", ts_ms=T0)
    assert not rule.matches(sample_kind="position", mismatch_kind="missed_close", symbol="BTCUSDT", ts_ms=T0)


@pytest.mark.parametrize(("ts_ms", "near"), [
    (T0 - 3_600_000 - 5000, True),    # 23:59:55 the day before: midnight funding
    (T0 - 3_600_000 + 5000, True),    # 00:00:05
    (T0 - 3_600_000 + 5001, False),
    (T0 + 7 * 3_600_000, True),       # 08:00:00
    (T0, False),                      # 01:00:00
])
def test_near_funding(ts_ms: int, near: bool) -> None:
    assert near_funding(ts_ms, 5000) is near


@pytest.mark.parametrize(("rule", "message"), [
    ("{name: all}", "shadow.ignore.0: an ignore rule needs symbols, around_funding_seconds, start_utc or end_utc"),
    ("{name: w, start_utc: 2026-01-02T00:00:00Z, end_utc: 2026-01-01T00:00:00Z}",
     "shadow.ignore.0.end_utc: must be after start_utc (2026-01-02T00:00:00+00:00)"),
    ("{name: k, symbols: [BTCUSDT], mismatch_kinds: [ghosts]}",
     "shadow.ignore.0.mismatch_kinds.0: invalid value 'ghosts'"),
    ("{name: Bad Name, symbols: [BTCUSDT]}", "shadow.ignore.0.name: must match the pattern"),
])
def test_bad_rules_name_their_path(tmp_path: Path, rule: str, message: str) -> None:
    text = f"exchanges:\n  bybit-main:\n    venue: bybit\n    shadow:\n      ignore: [{rule}]\n"

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    assert any(message in line for line in caught.value.lines), caught.value.lines


def test_rule_names_are_unique(tmp_path: Path) -> None:
    text = ("exchanges:\n  bybit-main:\n    venue: bybit\n    shadow:\n      ignore:\n"
            "        - {name: a, symbols: [BTCUSDT]}\n        - {name: a, symbols: [ETHUSDT]}\n")

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    assert any("shadow.ignore.1.name: rule name 'a' is used twice (first at index 0)" in line
               for line in caught.value.lines), caught.value.lines
