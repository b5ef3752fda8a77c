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
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider

    from agent.config.models import TracingSection

log = logging.getLogger("agent.tracing")

#: Attribute that makes the processor export the whole trace (value: why).
KEEP_REASON = "feedagent.sampling.keep_reason"
TRACES_PATH = "/v1/traces"
_KEPT_TRACE_IDS = 4096
_RATIO_LIMIT = (1 << 64) - 1  # TraceIdRatioBased.TRACE_ID_LIMIT: the low 64 bits of the trace id decide

__all__ = [
    "KEEP_REASON", "KeepingSpanProcessor", "SpanKind", "Tracing", "TracingSettings", "active_provider",
    "current_span", "detached_context", "exemplar", "keep", "resolve_settings", "sampled_trace_id", "set_error",
    "setup_tracing", "start_span", "tracer",
]


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracingSettings:
    """The effective tracing settings: the YAML section with the ``OTEL_*`` environment on top.

    ``sources`` says where each setting came from (``config``: the YAML file
    or a ``FEEDAGENT_*`` override; ``default``; or ``env:OTEL_...``);
    ``warnings`` lists environment values that were ignored.
    """

    enabled: bool
    endpoint: str                       # full URL of the traces endpoint
    sample_ratio: float
    service_name: str
    export_interval_seconds: float
    export_timeout_seconds: float
    max_buffered_spans: int
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold credentials: never logged
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What is safe to log: the endpoint without user info or query, header names only."""
        return {"enabled": self.enabled, "endpoint": redact_url(self.endpoint), "sample_ratio": self.sample_ratio,
                "service_name": self.service_name, "header_names": sorted(self.headers),
                "sources": dict(self.sources)}


_SAMPLER_RATIOS = {"always_on": 1.0, "always_off": 0.0, "parentbased_always_on": 1.0,
                   "parentbased_always_off": 0.0}


def resolve_settings(config: TracingSection, environ: Mapping[str, str] | None = None) -> TracingSettings:
    """Apply the standard OpenTelemetry environment variables over the YAML section.

    Precedence, per setting: ``OTEL_*`` variable > config (YAML, with its
    ``FEEDAGENT_*`` overrides) > default. The environment wins, as it does for
    every other key, because that is where platforms put tracing settings for
    all their services (the OpenTelemetry Operator's injection, a chart's
    ``env``), and they expect them to take effect without editing each
    service's config. Tracing is on when
    ``OTEL_TRACES_EXPORTER`` says ``otlp``, or (that variable unset) when the
    YAML says ``exporter: otlp`` or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``
    is set; ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` turn it off.
    """
    env = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    warnings: list[str] = []
    fields_set = config.model_fields_set

    def origin(key: str) -> str:
        return "config" if key in fields_set else "default"

    def get(name: str) -> str:
        return env.get(name, "").strip()

    # endpoint
    if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # the signal's own URL, used as given
        endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        sources["endpoint"] = "env:OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    elif get("OTEL_EXPORTER_OTLP_ENDPOINT"):  # a base URL: /v1/traces is appended
        endpoint = _traces_url(get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        sources["endpoint"] = "env:OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        endpoint, sources["endpoint"] = _traces_url(config.endpoint), origin("endpoint")
    if not endpoint.startswith(("http://", "https://")):
        warnings.append(f"{sources['endpoint'].removeprefix('env:')}: not an http(s) URL; using the YAML endpoint")
        endpoint, sources["endpoint"] = _traces_url(config.endpoint), origin("endpoint")

    # on or off
    exporters = [e.strip().lower() for e in get("OTEL_TRACES_EXPORTER").split(",") if e.strip()]
    if get("OTEL_SDK_DISABLED").lower() == "true":
        enabled, sources["exporter"] = False, "env:OTEL_SDK_DISABLED"
    elif "none" in exporters:
        enabled, sources["exporter"] = False, "env:OTEL_TRACES_EXPORTER"
    elif "otlp" in exporters:
        enabled, sources["exporter"] = True, "env:OTEL_TRACES_EXPORTER"
    else:
        if exporters:
            warnings.append(f"OTEL_TRACES_EXPORTER={','.join(exporters)}: only otlp and none are supported; ignored")
        if sources["endpoint"].startswith("env:"):
            enabled, sources["exporter"] = True, sources["endpoint"]
        else:
            enabled, sources["exporter"] = config.exporter == "otlp", origin("exporter")

    # routine-span ratio
    ratio, sources["sample_ratio"] = config.sample_ratio, origin("sample_ratio")
    sampler = get("OTEL_TRACES_SAMPLER").lower()
    if sampler in _SAMPLER_RATIOS:
        ratio, sources["sample_ratio"] = _SAMPLER_RATIOS[sampler], "env:OTEL_TRACES_SAMPLER"
    elif sampler in ("traceidratio", "parentbased_traceidratio"):
        try:
            value = float(get("OTEL_TRACES_SAMPLER_ARG") or "1.0")
            if not 0.0 <= value <= 1.0:
                raise ValueError
            ratio, sources["sample_ratio"] = value, "env:OTEL_TRACES_SAMPLER_ARG"
        except ValueError:
            warnings.append("OTEL_TRACES_SAMPLER_ARG: not a number from 0 to 1; ignored")
    elif sampler:
        warnings.append(f"OTEL_TRACES_SAMPLER={sampler}: not supported here; ignored")

    # resource: OTEL_SERVICE_NAME > service.name in OTEL_RESOURCE_ATTRIBUTES > YAML
    resource = _parse_resource_attributes(get("OTEL_RESOURCE_ATTRIBUTES"), warnings)
    service_name, sources["service_name"] = config.service_name, origin("service_name")
    if "service.name" in resource:
        service_name, sources["service_name"] = resource["service.name"], "env:OTEL_RESOURCE_ATTRIBUTES"
    if get("OTEL_SERVICE_NAME"):
        service_name, sources["service_name"] = get("OTEL_SERVICE_NAME"), "env:OTEL_SERVICE_NAME"

    interval, sources["export_interval_seconds"] = config.export_interval_seconds, origin("export_interval_seconds")
    if get("OTEL_BSP_SCHEDULE_DELAY"):
        try:
            value = float(get("OTEL_BSP_SCHEDULE_DELAY")) / 1000.0  # milliseconds, as the spec says
            if value <= 0:
                raise ValueError
            interval, sources["export_interval_seconds"] = value, "env:OTEL_BSP_SCHEDULE_DELAY"
        except ValueError:
            warnings.append("OTEL_BSP_SCHEDULE_DELAY: not a positive number of milliseconds; ignored")

    headers: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        if get(name):
            from opentelemetry.util.re import parse_env_headers

            headers = dict(parse_env_headers(get(name), liberal=True))
            sources["headers"] = f"env:{name}"
            break

    return TracingSettings(
        enabled=enabled, endpoint=endpoint, sample_ratio=ratio, service_name=service_name,
        export_interval_seconds=interval, export_timeout_seconds=config.export_timeout_seconds,
        max_buffered_spans=config.max_buffered_spans, headers=headers, resource_attributes=resource,
        sources=sources, warnings=tuple(warnings))


def _traces_url(base: str) -> str:
    """``base`` + ``/v1/traces``, unless it already names the traces path (as the SDK does for the base URL)."""
    parts = urlsplit(base)
    if parts.path.rstrip("/").endswith(TRACES_PATH):
        return base
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + TRACES_PATH))


def _parse_resource_attributes(text: str, warnings: list[str]) -> dict[str, str]:
    """``key=value,key=value`` with percent-encoded values (the W3C Baggage format the spec names)."""
    attributes: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            warnings.append("OTEL_RESOURCE_ATTRIBUTES: an entry is not key=value; skipped")
            continue
        attributes[key.strip()] = unquote(value.strip())
    return attributes


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (collector URLs can carry tokens in either)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable URL>"


# -- sampling ------------------------------------------------------------------------------------


class KeepingSpanProcessor:
    """Records every span; forwards to ``downstream`` the spans of traces chosen by ratio or kept.

    See the module docstring for the rules and the memory bound. Safe to call
    from several threads (spans usually end on the event loop's thread).
    """

    def __init__(self, downstream: Any, *, sample_ratio: float, max_buffered_spans: int,
                 max_kept_traces: int = _KEPT_TRACE_IDS) -> None:
        self._next = downstream
        self._bound = round(sample_ratio * (_RATIO_LIMIT + 1))
        self._max_held = max_buffered_spans
        self._max_kept = max_kept_traces
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}                      # trace id -> spans started and not ended
        self._held: dict[int, list[ReadableSpan]] = {}       # trace id -> ended spans waiting for a decision
        self._held_count = 0
        self._kept: OrderedDict[int, None] = OrderedDict()  # recently kept trace ids
        self.dropped_buffer_full = 0   # routine spans dropped because the buffer was full
        self.discarded = 0             # routine spans of traces neither chosen nor kept

    def chosen(self, trace_id: int) -> bool:
        """Whether ``sample_ratio`` picks this trace (deterministic in the trace id)."""
        return trace_id & _RATIO_LIMIT < self._bound

    def will_export(self, trace_id: int) -> bool:
        """Whether the trace is exported, as far as is known now (chosen, or kept so far)."""
        return self.chosen(trace_id) or trace_id in self._kept

    def keep(self, trace_id: int) -> None:
        """Export the whole trace: what is held now and every span of it that ends later."""
        if self.chosen(trace_id):
            return
        with self._lock:
            if trace_id in self._kept:
                self._kept.move_to_end(trace_id)
                return
            self._kept[trace_id] = None
            while len(self._kept) > self._max_kept:
                self._kept.popitem(last=False)
            held = self._held.pop(trace_id, [])
            self._held_count -= len(held)
        for span in held:
            self._next.on_end(span)

    # SpanProcessor interface -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        trace_id = span.context.trace_id
        if not self.chosen(trace_id):
            with self._lock:
                self._open[trace_id] = self._open.get(trace_id, 0) + 1
        self._next.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        if self.chosen(trace_id):
            self._next.on_end(span)
            return
        if span.status.status_code is StatusCode.ERROR:  # set_error() told us already; a raw set_status did not
            self.keep(trace_id)
        export = False
        with self._lock:
            still_open = self._open.get(trace_id, 1) - 1
            if still_open > 0:
                self._open[trace_id] = still_open
            else:
                self._open.pop(trace_id, None)
            if trace_id in self._kept:
                export = True
            elif still_open > 0:
                if self._held_count >= self._max_held:
                    self.dropped_buffer_full += 1
                else:
                    self._held.setdefault(trace_id, []).append(span)
                    self._held_count += 1
            else:  # the trace's last open span ended and nothing asked to keep it
                held = self._held.pop(trace_id, [])
                self._held_count -= len(held)
                self.discarded += len(held) + 1
        if export:
            self._next.on_end(span)

    def shutdown(self) -> None:
        with self._lock:
            self._held.clear()
            self._held_count = 0
        self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._next.force_flush(timeout_millis))

    @property
    def held_spans(self) -> int:
        """Spans held now, waiting for their trace to be decided."""
        return self._held_count


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
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

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
