"""The autopilot: opens, resizes and closes positions at random so agents see a lifecycle."""

from __future__ import annotations

import random
from decimal import Decimal

from agent.simulator.instruments import VENUES, round_to_step
from agent.simulator.market import MarketModel
from agent.simulator.positions import PositionChange, Side

# Relative weights of the three actions when both opening and closing are possible.
_ACTION_WEIGHTS = {"open": 4, "resize": 4, "close": 3}


class Autopilot:
    """One random lifecycle change per ``step``; deterministic for a given seed."""

    def __init__(self, market: MarketModel, *, seed: int, max_positions_per_venue: int) -> None:
        self._market = market
        self._rng = random.Random(f"{seed}/autopilot")
        self._max_positions = max_positions_per_venue

    def step(self, now_ms: int | None = None) -> PositionChange | None:
        """Make one change on a random venue; None while paused or when nothing fits."""
        market = self._market
        if market.autopilot_paused:
            return None
        venue = self._rng.choice(VENUES)
        open_positions = market.positions(venue)
        free = self._free_slots(venue)
        actions = dict(_ACTION_WEIGHTS)
        if not open_positions:
            actions = {"open": 1}
        elif len(open_positions) >= self._max_positions or not free:
            actions.pop("open")
        action = self._rng.choices(list(actions), weights=list(actions.values()))[0]
        if action == "open":
            symbol, side = self._rng.choice(free)
            size = self._random_size(venue, symbol, Decimal(0))
            return market.open_position(venue, symbol, side, size, now_ms=now_ms)
        pos = self._rng.choice(open_positions)
        if action == "close":
            return market.close_position(venue, pos.symbol, position_idx=pos.position_idx, now_ms=now_ms)
        size = self._random_size(venue, pos.symbol, pos.size)
        return market.set_size(venue, pos.symbol, size, position_idx=pos.position_idx, now_ms=now_ms)

    def open_initial(self, per_venue: int, now_ms: int | None = None) -> list[PositionChange]:
        """Open up to ``per_venue`` positions on every venue (the demo's starting book)."""
        changes: list[PositionChange] = []
        for venue in VENUES:
            for _ in range(min(per_venue, self._max_positions)):
                free = self._free_slots(venue)
                if not free:
                    break
                symbol, side = self._rng.choice(free)
                size = self._random_size(venue, symbol, Decimal(0))
                changes.append(self._market.open_position(venue, symbol, side, size, now_ms=now_ms))
        return changes

    def _free_slots(self, venue: str) -> list[tuple[str, Side]]:
        """(symbol, side) pairs that could be opened now under each symbol's position mode."""
        market = self._market
        slots: list[tuple[str, Side]] = []
        for symbol in market.symbols(venue):
            sides: tuple[Side, ...] = ("long", "short")
            for side in sides:
                idx = market.resolve_idx(venue, symbol, side=side)
                if market.position(venue, symbol, idx) is None:
                    slots.append((symbol, side))
        return slots

    def _random_size(self, venue: str, symbol: str, current: Decimal) -> Decimal:
        """A size worth roughly 50-5,000 USDT, different from ``current``."""
        market = self._market
        spec = market.spec(venue, symbol)
        mark = market.quote(venue, symbol).mark_price
        for _ in range(20):
            notional = Decimal(str(round(self._rng.uniform(50, 5000), 2)))
            size = max(round_to_step(notional / mark, spec.step), spec.step)
            if size != current:
                return size
        return current + spec.step
