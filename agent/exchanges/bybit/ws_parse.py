"""Pure decoding of Bybit v5 stream frames, and the per-symbol ticker cache. No I/O.

Envelope first (``decode_envelope``: just enough to route a frame), then the
typed ``data`` of the topics the agent uses: ``tickers.{symbol}`` and the
private ``position`` topic. Everything else stays an envelope.

Ticker frames need state: a delta carries only the fields that changed
(https://bybit-exchange.github.io/docs/v5/websocket/public/ticker: "if a
response param is not found in the message, then its value has not
changed"), so ``TickerCache`` keeps the fields the agent needs per symbol and
emits a mark price only for frames that carry one. Position frames carry whole
rows and need no state (``parse_position_frame``).

Timestamps in a frame are the exchange's. One far in the future (a bogus frame,
a replay with a broken clock) would make every later frame look old, so a
timestamp beyond ``max_future_ms`` of the receive time is not trusted: the
observation gets ``ts_exchange_ms=None`` and the duplicate guard ignores it. One
outside 2015..2100, like a price that is not a bounded decimal, makes the
frame or row malformed (``agent.exchanges.parsing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec

from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.bybit.parse import parse_position
from agent.exchanges.bybit.schemas import (
    BybitCommandRespData, BybitPositionData, BybitPositionMsg, BybitTickerMsg, BybitTickerWsData, BybitWsEnvelope,
)
from agent.exchanges.parsing import (
    DEFAULT_MAX_FUTURE_MS, BoundedDecoder, MalformedRow, TimestampCheck, optional_decimal, optional_epoch_ms,
    optional_ms, parse_rows,
)

_ENVELOPE = BoundedDecoder(BybitWsEnvelope)
_TICKER_DATA = BoundedDecoder(BybitTickerWsData)
_ROWS = BoundedDecoder(tuple[msgspec.Raw, ...])
_POSITION_ROW = BoundedDecoder(BybitPositionData)
_COMMAND_RESP = BoundedDecoder(BybitCommandRespData)

TICKER_TOPIC_PREFIX = "tickers."
POSITION_TOPICS = frozenset({"position", "position.linear", "position.inverse", "position.option"})
#: The private topic the agent subscribes: all categories in one (rows are filtered by ``category``).
POSITION_TOPIC = "position"


class MalformedFrame(ValueError):
    """A frame that is not JSON, or whose typed part does not decode."""


# -- topics ----------------------------------------------------------------------------------------


def mark_price_topic(symbol: str) -> str:
    """The public topic that carries ``symbol``'s mark price: ``tickers.BTCUSDT``."""
    return f"{TICKER_TOPIC_PREFIX}{symbol}"


def symbol_of_topic(topic: str) -> str | None:
    """``BTCUSDT`` for ``tickers.BTCUSDT``; None for any other topic."""
    if topic.startswith(TICKER_TOPIC_PREFIX) and len(topic) > len(TICKER_TOPIC_PREFIX):
        return topic[len(TICKER_TOPIC_PREFIX):]
    return None


def position_topics() -> tuple[str, ...]:
    """The private topics that carry position changes."""
    return (POSITION_TOPIC,)


# -- frames ----------------------------------------------------------------------------------------


def decode_envelope(text: str | bytes) -> BybitWsEnvelope:
    """The routing fields of one frame; ``MalformedFrame`` when it is not a JSON object."""
    try:
        return _ENVELOPE.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise MalformedFrame(f"not a Bybit frame: {e}") from None


def ticker_msg(env: BybitWsEnvelope) -> BybitTickerMsg:
    """The typed ``tickers.{symbol}`` frame of an envelope; ``MalformedFrame`` when ``data`` is not an object."""
    if env.data is msgspec.UNSET or env.topic is None:
        raise MalformedFrame("tickers frame without data")
    try:
        data = _TICKER_DATA.decode(env.data)
        ts = optional_epoch_ms(env.ts, "ts")
    except (msgspec.DecodeError, msgspec.ValidationError, MalformedRow) as e:
        raise MalformedFrame(f"tickers data: {e}") from None
    return BybitTickerMsg(topic=env.topic, type=env.type or "", data=data, ts=ts, cs=optional_ms(env.cs))


def position_msg(env: BybitWsEnvelope) -> BybitPositionMsg:
    """The typed private ``position`` frame of an envelope (rows still raw)."""
    if env.data is msgspec.UNSET or env.topic is None:
        raise MalformedFrame("position frame without data")
    try:
        rows = _ROWS.decode(env.data)
        creation_time = optional_epoch_ms(env.creation_time, "creationTime")
    except (msgspec.DecodeError, msgspec.ValidationError, MalformedRow) as e:
        raise MalformedFrame(f"position data: {e}") from None
    return BybitPositionMsg(topic=env.topic, rows=rows, creation_time=creation_time)


def data_payload(env: BybitWsEnvelope) -> object:
    """What a data frame hands to its consumer: typed for tickers and positions, else the envelope."""
    if env.topic is not None:
        if env.topic.startswith(TICKER_TOPIC_PREFIX):
            return ticker_msg(env)
        if env.topic in POSITION_TOPICS:
            return position_msg(env)
    return env


def fail_topics(env: BybitWsEnvelope) -> tuple[str, ...]:
    """Topics an option/spread ``COMMAND_RESP`` ack rejected (``data.failTopics``)."""
    if env.data is msgspec.UNSET:
        return ()
    try:
        return tuple(_COMMAND_RESP.decode(env.data).fail_topics)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()


# -- positions -------------------------------------------------------------------------------------


def parse_position_frame(frame: BybitPositionMsg, *, category: str | None = "linear") -> tuple[list[PositionObs], int]:
    """The rows of one ``position`` frame, and how many were skipped as malformed.

    Rows are full rows (not deltas): ``entryPrice`` is the entry (REST calls it
    ``avgPrice``), ``size:"0"`` with ``side:""`` is a closed position, hedge
    mode uses ``positionIdx`` 1 and 2, ``""`` numbers become None, and the time
    is the row's ``updatedTime`` (else the frame's ``creationTime``). Rows of
    another ``category`` (the all-in-one topic mixes them) are left out.
    """
    def parse(row: BybitPositionData) -> PositionObs | None:
        if category and row.category and row.category != category:
            return None
        return parse_position(row, ts_fallback_ms=frame.creation_time)

    return parse_rows(frame.rows, _POSITION_ROW, parse)


class BybitPositionReader:
    """Position rows of the private stream; stateless apart from the plausibility check of row times."""

    def __init__(self, *, category: str | None = "linear", max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 clock_offset_ms: Callable[[], float] | None = None) -> None:
        self._category = category
        self._plausible = TimestampCheck(max_future_ms, clock_offset_ms)

    def seed(self, rows: Iterable[PositionObs], *, as_of_ms: int | None = None, complete: bool = True) -> None:
        """Nothing to seed: every Bybit position frame carries whole rows."""

    def reset(self) -> None:
        """Nothing to forget."""

    def read(self, topic: str, payload: object, received_ms: int | None = None) -> tuple[list[PositionObs], int]:
        """The rows of a ``position`` frame (other payloads give nothing), and the malformed count."""
        if not isinstance(payload, BybitPositionMsg):
            return [], 0
        rows, malformed = parse_position_frame(payload, category=self._category)
        checked = [row if self._plausible(row.ts_exchange_ms, received_ms)
                   else msgspec.structs.replace(row, ts_exchange_ms=None) for row in rows]
        return checked, malformed


# -- tickers ---------------------------------------------------------------------------------------


_ABSENT = msgspec.UNSET


def _field(value: str | None | msgspec.UnsetType, name: str) -> str | None | msgspec.UnsetType:
    """UNSET when absent (unchanged), None when blank, else the checked decimal text."""
    if value is msgspec.UNSET:
        return _ABSENT
    return optional_decimal(value, name)


@dataclass
class _Ticker:
    """What the agent keeps of one symbol's ticker, and the (ts, cs) of the last frame applied."""

    mark_price: str | None = None
    index_price: str | None = None
    funding_rate: str | None = None
    order: tuple[int, int] | None = None


class TickerCache:
    """Per-symbol ticker state of the public stream: replace on snapshot, merge on delta.

    * A mark price is emitted only when the frame itself carries ``markPrice``;
      a delta without it changes nothing about the mark price (index price and
      funding rate are merged and ride along with the next mark price).
    * A frame whose ``(ts, cs)`` is not newer than the last one applied for its
      symbol is ignored, so the overlap of two connections during a
      make-before-break rotation delivers nothing twice.
    * ``reset`` forgets symbols: call it when the stream disconnected (the
      snapshot after the resubscribe rebuilds them) and on unsubscribe; not on a
      rotation, whose new connection's snapshots are already applied.
    """

    def __init__(self, *, max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 clock_offset_ms: Callable[[], float] | None = None) -> None:
        self._tickers: dict[str, _Ticker] = {}
        self._plausible = TimestampCheck(max_future_ms, clock_offset_ms)
        self.duplicates = 0  # frames ignored as not newer
        self.implausible = 0  # frames whose ts was not trusted

    def __len__(self) -> int:
        return len(self._tickers)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._tickers

    def apply(self, msg: BybitTickerMsg, *, received_ms: int | None = None) -> MarkPriceObs | None:
        """Apply one ticker frame; the mark price it carries, or None. Raises ``MalformedRow`` (state untouched)."""
        symbol = msg.data.symbol if isinstance(msg.data.symbol, str) and msg.data.symbol else symbol_of_topic(msg.topic)
        if not symbol:
            raise MalformedRow("ticker frame names no symbol")
        if msg.type not in ("snapshot", "delta"):
            raise MalformedRow(f"ticker frame type {msg.type[:20]!r} is not snapshot or delta")
        mark = _field(msg.data.mark_price, "markPrice")
        index = _field(msg.data.index_price, "indexPrice")
        funding = _field(msg.data.funding_rate, "fundingRate")
        ts = msg.ts
        if not self._plausible(ts, received_ms):
            self.implausible += 1
            ts = None
        state = self._tickers.get(symbol)
        order = None if ts is None else (ts, msg.cs or 0)
        if state is not None and order is not None and state.order is not None and order <= state.order:
            self.duplicates += 1
            return None
        if msg.type == "snapshot":  # replace: a field absent from a snapshot is unknown
            state = self._tickers[symbol] = _Ticker(
                mark_price=mark if isinstance(mark, str) else None,
                index_price=None if index is _ABSENT else index,
                funding_rate=None if funding is _ABSENT else funding,
                order=order if order is not None else (state.order if state is not None else None))
        else:  # merge: a field absent from a delta is unchanged
            if state is None:
                state = self._tickers[symbol] = _Ticker()
            if index is not _ABSENT:
                state.index_price = index
            if funding is not _ABSENT:
                state.funding_rate = funding
            if isinstance(mark, str):
                state.mark_price = mark
            if order is not None:
                state.order = order
        if not isinstance(mark, str):  # absent, or blank: the frame carries no mark price
            return None
        return MarkPriceObs(symbol=symbol, mark_price=mark, index_price=state.index_price,
                            funding_rate=state.funding_rate, ts_exchange_ms=ts)

    def read(self, topic: str, payload: object, received_ms: int | None = None) -> tuple[list[MarkPriceObs], int]:
        """The mark prices of one data message (none for other topics), and the malformed count (0 or 1)."""
        if not isinstance(payload, BybitTickerMsg):
            return [], 0
        try:
            obs = self.apply(payload, received_ms=received_ms)
        except MalformedRow:
            return [], 1
        return ([obs] if obs is not None else []), 0

    def mark_price(self, symbol: str) -> str | None:
        """The latest mark price applied for ``symbol``."""
        state = self._tickers.get(symbol)
        return state.mark_price if state is not None else None

    def drop(self, symbol: str) -> None:
        """Forget one symbol (unsubscribed)."""
        self._tickers.pop(symbol, None)

    def clear(self) -> None:
        """Forget every symbol (the connection was lost; snapshots follow the resubscribe)."""
        self._tickers.clear()

    def reset(self, topics: Iterable[str] | None = None) -> None:
        """Forget the symbols of ``topics``, or everything when None."""
        if topics is None:
            self.clear()
            return
        for topic in topics:
            symbol = symbol_of_topic(topic)
            if symbol is not None:
                self.drop(symbol)
