"""Positions, price ticks and the lifecycle record of the simulated market (pure data)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, overload

from agent.simulator.instruments import SymbolSpec, fmt, round_to_step

Side = Literal["long", "short"]
Change = Literal["opened", "updated", "closed"]

# One maintenance-margin rate for every symbol: enough for a plausible liq price.
MAINT_MARGIN_RATE = Decimal("0.005")
# Taker fee charged on entry, used for Bybit/Binance break-even prices.
TAKER_FEE_RATE = Decimal("0.00055")
_ENTRY_PRICE_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class PositionChange:
    """One lifecycle change the simulator made: what the agent must report.

    ``size`` is never negative; a close carries size 0 and the side it had while open.
    """

    venue: str
    symbol: str
    position_idx: int
    change: Change
    side: Side
    size: Decimal
    ts_ms: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (size as a decimal string)."""
        return {"venue": self.venue, "symbol": self.symbol, "position_idx": self.position_idx,
                "change": self.change, "side": self.side, "size": fmt(self.size), "ts_ms": self.ts_ms}


@dataclass(frozen=True, slots=True)
class PriceTick:
    """A new mark (and index) price of one symbol."""

    venue: str
    symbol: str
    mark_price: Decimal
    index_price: Decimal
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Quote:
    """Market data of one symbol at one moment."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal
    last_price: Decimal
    funding_rate: Decimal
    prev_price_24h: Decimal
    high_price_24h: Decimal
    low_price_24h: Decimal
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Position:
    """An open position, or a flat slot when ``size == 0``."""

    venue: str
    symbol: str
    position_idx: int
    side: Side
    size: Decimal
    entry_price: Decimal
    leverage: Decimal
    created_ms: int
    updated_ms: int
    seq: int
    cum_realised_pnl: Decimal = Decimal(0)
    cur_realised_pnl: Decimal = Decimal(0)

    @property
    def direction(self) -> int:
        """+1 for long, -1 for short."""
        return 1 if self.side == "long" else -1


@dataclass(frozen=True, slots=True)
class PositionMetrics:
    """Values derived from a position and the current mark price."""

    unrealised_pnl: Decimal
    position_value: Decimal
    mark_value: Decimal
    liq_price: Decimal
    bust_price: Decimal
    initial_margin: Decimal
    maint_margin: Decimal
    break_even_price: Decimal


def position_metrics(pos: Position, mark_price: Decimal, spec: SymbolSpec) -> PositionMetrics:
    """Unrealised PnL, value, margins and liquidation price of ``pos`` at ``mark_price``.

    Isolated-margin approximations: plausible numbers, not the venues' exact formulas.
    """
    d = Decimal(pos.direction)
    pnl = (mark_price - pos.entry_price) * pos.size * d
    value = pos.entry_price * pos.size
    mark_value = mark_price * pos.size
    inv_lev = Decimal(1) / pos.leverage
    liq = pos.entry_price * (1 - d * (inv_lev - MAINT_MARGIN_RATE))
    bust = pos.entry_price * (1 - d * inv_lev)
    break_even = pos.entry_price * (1 + d * 2 * TAKER_FEE_RATE)
    return PositionMetrics(
        unrealised_pnl=pnl.quantize(_ENTRY_PRICE_QUANTUM).normalize() if pnl else Decimal(0),
        position_value=value.quantize(_ENTRY_PRICE_QUANTUM).normalize() if value else Decimal(0),
        mark_value=mark_value.quantize(_ENTRY_PRICE_QUANTUM).normalize() if mark_value else Decimal(0),
        liq_price=max(round_to_step(liq, spec.tick), Decimal(0)),
        bust_price=max(round_to_step(bust, spec.tick), Decimal(0)),
        initial_margin=(value * inv_lev).quantize(_ENTRY_PRICE_QUANTUM),
        maint_margin=(value * MAINT_MARGIN_RATE).quantize(_ENTRY_PRICE_QUANTUM),
        break_even_price=round_to_step(break_even, spec.tick),
    )


def average_entry(old_entry: Decimal, old_size: Decimal, price: Decimal, added: Decimal) -> Decimal:
    """Entry price after adding ``added`` at ``price`` to a position."""
    total = old_size + added
    avg = (old_entry * old_size + price * added) / total
    return avg.quantize(_ENTRY_PRICE_QUANTUM).normalize()


class ChangeRecord(Sequence[PositionChange]):
    """Append-only record of the lifecycle changes the simulator made, oldest first."""

    def __init__(self) -> None:
        self._changes: list[PositionChange] = []

    def append(self, change: PositionChange) -> None:
        """Record one change (the market model calls this)."""
        self._changes.append(change)

    @overload
    def __getitem__(self, index: int) -> PositionChange: ...

    @overload
    def __getitem__(self, index: slice) -> list[PositionChange]: ...

    def __getitem__(self, index: int | slice) -> PositionChange | list[PositionChange]:
        return self._changes[index]

    def __len__(self) -> int:
        return len(self._changes)

    def __iter__(self) -> Iterator[PositionChange]:
        return iter(self._changes)

    def for_venue(self, venue: str) -> list[PositionChange]:
        """Changes of one venue, oldest first."""
        return [c for c in self._changes if c.venue == venue]

    def to_json(self, venue: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """JSON-ready changes from index ``since`` on, optionally of one venue."""
        return [c.to_json() for c in self._changes[since:] if venue is None or c.venue == venue]
