"""ShadowRunner: runs the Comparator on one exchange in shadow mode, judges windows, stores them.

The pipeline hands every observation of both sources to ``observe`` (sync and
cheap: the comparison never stalls the primary). A named task closes a window
every ``window_seconds`` (sized by ``agent.shadow.sizing`` unless configured),
or as soon as it can only fail (a critical mismatch, WebSocket silence, or more
mismatches than the rest of the window could outweigh: ``fails_already``),
once its held samples have settled, judges it, writes
samples, examples and the verdict to the store (off the event loop), updates
the metrics and tells ``on_verdict`` (the breaker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceBatch, PositionSnapshot
from agent.core.tasks import TaskOwner
from agent.exchanges.base import VenueRestApi
from agent.shadow.calibration import RestPairCalibrator
from agent.shadow.comparator import Comparator, ComparatorOutput
from agent.shadow.model import CRITICAL_KINDS, MismatchExample, NoiseFloor, Sample, WindowVerdict
from agent.shadow.promotion import is_critical  # noqa: F401 - re-exported for the controller
from agent.shadow.sizing import window_sizing
from agent.shadow.store import ShadowStore
from agent.shadow.verdict import fails_already, judge_window
from agent.telemetry import tracing
from agent.telemetry.metrics import Metrics
from agent.transport.errors import RestError

log = logging.getLogger("agent.shadow")

VERDICTS = ("pass", "fail", "inconclusive", "error")
RESULTS = ("match", "mismatch", "ignored", "error")
MISMATCH_KINDS = ("price_divergence", "ws_silent", "missed_open", "missed_close", "size_mismatch", "ghost")


class ShadowRunner:
    """Comparison, windows and storage of one exchange while it is in shadow mode."""

    def __init__(self, *, exchange: str, config: ExchangeConfig, store: ShadowStore, metrics: Metrics,
                 api: VenueRestApi, symbols: Callable[[], Sequence[str]],
                 on_verdict: Callable[[WindowVerdict], None] | None = None,
                 trace_id_provider: Callable[[], str | None] | None = None) -> None:
        self.exchange = exchange
        self.config = config
        self.store = store
        self._metrics = metrics
        self._api = api
        self._symbols = symbols
        self._on_verdict = on_verdict
        # The comparison runs inside the REST poll's callback: samples carry that poll's trace id (when exported).
        self._trace_id_provider = trace_id_provider if trace_id_provider is not None else tracing.sampled_trace_id
        self._tasks = TaskOwner(f"{exchange}/shadow")
        self.comparator: Comparator | None = None
        self._samples: list[Sample] = []
        self._examples: list[MismatchExample] = []
        self.noise_floor = NoiseFloor()
        self.last_verdict: WindowVerdict | None = None
        self.window_start_ms: int | None = None
        self.calibrating = False
        self._open: list[Any] = [0, 0, False]  # mismatches, judged samples, decisive: of the window now open
        self._close_now = asyncio.Event()
        self._closing_start: int | None = None  # the window whose closing began (so stop never closes it twice)
        self._init_metrics()

    def _init_metrics(self) -> None:
        m, ex = self._metrics, self.exchange
        for kind in ("price", "position"):
            for result in RESULTS:
                m.shadow_samples.labels(ex, kind, result)
        for kind in MISMATCH_KINDS:
            m.shadow_mismatches.labels(ex, kind)
        for verdict in VERDICTS:
            m.shadow_windows.labels(ex, verdict)
            m.shadow_last_verdict.labels(ex, verdict).set(0)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Calibrate (when configured), then compare and judge windows until stopped."""
        if self.comparator is not None or self._tasks.running("windows"):
            return
        self._tasks.spawn("windows", self._run())

    async def stop(self) -> None:
        """Stop judging. Samples of the unfinished window are dropped (a partial window proves nothing good),
        unless it can only fail: then it is judged, so that the record names what failed even when a health
        check rolled the exchange back first."""
        await self._tasks.cancel_all(timeout_seconds=2.0)
        start = self.window_start_ms
        if (self.comparator is not None and start is not None and self._close_now.is_set()
                and self._closing_start != start):
            self._take(self.comparator.flush())
            await self._close_window(start, max(start + 1, _now_ms() + 1))
        self.comparator = None
        self._samples.clear()
        self._examples.clear()

    async def _run(self) -> None:
        shadow = self.config.shadow
        if shadow.calibrate_seconds > 0:
            self.noise_floor = await self._calibrate(shadow.calibrate_seconds)
            await asyncio.to_thread(self.store.add_calibration, self.exchange, self.noise_floor, ts_ms=_now_ms())
        self.comparator = Comparator(
            self.exchange, poll_interval_seconds=self.config.rest.prices_interval_seconds,
            tick_size_by_symbol=await self._tick_sizes(), noise_floor=self.noise_floor, ignore_rules=shadow.ignore,
            max_ws_silence_seconds=shadow.max_ws_silence_seconds, max_ws_lag_seconds=shadow.max_ws_lag_seconds,
            grace_seconds=shadow.grace_seconds, trace_id_provider=self._trace_id_provider,
            symbols=lambda: set(self._symbols()), window_seconds=window_sizing(self.config).window_seconds,
            max_examples_per_window=shadow.max_examples_per_window)
        self.window_start_ms = _now_ms()
        while True:
            end_ms = self.window_start_ms + int(window_sizing(self.config).window_seconds * 1000)
            self._count_window()
            try:  # a window that can only fail closes as soon as that is certain (critical, silence, curtailment)
                await asyncio.wait_for(self._close_now.wait(), max(0.0, (end_ms - _now_ms()) / 1000))
                end_ms = min(end_ms, _now_ms() + 1)
                self._take(self.comparator.flush(before_ms=end_ms))  # its verdict is known: no lag to wait for
            except TimeoutError:
                pass
            # held samples (lag not known yet) must settle before the window can be judged
            while self.comparator.settled_until_ms(_now_ms()) < end_ms:
                self._take(self.comparator.advance(_now_ms()))
                await asyncio.sleep(0.05)
            self._take(self.comparator.advance(_now_ms()))
            await self._close_window(self.window_start_ms, end_ms)
            self.comparator.update_tick_sizes(await self._tick_sizes())  # cached; refreshed daily by the adapter
            self.window_start_ms = end_ms

    async def _tick_sizes(self) -> dict[str, Decimal]:
        """The venue's tick size of every followed symbol; none when the venue cannot say (tolerance: noise only)."""
        try:
            return await self._api.tick_sizes(list(self._symbols()))
        except RestError as e:
            log.warning("tick sizes unavailable; the price tolerance is the noise floor alone until they are",
                        extra={"event": "tick_sizes_unavailable", "exchange": self.exchange, "error": str(e)})
            return {}

    async def _calibrate(self, seconds: float) -> NoiseFloor:
        """REST vs REST (Diffy's second control): two polls a round trip apart measure the noise."""
        self.calibrating = True
        calibrator = RestPairCalibrator()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                symbols = list(self._symbols())
                try:
                    first = await self._api.fetch_mark_prices(symbols)
                    second = await self._api.fetch_mark_prices(symbols)
                except RestError:
                    await asyncio.sleep(self.config.rest.prices_interval_seconds)
                    continue
                now = _now_ms()
                calibrator.add_batches(MarkPriceBatch(prices=tuple(first), source="rest", ts_received_ms=now),
                                       MarkPriceBatch(prices=tuple(second), source="rest", ts_received_ms=now))
                await asyncio.sleep(self.config.rest.prices_interval_seconds)
        finally:
            self.calibrating = False
        return calibrator.noise_floor(now_ms=_now_ms())

    # -- observations ----------------------------------------------------------------------------

    def observe(self, origin: str, observation: PositionSnapshot | MarkPriceBatch) -> None:
        """One observation of either source (never raises: a comparison bug must not hurt the primary)."""
        if self.comparator is None:
            return
        try:
            self._take(self.comparator.observe(origin, observation, _now_ms()))
        except Exception:  # noqa: BLE001
            log.exception("shadow comparison failed", extra={"event": "shadow_compare_failed",
                                                             "exchange": self.exchange})

    def observe_error(self, kind: str) -> None:
        """A REST poll of the comparison failed: the sample is an error, not a pass."""
        if self.comparator is not None:
            self._take(self.comparator.observe_error(kind, _now_ms()))  # type: ignore[arg-type]

    def _count_window(self) -> None:
        """Start the counts of the window now open from the samples already in it."""
        self._open = [0, 0, False]
        self._close_now.clear()
        self._count(self._samples)

    def _count(self, samples: Sequence[Sample]) -> None:
        """Add samples of the open window to its counts; wake the loop when the window can only fail."""
        start = self.window_start_ms
        judged = [s for s in samples if start is not None and s.ts_ms >= start and s.result in ("match", "mismatch")]
        if not judged:
            return
        for s in judged:
            self._open[1] += 1
            if s.result == "mismatch":
                self._open[0] += 1
                self._open[2] = self._open[2] or s.mismatch_kind in CRITICAL_KINDS or s.mismatch_kind == "ws_silent"
        sizing = window_sizing(self.config)
        shadow = self.config.shadow
        if fails_already(self._open[0], self._open[1], decisive=bool(self._open[2]),
                         expected=sizing.expected_samples, max_mismatch_ratio=shadow.max_mismatch_ratio,
                         confidence=shadow.confidence):
            self._close_now.set()

    def _take(self, out: ComparatorOutput) -> None:
        m, ex = self._metrics, self.exchange
        self._count(out.samples)
        for sample in out.samples:
            m.shadow_samples.labels(ex, sample.kind, sample.result).inc()
            if sample.divergence_ratio is not None:  # exemplar: the REST poll's trace (held samples settle later)
                m.shadow_divergence.labels(ex).observe(
                    sample.divergence_ratio, exemplar={"trace_id": sample.trace_id} if sample.trace_id else None)
            if sample.ws_lead_seconds is not None:
                m.shadow_ws_lead.labels(ex).observe(sample.ws_lead_seconds)
            if sample.ws_lag_seconds is not None:
                m.shadow_ws_lag.labels(ex).observe(sample.ws_lag_seconds)
            if sample.result == "mismatch" and sample.mismatch_kind:
                m.shadow_mismatches.labels(ex, sample.mismatch_kind).inc()
        self._samples.extend(out.samples)
        self._examples.extend(out.examples)

    # -- windows ---------------------------------------------------------------------------------

    async def _close_window(self, start_ms: int, end_ms: int) -> WindowVerdict:
        self._closing_start = start_ms
        with tracing.start_span("feedagent.shadow.window", attributes={
                "feedagent.exchange": self.exchange, "feedagent.venue": self.config.venue,
                "feedagent.shadow.primary": self.config.shadow.primary,
                "feedagent.shadow.window_start_ms": start_ms, "feedagent.shadow.window_end_ms": end_ms}) as span:
            shadow = self.config.shadow
            inside = [s for s in self._samples if start_ms <= s.ts_ms < end_ms]
            self._samples = [s for s in self._samples if s.ts_ms >= end_ms]
            examples = [e for e in self._examples if start_ms <= e.ts_ms < end_ms]
            self._examples = [e for e in self._examples if e.ts_ms >= end_ms]
            assert self.comparator is not None
            verdict = judge_window(inside, exchange=self.exchange, window_start_ms=start_ms, window_end_ms=end_ms,
                                   min_samples=window_sizing(self.config).min_samples,
                                   max_mismatch_ratio=shadow.max_mismatch_ratio,
                                   confidence=shadow.confidence, noise_floor=self.comparator.noise_floor(),
                                   primary=shadow.primary)
            await asyncio.to_thread(self.store.record_window, verdict, inside, examples)
            self.last_verdict = verdict
            span.set_attributes({"feedagent.shadow.verdict": verdict.verdict,
                                 "feedagent.shadow.samples": verdict.samples,
                                 "feedagent.shadow.mismatches": verdict.mismatches,
                                 "feedagent.shadow.errors": verdict.errors})
            if verdict.verdict in ("fail", "error"):  # what the breaker acts on: exported whatever the ratio
                tracing.keep(span, f"shadow_{verdict.verdict}")
            self._metrics.shadow_windows.labels(self.exchange, verdict.verdict).inc()
            self._metrics.set_state_set(self._metrics.shadow_last_verdict, self.exchange, VERDICTS, verdict.verdict)
            if verdict.mismatch_ratio is not None:
                self._metrics.shadow_mismatch_ratio.labels(self.exchange).set(verdict.mismatch_ratio)
            log.info("shadow window judged", extra={"event": "shadow_window", "exchange": self.exchange,
                                                    "verdict": verdict.verdict, "reason": verdict.reason,
                                                    "samples": verdict.samples, "mismatches": verdict.mismatches})
            if self._on_verdict is not None:
                self._on_verdict(verdict)
            return verdict

    def status(self) -> dict[str, Any]:
        """The /status view of the comparison."""
        v = self.last_verdict
        return {
            "calibrating": self.calibrating,
            "window_start_ms": self.window_start_ms,
            "window_seconds": window_sizing(self.config).window_seconds,
            "min_samples": window_sizing(self.config).min_samples,
            "pending_samples": len(self._samples),
            "noise_floor": {"calibration_q99_ratio": self.noise_floor.calibration_q99_ratio,
                            "calibration_samples": self.noise_floor.calibration_samples},
            "last_verdict": None if v is None else {
                "verdict": v.verdict, "reason": v.reason, "window_start_ms": v.window_start_ms,
                "window_end_ms": v.window_end_ms, "samples": v.samples, "mismatches": v.mismatches,
                "critical": v.critical},
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
