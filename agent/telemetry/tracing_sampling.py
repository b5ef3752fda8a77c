"""Tail-aware sampling: every span is recorded, the trace is kept or dropped as its spans end.

See ``agent.telemetry.tracing`` for the policy and its memory bound.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span


log = logging.getLogger("agent.tracing")

#: Attribute that makes the processor export the whole trace (value: why).
KEEP_REASON = "feedagent.sampling.keep_reason"
_KEPT_TRACE_IDS = 4096
_RATIO_LIMIT = (1 << 64) - 1  # TraceIdRatioBased.TRACE_ID_LIMIT: the low 64 bits of the trace id decide


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

