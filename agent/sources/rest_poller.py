"""RestSource: polls positions and mark prices on a schedule and hands observations on.

APScheduler decides *when*; each poll then runs as a named task owned by the
source, so that stop() cancels it and a slow poll is never run twice at once
(an overrun is counted, not queued).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.core.observations import MarkPriceBatch, PositionSnapshot
from agent.core.tasks import TaskOwner
from agent.exchanges.base import VenueRestApi
from agent.telemetry import tracing
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError

log = logging.getLogger("agent.sources.rest")

PositionsHandler = Callable[[PositionSnapshot], None]
PricesHandler = Callable[[MarkPriceBatch], None]


@dataclass
class PollStatus:
    """What /status shows of one kind of poll."""

    interval_seconds: float
    last_attempt_unix_s: float | None = None
    last_success_unix_s: float | None = None
    last_duration_seconds: float | None = None
    last_error: str | None = None  # kept after a success: the cause of a rollback is still there when on-call looks
    last_error_unix_s: float | None = None
    last_outcome: str | None = None
    outcomes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "interval_seconds": self.interval_seconds,
            "last_attempt_unix_s": self.last_attempt_unix_s,
            "last_success_unix_s": self.last_success_unix_s,
            "last_duration_seconds": self.last_duration_seconds,
            "last_error": self.last_error,
            "last_error_unix_s": self.last_error_unix_s,
            "outcomes": dict(self.outcomes),
        }


class RestSource:
    """Scheduled REST polling of one exchange."""

    def __init__(self, *, exchange: str, api: VenueRestApi, scheduler: AsyncIOScheduler, metrics: Metrics,
                 positions_interval_seconds: float, prices_interval_seconds: float,
                 clock_sync_interval_seconds: float, symbols: Callable[[], Sequence[str]],
                 on_positions: PositionsHandler, on_prices: PricesHandler,
                 on_positions_failed: Callable[[str], None] = lambda reason: None) -> None:
        self.exchange = exchange
        self.api = api
        self._scheduler = scheduler
        self._metrics = metrics
        self._symbols = symbols
        self._on_positions = on_positions
        self._on_prices = on_prices
        self._on_positions_failed = on_positions_failed
        self._clock_sync_interval_seconds = clock_sync_interval_seconds
        self._tasks = TaskOwner(f"{exchange}/rest")
        self._job_ids: list[str] = []
        self.ready = asyncio.Event()  # set by the first complete positions snapshot since start()
        self.status = {
            "positions": PollStatus(positions_interval_seconds),
            "prices": PollStatus(prices_interval_seconds),
        }

    async def start(self) -> None:
        """Schedule the polls; the first of each runs at once."""
        if self._job_ids:
            return
        self.ready.clear()
        now = datetime.now(timezone.utc)
        for kind, poll in (("positions", self.poll_positions), ("prices", self.poll_prices)):
            self._add_job(kind, poll, self.status[kind].interval_seconds, now)
        self._add_job("clock", self._sync_clock, self._clock_sync_interval_seconds, None)

    def _add_job(self, kind: str, poll: Callable[[], object], interval_seconds: float, first: datetime | None) -> None:
        job_id = f"{self.exchange}/rest-{kind}"

        async def fire() -> None:  # a coroutine job runs on the loop; a plain function would run in a thread
            if self._tasks.running(kind):
                self._metrics.polls.labels(self.exchange, kind, "overrun").inc()
                return
            self._tasks.spawn(kind, poll())  # type: ignore[arg-type]

        self._scheduler.add_job(fire, IntervalTrigger(seconds=interval_seconds), id=job_id, name=job_id,
                                next_run_time=first, coalesce=True, max_instances=1, replace_existing=True,
                                misfire_grace_time=None)
        self._job_ids.append(job_id)

    async def stop(self) -> None:
        """Unschedule and cancel any poll in flight; safe to call twice."""
        for job_id in self._job_ids:
            try:
                self._scheduler.remove_job(job_id)
            except Exception:  # the scheduler may already be shut down  # noqa: BLE001
                pass
        self._job_ids.clear()
        self.ready.clear()
        await self._tasks.cancel_all(timeout_seconds=2.0)

    async def poll_positions(self) -> PositionSnapshot | None:
        """Fetch every position now and hand the complete snapshot on (None when the poll failed)."""
        with self._span("positions") as span:  # the hand-off (and a shadow comparison) is part of the poll
            asked_ms = _now_ms()
            rows = await self._poll(span, "positions", self.api.fetch_positions)
            if rows is None:
                # the view is now as old as the last success: the owner decides whether to say so
                self._on_positions_failed(f"rest_{self.status['positions'].last_outcome}")
                return None
            # A skipped (malformed) row could be an open position: without it, absence no longer means flat.
            complete = self.api.status.last_positions_malformed_rows == 0
            snapshot = PositionSnapshot(positions=tuple(rows), source="rest", ts_received_ms=_now_ms(),
                                        complete=complete, as_of_ms=asked_ms)
            self._on_positions(snapshot)
            if complete:
                self.ready.set()
            return snapshot

    async def poll_prices(self) -> MarkPriceBatch | None:
        """Fetch the mark prices of the followed symbols now and hand them on."""
        symbols = list(self._symbols())
        if not symbols:
            return None
        with self._span("prices") as span:
            prices = await self._poll(span, "prices", lambda: self.api.fetch_mark_prices(symbols))
            if prices is None:
                return None
            batch = MarkPriceBatch(prices=tuple(prices), source="rest", ts_received_ms=_now_ms())
            self._on_prices(batch)
            return batch

    def _span(self, kind: str):  # type: ignore[no-untyped-def]
        return tracing.start_span("feedagent.rest.poll", attributes={
            "feedagent.exchange": self.exchange, "feedagent.venue": self.api.venue, "feedagent.poll.kind": kind})

    async def _poll(self, span, kind: str, call):  # type: ignore[no-untyped-def]
        status = self.status[kind]
        status.last_attempt_unix_s = time.time()
        started = time.monotonic()
        try:
            result = await call()
        except RestError as exc:
            outcome = exc.outcome
            status.last_error, status.last_error_unix_s = f"{type(exc).__name__}: {exc}", time.time()
            tracing.set_error(span, outcome)
            log.warning("poll failed", extra={"event": "poll_failed", "exchange": self.exchange, "kind": kind,
                                              "outcome": outcome, "error": str(exc)})
            result = None
        except Exception as exc:  # a bug in one exchange must not stop the others; counted and shown
            outcome = "error"
            status.last_error, status.last_error_unix_s = f"{type(exc).__name__}: {exc}", time.time()
            tracing.set_error(span, type(exc).__qualname__)
            log.exception("poll crashed", extra={"event": "poll_crashed", "exchange": self.exchange, "kind": kind})
            result = None
        else:
            outcome = "ok"
            status.last_success_unix_s = time.time()
            self._metrics.last_successful_poll.labels(self.exchange, kind).set(status.last_success_unix_s)
            span.set_attribute("feedagent.poll.items", len(result))
        span.set_attribute("feedagent.rest.outcome", outcome)
        elapsed = time.monotonic() - started
        status.last_duration_seconds = elapsed
        status.last_outcome = outcome
        status.outcomes[outcome] += 1
        self._metrics.polls.labels(self.exchange, kind, outcome).inc()
        self._metrics.poll_duration.labels(self.exchange, kind).observe(elapsed, exemplar=tracing.exemplar())
        return result

    async def _sync_clock(self) -> None:
        try:
            await self.api.sync_clock()
        except RestError as exc:
            log.warning("clock sync failed", extra={"event": "clock_sync_failed", "exchange": self.exchange,
                                                    "error": str(exc)})


def _now_ms() -> int:
    return int(time.time() * 1000)
