"""ExchangePipeline: everything one configured exchange runs, from its sources to the event bus.

The pipeline owns two sources, ``rest`` (REST polling) and ``ws`` (the hybrid
WebSocket source), and the PositionBook. The mode decides which sources run
and which one is authoritative (feeds the book); see ``agent.mode.modes``.
A mode change is make-before-break: the new authoritative source starts and
feeds the book *alongside* the old one until it has delivered a full position
snapshot; only then does the old one stop. The book's ordering guards make the
overlap safe, so no lifecycle event is lost or duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from agent.config.models import ExchangeConfig
from agent.core.events import ModeEvent
from agent.core.observations import MarkPriceBatch, PositionSnapshot
from agent.core.position_book import PositionBook
from agent.exchanges import create_rest_api
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.mode.modes import ModePlan, plan_for
from agent.sinks.bus import EventBus
from agent.sources.rest_poller import RestSource
from agent.telemetry import tracing
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError

log = logging.getLogger("agent.pipeline")

# Observations of a source that does not feed the book (shadow mode's candidate) go here.
ShadowObserver = Callable[[str, PositionSnapshot | MarkPriceBatch], None]


class ModeChangeError(Exception):
    """A mode change was abandoned; the previous mode is still in force."""


class ExchangePipeline:
    """One exchange: its REST API, its sources, its PositionBook; events go to the bus.

    Failures stay inside: a pipeline that cannot reach its venue keeps retrying
    and reports the error on /status; it never raises to the supervisor.
    """

    def __init__(self, *, name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, bus: EventBus, scheduler: AsyncIOScheduler,
                 metrics: Metrics, api: VenueRestApi | None = None) -> None:
        self.name = name
        self.config = config
        self.endpoints = endpoints
        self.credentials = credentials
        self._bus = bus
        self._metrics = metrics
        self._scheduler = scheduler
        self.book = PositionBook(name, config.venue, min_emit_interval_ms=config.min_emit_interval_ms)
        self.api = api or create_rest_api(name, config, endpoints, credentials, metrics)
        self.rest = RestSource(
            exchange=name, api=self.api, scheduler=scheduler, metrics=metrics,
            positions_interval_seconds=config.rest.positions_interval_seconds,
            prices_interval_seconds=config.rest.prices_interval_seconds,
            clock_sync_interval_seconds=config.rest.server_time_sync_interval_seconds,
            symbols=self.followed_symbols,
            on_positions=lambda s: self._ingest("rest", s), on_prices=lambda b: self._ingest("rest", b))
        self.ws: Any = None  # HybridSource, built on first use
        self.plan: ModePlan | None = None
        self.shadow_observer: ShadowObserver | None = None
        self.last_transition: dict[str, Any] | None = None
        self._feeding: set[str] = set()
        self._running: set[str] = set()
        self._mode_lock = asyncio.Lock()
        self._flush_handle: asyncio.TimerHandle | None = None
        self.started_unix_s: float | None = None
        metrics.init_exchange(name)

    # -- state -----------------------------------------------------------------------------------

    @property
    def mode(self) -> str | None:
        """The effective mode (None before start)."""
        return self.plan.mode if self.plan else None

    @property
    def ready(self) -> bool:
        """True once the authoritative source delivered a full snapshot (and prices, when any are followed)."""
        if self.plan is None:
            return False
        source = self._source(self.plan.authority)
        return source is not None and source.ready.is_set() and (
            bool(self.book.mark_prices()) or not self.config.symbols)

    def followed_symbols(self) -> list[str]:
        """Configured symbols plus every symbol with an open position."""
        return sorted(set(self.config.symbols) | self.book.open_symbols())

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running_sources(self) -> frozenset[str]:
        """Names of the sources running now (``rest``, ``ws``)."""
        return frozenset(self._running)

    async def start(self, mode: str | None = None) -> None:
        """Start in ``mode`` (default: the configured one); an unreachable venue is retried, not raised."""
        self.started_unix_s = time.time()
        try:
            await self.api.start()
        except RestError as exc:
            log.warning("exchange start degraded", extra={"event": "exchange_start_degraded",
                                                          "exchange": self.name, "error": str(exc)})
        plan = plan_for(mode or self.config.mode, self.config.shadow.primary)
        async with self._mode_lock:
            for name in plan.sources:
                await self._start_source(name)
            self._feeding = {plan.authority}
            self.plan = plan
        self._metrics.set_mode(self.name, plan.mode)
        log.info("exchange started", extra={"event": "exchange_started", "exchange": self.name,
                                            "venue": self.config.venue, "mode": plan.mode})

    async def stop(self) -> None:
        """Stop every source and close the REST session; safe to call twice."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        async with self._mode_lock:
            for name in list(self._running):
                await self._stop_source(name)
        await self.api.close()

    async def set_mode(self, mode: str, *, reason: str, automatic: bool, primary: str | None = None,
                       ready_timeout_seconds: float | None = None) -> ModeEvent | None:
        """Switch mode make-before-break; returns the mode event, or None when nothing changed.

        Raises ModeChangeError (and keeps the old mode) when the new authoritative
        source is not ready within the timeout.
        """
        # One span per transition, always exported; the "mode changed" log record inside it is the trace event.
        with tracing.start_span("feedagent.mode.transition", keep_reason="mode_transition", attributes={
                "feedagent.exchange": self.name, "feedagent.venue": self.config.venue,
                "feedagent.transition.to": mode, "feedagent.transition.reason": reason,
                "feedagent.transition.automatic": automatic}) as span:
            target = plan_for(mode, primary or self.config.shadow.primary)
            async with self._mode_lock:
                current = self.plan
                span.set_attributes({"feedagent.transition.from": current.mode if current else "none",
                                     "feedagent.transition.changed": current != target})
                if current == target:
                    return None
                started = [n for n in target.sources if n not in self._running]
                for name in started:
                    await self._start_source(name)
                self._feeding = self._feeding | {target.authority}
                new_source = self._source(target.authority)
                assert new_source is not None
                timeout = ready_timeout_seconds or self._ready_timeout_seconds(target.authority)
                try:
                    await asyncio.wait_for(new_source.ready.wait(), timeout)
                except TimeoutError:
                    self._feeding = {current.authority} if current else set()
                    for name in started:
                        await self._stop_source(name)
                    self._metrics.mode_transition_failures.labels(self.name, target.mode).inc()
                    raise ModeChangeError(f"{self.name}: {target.authority} source not ready within {timeout:.1f}s; "
                                          f"staying in {current.mode if current else 'no mode'}") from None
                self._feeding = {target.authority}
                for name in [n for n in self._running if n not in target.sources]:
                    await self._stop_source(name)
                self.plan = target
                event = ModeEvent(exchange=self.name, from_=current.mode if current else "none", to=target.mode,
                                  reason=reason, automatic=automatic, ts_ms=_now_ms())
            self._record_transition(event, current, target)
            return event

    def _record_transition(self, event: ModeEvent, old: ModePlan | None, new: ModePlan) -> None:
        self._bus.publish(event, "agent")
        self._metrics.set_mode(self.name, new.mode)
        # operators may write any reason: it goes to the event and the log; the label stays bounded
        label = event.reason if event.automatic or event.reason == "config_reload" else "operator"
        self._metrics.mode_transitions.labels(self.name, event.from_, event.to, label).inc()
        self.last_transition = {"from": event.from_, "to": event.to, "reason": event.reason,
                                "automatic": event.automatic, "ts_ms": event.ts_ms,
                                "authority": new.authority}
        log.warning("mode changed", extra={"event": "mode_changed", "exchange": self.name, "from": event.from_,
                                           "to": event.to, "reason": event.reason, "automatic": event.automatic})

    def _ready_timeout_seconds(self, source: str) -> float:
        rest = self.config.rest
        if source == "rest":
            return rest.positions_interval_seconds + 2 * rest.request_timeout_seconds
        ws = self.config.ws
        return ws.connect_timeout_seconds * 2 + rest.request_timeout_seconds

    def _source(self, name: str) -> Any:
        return self.rest if name == "rest" else self.ws

    async def _start_source(self, name: str) -> None:
        if name == "ws" and self.ws is None:
            self.ws = self._build_ws_source()
        await self._source(name).start()
        self._running.add(name)

    async def _stop_source(self, name: str) -> None:
        self._running.discard(name)
        self._feeding.discard(name)
        await self._source(name).stop()

    def _build_ws_source(self) -> Any:
        from agent.sources.hybrid import HybridSource

        return HybridSource(
            exchange=self.name, config=self.config, endpoints=self.endpoints, credentials=self.credentials,
            api=self.api, scheduler=self._scheduler, metrics=self._metrics, symbols=self.followed_symbols,
            book_view=self.book, on_positions=lambda s: self._ingest("ws", s),
            on_prices=lambda b: self._ingest("ws", b))

    # -- observations -> events ------------------------------------------------------------------

    def _ingest(self, origin: str, observation: PositionSnapshot | MarkPriceBatch) -> None:
        """Route one observation: into the book when ``origin`` feeds it, else to the shadow observer."""
        if origin not in self._feeding:
            if self.shadow_observer is not None and origin in self._running:
                self.shadow_observer(origin, observation)
            return
        if self.shadow_observer is not None and self.plan is not None and self.plan.mode == "shadow":
            self.shadow_observer(origin, observation)
        if isinstance(observation, PositionSnapshot):
            before = self.book.open_symbols()
            self._bus.publish_all(self.book.apply_positions(observation), observation.source)
            self._metrics.open_positions.labels(self.name).set(len(self.book.positions()))
            if self.book.open_symbols() != before and self.ws is not None and "ws" in self._running:
                self.ws.follow_symbols_changed()
        else:
            self._bus.publish_all(self.book.apply_mark_prices(observation, _now_ms()), observation.source)
            self._schedule_flush()
        if self.ready:
            self._metrics.exchange_ready.labels(self.name).set(1)

    def _schedule_flush(self) -> None:
        due_ms = self.book.next_flush_ms()
        if due_ms is None or self._flush_handle is not None:
            return
        delay = max(0.0, (due_ms - _now_ms()) / 1000)
        self._flush_handle = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        for event in self.book.flush_due(_now_ms()):
            self._bus.publish(event, event.source)
        self._schedule_flush()

    # -- operating surface -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status entry of this exchange."""
        api_status = self.api.status
        entry: dict[str, Any] = {
            "venue": self.config.venue,
            "environment": self.config.environment,
            "configured_mode": self.config.mode,
            "effective_mode": self.mode,
            "authoritative_source": self.plan.authority if self.plan else None,
            "started_unix_s": self.started_unix_s,
            "running_sources": sorted(self._running),
            "last_transition": self.last_transition,
            "ready": self.ready,
            "open_positions": len(self.book.positions()),
            "followed_symbols": self.followed_symbols(),
            "last_event_seq": self.book.seq,
            "polls": {kind: s.as_dict() for kind, s in self.rest.status.items()},
            "rest": {
                "clock_offset_ms": api_status.clock_offset_ms,
                "rate_limit_remaining_ratio": api_status.rate_limit_remaining_ratio,
                "backoff_until_unix_s": api_status.backoff_until_unix_s,
                "last_error": api_status.last_error,
            },
        }
        if self.ws is not None:
            entry["ws"] = self.ws.status()
        return entry


def _now_ms() -> int:
    return int(time.time() * 1000)
