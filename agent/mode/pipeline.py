"""ExchangePipeline: everything one configured exchange runs, from its sources to the event bus."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceBatch, PositionSnapshot
from agent.core.position_book import PositionBook
from agent.exchanges import create_rest_api
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.sinks.bus import EventBus
from agent.sources.rest_poller import RestSource
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError

log = logging.getLogger("agent.pipeline")


class ExchangePipeline:
    """One exchange: its REST API, its sources, its PositionBook; events go to the bus.

    Failures stay inside: a pipeline that cannot reach its venue keeps retrying
    on schedule and reports the error on /status, and never raises to its caller.
    """

    def __init__(self, *, name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, bus: EventBus, scheduler: AsyncIOScheduler,
                 metrics: Metrics, api: VenueRestApi | None = None) -> None:
        self.name = name
        self.config = config
        self.endpoints = endpoints
        self._bus = bus
        self._metrics = metrics
        self.book = PositionBook(name, config.venue, min_emit_interval_ms=config.min_emit_interval_ms)
        self.api = api or create_rest_api(name, config, endpoints, credentials, metrics)
        self.mode = "rest"
        self.positions_ready = False
        self.prices_ready = False
        self.started_unix_s: float | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self.rest = RestSource(
            exchange=name, api=self.api, scheduler=scheduler, metrics=metrics,
            positions_interval_seconds=config.rest.positions_interval_seconds,
            prices_interval_seconds=config.rest.prices_interval_seconds,
            clock_sync_interval_seconds=config.rest.server_time_sync_interval_seconds,
            symbols=self.followed_symbols, on_positions=self._on_positions, on_prices=self._on_prices)
        metrics.init_exchange(name)

    @property
    def ready(self) -> bool:
        """True once both a full position snapshot and the first mark prices arrived."""
        return self.positions_ready and (self.prices_ready or not self.followed_symbols())

    def followed_symbols(self) -> list[str]:
        """Configured symbols plus every symbol with an open position."""
        return sorted(set(self.config.symbols) | self.book.open_symbols())

    async def start(self) -> None:
        """Start the REST side; an unreachable venue is retried by the schedule, not raised."""
        self.started_unix_s = time.time()
        try:
            await self.api.start()
        except RestError as exc:
            log.warning("exchange start degraded", extra={"event": "exchange_start_degraded",
                                                          "exchange": self.name, "error": str(exc)})
        await self.rest.start()
        log.info("exchange started", extra={"event": "exchange_started", "exchange": self.name,
                                            "venue": self.config.venue, "mode": self.mode})

    async def stop(self) -> None:
        """Stop polling and close the REST session; safe to call twice."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        await self.rest.stop()
        await self.api.close()

    # -- observations -> events ------------------------------------------------------------------

    def _on_positions(self, snapshot: PositionSnapshot) -> None:
        self._bus.publish_all(self.book.apply_positions(snapshot), snapshot.source)
        self._metrics.open_positions.labels(self.name).set(len(self.book.positions()))
        if snapshot.complete and not self.positions_ready:
            self.positions_ready = True
            self._note_ready()

    def _on_prices(self, batch: MarkPriceBatch) -> None:
        self._bus.publish_all(self.book.apply_mark_prices(batch, _now_ms()), batch.source)
        self.prices_ready = True
        self._note_ready()
        self._schedule_flush()

    def _note_ready(self) -> None:
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
        self._bus.publish_all(self.book.flush_due(_now_ms()), "rest")
        self._schedule_flush()

    # -- operating surface -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status entry of this exchange."""
        api_status = self.api.status
        return {
            "venue": self.config.venue,
            "environment": self.config.environment,
            "configured_mode": self.config.mode,
            "effective_mode": self.mode,
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


def _now_ms() -> int:
    return int(time.time() * 1000)
