"""Reconciliation: how a REST snapshot disagrees with the WebSocket-built view (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.core.observations import PositionObs, decimal_or_zero

DISAGREEMENT_KINDS = ("missed_open", "missed_close", "size_mismatch")


def diff_positions(held: Mapping[tuple[str, int], PositionObs], rest_rows: Iterable[PositionObs], *,
                   complete: bool) -> dict[str, int]:
    """Count disagreements of ``held`` (the book) against REST.

    ``missed_open``: REST has an open position the book lacks. ``missed_close``:
    the book holds a position REST shows flat (or, in a complete snapshot,
    does not show at all). ``size_mismatch``: both open, different size or side.
    """
    counts = dict.fromkeys(DISAGREEMENT_KINDS, 0)
    seen: set[tuple[str, int]] = set()
    for row in rest_rows:
        seen.add(row.key)
        mine = held.get(row.key)
        if row.is_open and mine is None:
            counts["missed_open"] += 1
        elif not row.is_open and mine is not None:
            counts["missed_close"] += 1
        elif row.is_open and mine is not None and (
                row.side != mine.side or decimal_or_zero(row.size) != decimal_or_zero(mine.size)):
            counts["size_mismatch"] += 1
    if complete:
        counts["missed_close"] += sum(1 for key in held if key not in seen)
    return counts
