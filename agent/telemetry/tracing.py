"""Traces: spans for bounded operations, exported over OTLP/HTTP, with tail-aware sampling.

Instrumented code calls the module functions (``start_span``, ``set_error``,
``keep``, ``exemplar``, ``sampled_trace_id``); ``setup_tracing`` decides once
what they do. With tracing off the tracer is the OpenTelemetry API's no-op
tracer, spans are its non-recording ``INVALID_SPAN``, and the SDK is not even
imported. The agent keeps its own provider instead of setting the
process-global one (which can be set only once), so that a reload, or the next
agent in a test process, can replace it.

Sampling. A head sampler decides when a span starts, before anyone knows that
the poll will fail. So every span is recorded, and ``KeepingSpanProcessor``
decides per trace when spans end:

- a trace whose id falls under ``sample_ratio`` (the same rule as the SDK's
  ``TraceIdRatioBased``) is exported span by span, as it ends;
- a trace that contains a span with status ERROR (``set_error``, or an
  exception leaving ``start_span``), or a span marked with ``keep()`` /
  ``keep_reason`` (mode transitions), is exported whole: the spans that ended
  before the decision are held back and released at that moment;
- any other trace is dropped once its last open span has ended.

Memory bound: only spans of undecided traces with a span still open are held,
at most ``max_buffered_spans`` of them (beyond that a routine span is dropped
and counted); plus the ids of the last 4096 kept traces (so that a span ending
late in a kept trace is still exported). Traces here are small (a poll is two
spans, a WebSocket connect three or four), so the bound is rarely approached.

Events. Point-in-time occurrences (a mode change, a failed poll) are written
as log records inside the span, which carry its ``trace_id``/``span_id``
(``agent.telemetry.logging``); the span-event API is being deprecated (OTEP
4430) and is not used, not even for exceptions.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from agent.config.models import TracingSection

from agent.telemetry.tracing_sampling import KEEP_REASON, KeepingSpanProcessor
from agent.telemetry.tracing_settings import TracingSettings, resolve_settings

log = logging.getLogger("agent.tracing")

__all__ = [
    "KEEP_REASON", "KeepingSpanProcessor", "SpanKind", "Tracing", "TracingSettings", "active_provider",
    "current_span", "detached_context", "exemplar", "keep", "resolve_settings", "sampled_trace_id", "set_error",
    "setup_tracing", "start_span", "tracer",
]


# -- the active tracer (module state) ------------------------------------------------------------

_NOOP_TRACER: trace.Tracer = NoOpTracer()
_tracer: trace.Tracer = _NOOP_TRACER
_keeper: KeepingSpanProcessor | None = None
_active: Tracing | None = None


class Tracing:
    """A configured tracing setup; ``shutdown`` flushes it (bounded) and restores the no-op tracer."""

    def __init__(self, settings: TracingSettings, provider: TracerProvider | None = None,
                 keeper: KeepingSpanProcessor | None = None) -> None:
        self.settings = settings
        self.provider = provider
        self.keeper = keeper
        self._closed = provider is None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    async def flush(self, timeout_seconds: float | None = None) -> bool:
        """Export what is queued now; False when it did not finish in time."""
        if self.provider is None or self._closed:
            return True
        timeout = timeout_seconds or self.settings.export_timeout_seconds
        provider = self.provider
        result = await _in_daemon_thread(lambda: provider.force_flush(int(timeout * 1000)), timeout)
        return result is not _TIMED_OUT and bool(result)

    async def shutdown(self, timeout_seconds: float | None = None) -> bool:
        """Stop tracing and export what is queued, waiting at most ``timeout_seconds``; safe twice.

        The export runs in a daemon thread, so an unreachable collector can
        delay shutdown by the timeout but never hang the process.
        """
        if self._closed or self.provider is None:
            return True
        self._closed = True
        _deactivate(self)
        provider = self.provider
        timeout = timeout_seconds or self.settings.export_timeout_seconds
        if await _in_daemon_thread(provider.shutdown, timeout) is _TIMED_OUT:
            log.warning("spans not flushed in time at shutdown (collector unreachable or slow)", extra={
                "event": "tracing_flush_timeout", "timeout_seconds": round(timeout, 3)})
            return False
        return True


def setup_tracing(config: TracingSection, *, service_version: str,
                  resource_attributes: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                  exporter: Any = None) -> Tracing:
    """Configure tracing from the YAML section and the ``OTEL_*`` environment; returns the handle.

    With tracing off this touches nothing: the module functions keep using the
    API's no-op tracer. ``exporter`` replaces the OTLP exporter (tests, bench).
    """
    settings = resolve_settings(config, environ)
    for warning in settings.warnings:
        log.warning("tracing setting ignored", extra={"event": "tracing_setting_ignored", "detail": warning})
    if not settings.enabled:
        return Tracing(settings)
    try:
        return _setup_sdk(settings, service_version, resource_attributes, exporter)
    except Exception as e:  # noqa: BLE001 - traces are an aid: a bad exporter setting must not stop the agent
        log.error("tracing setup failed; running without traces", extra={
            "event": "tracing_setup_failed", "error": type(e).__name__, **settings.describe()})
        return Tracing(settings)


def _setup_sdk(settings: TracingSettings, service_version: str, resource_attributes: Mapping[str, Any] | None,
               exporter: Any) -> Tracing:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    attributes = {"service.name": settings.service_name, "service.version": service_version,
                  **(resource_attributes or {})}
    env_attributes = dict(settings.resource_attributes)
    env_attributes["service.name"] = settings.service_name  # resolved above: OTEL_SERVICE_NAME wins
    resource = Resource.create(attributes).merge(Resource(env_attributes))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.export_timeout_seconds,
                                    headers=dict(settings.headers) or None)
    batch = BatchSpanProcessor(exporter, schedule_delay_millis=settings.export_interval_seconds * 1000,
                               export_timeout_millis=settings.export_timeout_seconds * 1000)
    keeper = KeepingSpanProcessor(batch, sample_ratio=settings.sample_ratio,
                                  max_buffered_spans=settings.max_buffered_spans)
    provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(keeper)  # type: ignore[arg-type]
    handle = Tracing(settings, provider, keeper)
    _activate(handle, provider.get_tracer("feedagent", service_version))
    log.info("tracing enabled", extra={"event": "tracing_enabled", **settings.describe()})
    return handle


def _activate(handle: Tracing, tracer: trace.Tracer) -> None:
    global _tracer, _keeper, _active
    _tracer, _keeper, _active = tracer, handle.keeper, handle


def _deactivate(handle: Tracing) -> None:
    global _tracer, _keeper, _active
    if _active is handle:
        _tracer, _keeper, _active = _NOOP_TRACER, None, None


def active_provider() -> TracerProvider | None:
    """The SDK provider in use, or None while tracing is off."""
    return _active.provider if _active is not None else None


def tracer() -> trace.Tracer:
    """The tracer in use (the API's no-op tracer while tracing is off)."""
    return _tracer


_TIMED_OUT = object()


async def _in_daemon_thread(fn: Callable[[], Any], timeout_seconds: float) -> Any:
    """Run a blocking SDK call off the loop; ``_TIMED_OUT`` when it did not finish within the timeout.

    A daemon thread, not the default executor: an export stuck on a dead
    collector must not keep the process from exiting.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any) -> None:
        if not done.done():
            done.set_result(result)

    def target() -> None:
        try:
            result = fn()
        except Exception:  # noqa: BLE001 - reported as a failed flush
            log.exception("tracing flush failed", extra={"event": "tracing_flush_failed"})
            result = False
        try:
            loop.call_soon_threadsafe(settle, result)
        except RuntimeError:  # the loop is gone
            pass

    threading.Thread(target=target, name="feedagent-tracing-flush", daemon=True).start()
    try:
        async with asyncio.timeout(timeout_seconds):
            return await asyncio.shield(done)
    except TimeoutError:
        return _TIMED_OUT


# -- instrumentation helpers ---------------------------------------------------------------------


class _SpanScope:
    """``start_as_current_span`` without span events: an exception sets status and ``error.type``.

    ``CancelledError`` is not an error (stopping a poll is normal); neither is
    a BaseException. ``error.type`` is the exception's ``outcome`` when it has
    one (``RestError``, ``ConnectFailed``: bounded labels), else its class name.
    The status description is that type, never the message, which can quote a URL.
    """

    __slots__ = ("_cm", "_keep", "_span")

    def __init__(self, tracer_: trace.Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None,
                 keep_reason: str | None) -> None:
        self._keep = keep_reason
        self._cm = tracer_.start_as_current_span(name, kind=kind, attributes=attributes, record_exception=False,
                                                 set_status_on_exception=False)

    def __enter__(self) -> trace.Span:
        self._span = span = self._cm.__enter__()
        if self._keep is not None:
            keep(span, self._keep)
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        if isinstance(exc, Exception):
            outcome = getattr(exc, "outcome", None)
            set_error(self._span, outcome if isinstance(outcome, str) else type(exc).__qualname__)
        return self._cm.__exit__(exc_type, exc, tb)


class _NoSpan:
    """``start_span`` while tracing is off: yields the API's non-recording ``INVALID_SPAN``, attaches nothing.

    Same effect as the no-op tracer's ``start_as_current_span`` (whose span is
    that same object), at a fortieth of the cost: that one builds two
    generator context managers and attaches a context (about 4 µs a span).
    """

    __slots__ = ()

    def __enter__(self) -> trace.Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
               keep_reason: str | None = None) -> Any:
    """A context manager making a span current: ``with start_span("feedagent.rest.poll", ...) as span:``.

    ``keep_reason`` exports the span's whole trace whatever the ratio (mode
    transitions). With tracing off it yields the API's no-op span.
    """
    if _keeper is None:
        return _NO_SPAN
    return _SpanScope(_tracer, name, kind, attributes, keep_reason)


def set_error(span: trace.Span, error_type: str) -> None:
    """Mark ``span`` failed (status ERROR, ``error.type``); its trace will be exported."""
    if not span.is_recording():
        return
    span.set_status(Status(StatusCode.ERROR, error_type))
    span.set_attribute("error.type", error_type)
    keeper = _keeper
    if keeper is not None:
        keeper.keep(span.get_span_context().trace_id)


def keep(span: trace.Span, reason: str) -> None:
    """Export ``span``'s whole trace whatever the ratio (e.g. a reconciliation that corrected the book)."""
    if not span.is_recording():
        return
    span.set_attribute(KEEP_REASON, reason)
    keeper = _keeper
    if keeper is not None:
        keeper.keep(span.get_span_context().trace_id)


def sampled_trace_id() -> str | None:
    """The current trace's id (32 hex digits) when that trace is exported, as far as is known now; else None.

    For links that must resolve (mismatch examples, exemplars): a trace chosen
    by ratio or already kept is exported for sure.
    """
    keeper = _keeper
    if keeper is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not keeper.will_export(context.trace_id):
        return None
    return format(context.trace_id, "032x")


def exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` for a histogram observation inside an exported trace, else None."""
    if _keeper is None:
        return None
    trace_id = sampled_trace_id()
    return {"trace_id": trace_id} if trace_id is not None else None


def current_span() -> trace.Span:
    """The current span (``INVALID_SPAN`` while tracing is off, without looking up the context)."""
    return INVALID_SPAN if _keeper is None else trace.get_current_span()


def detached_context() -> contextvars.Context | None:
    """A context for a new task that starts its own traces (None while tracing is off: nothing to detach).

    A task created inside a span would otherwise inherit it: every poll started
    by a scheduler woken during a mode transition would become part of that
    (always exported) transition trace, for hours.
    """
    if _keeper is None:
        return None
    context = contextvars.copy_context()
    context.run(otel_context.attach, otel_context.Context())
    return context
