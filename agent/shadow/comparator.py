"""The shadow comparator: every REST poll joined "as of" its receive time with the WebSocket side (pure).

The WebSocket side is kept as a bounded, time-ordered history per symbol and per
position key. It is whatever arrives with ``origin="ws"``, including the full
REST snapshots the hybrid source takes on (re)connect and reconciliation.

- price: one sample per symbol per REST batch, joined with the WebSocket
  price as of the REST receive time; a match when
  ``|p_ws - p_rest| <= tick + noise q99 x p_rest`` (the venue's tick size, see
  ``update_tick_sizes``). A value the WebSocket showed within
  ``max_ws_lag_seconds`` before or after is the same data sampled at another
  instant, so the verdict does not depend on when the poll falls relative to
  the push. When REST shows a new value, the sample carries ``ws_lead_seconds``
  if the WebSocket showed it first; else it is *held* until the WebSocket
  shows it (``ws_lag_seconds``) or ``max_ws_silence_seconds`` pass (lag
  ``None``): see ``settled_until_ms``. No WebSocket price for longer than that
  while REST moved (or ever, since the symbol was last followed) is a
  ``ws_silent`` mismatch; a symbol followed again starts afresh (its old
  WebSocket prices are stale).
- position: one sample per REST snapshot per key open on either side (or at
  the previous poll). A disagreement counts only once it has lasted longer
  than the grace ``max(poll interval, p99 WS lag)``; until then, no sample.

Nothing here reads a clock: every call takes ``now_ms``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from agent.core.observations import MarkPriceBatch, MarkPriceObs, PositionObs, PositionSnapshot, decimal_or_zero
from agent.shadow.calibration import divergence_ratio, parse_price, tick_ratios, tolerance_in_price
from agent.shadow.ignore import IgnoreRule, compile_rules, first_match
from agent.shadow.model import MismatchExample, MismatchKind, NoiseFloor, Sample, SampleKind
from agent.shadow.stats import RecentValues

_MAX_HELD_PER_SYMBOL = 64
_MIN_HISTORY_MS = 60_000
_FLAT = Decimal(0)


class ComparatorOutput(NamedTuple):
    """What became final during one call: samples, and examples of the mismatches among them."""

    samples: list[Sample]
    examples: list[MismatchExample]


@dataclass(slots=True)
class _Price:
    t_ms: int
    price: Decimal
    text: str
    ts_exchange_ms: int | None


@dataclass(slots=True)
class _Position:
    t_ms: int
    side: str | None
    size: Decimal
    text: str

    @property
    def open(self) -> bool:
        return self.size > 0


@dataclass(slots=True)
class _Held:
    sample: Sample
    value: Decimal
    match_abs: Decimal
    t_ms: int
    wait_ms: int | None = None  # how long to wait for the WebSocket; None: up to the silence limit


def _t(entry: _Price | _Position) -> int:
    return entry.t_ms


class Comparator:
    """Pairs the REST poller's observations with the WebSocket side's, for one exchange."""

    def __init__(self, exchange: str, *, poll_interval_seconds: float,
                 tick_size_by_symbol: Mapping[str, Decimal] | None = None, noise_floor: NoiseFloor | None = None,
                 ignore_rules: Iterable[IgnoreRule | Mapping[str, Any] | Any] | None = (),
                 max_ws_silence_seconds: float = 10.0, grace_seconds: float | None = None,
                 max_ws_lag_seconds: float = 2.0,
                 trace_id_provider: Callable[[], str | None] | None = None,
                 symbols: Collection[str] | Callable[[], Collection[str]] | None = None,
                 window_seconds: float = 300.0, max_examples_per_window: int = 1000,
                 max_history_per_symbol: int = 2048) -> None:
        self.exchange = exchange
        self._poll_ms = max(0, round(poll_interval_seconds * 1000))
        self._ticks = {s: t for s, v in (tick_size_by_symbol or {}).items() if (t := parse_price(v)) is not None}
        self._floor = noise_floor or NoiseFloor()
        self._rules = compile_rules(ignore_rules)
        self._silence_ms = round(max_ws_silence_seconds * 1000)
        # Two feeds sample one price at different instants: a REST value the WebSocket showed
        # within this lag (before or after) is the same data, not a divergence.
        self._max_lag_ms = round(max_ws_lag_seconds * 1000)
        self._grace_override_ms = None if grace_seconds is None else round(grace_seconds * 1000)
        self._trace_id_provider = trace_id_provider
        self._symbols = symbols
        self._window_ms = max(1, round(window_seconds * 1000))
        self._max_examples = max_examples_per_window
        self._cap = max(2, max_history_per_symbol)
        self._history_ms = max(_MIN_HISTORY_MS, 4 * self._silence_ms, 4 * self._poll_ms,
                               2 * (self._grace_override_ms or 0))
        self._ws_prices: dict[str, list[_Price]] = {}
        self._ws_positions: dict[tuple[str, int], list[_Position]] = {}
        self._rest_first_ms: dict[str, int] = {}
        self._followed_since: dict[str, int] = {}  # since when each followed symbol has been followed (this time)
        self._unfollowed_ms: dict[str, int] = {}   # when a symbol stopped being followed
        self._rest_last: dict[str, tuple[int, Decimal]] = {}
        self._rest_changed_ms: dict[str, int] = {}
        self._rest_open_last_ms: dict[tuple[str, int], int] = {}
        self._rest_positions_ms: int | None = None
        self._in_play: set[tuple[str, int]] = set()
        self._pending: dict[tuple[str, int], int] = {}
        self._held: dict[str, list[_Held]] = {}
        self._lags = RecentValues(1024)
        self._examples_window: tuple[int, int] = (-1, 0)
        self.counters: dict[str, int] = dict.fromkeys(
            ("no_ws_data", "rest_out_of_order", "lag_unresolved", "examples_dropped", "unknown_input"), 0)

    # -- public ------------------------------------------------------------------------------

    def observe(self, origin: str, observation: PositionSnapshot | MarkPriceBatch, now_ms: int) -> ComparatorOutput:
        """Take one observation from ``origin`` ("rest": the poller; "ws": the hybrid source).

        Returns the samples (and mismatch examples) that became final, including
        held price samples resolved by this observation or expired by ``now_ms``.
        """
        out = ComparatorOutput([], [])
        self._expire(now_ms, out)
        trace_id = self._trace_id()
        if origin == "ws" and isinstance(observation, MarkPriceBatch):
            self._ws_price_batch(observation, out)
        elif origin == "ws" and isinstance(observation, PositionSnapshot):
            self._ws_position_snapshot(observation)
        elif origin == "rest" and isinstance(observation, MarkPriceBatch):
            self._rest_price_batch(observation, trace_id, out)
        elif origin == "rest" and isinstance(observation, PositionSnapshot):
            self._rest_position_snapshot(observation, trace_id, out)
        else:
            self.counters["unknown_input"] += 1
        return out

    def observe_error(self, kind: SampleKind, now_ms: int, detail: str = "") -> ComparatorOutput:
        """A REST poll of ``kind`` failed: one ``error`` sample per symbol (price) or key in play (position)."""
        out = ComparatorOutput([], [])
        self._expire(now_ms, out)
        trace_id = self._trace_id()
        targets: list[tuple[str, int | None]] = (
            [(s, None) for s in sorted(self._followed() or self._rest_first_ms)] if kind == "price"
            else [(symbol, idx) for symbol, idx in sorted(self._in_play)])
        for symbol, idx in targets or [("*", None)]:
            self._emit(Sample(exchange=self.exchange, kind=kind, symbol=symbol, position_idx=idx, ts_ms=now_ms,
                              result="error", trace_id=trace_id, detail=detail or "REST poll failed"), out)
        return out

    def advance(self, now_ms: int) -> ComparatorOutput:
        """Release held price samples whose lag is still unknown after ``max_ws_silence_seconds``."""
        out = ComparatorOutput([], [])
        self._expire(now_ms, out)
        return out

    def flush(self, before_ms: int | None = None) -> ComparatorOutput:
        """Release held price samples now (lag unknown): all (e.g. on stop), or those taken before ``before_ms``."""
        out = ComparatorOutput([], [])
        for symbol in list(self._held):
            keep = [h for h in self._held[symbol] if before_ms is not None and h.t_ms >= before_ms]
            for held in self._held[symbol]:
                if before_ms is None or held.t_ms < before_ms:
                    self._release(held, None, out)
            self._held[symbol] = keep
        return out

    def settled_until_ms(self, now_ms: int) -> int:
        """Every sample with ``ts_ms`` before this has been returned (judge windows that end by then)."""
        return min([now_ms, *(h.t_ms for items in self._held.values() for h in items)])

    @property
    def grace_ms(self) -> int:
        """How long a position disagreement must last to count: the override, or max(poll, p99 WS lag)."""
        if self._grace_override_ms is not None:
            return self._grace_override_ms
        lag_p99 = self._lags.p99
        return max(self._poll_ms, 0 if lag_p99 is None else round(lag_p99 * 1000))

    @property
    def ws_lag_p99_seconds(self) -> float | None:
        """p99 of recent WS delays behind REST price changes (a lead counts as 0)."""
        return self._lags.p99

    def noise_floor(self) -> NoiseFloor:
        """The noise floor in force: the given one, with the tick sizes and their ratios at the latest REST prices."""
        ticks = tick_ratios(self._ticks, {s: p for s, (_, p) in self._rest_last.items()})
        return msgspec.structs.replace(
            self._floor, tick_ratio_by_symbol={**self._floor.tick_ratio_by_symbol, **ticks},
            tick_size_by_symbol={**self._floor.tick_size_by_symbol, **{s: str(t) for s, t in self._ticks.items()}})

    def update_tick_sizes(self, tick_size_by_symbol: Mapping[str, Decimal | str]) -> None:
        """Take newer tick sizes (the venue's instrument list, refreshed); invalid ones are left out."""
        for symbol, value in tick_size_by_symbol.items():
            tick = parse_price(value)
            if tick is not None:
                self._ticks[symbol] = tick

    # -- WebSocket side ----------------------------------------------------------------------

    def _ws_price_batch(self, batch: MarkPriceBatch, out: ComparatorOutput) -> None:
        t = batch.ts_received_ms
        for obs in batch.prices:
            price = parse_price(obs.mark_price)
            if price is None:
                continue
            entry = _Price(t, price, obs.mark_price, obs.ts_exchange_ms)
            self._insert(self._ws_prices.setdefault(obs.symbol, []), entry)
            self._resolve_held(obs.symbol, entry, out)

    def _ws_position_snapshot(self, snapshot: PositionSnapshot) -> None:
        t = snapshot.ts_received_ms
        rows = {row.key: row for row in snapshot.positions}
        keys = set(rows) | (set(self._ws_positions) if snapshot.complete else set())
        for key in keys:
            history = self._ws_positions.get(key)
            if snapshot.complete and snapshot.as_of_ms is not None and history and history[-1].t_ms > snapshot.as_of_ms:
                continue  # news arrived after this snapshot was asked for; the book keeps the news
            entry = _position(t, rows.get(key))
            if history is None and not entry.open:
                continue
            self._insert(self._ws_positions.setdefault(key, []), entry)

    def _insert(self, history: list[Any], entry: _Price | _Position) -> None:
        bisect.insort_right(history, entry, key=_t)
        cutoff = history[-1].t_ms - self._history_ms
        drop = 0
        while drop + 1 < len(history) and history[drop + 1].t_ms < cutoff:
            drop += 1  # always keep one entry older than the cutoff: the state as of then
        drop = max(drop, len(history) - self._cap)
        if drop:
            del history[:drop]

    # -- REST prices -------------------------------------------------------------------------

    def _rest_price_batch(self, batch: MarkPriceBatch, trace_id: str | None, out: ComparatorOutput) -> None:
        followed = self._followed()
        if followed is not None:  # a symbol followed again starts afresh: a new topic, its old prices are stale
            for symbol in [s for s in self._followed_since if s not in followed]:
                del self._followed_since[symbol]
                self._unfollowed_ms[symbol] = batch.ts_received_ms
            for symbol in followed:
                if symbol not in self._followed_since:
                    self._followed_since[symbol] = batch.ts_received_ms
                    left_ms = self._unfollowed_ms.pop(symbol, None)
                    if left_ms is not None and symbol in self._ws_prices:
                        self._ws_prices[symbol] = [e for e in self._ws_prices[symbol] if e.t_ms > left_ms]
        latest = {obs.symbol: obs for obs in batch.prices if followed is None or obs.symbol in followed}
        for symbol in sorted(latest):
            self._rest_price(latest[symbol], batch.ts_received_ms, trace_id, out)

    def _rest_price(self, obs: MarkPriceObs, t: int, trace_id: str | None, out: ComparatorOutput) -> None:
        symbol = obs.symbol
        first_ms = self._rest_first_ms.setdefault(symbol, t)
        since_ms = max(first_ms, self._followed_since.get(symbol, first_ms))
        base: dict[str, Any] = dict(exchange=self.exchange, kind="price", symbol=symbol, ts_ms=t, trace_id=trace_id,
                                    rest_value=obs.mark_price,
                                    rest_staleness_seconds=_age_seconds(t, obs.ts_exchange_ms))
        price = parse_price(obs.mark_price)
        if price is None:
            self._emit(Sample(**base, result="error", detail="REST mark price is not a positive number"), out)
            return
        previous = self._rest_last.get(symbol)
        moved = previous is not None and t >= previous[0] and price != previous[1]
        if previous is None or t >= previous[0]:  # an older answer arriving late moves nothing
            self._rest_last[symbol] = (t, price)
            self._rest_changed_ms[symbol] = t if moved else self._rest_changed_ms.get(symbol, -1)
        tolerance_abs = tolerance_in_price(price, self._ticks.get(symbol), self._floor.noise_ratio(symbol))
        base["tolerance_ratio"] = float(tolerance_abs / price)
        history = self._ws_prices.get(symbol, [])
        i = bisect.bisect_right(history, t, key=_t) - 1
        if i < 0:
            if not history and t - since_ms > self._silence_ms:
                self._emit(Sample(**base, result="mismatch", mismatch_kind="ws_silent",
                                  detail="no WebSocket price since the symbol's first REST poll"), out)
            else:
                self.counters["no_ws_data"] += 1  # no data is not a pass, and not yet a failure
            return
        ws = history[i]
        base.update(ws_value=ws.text, divergence_ratio=divergence_ratio(ws.price, price),
                    ws_staleness_seconds=_age_seconds(ws.t_ms, ws.ts_exchange_ms))
        if t - ws.t_ms > self._silence_ms and self._rest_changed_ms[symbol] > ws.t_ms:
            detail = f"no WebSocket price for {(t - ws.t_ms) / 1000:g} s while REST moved"
            self._emit(Sample(**base, result="mismatch", mismatch_kind="ws_silent", detail=detail), out)
            return
        matched = abs(ws.price - price) <= tolerance_abs
        if not matched and _first_shown(history, i, price, tolerance_abs, t - self._max_lag_ms - 1) is not None:
            matched = True  # the WebSocket showed this value recently and has moved on: it leads
        sample = Sample(**base, result="match" if matched else "mismatch",
                        mismatch_kind=None if matched else "price_divergence")
        if moved and previous is not None:
            self._lead_or_hold(sample, history, i, price, previous, tolerance_abs, out)
        elif not matched and self._max_lag_ms > 0:
            # maybe the WebSocket is about to show it: decide when it does, or when the lag budget is spent
            self._held.setdefault(symbol, []).append(_Held(sample, price, tolerance_abs, t, self._max_lag_ms))
        else:
            self._emit(sample, out)

    def _lead_or_hold(self, sample: Sample, history: list[_Price], i: int, price: Decimal,
                      previous: tuple[int, Decimal], tolerance_abs: Decimal, out: ComparatorOutput) -> None:
        """REST shows a new value: stamp the WebSocket's lead, or hold the sample until its lag is known.

        "Showing the value" is within the tolerance, but never so loosely that
        REST's previous value would count too (at most half the change).
        """
        match_abs = min(tolerance_abs, abs(price - previous[1]) / 2)
        shown_ms = _first_shown(history, i, price, match_abs, previous[0])
        if shown_ms is not None and (sample.result == "match" or self._max_lag_ms <= 0):
            self._lags.add(0.0)
            self._emit(msgspec.structs.replace(sample, ws_lead_seconds=(sample.ts_ms - shown_ms) / 1000), out)
            return
        if shown_ms is not None:
            # the WebSocket showed this value once and moved on: not a lead; wait for it within the lag window
            self._held.setdefault(sample.symbol, []).append(
                _Held(sample, price, tolerance_abs, sample.ts_ms, self._max_lag_ms))
            return
        held = self._held.setdefault(sample.symbol, [])
        held.append(_Held(sample, price, match_abs, sample.ts_ms))
        if len(held) > _MAX_HELD_PER_SYMBOL:
            self._release(held.pop(0), None, out)

    def _resolve_held(self, symbol: str, entry: _Price, out: ComparatorOutput) -> None:
        held = self._held.get(symbol)
        if not held:
            return
        keep = []
        for item in held:
            if abs(entry.price - item.value) <= item.match_abs:
                self._release(item, entry.t_ms - item.t_ms, out)
            else:
                keep.append(item)
        self._held[symbol] = keep

    def _hold_ms(self, held: _Held) -> int:
        return self._silence_ms if held.wait_ms is None else held.wait_ms

    def _release(self, held: _Held, delay_ms: int | None, out: ComparatorOutput) -> None:
        if (delay_ms is not None and abs(delay_ms) <= self._max_lag_ms and held.sample.result == "mismatch"
                and held.sample.mismatch_kind == "price_divergence"):
            held = _Held(msgspec.structs.replace(held.sample, result="match", mismatch_kind=None),
                         held.value, held.match_abs, held.t_ms, held.wait_ms)
        if delay_ms is None:
            self.counters["lag_unresolved"] += 1
            sample = held.sample
        elif delay_ms >= 0:
            self._lags.add(delay_ms / 1000)
            sample = msgspec.structs.replace(held.sample, ws_lag_seconds=delay_ms / 1000)
        else:
            self._lags.add(0.0)
            sample = msgspec.structs.replace(held.sample, ws_lead_seconds=-delay_ms / 1000)
        self._emit(sample, out)

    def _expire(self, now_ms: int, out: ComparatorOutput) -> None:
        for symbol in list(self._held):
            held = self._held[symbol]
            expired = [h for h in held if now_ms - h.t_ms > self._hold_ms(h)]
            if expired:
                self._held[symbol] = [h for h in held if now_ms - h.t_ms <= self._hold_ms(h)]
                for item in expired:
                    self._release(item, None, out)

    # -- REST positions ----------------------------------------------------------------------

    def _rest_position_snapshot(self, snapshot: PositionSnapshot, trace_id: str | None, out: ComparatorOutput) -> None:
        t = snapshot.ts_received_ms
        if self._rest_positions_ms is not None and t < self._rest_positions_ms:
            self.counters["rest_out_of_order"] += 1
            return
        self._rest_positions_ms = t
        rows = {row.key: row for row in snapshot.positions}
        rest = {key: _position(t, row) for key, row in rows.items()}
        keys = {k for k, e in rest.items() if e.open} | self._in_play | set(self._pending)
        keys |= {k for k, h in self._ws_positions.items() if (_as_of(h, t) or _position(t, None)).open}
        if not snapshot.complete:
            keys &= set(rows)
        grace_ms = self.grace_ms
        in_play = set()
        for key in sorted(keys):
            r = rest.get(key) or _position(t, None)
            w = _as_of(self._ws_positions.get(key, []), t) or _position(t, None)
            if r.open or w.open:
                in_play.add(key)
            if r.open:
                self._rest_open_last_ms[key] = t
            kind = self._classify(key, r, w, t, grace_ms)
            row = rows.get(key)
            sample = Sample(exchange=self.exchange, kind="position", symbol=key[0], position_idx=key[1], ts_ms=t,
                            result="match", rest_value=r.text, ws_value=w.text, trace_id=trace_id,
                            # no staleness: a position row's time is its last change, not when it was read
                            detail=f"REST {_describe(r)}, WS {_describe(w)}")
            if kind is None:
                self._pending.pop(key, None)
                self._emit(sample, out)
            elif t - self._pending.setdefault(key, t) > grace_ms:
                self._emit(msgspec.structs.replace(sample, result="mismatch", mismatch_kind=kind), out)
        self._in_play = in_play if snapshot.complete else (self._in_play - set(rows)) | in_play

    def _classify(self, key: tuple[str, int], rest: _Position, ws: _Position, t: int,
                  grace_ms: int) -> MismatchKind | None:
        if not rest.open and not ws.open:
            return None
        if rest.open and not ws.open:
            return "missed_open"
        if ws.open and not rest.open:
            rest_seen_ms = self._rest_open_last_ms.get(key)
            since = _open_since(self._ws_positions.get(key, []), t)
            return "missed_close" if rest_seen_ms is not None and rest_seen_ms >= since - grace_ms else "ghost"
        if rest.side != ws.side or rest.size != ws.size:
            return "size_mismatch"
        return None

    # -- output ------------------------------------------------------------------------------

    def _emit(self, sample: Sample, out: ComparatorOutput) -> None:
        if sample.result == "mismatch" and sample.mismatch_kind is not None:
            rule = first_match(self._rules, sample_kind=sample.kind, mismatch_kind=sample.mismatch_kind,
                               symbol=sample.symbol, ts_ms=sample.ts_ms)
            if rule is not None:
                sample = msgspec.structs.replace(sample, result="ignored", ignored_by=rule)
            else:
                self._example(sample, out)
        out.samples.append(sample)

    def _example(self, sample: Sample, out: ComparatorOutput) -> None:
        assert sample.mismatch_kind is not None
        window_start = sample.ts_ms - sample.ts_ms % self._window_ms
        start, count = self._examples_window
        if start != window_start:
            start, count = window_start, 0
        if count >= self._max_examples:
            self.counters["examples_dropped"] += 1
            return
        self._examples_window = (start, count + 1)
        out.examples.append(MismatchExample(
            exchange=self.exchange, window_start_ms=window_start, ts_ms=sample.ts_ms, kind=sample.mismatch_kind,
            symbol=sample.symbol, position_idx=sample.position_idx, rest_value=sample.rest_value,
            ws_value=sample.ws_value, divergence_ratio=sample.divergence_ratio, detail=sample.detail or "",
            trace_id=sample.trace_id))

    def _followed(self) -> Collection[str] | None:
        return self._symbols() if callable(self._symbols) else self._symbols

    def _trace_id(self) -> str | None:
        return None if self._trace_id_provider is None else self._trace_id_provider()


def _position(t: int, row: PositionObs | None) -> _Position:
    if row is None:
        return _Position(t, None, _FLAT, "0")
    size = _size(row.size)
    return _Position(t, row.side if size > 0 else None, size, row.size if size > 0 else "0")


def _size(text: str | None) -> Decimal:
    """A size as a non-negative finite ``Decimal``; junk counts as flat."""
    size = decimal_or_zero(text)
    return abs(size) if size.is_finite() else _FLAT


def _as_of(history: list[Any], t: int) -> Any:
    i = bisect.bisect_right(history, t, key=_t) - 1
    return history[i] if i >= 0 else None


def _open_since(history: list[_Position], t: int) -> int:
    """When the WebSocket's current open run (as of ``t``) began, as far as the history goes back."""
    i = bisect.bisect_right(history, t, key=_t) - 1
    while i > 0 and history[i - 1].open:
        i -= 1
    return history[i].t_ms if i >= 0 else t


def _first_shown(history: list[_Price], i: int, value: Decimal, match_abs: Decimal, after_ms: int) -> int | None:
    """When the WebSocket first showed ``value`` (within ``match_abs``) up to ``history[i]``.

    The start of the current run if ``history[i]`` shows it; else the first
    entry after ``after_ms`` (the previous REST poll) that did; else ``None``.
    """
    def shows(entry: _Price) -> bool:
        return abs(entry.price - value) <= match_abs

    if shows(history[i]):
        j = i
        while j > 0 and shows(history[j - 1]):
            j -= 1
        return history[j].t_ms
    start = bisect.bisect_right(history, after_ms, key=_t)
    return next((e.t_ms for e in history[start:i] if shows(e)), None)


def _age_seconds(received_ms: int, exchange_ms: int | None) -> float | None:
    return None if exchange_ms is None else (received_ms - exchange_ms) / 1000


def _describe(position: _Position) -> str:
    return f"{position.side or '?'} {position.text}" if position.open else "flat"
