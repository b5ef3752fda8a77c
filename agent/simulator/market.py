"""The simulated market: mark prices and positions of both venues (pure logic, no I/O).

Time comes from an injected clock (milliseconds) or an explicit ``now_ms``, randomness
from seeded ``random.Random`` instances, so a test can replay a run exactly.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from agent.simulator.config import SimulatorConfig
from agent.simulator.instruments import VENUES, SymbolSpec, round_to_step
from agent.simulator.positions import (
    Change,
    ChangeRecord,
    Position,
    PositionChange,
    PriceTick,
    Quote,
    Side,
    average_entry,
)

log = logging.getLogger(__name__)

MarketEvent = PriceTick | PositionChange
Listener = Callable[[MarketEvent], None]

# The index price sits this close to the mark (relative); real basis is a few bp.
_INDEX_BASIS_RATIO = 0.0002


class MarketError(ValueError):
    """An explicit market operation is not possible (unknown symbol, wrong mode, ...)."""


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


class MarketModel:
    """Prices, positions, position modes, the lifecycle record and listeners."""

    def __init__(self, config: SimulatorConfig, *, seed: int,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self._config = config
        self._clock = clock
        self.rng_prices = random.Random(f"{seed}/prices")
        self.record = ChangeRecord()
        self.price_walk_paused = False
        self.autopilot_paused = False
        self._listeners: list[Listener] = []
        now = clock()
        self._specs: dict[str, dict[str, SymbolSpec]] = {
            v: {s.symbol: s for s in config.symbols(v)} for v in VENUES}
        self._quotes: dict[str, dict[str, Quote]] = {
            v: {s.symbol: _initial_quote(s, now) for s in config.symbols(v)} for v in VENUES}
        self._positions: dict[str, dict[tuple[str, int], Position]] = {v: {} for v in VENUES}
        self._last_seq: dict[tuple[str, str, int], int] = {}
        # Bybit's seq is a large per-account counter; start somewhere realistic.
        self._seq = 5_700_000_000 + random.Random(f"{seed}/seq").randrange(1_000_000)
        self._bybit_hedge: set[str] = set(config.bybit_hedge_symbols)
        self._binance_dual_side = config.binance_dual_side_position
        self._mark_period: dict[str, int] = {}

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` synchronously on every price tick and lifecycle change."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _emit(self, event: MarketEvent) -> None:
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                # A broken listener (a WebSocket fan-out) must not stop the market.
                log.exception("simulator market listener failed", extra={"event": "simulator_listener_failed"})

    # -- pause -------------------------------------------------------------------------------

    def pause(self, *, prices: bool = True, autopilot: bool = True) -> None:
        """Stop the price walk and/or the autopilot; explicit operations still work."""
        self.price_walk_paused = self.price_walk_paused or prices
        self.autopilot_paused = self.autopilot_paused or autopilot

    def resume(self, *, prices: bool = True, autopilot: bool = True) -> None:
        """Restart the price walk and/or the autopilot."""
        self.price_walk_paused = self.price_walk_paused and not prices
        self.autopilot_paused = self.autopilot_paused and not autopilot

    # -- instruments and prices --------------------------------------------------------------

    def now_ms(self) -> int:
        """The model's clock."""
        return self._clock()

    def symbols(self, venue: str) -> list[str]:
        """Listed symbols of a venue, in configuration order."""
        return list(self._venue_specs(venue))

    def spec(self, venue: str, symbol: str) -> SymbolSpec:
        """The instrument spec; MarketError when unknown."""
        specs = self._venue_specs(venue)
        if symbol not in specs:
            raise MarketError(f"unknown {venue} symbol {symbol!r}")
        return specs[symbol]

    def has_symbol(self, venue: str, symbol: str) -> bool:
        """True when the venue lists ``symbol``."""
        return symbol in self._venue_specs(venue)

    def quote(self, venue: str, symbol: str) -> Quote:
        """Current market data of one symbol."""
        self.spec(venue, symbol)
        return self._quotes[venue][symbol]

    def step(self, now_ms: int | None = None) -> list[PriceTick]:
        """Move every mark price one bounded random-walk step; no-op while paused."""
        if self.price_walk_paused:
            return []
        now = self._clock() if now_ms is None else now_ms
        ticks = []
        for venue in VENUES:
            if not self._mark_due(venue, now):
                continue
            for spec in self._specs[venue].values():
                tick = self._walk(venue, spec, now)
                if tick is not None:
                    ticks.append(tick)
        for tick in ticks:
            self._emit(tick)
        return ticks

    def _mark_due(self, venue: str, now: int) -> bool:
        """Whether ``venue`` computes a new mark price at ``now`` (Binance: once per clock second)."""
        interval_ms = round(self._config.binance_mark_price_update_interval_seconds * 1000)
        if venue != "binance" or interval_ms <= 0:
            return True
        period = now // interval_ms
        if self._mark_period.get(venue) == period:
            return False
        self._mark_period[venue] = period
        return True

    def _walk(self, venue: str, spec: SymbolSpec, now: int) -> PriceTick | None:
        old = self._quotes[venue][spec.symbol]
        rng = self.rng_prices
        ratio = self._config.max_price_step_ratio
        start = Decimal(spec.start_price)
        band = Decimal(str(self._config.price_band_ratio))
        raw = old.mark_price * Decimal(str(1 + rng.uniform(-ratio, ratio)))
        mark = min(max(round_to_step(raw, spec.tick), start * (1 - band)), start * (1 + band))
        mark = round_to_step(mark, spec.tick)
        index = round_to_step(mark * Decimal(str(1 + rng.uniform(-_INDEX_BASIS_RATIO, _INDEX_BASIS_RATIO))),
                              spec.tick)
        last = mark + spec.tick * rng.choice((-1, 0, 1))
        if mark == old.mark_price and index == old.index_price:
            return None
        self._quotes[venue][spec.symbol] = _moved(old, mark, index, last, now)
        return PriceTick(venue, spec.symbol, mark, index, now)

    def set_mark_price(self, venue: str, symbol: str, price: str | Decimal, *,
                       index_price: str | Decimal | None = None, now_ms: int | None = None) -> PriceTick:
        """Set a mark price exactly (rounded to the tick size); the index follows unless given."""
        spec = self.spec(venue, symbol)
        now = self._clock() if now_ms is None else now_ms
        mark = round_to_step(Decimal(price), spec.tick)
        if mark <= 0:
            raise MarketError(f"mark price must be > 0, was {price}")
        index = mark if index_price is None else round_to_step(Decimal(index_price), spec.tick)
        old = self._quotes[venue][symbol]
        self._quotes[venue][symbol] = _moved(old, mark, index, mark, now)
        tick = PriceTick(venue, symbol, mark, index, now)
        self._emit(tick)
        return tick

    # -- position modes ----------------------------------------------------------------------

    def is_hedge_mode(self, venue: str, symbol: str | None = None) -> bool:
        """Bybit: hedge mode of one symbol; Binance: the account's ``dualSidePosition``."""
        if venue == "binance":
            return self._binance_dual_side
        if symbol is None:
            raise MarketError("Bybit position mode is per symbol; give a symbol")
        self.spec(venue, symbol)
        return symbol in self._bybit_hedge

    def set_hedge_mode(self, venue: str, hedge: bool, *, symbol: str | None = None) -> None:
        """Switch position mode; refused while an affected position is open, as on the venues.

        Bybit: one symbol, or every symbol when ``symbol`` is None. Binance: account-wide.
        """
        symbols = self.symbols(venue) if symbol is None or venue == "binance" else [symbol]
        for s in symbols:
            self.spec(venue, s)
        busy = [k for k in self._positions[venue] if k[0] in symbols]
        if busy:
            raise MarketError(f"{venue}: close positions {sorted(busy)} before switching position mode")
        if venue == "binance":
            self._binance_dual_side = hedge
        elif hedge:
            self._bybit_hedge.update(symbols)
        else:
            self._bybit_hedge.difference_update(symbols)

    def resolve_idx(self, venue: str, symbol: str, *, side: Side | None = None,
                    position_idx: int | None = None) -> int:
        """The position index for ``side`` under the symbol's mode; MarketError if inconsistent."""
        hedge = self.is_hedge_mode(venue, symbol)
        if position_idx is not None:
            allowed = (1, 2) if hedge else (0,)
            if position_idx not in allowed:
                mode = "hedge" if hedge else "one-way"
                raise MarketError(f"{venue} {symbol} is in {mode} mode: position_idx must be in {allowed}")
            if side is not None and hedge and side != ("long" if position_idx == 1 else "short"):
                raise MarketError(f"position_idx {position_idx} does not hold {side} positions")
            return position_idx
        if not hedge:
            return 0
        if side is not None:
            return 1 if side == "long" else 2
        open_idx = [idx for (s, idx) in self._positions[venue] if s == symbol]
        if len(open_idx) != 1:
            raise MarketError(f"{venue} {symbol} is in hedge mode: give side or position_idx")
        return open_idx[0]

    # -- positions ---------------------------------------------------------------------------

    def positions(self, venue: str, symbol: str | None = None) -> list[Position]:
        """Open positions of a venue (optionally one symbol), by symbol order then index."""
        order = {s: i for i, s in enumerate(self._venue_specs(venue))}
        rows = [p for p in self._positions[venue].values() if symbol is None or p.symbol == symbol]
        return sorted(rows, key=lambda p: (order[p.symbol], p.position_idx))

    def position(self, venue: str, symbol: str, position_idx: int) -> Position | None:
        """The open position at ``(symbol, position_idx)``, or None when flat."""
        return self._positions[venue].get((symbol, position_idx))

    def last_seq(self, venue: str, symbol: str, position_idx: int) -> int:
        """Bybit ``seq`` of the last change at this slot; -1 if it never traded."""
        return self._last_seq.get((venue, symbol, position_idx), -1)

    def open_position(self, venue: str, symbol: str, side: Side, size: str | Decimal, *,
                      position_idx: int | None = None, leverage: str | Decimal | None = None,
                      entry_price: str | Decimal | None = None, now_ms: int | None = None) -> PositionChange:
        """Open a position at the mark price (or ``entry_price``); the slot must be flat."""
        spec = self.spec(venue, symbol)
        if side not in ("long", "short"):
            raise MarketError(f"side must be 'long' or 'short', was {side!r}")
        idx = self.resolve_idx(venue, symbol, side=side, position_idx=position_idx)
        if (symbol, idx) in self._positions[venue]:
            raise MarketError(f"{venue} {symbol} position_idx {idx} is already open")
        qty = self._qty(spec, size)
        now = self._clock() if now_ms is None else now_ms
        entry = self._quotes[venue][symbol].mark_price if entry_price is None else Decimal(entry_price)
        lev = Decimal(leverage) if leverage is not None else Decimal(spec.default_leverage)
        if not 1 <= lev <= spec.max_leverage:
            raise MarketError(f"leverage must be within 1..{spec.max_leverage}, was {lev}")
        pos = Position(venue, symbol, idx, side, qty, entry, lev, created_ms=now, updated_ms=now,
                       seq=self._next_seq(venue, symbol, idx))
        self._positions[venue][(symbol, idx)] = pos
        return self._changed(pos, "opened", now)

    def set_size(self, venue: str, symbol: str, size: str | Decimal, *, position_idx: int | None = None,
                 side: Side | None = None, now_ms: int | None = None) -> PositionChange:
        """Resize an open position (size > 0; size 0 closes it). Adding averages the entry price."""
        spec = self.spec(venue, symbol)
        if Decimal(size) == 0:
            return self.close_position(venue, symbol, position_idx=position_idx, side=side, now_ms=now_ms)
        pos = self._open_at(venue, symbol, side, position_idx)
        qty = self._qty(spec, size)
        if qty == pos.size:
            raise MarketError(f"{venue} {symbol} position_idx {pos.position_idx} already has size {qty}")
        now = self._clock() if now_ms is None else now_ms
        mark = self._quotes[venue][symbol].mark_price
        if qty > pos.size:
            pos = replace(pos, entry_price=average_entry(pos.entry_price, pos.size, mark, qty - pos.size))
        else:
            realised = (mark - pos.entry_price) * (pos.size - qty) * pos.direction
            pos = replace(pos, cum_realised_pnl=pos.cum_realised_pnl + realised,
                          cur_realised_pnl=pos.cur_realised_pnl + realised)
        pos = replace(pos, size=qty, updated_ms=now, seq=self._next_seq(venue, symbol, pos.position_idx))
        self._positions[venue][(symbol, pos.position_idx)] = pos
        return self._changed(pos, "updated", now)

    def close_position(self, venue: str, symbol: str, *, position_idx: int | None = None,
                       side: Side | None = None, now_ms: int | None = None) -> PositionChange:
        """Close an open position; the record keeps the side it had."""
        self.spec(venue, symbol)
        pos = self._open_at(venue, symbol, side, position_idx)
        now = self._clock() if now_ms is None else now_ms
        del self._positions[venue][(symbol, pos.position_idx)]
        self._next_seq(venue, symbol, pos.position_idx)
        return self._changed(replace(pos, size=Decimal(0), updated_ms=now), "closed", now)

    def _open_at(self, venue: str, symbol: str, side: Side | None, position_idx: int | None) -> Position:
        idx = self.resolve_idx(venue, symbol, side=side, position_idx=position_idx)
        pos = self._positions[venue].get((symbol, idx))
        if pos is None:
            raise MarketError(f"{venue} {symbol} position_idx {idx} is not open")
        if side is not None and pos.side != side:
            raise MarketError(f"{venue} {symbol} position_idx {idx} is {pos.side}, not {side}")
        return pos

    def _changed(self, pos: Position, change: Change, now: int) -> PositionChange:
        record = PositionChange(pos.venue, pos.symbol, pos.position_idx, change, pos.side, pos.size, now)
        self.record.append(record)
        self._emit(record)
        return record

    def _next_seq(self, venue: str, symbol: str, idx: int) -> int:
        self._seq += 1
        self._last_seq[(venue, symbol, idx)] = self._seq
        return self._seq

    @staticmethod
    def _qty(spec: SymbolSpec, size: str | Decimal) -> Decimal:
        qty = Decimal(size)
        if qty <= 0:
            raise MarketError(f"size must be > 0, was {size}")
        rounded = round_to_step(qty, spec.step)
        if rounded != qty:
            raise MarketError(f"size {size} is not a multiple of the qty step {spec.qty_step}")
        return rounded

    def _venue_specs(self, venue: str) -> dict[str, SymbolSpec]:
        if venue not in self._specs:
            raise MarketError(f"unknown venue {venue!r}")
        return self._specs[venue]


class BookSizeWalk:
    """Top-of-book sizes (best bid and ask quantity) per symbol, moved one step per ticker beat (pure).

    Each size wanders around where it started (52 and 37 qty steps) and comes back: a
    mean-reverting walk of the logarithm, ``x' = 0.9·x + ε`` with ``ε`` uniform in
    ±``_BOOK_LOG_STEP``, clamped to 1..``_BOOK_MAX_FACTOR``× the start. A plain multiplicative
    walk has a positive drift in the logarithm and overflows ``Decimal`` within minutes.
    Seeded, so a run replays exactly.
    """

    def __init__(self, *, seed: int) -> None:
        self._rng = random.Random(f"{seed}/bybit-ws-book")
        self._sizes: dict[str, tuple[Decimal, Decimal]] = {}
        self._logs: dict[str, tuple[float, float]] = {}

    def sizes(self, spec: SymbolSpec) -> tuple[Decimal, Decimal]:
        """The current ``(bid size, ask size)`` of ``spec``'s symbol."""
        if spec.symbol not in self._sizes:
            self._sizes[spec.symbol] = (spec.step * _BOOK_START[0], spec.step * _BOOK_START[1])
            self._logs[spec.symbol] = (0.0, 0.0)
        return self._sizes[spec.symbol]

    def step(self, spec: SymbolSpec) -> tuple[Decimal, Decimal]:
        """Move both sizes one step; returns the new ``(bid size, ask size)``."""
        self.sizes(spec)
        logs = tuple(_BOOK_REVERSION * x + self._rng.uniform(-_BOOK_LOG_STEP, _BOOK_LOG_STEP)
                     for x in self._logs[spec.symbol])
        self._logs[spec.symbol] = (logs[0], logs[1])
        bid, ask = (_book_size(start, x, spec.step) for start, x in zip(_BOOK_START, logs, strict=True))
        self._sizes[spec.symbol] = (bid, ask)
        return bid, ask


# Where the top-of-book sizes start (in qty steps), how fast they come back, and their bounds.
_BOOK_START = (52, 37)
_BOOK_REVERSION = 0.9
_BOOK_LOG_STEP = 0.25
_BOOK_MAX_FACTOR = 20


def _book_size(start_steps: int, log_ratio: float, step: Decimal) -> Decimal:
    factor = min(max(math.exp(log_ratio), 1 / start_steps), _BOOK_MAX_FACTOR)
    return max(round_to_step(step * start_steps * Decimal(repr(round(factor, 6))), step), step)


def _initial_quote(spec: SymbolSpec, now: int) -> Quote:
    start = Decimal(spec.start_price)
    prev = round_to_step(start * Decimal("0.985"), spec.tick)
    return Quote(symbol=spec.symbol, mark_price=start, index_price=start, last_price=start,
                 funding_rate=Decimal(spec.funding_rate), prev_price_24h=prev,
                 high_price_24h=round_to_step(start * Decimal("1.012"), spec.tick),
                 low_price_24h=min(prev, start), ts_ms=now)


def _moved(old: Quote, mark: Decimal, index: Decimal, last: Decimal, now: int) -> Quote:
    return replace(old, mark_price=mark, index_price=index, last_price=last,
                   high_price_24h=max(old.high_price_24h, last), low_price_24h=min(old.low_price_24h, last),
                   ts_ms=now)
