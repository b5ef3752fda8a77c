"""The noise floor: tick ratios and REST-vs-REST calibration (Diffy's second control, Scientist's A/A) (pure).

Two REST pollers about one round trip apart see the mark price move by some
amount even though both are "right"; the q99 of that divergence is the
smallest difference between REST and WebSocket that means something.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

from agent.core.observations import MarkPriceBatch
from agent.shadow.model import NoiseFloor
from agent.shadow.stats import quantiles

#: Fewer pairs than this for one symbol and its own q99 is not trusted; the overall q99 applies.
MIN_PAIRS_PER_SYMBOL = 20


def parse_price(value: object) -> Decimal | None:
    """A price as ``Decimal`` when it is a finite positive number within 1e-18..1e18, else ``None``.

    The bounds keep every ratio computed from prices far from ``Decimal`` overflow.
    """
    if value is None or value == "":
        return None
    try:
        price = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not price.is_finite() or price <= 0 or not -18 <= price.adjusted() <= 18:
        return None
    return price


def divergence_ratio(candidate: Decimal, reference: Decimal) -> float:
    """``|candidate - reference| / reference`` as a float (``reference`` must be positive)."""
    return float(abs(candidate - reference) / reference)


def tolerance_in_price(price: Decimal, tick_size: Decimal | None, noise_ratio: float | None) -> Decimal:
    """The largest difference from ``price`` still a match: one tick plus the noise floor (ratio x price).

    Kept in ``Decimal`` so that a difference of exactly one tick is judged exactly.
    A ratio that is not a finite non-negative number counts as zero.
    """
    ok = noise_ratio is not None and 0 <= noise_ratio < float("inf")
    floor = Decimal(repr(noise_ratio)) * price if ok else Decimal(0)
    return (tick_size or Decimal(0)) + floor


def tick_ratios(tick_size_by_symbol: Mapping[str, Decimal | str],
                price_by_symbol: Mapping[str, Decimal | str]) -> dict[str, float]:
    """One tick as a ratio of the current price, per symbol known on both sides."""
    ratios: dict[str, float] = {}
    for symbol, tick in tick_size_by_symbol.items():
        tick_size = parse_price(tick)
        price = parse_price(price_by_symbol.get(symbol))
        if tick_size is not None and price is not None:
            ratios[symbol] = float(tick_size / price)
    return ratios


def pair_batches(first: MarkPriceBatch, second: MarkPriceBatch) -> list[tuple[str, Decimal, Decimal]]:
    """``(symbol, first price, second price)`` for every symbol with a valid price in both polls."""
    earlier = {obs.symbol: parse_price(obs.mark_price) for obs in first.prices}
    pairs = []
    for obs in second.prices:
        a, b = earlier.get(obs.symbol), parse_price(obs.mark_price)
        if a is not None and b is not None:
            pairs.append((obs.symbol, a, b))
    return pairs


def calibrate(pairs: Iterable[tuple[str, Decimal | str, Decimal | str]], *, now_ms: int,
              tick_ratio_by_symbol: Mapping[str, float] | None = None,
              min_pairs_per_symbol: int = MIN_PAIRS_PER_SYMBOL) -> NoiseFloor:
    """The noise floor from REST-vs-REST price pairs taken about one round trip apart.

    Overall q50/q99 of ``|second - first| / first``, plus a per-symbol q99 for
    symbols with at least ``min_pairs_per_symbol`` pairs. Invalid prices are skipped.
    """
    by_symbol: dict[str, list[float]] = defaultdict(list)
    for symbol, first, second in pairs:
        a, b = parse_price(first), parse_price(second)
        if a is not None and b is not None:
            by_symbol[symbol].append(divergence_ratio(b, a))
    everything = [d for values in by_symbol.values() for d in values]
    q50, q99 = quantiles(everything, (0.5, 0.99))
    per_symbol = {symbol: q for symbol, values in by_symbol.items()
                  if len(values) >= min_pairs_per_symbol and (q := quantiles(values, (0.99,))[0]) is not None}
    return NoiseFloor(
        tick_ratio_by_symbol=dict(tick_ratio_by_symbol or {}),
        calibration_q50_ratio=q50,
        calibration_q99_ratio=q99,
        calibration_samples=len(everything),
        calibrated_at_ms=now_ms if everything else None,
        calibration_q99_ratio_by_symbol=per_symbol,
    )


class RestPairCalibrator:
    """Collects REST-vs-REST pairs during the calibration period (bounded per symbol)."""

    def __init__(self, *, max_pairs_per_symbol: int = 4096) -> None:
        self._pairs: dict[str, deque[tuple[Decimal, Decimal]]] = defaultdict(
            lambda: deque(maxlen=max_pairs_per_symbol))

    def add_batches(self, first: MarkPriceBatch, second: MarkPriceBatch) -> int:
        """Pair two polls of the control taken one round trip apart; returns how many pairs were added."""
        pairs = pair_batches(first, second)
        for symbol, a, b in pairs:
            self._pairs[symbol].append((a, b))
        return len(pairs)

    def add_pair(self, symbol: str, first: Decimal | str, second: Decimal | str) -> bool:
        """Add one pair; ``False`` when either price is not a finite positive number."""
        a, b = parse_price(first), parse_price(second)
        if a is None or b is None:
            return False
        self._pairs[symbol].append((a, b))
        return True

    @property
    def pairs(self) -> int:
        return sum(len(values) for values in self._pairs.values())

    def noise_floor(self, *, now_ms: int, tick_ratio_by_symbol: Mapping[str, float] | None = None) -> NoiseFloor:
        """The calibrated noise floor from every pair collected so far."""
        flat = ((symbol, a, b) for symbol, values in self._pairs.items() for a, b in values)
        return calibrate(flat, now_ms=now_ms, tick_ratio_by_symbol=tick_ratio_by_symbol)
