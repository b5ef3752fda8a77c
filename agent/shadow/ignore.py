"""Known differences (Scientist's ``ignore``): which mismatches to count as ``ignored`` instead (pure).

Ignore rules run only for mismatches, and an ignored mismatch is counted
apart, never merged into the matches. A rule matches when all of its
conditions hold; a rule that names no ``mismatch_kinds`` covers every kind
except the critical ones, which it ignores only when it names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.shadow.model import CRITICAL_KINDS

DEFAULT_FUNDING_HOURS_UTC = (0, 8, 16)
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 24 * _MS_PER_HOUR


@dataclass(frozen=True)
class IgnoreRule:
    """One compiled rule. ``None`` for a condition means "any"."""

    name: str
    sample_kind: str | None = None                  # "price" | "position" | None (any)
    mismatch_kinds: frozenset[str] | None = None    # None: every non-critical kind
    symbols: frozenset[str] | None = None
    around_funding_ms: int | None = None
    funding_hours_utc: tuple[int, ...] = DEFAULT_FUNDING_HOURS_UTC
    start_ms: int | None = None
    end_ms: int | None = None

    def matches(self, *, sample_kind: str, mismatch_kind: str, symbol: str, ts_ms: int) -> bool:
        """True when this rule covers a ``mismatch_kind`` mismatch of ``symbol`` at ``ts_ms``."""
        if self.sample_kind is not None and sample_kind != self.sample_kind:
            return False
        if self.mismatch_kinds is None:
            if mismatch_kind in CRITICAL_KINDS:
                return False
        elif mismatch_kind not in self.mismatch_kinds:
            return False
        if self.symbols is not None and symbol not in self.symbols:
            return False
        if self.start_ms is not None and ts_ms < self.start_ms:
            return False
        if self.end_ms is not None and ts_ms >= self.end_ms:
            return False
        if self.around_funding_ms is not None:
            return near_funding(ts_ms, self.around_funding_ms, self.funding_hours_utc)
        return True


def near_funding(ts_ms: int, within_ms: int, hours_utc: Iterable[int] = DEFAULT_FUNDING_HOURS_UTC) -> bool:
    """True when ``ts_ms`` is within ``within_ms`` of a funding time (the given UTC hours, every day)."""
    of_day = ts_ms % _MS_PER_DAY
    for hour in hours_utc:
        distance = abs(of_day - hour * _MS_PER_HOUR)
        if min(distance, _MS_PER_DAY - distance) <= within_ms:
            return True
    return False


def first_match(rules: Iterable[IgnoreRule], *, sample_kind: str, mismatch_kind: str, symbol: str,
                ts_ms: int) -> str | None:
    """The name of the first rule that covers this mismatch, or ``None``."""
    for rule in rules:
        if rule.matches(sample_kind=sample_kind, mismatch_kind=mismatch_kind, symbol=symbol, ts_ms=ts_ms):
            return rule.name
    return None


def compile_rules(rules: Iterable[IgnoreRule | Mapping[str, Any] | Any] | None) -> tuple[IgnoreRule, ...]:
    """Rules from config models (``ShadowIgnoreRule``), plain mappings of the same keys, or ``IgnoreRule``."""
    if not rules:
        return ()
    return tuple(rule if isinstance(rule, IgnoreRule) else _compile(rule) for rule in rules)


def _compile(rule: Mapping[str, Any] | Any) -> IgnoreRule:
    def get(key: str, default: Any = None) -> Any:
        if isinstance(rule, Mapping):
            return rule.get(key, default)
        return getattr(rule, key, default)

    kind = get("kind", "any")
    kinds = get("mismatch_kinds") or None
    symbols = get("symbols") or None
    around = get("around_funding_seconds")
    return IgnoreRule(
        name=str(get("name")),
        sample_kind=None if kind in (None, "any") else str(kind),
        mismatch_kinds=frozenset(kinds) if kinds else None,
        symbols=frozenset(symbols) if symbols else None,
        around_funding_ms=None if around is None else round(float(around) * 1000),
        funding_hours_utc=tuple(get("funding_hours_utc") or DEFAULT_FUNDING_HOURS_UTC),
        start_ms=_to_ms(get("start_utc")),
        end_ms=_to_ms(get("end_utc")),
    )


def _to_ms(value: datetime | str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(value.timestamp() * 1000)
