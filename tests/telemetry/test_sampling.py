"""The keeping processor: routine traces thinned by ratio, errors and transitions always exported."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NoOpTracer, StatusCode

from agent.config.models import TracingSection
from agent.core.tasks import TaskOwner
from agent.telemetry import tracing
from agent.transport.errors import RateLimited
from tests.telemetry.conftest import Traced


async def test_ratio_zero_drops_a_routine_trace_and_holds_nothing(traced: Traced) -> None:
    with tracing.start_span("feedagent.rest.poll"):
        with tracing.start_span("GET /x"):
            pass

    assert await traced.spans() == []
    assert traced.keeper.discarded == 2
    assert traced.keeper.held_spans == 0


async def test_an_error_exports_the_whole_trace_including_spans_that_ended_before_it(traced: Traced) -> None:
    with tracing.start_span("feedagent.rest.poll") as poll:
        with tracing.start_span("GET /v5/market/time"):
            pass  # ends before anyone knows: held back
        with tracing.start_span("GET /v5/position/list") as request:
            tracing.set_error(request, "unavailable")
        assert tracing.sampled_trace_id() == format(poll.get_span_context().trace_id, "032x")
    with tracing.start_span("feedagent.rest.poll"):
        pass  # another, routine trace

    spans = await traced.spans()
    assert sorted(s.name for s in spans) == ["GET /v5/market/time", "GET /v5/position/list", "feedagent.rest.poll"]
    failed = next(s for s in spans if s.name == "GET /v5/position/list")
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "unavailable"
    assert traced.keeper.held_spans == 0


async def test_an_exception_sets_error_type_from_its_outcome_without_span_events(traced: Traced) -> None:
    with pytest.raises(RateLimited):
        with tracing.start_span("feedagent.rest.poll"):
            raise RateLimited("slow down https://x/?signature=abc")

    (span,) = await traced.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "rate_limited"
    assert "signature" not in (span.status.description or "")  # the type, never the message
    assert span.events == ()  # the span-event API is deprecated: exceptions are not recorded as events


async def test_cancellation_is_not_an_error(traced: Traced) -> None:
    async def poll() -> None:
        with tracing.start_span("feedagent.rest.poll"):
            await asyncio.sleep(10)

    task = asyncio.create_task(poll())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await traced.spans() == []


async def test_keep_reason_exports_children_that_end_before_and_after_it_is_known(traced: Traced) -> None:
    with tracing.start_span("feedagent.mode.transition", keep_reason="mode_transition") as transition:
        with tracing.start_span("POST /fapi/v1/listenKey"):
            pass
    late_context = trace.set_span_in_context(transition)
    late = tracing.tracer().start_span("feedagent.ws.subscribe", context=late_context)  # ends after its parent
    late.end()

    spans = await traced.spans()
    assert sorted(s.name for s in spans) == ["POST /fapi/v1/listenKey", "feedagent.mode.transition",
                                             "feedagent.ws.subscribe"]
    assert {s.context.trace_id for s in spans} == {transition.get_span_context().trace_id}
    kept = next(s for s in spans if s.name == "feedagent.mode.transition")
    assert kept.attributes[tracing.KEEP_REASON] == "mode_transition"


@pytest.mark.parametrize("traced", [1.0], indirect=True)
async def test_ratio_one_exports_every_span_without_holding_any(traced: Traced) -> None:
    for _ in range(50):
        with tracing.start_span("feedagent.rest.poll"):
            with tracing.start_span("GET /x"):
                assert traced.keeper.held_spans == 0
            assert tracing.sampled_trace_id() is not None

    assert len(await traced.spans()) == 100


@pytest.mark.parametrize("traced", [0.25], indirect=True)
async def test_a_ratio_thins_routine_traces_by_trace_id_as_the_sdk_sampler_would(traced: Traced) -> None:
    sdk = TraceIdRatioBased(0.25)
    expected = 0
    for _ in range(2000):
        with tracing.start_span("feedagent.rest.poll") as span:
            trace_id = span.get_span_context().trace_id
        expected += sdk.should_sample(None, trace_id, "x").decision.is_sampled()

    exported = len(await traced.spans())
    assert exported == expected
    assert 0.20 < exported / 2000 < 0.30


async def test_held_spans_are_bounded_and_the_overflow_is_counted() -> None:
    t = Traced(0.0, max_buffered_spans=64)
    try:
        with tracing.start_span("feedagent.shadow.window"):
            for _ in range(100):
                with tracing.start_span("child"):
                    pass
            assert t.keeper.held_spans == 64
        assert t.keeper.dropped_buffer_full == 36
        assert t.keeper.held_spans == 0  # the trace ended undecided: released
        assert await t.spans() == []
    finally:
        await t.handle.shutdown(5.0)


async def test_exemplars_and_trace_ids_only_for_exported_traces(traced: Traced) -> None:
    with tracing.start_span("feedagent.rest.poll") as span:
        assert tracing.exemplar() is None  # ratio 0, nothing wrong (yet)
        tracing.keep(span, "test")
        assert tracing.exemplar() == {"trace_id": format(span.get_span_context().trace_id, "032x")}
    assert tracing.exemplar() is None  # outside any span


async def test_a_spawned_task_starts_its_own_trace(traced: Traced) -> None:
    owner = TaskOwner("test")
    seen: list[int] = []

    async def job() -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        with tracing.start_span("feedagent.rest.poll") as poll:
            seen.append(poll.get_span_context().trace_id)

    with tracing.start_span("feedagent.mode.transition", keep_reason="mode_transition") as transition:
        await owner.spawn("poll", job())

    assert seen[0] == 0  # no current span in the task
    assert seen[1] != transition.get_span_context().trace_id
    assert [s.name for s in await traced.spans()] == ["feedagent.mode.transition"]


async def test_tracing_off_is_the_api_no_op_tracer() -> None:
    handle = tracing.setup_tracing(TracingSection(), service_version="test", environ={})

    assert not handle.enabled and handle.provider is None
    assert tracing.active_provider() is None
    assert isinstance(tracing.tracer(), NoOpTracer)
    with tracing.start_span("feedagent.rest.poll") as span:
        assert not span.is_recording()
        tracing.set_error(span, "x")
        tracing.keep(span, "x")
        assert tracing.sampled_trace_id() is None and tracing.exemplar() is None
    assert tracing.detached_context() is None
    assert await handle.shutdown() is True
