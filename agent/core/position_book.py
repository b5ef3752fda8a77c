"""PositionBook: the current positions and mark prices of one exchange, and the events they imply.

Pure logic: no I/O, no clock of its own (callers pass ``now_ms``). The same
code derives lifecycle events from REST polls and WebSocket deltas, so a
consumer cannot tell the modes apart.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from agent.core.events import MarkPriceEvent, PositionEvent
from agent.core.identity import SeqAllocator
from agent.core.observations import (
    MarkPriceBatch,
    MarkPriceObs,
    PositionObs,
    PositionSnapshot,
    Source,
    decimal_or_zero,
)

PositionKey = tuple[str, int]

# Fields whose change is a lifecycle fact and is emitted at once; a change of
# mark price or unrealised PnL alone is coalesced per symbol instead.
_MATERIAL_FIELDS = ("side", "size", "entry_price", "leverage", "liquidation_price")
# Recently closed positions remembered to reject late news of them (bounded).
_MAX_TOMBSTONES = 4096


@dataclass
class _Mark:
    price: str
    ts_exchange_ms: int | None
    obs: MarkPriceObs | None = None


@dataclass
class _Held:
    """A position as the book holds it, with the provenance of its last change."""

    obs: PositionObs
    source: Source
    ts_received_ms: int


class PositionBook:
    """Positions and mark prices of one exchange; turns observations into events.

    ``min_emit_interval_ms`` bounds price-driven ``updated`` events to one per
    symbol per interval; the latest state is kept and released by ``flush_due``.
    ``ids`` numbers every event (one allocator per stream owner, shared with the
    pipeline's own events); without one, numbering starts at 1 in memory.
    While ``positions_trusted`` is False (the owner knows its position view is
    behind: private stream down, no REST fill yet) price-driven ``updated``
    events are held back, so a stale size is never sent as if it were fresh.
    """

    def __init__(self, exchange: str, venue: str, *, min_emit_interval_ms: int = 100,
                 ids: SeqAllocator | None = None) -> None:
        self.exchange = exchange
        self.venue = venue
        self.min_emit_interval_ms = min_emit_interval_ms
        self._positions: dict[PositionKey, _Held] = {}
        self._marks: dict[str, _Mark] = {}
        self._last_price_emit_ms: dict[str, int] = {}
        self._pending_price_update: dict[str, tuple[Source, int]] = {}
        self._pending_mark: dict[str, tuple[Source, int]] = {}
        self._closed_at: OrderedDict[PositionKey, tuple[int | None, int]] = OrderedDict()
        self._ids = ids or SeqAllocator(exchange)
        self.stale_rows_ignored = 0
        self.positions_trusted = True

    # -- queries -------------------------------------------------------------------------------

    def positions(self) -> list[PositionObs]:
        """Open positions, sorted by key."""
        return [held.obs for _, held in sorted(self._positions.items())]

    def mark_prices(self) -> dict[str, MarkPriceObs]:
        """The latest mark price per symbol (from the mark price feed only)."""
        return {s: m.obs for s, m in sorted(self._marks.items()) if m.obs is not None}

    def open_symbols(self) -> set[str]:
        """Symbols with at least one open position."""
        return {symbol for symbol, _ in self._positions}

    @property
    def seq(self) -> int:
        """Sequence number of the last event this book's owner numbered."""
        return self._ids.last

    def held(self) -> list[tuple[PositionObs, Source, int]]:
        """Open positions with the source and receive time of their last change (what is persisted)."""
        return [(h.obs, h.source, h.ts_received_ms) for _, h in sorted(self._positions.items())]

    def restore(self, held: list[tuple[PositionObs, Source, int]]) -> None:
        """Take back the positions a previous run persisted, without emitting anything.

        The next complete snapshot is then diffed against them: a position gone while the
        agent was down is sent as ``closed``, a changed one as ``updated``, an unchanged
        one not at all.
        """
        self._positions = {obs.key: _Held(obs, source, ts) for obs, source, ts in held if obs.is_open and obs.side}

    # -- positions -----------------------------------------------------------------------------

    def apply_positions(self, snapshot: PositionSnapshot) -> list[PositionEvent]:
        """Apply position rows; a complete snapshot also closes every position it does not carry.

        Two sources (a REST snapshot in flight, WebSocket deltas) can deliver in
        either order, so news never goes backwards: a row older (by exchange
        time) than what the book holds is ignored, a row for a position closed
        more recently is ignored, and a complete snapshot asked for before the
        book last heard of a position does not close it.
        """
        events: list[PositionEvent] = []
        seen: set[PositionKey] = set()
        for obs in snapshot.positions:
            seen.add(obs.key)
            if self._is_stale(obs, snapshot):
                self.stale_rows_ignored += 1
                continue
            self._note_mark_from_position(obs)
            events.extend(self._apply_row(obs, snapshot.source, snapshot.ts_received_ms))
        if snapshot.complete:
            for key in sorted(set(self._positions) - seen):
                held = self._positions[key]
                if snapshot.as_of_ms is not None and held.ts_received_ms > snapshot.as_of_ms:
                    self.stale_rows_ignored += 1
                    continue  # opened or changed after this snapshot was asked for
                del self._positions[key]
                self._tombstone(key, None, snapshot.ts_received_ms)
                events.append(self._closed(held.obs, snapshot.source, snapshot.ts_received_ms, None))
        return events

    def _is_stale(self, obs: PositionObs, snapshot: PositionSnapshot) -> bool:
        held = self._positions.get(obs.key)
        if held is not None:
            return _older(obs.ts_exchange_ms, held.obs.ts_exchange_ms)
        tomb = self._closed_at.get(obs.key)
        if tomb is None or not obs.is_open:
            return False
        closed_ts_exchange_ms, closed_ts_received_ms = tomb
        if obs.ts_exchange_ms is not None and closed_ts_exchange_ms is not None:
            return obs.ts_exchange_ms <= closed_ts_exchange_ms
        return snapshot.as_of_ms is not None and snapshot.as_of_ms < closed_ts_received_ms

    def _tombstone(self, key: PositionKey, ts_exchange_ms: int | None, ts_received_ms: int) -> None:
        self._closed_at[key] = (ts_exchange_ms, ts_received_ms)
        self._closed_at.move_to_end(key)
        while len(self._closed_at) > _MAX_TOMBSTONES:
            self._closed_at.popitem(last=False)

    def _apply_row(self, obs: PositionObs, source: Source, ts_received_ms: int) -> list[PositionEvent]:
        held = self._positions.get(obs.key)
        if not obs.is_open or obs.side is None:
            if held is None:
                return []
            del self._positions[obs.key]
            self._tombstone(obs.key, obs.ts_exchange_ms, ts_received_ms)
            return [self._closed(held.obs, source, ts_received_ms, obs.ts_exchange_ms)]
        self._closed_at.pop(obs.key, None)
        if held is None:
            self._positions[obs.key] = _Held(obs, source, ts_received_ms)
            return [self._event("opened", obs, source, ts_received_ms)]
        if held.obs.side != obs.side:
            # A one-way position that flipped direction in one trade: the old one closed, a new one opened.
            closed = self._closed(held.obs, source, ts_received_ms, obs.ts_exchange_ms)
            self._positions[obs.key] = _Held(obs, source, ts_received_ms)
            return [closed, self._event("opened", obs, source, ts_received_ms)]
        if _material_change(held.obs, obs):
            self._positions[obs.key] = _Held(obs, source, ts_received_ms)
            self._pending_price_update.pop(obs.symbol, None)
            return [self._event("updated", obs, source, ts_received_ms)]
        # Same position; keep the freshest numbers but the time it last changed.
        self._positions[obs.key] = _Held(obs, source, held.ts_received_ms)
        return []

    def _closed(self, last: PositionObs, source: Source, ts_received_ms: int, ts_exchange_ms: int | None) -> PositionEvent:
        assert last.side is not None  # only open positions are held
        closed = PositionObs(
            symbol=last.symbol, position_idx=last.position_idx, side=last.side, size="0",
            entry_price=last.entry_price, mark_price=last.mark_price, unrealized_pnl=None,
            leverage=last.leverage, liquidation_price=None, ts_exchange_ms=ts_exchange_ms)
        return self._event("closed", closed, source, ts_received_ms)

    # -- mark prices ---------------------------------------------------------------------------

    def apply_mark_prices(self, batch: MarkPriceBatch, now_ms: int) -> list[MarkPriceEvent | PositionEvent]:
        """Apply mark prices. Per symbol, at most one ``mark_price`` event and one round of
        price-driven ``updated`` position events per ``min_emit_interval_ms``; what is held
        back is the latest state and comes out of ``flush_due``."""
        for obs in batch.prices:
            current = self._marks.get(obs.symbol)
            if current is not None and _older(obs.ts_exchange_ms, current.ts_exchange_ms):
                continue  # a late frame must never move the price backwards in time
            if (current is not None and current.obs is not None and current.obs.ts_exchange_ms == obs.ts_exchange_ms
                    and current.obs == obs):
                continue  # the same observation twice (overlapping connections, a repeated poll)
            moved = current is None or current.price != obs.mark_price
            self._marks[obs.symbol] = _Mark(obs.mark_price, obs.ts_exchange_ms, obs)
            self._pending_mark[obs.symbol] = (batch.source, batch.ts_received_ms)
            if moved and obs.symbol in self.open_symbols():
                self._pending_price_update[obs.symbol] = (batch.source, batch.ts_received_ms)
        return self.flush_due(now_ms)

    def flush_due(self, now_ms: int) -> list[MarkPriceEvent | PositionEvent]:
        """Release held-back mark prices and price-driven updates whose symbol is past its interval."""
        events: list[MarkPriceEvent | PositionEvent] = []
        for symbol in sorted(self._pending_symbols()):
            last = self._last_price_emit_ms.get(symbol)
            if last is not None and now_ms - last < self.min_emit_interval_ms:
                continue
            self._last_price_emit_ms[symbol] = now_ms
            mark = self._pending_mark.pop(symbol, None)
            if mark is not None:
                obs = self._marks[symbol].obs
                assert obs is not None
                seq, event_id = self._ids.next()
                events.append(MarkPriceEvent(
                    id=event_id, seq=seq, exchange=self.exchange, venue=self.venue, symbol=symbol,
                    mark_price=obs.mark_price, index_price=obs.index_price, funding_rate=obs.funding_rate, source=mark[0],
                    ts_exchange_ms=obs.ts_exchange_ms, ts_received_ms=mark[1]))
            update = self._pending_price_update.get(symbol) if self.positions_trusted else None
            if update is not None:
                del self._pending_price_update[symbol]
                for key, held in sorted(self._positions.items()):
                    if key[0] == symbol:
                        events.append(self._event("updated", held.obs, update[0], update[1]))
        return events

    def next_flush_ms(self) -> int | None:
        """When ``flush_due`` will next have something to release, or None."""
        due = [self._last_price_emit_ms.get(s, 0) + self.min_emit_interval_ms for s in self._pending_symbols()]
        return min(due) if due else None

    def _pending_symbols(self) -> set[str]:
        pending = set(self._pending_mark)
        if self.positions_trusted:
            pending |= set(self._pending_price_update)
        return pending

    def _note_mark_from_position(self, obs: PositionObs) -> None:
        # Position rows carry a point-in-time mark; it only counts when newer than the feed's.
        if not obs.mark_price:
            return
        current = self._marks.get(obs.symbol)
        if current is None:
            self._marks[obs.symbol] = _Mark(obs.mark_price, obs.ts_exchange_ms)
        elif not _older(obs.ts_exchange_ms, current.ts_exchange_ms) and obs.ts_exchange_ms is not None:
            self._marks[obs.symbol] = _Mark(obs.mark_price, obs.ts_exchange_ms, current.obs)

    # -- events --------------------------------------------------------------------------------

    def _event(self, change: str, obs: PositionObs, source: Source, ts_received_ms: int) -> PositionEvent:
        seq, event_id = self._ids.next()
        mark = self._marks.get(obs.symbol)
        mark_price = mark.price if mark is not None else obs.mark_price
        pnl = obs.unrealized_pnl
        if change != "closed" and mark_price and mark_price != obs.mark_price:
            pnl = _linear_pnl(obs, mark_price) or pnl
        assert obs.side is not None
        return PositionEvent(
            id=event_id, seq=seq, change=change, exchange=self.exchange, venue=self.venue, symbol=obs.symbol,  # type: ignore[arg-type]
            position_idx=obs.position_idx, side=obs.side, size=obs.size, entry_price=obs.entry_price,
            mark_price=mark_price, unrealized_pnl=pnl, leverage=obs.leverage,
            liquidation_price=obs.liquidation_price, source=source, ts_exchange_ms=obs.ts_exchange_ms,
            ts_received_ms=ts_received_ms)


def _material_change(old: PositionObs, new: PositionObs) -> bool:
    for name in _MATERIAL_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name in ("size", "entry_price", "leverage", "liquidation_price") and _same_number(a, b):
            continue  # "0.50" and "0.5" are the same size
        return True
    return False


def _same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except (InvalidOperation, ValueError):
        return False


def _older(ts: int | None, than: int | None) -> bool:
    return ts is not None and than is not None and ts < than


def _linear_pnl(obs: PositionObs, mark_price: str) -> str | None:
    """Unrealised PnL of a linear contract at ``mark_price``; None when the entry is unknown."""
    if not obs.entry_price:
        return None
    try:
        pnl = (Decimal(mark_price) - Decimal(obs.entry_price)) * decimal_or_zero(obs.size)
        if obs.side == "short":
            pnl = -pnl
        return format(pnl.normalize() if pnl != 0 else Decimal(0), "f")
    except (ArithmeticError, ValueError):  # overflow or junk that slipped past the parsers: unknown, not fatal
        return None
