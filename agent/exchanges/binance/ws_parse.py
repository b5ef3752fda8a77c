"""Pure decoding of Binance USDⓈ-M stream frames, the mark-price guard and the account position cache.

Frames are routed by shape (``decode_envelope``): combined wrappers
``{"stream","data"}``, bare events ``{"e",…}``, arrays (``!markPrice@arr``)
and live-request answers. Then the typed events the agent uses:
``markPriceUpdate`` (``parse_mark_price``), ``ACCOUNT_UPDATE``,
``ACCOUNT_CONFIG_UPDATE`` and ``listenKeyExpired``.

``ACCOUNT_UPDATE`` is partial: only the positions that changed, no mark price,
no leverage, and no ``P`` at all for a cross FUNDING_FEE. ``AccountPositionCache``
is seeded from a REST ``positionRisk`` snapshot and merges the rows by
``(symbol, positionSide)``, so a zero ``BOTH`` row never touches a ``LONG`` row
(the per-side cache bug of ccxt.pro). Events not newer than the last one
applied to a position are ignored (Binance orders events of one type by ``T``
and ``E``), which makes the overlap of two connections harmless.

A timestamp beyond ``max_future_ms`` of the receive time (server-corrected) is
not trusted: the observation gets ``ts_exchange_ms=None`` and the guards ignore it.
One outside 2015..2100, like a price that is not a bounded decimal, makes the
event or row malformed (``agent.exchanges.parsing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.binance.parse import POSITION_IDX, size_and_side
from agent.exchanges.binance.schemas import (
    BinanceAccountConfigUpdateMsg, BinanceAccountPositionData, BinanceAccountUpdateMsg, BinanceListenKeyExpiredMsg,
    BinanceMarkPriceMsg, BinanceWsEnvelope,
)
from agent.exchanges.parsing import (
    DEFAULT_MAX_FUTURE_MS, BoundedDecoder, MalformedRow, TimestampCheck, optional_decimal, optional_epoch_ms,
    optional_ms, required_decimal,
)

_ENVELOPE = BoundedDecoder(BinanceWsEnvelope)
_MARK_PRICE = BoundedDecoder(BinanceMarkPriceMsg)
_RAW_ITEMS = BoundedDecoder(tuple[msgspec.Raw, ...])
_ACCOUNT_UPDATE = BoundedDecoder(BinanceAccountUpdateMsg)
_ACCOUNT_POSITION = BoundedDecoder(BinanceAccountPositionData)
_CONFIG_UPDATE = BoundedDecoder(BinanceAccountConfigUpdateMsg)
_LISTEN_KEY_EXPIRED = BoundedDecoder(BinanceListenKeyExpiredMsg)

MARK_PRICE_EVENT = "markPriceUpdate"
ACCOUNT_UPDATE = "ACCOUNT_UPDATE"
ACCOUNT_CONFIG_UPDATE = "ACCOUNT_CONFIG_UPDATE"
LISTEN_KEY_EXPIRED = "listenKeyExpired"
ALL_MARK_PRICES_TOPICS = frozenset({"!markPrice@arr", "!markPrice@arr@1s"})
# Reasons that move margin without a trade: the liquidation price moves with them.
_MARGIN_REASONS = frozenset({"FUNDING_FEE", "MARGIN_TRANSFER", "MARGIN_TYPE_CHANGE", "ADJUSTMENT", "INSURANCE_CLEAR",
                             "ASSET_TRANSFER", "AUTO_EXCHANGE"})
_SEEDED = 2**62  # a seeded row outranks every event with the same time


class MalformedFrame(ValueError):
    """A frame that is not JSON, or whose typed part does not decode."""


# -- topics (stream names are lower case; user-data topics are event types) -------------------------


def mark_price_topic(symbol: str, *, fast: bool = True) -> str:
    """``btcusdt@markPrice@1s`` (every second), or ``btcusdt@markPrice`` (every 3 s) with ``fast=False``."""
    return f"{symbol.lower()}@markPrice" + ("@1s" if fast else "")


def symbol_of_topic(topic: str) -> str | None:
    """``BTCUSDT`` for ``btcusdt@markPrice[@1s]``; None for any other stream (``!markPrice@arr`` included)."""
    base, _, kind = topic.partition("@")
    if kind in ("markPrice", "markPrice@1s") and base and not base.startswith("!"):
        return base.upper()
    return None


def is_mark_price_topic(topic: str) -> bool:
    return topic in ALL_MARK_PRICES_TOPICS or symbol_of_topic(topic) is not None


def mark_price_interval_seconds(topic: str) -> float:
    """How often a mark-price stream pushes: 1 s for ``…@1s``, else 3 s."""
    return 1.0 if topic.endswith("@1s") else 3.0


def position_topics() -> tuple[str, ...]:
    """User-data events that move positions (the URL subscribes them all; these are the topics to register)."""
    return (ACCOUNT_UPDATE, ACCOUNT_CONFIG_UPDATE)


# -- frames ----------------------------------------------------------------------------------------


def decode_envelope(text: str | bytes) -> BinanceWsEnvelope:
    """The routing fields of one JSON object; ``MalformedFrame`` otherwise."""
    try:
        return _ENVELOPE.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise MalformedFrame(f"not a Binance frame: {e}") from None


class MalformedItem(msgspec.Struct, frozen=True):
    """An item of a ``!markPrice@arr`` array that did not decode: counted by the reader, the rest still used."""

    error: str


def decode_mark_prices(raw: str | bytes | msgspec.Raw) -> tuple[BinanceMarkPriceMsg | MalformedItem, ...]:
    """One ``markPriceUpdate`` object or an array of them (``!markPrice@arr``), as a tuple.

    A broken array item becomes a ``MalformedItem`` so one bad symbol does not
    cost the other few hundred; a broken frame raises ``MalformedFrame``.
    """
    if isinstance(raw, msgspec.Raw):
        raw = bytes(raw)
    try:
        if raw.lstrip()[:1] not in ("[", b"["):
            return (_MARK_PRICE.decode(raw),)
        items = _RAW_ITEMS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise MalformedFrame(f"mark price data: {e}") from None
    out: list[BinanceMarkPriceMsg | MalformedItem] = []
    for item in items:
        try:
            out.append(_MARK_PRICE.decode(item))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            out.append(MalformedItem(str(e)[:200]))
    return tuple(out)


def user_event(event_type: str, raw: str | bytes) -> object:
    """The typed user-data event for the types the agent uses; None for others (keep the envelope)."""
    decoder = {ACCOUNT_UPDATE: _ACCOUNT_UPDATE, ACCOUNT_CONFIG_UPDATE: _CONFIG_UPDATE,
               LISTEN_KEY_EXPIRED: _LISTEN_KEY_EXPIRED}.get(event_type)
    if decoder is None:
        return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise MalformedFrame(f"{event_type}: {e}") from None


# -- mark prices -----------------------------------------------------------------------------------


def parse_mark_price(event: BinanceMarkPriceMsg) -> MarkPriceObs | None:
    """One ``markPriceUpdate``: ``p`` mark, ``i`` index, ``r`` funding rate, ``E`` time; None for other events.

    ``ap`` (moving average) and ``st`` are tolerated and ignored. A delivery
    symbol (``T`` 0: no next funding) has no funding rate, whatever ``r`` says.
    Raises ``MalformedRow`` for a blank or junk mark price.
    """
    if event.e != MARK_PRICE_EVENT:
        return None
    symbol = event.s.strip()
    if not symbol:
        raise MalformedRow("s (symbol) is empty")
    delivery = event.T in (0, "0", "")
    return MarkPriceObs(
        symbol=symbol,
        mark_price=required_decimal(event.p, "p"),
        index_price=optional_decimal(event.i, "i"),
        funding_rate=None if delivery else optional_decimal(event.r, "r"),
        ts_exchange_ms=optional_epoch_ms(event.E, "E"),
    )


class MarkPriceCache:
    """Mark prices of the market stream with a monotonic ``E`` guard per symbol (failure-modes row 15).

    An update whose ``E`` is not newer than the last one applied for its symbol
    is dropped: duplicates from two overlapping connections, or a late frame.
    """

    def __init__(self, *, max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 clock_offset_ms: Callable[[], float] | None = None) -> None:
        self._last_ms: dict[str, int] = {}
        self._plausible = TimestampCheck(max_future_ms, clock_offset_ms)
        self.duplicates = 0
        self.implausible = 0

    def apply(self, event: BinanceMarkPriceMsg, *, received_ms: int | None = None) -> MarkPriceObs | None:
        """The mark price of one event unless it is old news; raises ``MalformedRow``."""
        obs = parse_mark_price(event)
        if obs is None:
            return None
        ts = obs.ts_exchange_ms
        if not self._plausible(ts, received_ms):
            self.implausible += 1
            return msgspec.structs.replace(obs, ts_exchange_ms=None)
        if ts is None:
            return obs
        last = self._last_ms.get(obs.symbol)
        if last is not None and ts <= last:
            self.duplicates += 1
            return None
        self._last_ms[obs.symbol] = ts
        return obs

    def read(self, topic: str, payload: object, received_ms: int | None = None) -> tuple[list[MarkPriceObs], int]:
        """Mark prices of one data message (a tuple of events), and how many events were malformed."""
        if not isinstance(payload, tuple):
            return [], 0
        out: list[MarkPriceObs] = []
        malformed = 0
        for event in payload:
            if not isinstance(event, BinanceMarkPriceMsg):
                malformed += isinstance(event, MalformedItem)
                continue
            try:
                obs = self.apply(event, received_ms=received_ms)
            except MalformedRow:
                malformed += 1
                continue
            if obs is not None:
                out.append(obs)
        return out, malformed

    def reset(self, topics: Iterable[str] | None = None) -> None:
        """Forget the guards of the symbols of ``topics`` (everything for None or ``!markPrice@arr``)."""
        if topics is None:
            self._last_ms.clear()
            return
        for topic in topics:
            symbol = symbol_of_topic(topic)
            if symbol is not None:
                self._last_ms.pop(symbol, None)
            elif topic in ALL_MARK_PRICES_TOPICS:
                self._last_ms.clear()


# -- positions -------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One position side: the last row known and the order key ``(T or E, E)`` of the news it came from."""

    obs: PositionObs | None
    order: tuple[int, int] | None


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return Decimal(a) == Decimal(b)
    except ArithmeticError:
        return a == b


def _differs(old: PositionObs | None, new: PositionObs) -> bool:
    """Whether ``new`` tells something ``old`` did not (None is a position known to be flat)."""
    if old is None:
        return new.is_open
    return (old.side != new.side or not _same(old.size, new.size) or not _same(old.entry_price, new.entry_price)
            or not _same(old.unrealized_pnl, new.unrealized_pnl) or not _same(old.leverage, new.leverage)
            or not _same(old.liquidation_price, new.liquidation_price))


class AccountPositionCache:
    """Positions of one account, seeded from REST ``positionRisk`` and kept current by ``ACCOUNT_UPDATE``.

    ``apply`` returns only the rows that changed (a partial snapshot). Per row:
    size and side from the signed ``pa`` for ``BOTH`` and from ``ps`` for
    ``LONG``/``SHORT``; entry from ``ep``; uPnL from ``up``; leverage as last
    known (seed or ``ACCOUNT_CONFIG_UPDATE``; the event has none); mark price
    None (the event has none; the public stream has it); liquidation price
    None once the size, the entry or the margin changed (unknown until the next
    REST snapshot; never invented).
    """

    def __init__(self, *, max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 clock_offset_ms: Callable[[], float] | None = None) -> None:
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._leverage: dict[str, str] = {}
        self._config_order: dict[str, tuple[int, int]] = {}
        self._plausible = TimestampCheck(max_future_ms, clock_offset_ms)
        self.duplicates = 0
        self.implausible = 0

    def seed(self, rows: Iterable[PositionObs], *, as_of_ms: int | None = None, complete: bool = True) -> None:
        """Take a REST snapshot. A position absent from a complete one is flat, unless an event newer than
        ``as_of_ms`` (exchange ms, when the snapshot was asked for) says otherwise; a row older than the
        last event applied to its position is ignored. An incomplete snapshot (a failed page, a
        malformed row) speaks only for the rows it carries: absence there proves nothing."""
        seen: set[tuple[str, int]] = set()
        for obs in rows:
            seen.add(obs.key)
            if obs.leverage:
                self._leverage[obs.symbol] = obs.leverage
            slot = self._slots.get(obs.key)
            order = (obs.ts_exchange_ms, _SEEDED) if obs.ts_exchange_ms is not None else None
            if slot is not None and slot.order is not None and order is not None and order < slot.order:
                continue
            keep = slot.order if slot is not None and order is None else order
            self._slots[obs.key] = _Slot(obs, keep)
        if not complete:
            return
        for key, slot in self._slots.items():
            if key in seen or slot.obs is None:
                continue
            if as_of_ms is not None and slot.order is not None and slot.order[0] > as_of_ms:
                continue
            slot.obs = None

    def reset(self) -> None:
        """Forget everything (a new snapshot follows)."""
        self._slots.clear()
        self._leverage.clear()
        self._config_order.clear()

    def positions(self) -> list[PositionObs]:
        """The open positions, by key."""
        return [s.obs for _, s in sorted(self._slots.items()) if s.obs is not None and s.obs.is_open]

    def get(self, symbol: str, position_idx: int) -> PositionObs | None:
        slot = self._slots.get((symbol, position_idx))
        return slot.obs if slot is not None else None

    def read(self, topic: str, payload: object, received_ms: int | None = None) -> tuple[list[PositionObs], int]:
        """The changed rows of one user-data message (other events change nothing), and the malformed count."""
        if isinstance(payload, BinanceAccountUpdateMsg):
            return self.apply(payload, received_ms=received_ms)
        if isinstance(payload, BinanceAccountConfigUpdateMsg):
            return self.apply_config(payload, received_ms=received_ms)
        return [], 0

    def _order(self, event_ms: int | str | None, tx_ms: int | str | None,
               received_ms: int | None) -> tuple[int, int] | None:
        """``(T or E, E)`` of an event; None when unknown or not trusted. Raises ``MalformedRow`` for an absurd time."""
        e_ms = optional_epoch_ms(event_ms, "E")
        first = optional_epoch_ms(tx_ms, "T") or e_ms
        if first is None:
            return None
        if not self._plausible(first, received_ms) or not self._plausible(e_ms, received_ms):
            self.implausible += 1
            return None
        return (first, e_ms or 0)

    def apply(self, event: BinanceAccountUpdateMsg, *, received_ms: int | None = None) -> tuple[list[PositionObs], int]:
        """Merge one ``ACCOUNT_UPDATE``; returns the rows that changed and the number of malformed rows
        (the whole event counts as one when its own time is absurd)."""
        try:
            order = self._order(event.E, event.T, received_ms)
        except MalformedRow:
            return [], 1
        ts = order[0] if order is not None else None
        changed: list[PositionObs] = []
        malformed = 0
        applied: set[tuple[str, int]] = set()
        for raw in event.a.P:
            try:
                row = _ACCOUNT_POSITION.decode(raw)
                obs = self._row(row, event.a.m, ts)
            except (msgspec.DecodeError, msgspec.ValidationError, MalformedRow):
                malformed += 1
                continue
            slot = self._slots.get(obs.key)
            if (obs.key not in applied and slot is not None and slot.order is not None and order is not None
                    and order <= slot.order):
                self.duplicates += 1
                continue
            applied.add(obs.key)
            previous = slot.obs if slot is not None else None
            if slot is None or _differs(previous, obs):  # an unknown key is news even when flat
                changed.append(obs)
            if slot is None:
                self._slots[obs.key] = _Slot(obs, order)
            else:
                slot.obs = obs
                slot.order = order if order is not None else slot.order
        return changed, malformed

    def _row(self, row: BinanceAccountPositionData, reason: str, ts: int | None) -> PositionObs:
        if row.ps not in POSITION_IDX:
            raise MalformedRow(f"ps {row.ps[:20]!r} is not BOTH, LONG or SHORT")
        symbol = row.s.strip()
        if not symbol:
            raise MalformedRow("s (symbol) is empty")
        size, side = size_and_side(required_decimal(row.pa, "pa"), row.ps, "pa")
        idx = POSITION_IDX[row.ps]
        entry = optional_decimal(row.ep, "ep")
        slot = self._slots.get((symbol, idx))
        previous = slot.obs if slot is not None else None
        liquidation = None
        if (previous is not None and previous.side == side and _same(previous.size, size)
                and _same(previous.entry_price, entry) and reason not in _MARGIN_REASONS):
            liquidation = previous.liquidation_price
        return PositionObs(symbol=symbol, position_idx=idx, side=side, size=size, entry_price=entry, mark_price=None,
                           unrealized_pnl=optional_decimal(row.up, "up"), leverage=self._leverage.get(symbol),
                           liquidation_price=liquidation, ts_exchange_ms=ts)

    def apply_config(self, event: BinanceAccountConfigUpdateMsg, *,
                     received_ms: int | None = None) -> tuple[list[PositionObs], int]:
        """A new leverage for one symbol (``ac``): the open positions of that symbol that changed."""
        if event.ac is None or not event.ac.s:
            return [], 0  # ``ai`` (multi-assets mode) or nothing we use
        symbol = event.ac.s
        if event.ac.l is None or isinstance(event.ac.l, bool):
            return [], 1
        try:
            leverage = optional_decimal(str(event.ac.l), "l")
            order = self._order(event.E, event.T, received_ms)
        except MalformedRow:
            return [], 1
        last = self._config_order.get(symbol)
        if order is not None and last is not None and order <= last:
            self.duplicates += 1
            return [], 0
        if order is not None:
            self._config_order[symbol] = order
        if leverage is None:
            self._leverage.pop(symbol, None)
        else:
            self._leverage[symbol] = leverage
        changed: list[PositionObs] = []
        for (sym, _), slot in sorted(self._slots.items()):
            if sym != symbol or slot.obs is None or _same(slot.obs.leverage, leverage):
                continue
            slot.obs = msgspec.structs.replace(slot.obs, leverage=leverage,
                                               ts_exchange_ms=order[0] if order else slot.obs.ts_exchange_ms)
            if slot.obs.is_open:
                changed.append(slot.obs)
        return changed, 0


def listen_key_of(notice: BinanceListenKeyExpiredMsg) -> str | None:
    """The key a ``listenKeyExpired`` names (None when the frame names none, as some real frames)."""
    return notice.listenKey or None


def expired_at_ms(notice: BinanceListenKeyExpiredMsg) -> int | None:
    """``E`` of a ``listenKeyExpired``, sent as an int or as a string.

    Lenient on purpose (junk gives None): the notice must end the connection whatever its ``E`` says.
    """
    return optional_ms(notice.E)
