"""Formatting shared by the shadow report's builder and renderers: UTC times, numbers, labels."""

from __future__ import annotations

import math
from datetime import UTC, datetime

VERDICT_LABEL = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "error": "ERROR"}
VERDICT_GLYPH = {"pass": "✓", "fail": "✗", "inconclusive": "?", "error": "!"}
ACTION_WORDS = {"promote": "promote", "hold": "hold", "roll_back": "roll back"}


def utc(ms: int | None) -> str | None:
    """``2026-05-01T12:00:00.000Z`` (the report's one timestamp format), or None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utc_short(ms: int | None, *, with_date: bool = True) -> str:
    """``2026-05-01 12:00:00 UTC`` for people (``12:00:00`` without the date)."""
    if ms is None:
        return "—"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S")


def finite(value: float | None) -> float | None:
    """The value, or None for None/NaN/inf (the JSON document never holds NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def num(value: float | int | None, digits: int = 2) -> str:
    """A number for people: thousands separated, ``—`` when absent."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.{digits}g}"
    return f"{value:,.{digits}f}"


def pct(ratio: float | None, digits: int = 2) -> str:
    """A ratio as a percentage, ``—`` when absent."""
    if ratio is None:
        return "—"
    return f"{ratio * 100:.{digits}f}%"


def seconds(value: float | None) -> str:
    """Seconds for people: ``85 ms``, ``1.20 s``."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def bp(value: float | None) -> str:
    """Basis points for people."""
    if value is None:
        return "—"
    return f"{num(value, 2)} bp"
