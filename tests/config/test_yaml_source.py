"""The position-recording YAML reader."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from agent.config.yaml_source import Mark, parse_yaml

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "good"


def test_marks_of_keys_and_items_are_one_based() -> None:
    doc = parse_yaml("sinks:\n  - type: stdout\n  - {type: jsonl, path: x}\nexchanges: {a: {symbols: [A1, B2]}}\n", "f")

    assert doc.marks[("sinks",)] == Mark(1, 1)
    assert doc.marks[("sinks", 0)] == Mark(2, 5)
    assert doc.marks[("sinks", 1, "path")] == Mark(3, 19)
    assert doc.marks[("exchanges", "a", "symbols", 1)] == Mark(4, 31)
    assert doc.locate(("sinks", 0, "missing")) == Mark(2, 5)


def test_merge_keys_fill_in_and_local_keys_win() -> None:
    config = load_config(GOOD / "merge_keys.yaml", {}).config

    assert config.exchanges["bybit-a"].rest.prices_interval_seconds == 1
    assert config.exchanges["bybit-b"].rest.positions_interval_seconds == 1
    assert config.exchanges["bybit-b"].rest.prices_interval_seconds == 2


def test_recursive_alias_is_an_issue_not_a_hang() -> None:
    doc = parse_yaml("a: &x\n  b: *x\n", "f")

    assert [str(i) for i in doc.issues] == ["f:1:4: a.b: an alias refers to a node that contains it (recursive alias)"]


def test_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]

    doc = parse_yaml("\n".join(lines) + "\n", "f")

    assert doc.data is None
    assert [str(i) for i in doc.issues] == ["f:1:1: (yaml): the document is too large once its aliases are expanded"]
