"""Reconciliation diff as pure logic."""

from agent.core.observations import PositionObs
from agent.sources.reconcile import diff_positions


def row(symbol, size, side="long", idx=0):
    return PositionObs(symbol=symbol, position_idx=idx, side=side if size != "0" else None, size=size)


def test_every_kind_is_counted():
    held = {r.key: r for r in (row("BTCUSDT", "1"), row("ETHUSDT", "2"), row("SOLUSDT", "3"), row("XRPUSDT", "4"))}
    rest = [row("BTCUSDT", "1"), row("ETHUSDT", "2.5"), row("SOLUSDT", "0"), row("BNBUSDT", "1")]
    assert diff_positions(held, rest, complete=True) == {"missed_open": 1, "missed_close": 2, "size_mismatch": 1}


def test_partial_snapshot_absence_is_not_a_close():
    held = {row("BTCUSDT", "1").key: row("BTCUSDT", "1")}
    assert diff_positions(held, [], complete=False) == {"missed_open": 0, "missed_close": 0, "size_mismatch": 0}


def test_same_size_in_other_spelling_agrees():
    held = {row("BTCUSDT", "1.50").key: row("BTCUSDT", "1.50")}
    assert sum(diff_positions(held, [row("BTCUSDT", "1.5")], complete=True).values()) == 0
