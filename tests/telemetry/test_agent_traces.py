"""A real agent on the simulator exports its spans to a local OTLP/HTTP receiver.

Checked: span names, ``feedagent.*`` and semconv attributes, parent/child links
(WS auth and subscribe under connect, HTTP requests under polls), the
always-kept mode transition and error spans at ratio 0, routine polls thinned
at ratio 0 and all kept at ratio 1, trace ids in JSON log lines, exemplars in
the OpenMetrics exposition, and that tracing off installs no SDK provider.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer

from agent.simulator import Simulator, SimulatorConfig
from agent.supervisor import Supervisor
from agent.telemetry import tracing
from agent.telemetry.logging import JsonFormatter
from tests.integration.harness import credentials_env, custom_exchange, eventually, running_agent, write_config
from tests.telemetry.otlp_receiver import KIND_CLIENT, OtlpReceiver, ReceivedSpan

EXEMPLAR = re.compile(r'^feedagent_poll_duration_seconds_bucket\{exchange="bybit-x".*# \{trace_id="([0-9a-f]{32})"\}',
                      re.M)


@contextlib.asynccontextmanager
async def traced_agent(tmp_path: Path, modes: dict[str, str], tracing_section: dict[str, Any] | None,
                       **overrides: Any) -> AsyncIterator[tuple[Supervisor, Simulator, Any]]:
    """The harness's agent on its own simulator, with ``telemetry.tracing`` set in the YAML."""
    sim = Simulator(SimulatorConfig(seed=11, position_change_interval_seconds=0))
    eps = await sim.start()
    try:
        exchanges = {f"{venue}-x": custom_exchange(eps, venue, mode=mode, **overrides) for venue, mode in modes.items()}
        telemetry: dict[str, Any] = {"log": {"format": "json", "level": "warning"}}
        if tracing_section is not None:
            telemetry["tracing"] = tracing_section
        cfg = write_config(tmp_path, exchanges, telemetry=telemetry)
        async with running_agent(cfg, environ=credentials_env(eps)) as (agent, _events):
            yield agent, sim, eps
    finally:
        await sim.stop()


@contextlib.contextmanager
def json_log_lines() -> Iterator[io.StringIO]:
    """Every record of the agent's loggers, formatted by the agent's JSON formatter."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("agent")
    logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


def log_records(buffer: io.StringIO, event: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, buffer.getvalue().splitlines()) if r["event"] == event]


async def get_metrics(agent: Supervisor, accept: str | None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as http, http.get(f"{agent.admin.url}/metrics", headers=headers) as resp:
        return resp.headers["Content-Type"], await resp.text()


def child_of(span: ReceivedSpan, spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name and s.parent_span_id == span.span_id and s.trace_id == span.trace_id]


def polls(rx: OtlpReceiver, exchange: str) -> list[ReceivedSpan]:
    return [s for s in rx.named("feedagent.rest.poll") if s.attributes["feedagent.exchange"] == exchange]


async def test_a_hybrid_run_and_its_rollback_at_ratio_one(tmp_path: Path) -> None:
    async with OtlpReceiver() as rx:
        section = {"exporter": "otlp", "endpoint": rx.endpoint, "sample_ratio": 1.0, "export_interval_seconds": 0.1}
        with json_log_lines() as logs:
            async with traced_agent(tmp_path, {"bybit": "hybrid", "binance": "hybrid"}, section) as (agent, _, eps):
                await eventually(agent.is_ready, 10, what="ready")
                await agent.controllers["bybit-x"].operator_set_mode("rest")
                rest = agent.controllers["bybit-x"].pipeline.rest
                await eventually(lambda: rest.status["positions"].outcomes["ok"] >= 3, 5, what="rest polls")
                om_type, om_text = await get_metrics(agent, "application/openmetrics-text; version=1.0.0")
                classic_type, classic_text = await get_metrics(agent, None)
                secrets = [eps.bybit.api_key, eps.bybit.api_secret, eps.binance.api_key, eps.binance.api_secret]
        # the agent has stopped: its last spans were flushed at shutdown
        polls_done = sum(sum(s.outcomes.values()) for s in rest.status.values())

    spans = rx.spans
    assert {s.resource["service.name"] for s in spans} == {"feedagent"}
    assert all(s.events == 0 for s in spans)  # events are log records, never span events

    # WebSocket connect with auth and subscribe beneath it, for every stream
    connects = rx.named("feedagent.ws.connect")
    streams = {(s.attributes["feedagent.exchange"], s.attributes["feedagent.ws.stream"]) for s in connects}
    assert streams == {(e, st) for e in ("bybit-x", "binance-x") for st in ("public", "private")}
    for connect in connects:
        assert connect.kind == KIND_CLIENT and connect.attributes["feedagent.ws.outcome"] == "ok"
        assert connect.attributes["server.address"] == "127.0.0.1"
        (subscribe,) = child_of(connect, spans, "feedagent.ws.subscribe")
        assert subscribe.attributes["feedagent.ws.topics"] >= 1
    bybit_private = next(s for s in connects if s.attributes["feedagent.exchange"] == "bybit-x"
                         and s.attributes["feedagent.ws.stream"] == "private")
    assert len(child_of(bybit_private, spans, "feedagent.ws.auth")) == 1
    binance_private = next(s for s in connects if s.attributes["feedagent.exchange"] == "binance-x"
                           and s.attributes["feedagent.ws.stream"] == "private")
    assert child_of(binance_private, spans, "POST /fapi/v1/listenKey")  # the listenKey is part of connecting

    snapshots = rx.named("feedagent.hybrid.snapshot")
    assert {s.attributes["feedagent.snapshot.reason"] for s in snapshots} >= {"connect"}
    assert all(s.attributes["feedagent.snapshot.positions"] >= 0 for s in snapshots)

    # the rollback: one transition span with its attributes, and the log record inside it
    (transition,) = rx.named("feedagent.mode.transition")
    for key, value in {"feedagent.exchange": "bybit-x", "feedagent.venue": "bybit",
                       "feedagent.transition.from": "hybrid", "feedagent.transition.to": "rest",
                       "feedagent.transition.reason": "operator", "feedagent.transition.automatic": False,
                       "feedagent.transition.changed": True}.items():
        assert transition.attributes[key] == value, key
    (mode_changed,) = log_records(logs, "mode_changed")
    assert (mode_changed["trace_id"], mode_changed["span_id"]) == (transition.trace_id, transition.span_id)

    # every REST poll is exported at ratio 1, each with its HTTP request span beneath it
    bybit_polls = polls(rx, "bybit-x")
    completed = [p for p in bybit_polls if "feedagent.rest.outcome" in p.attributes]  # not cut short by the stop
    assert len(completed) == polls_done >= 6
    for poll in completed:
        assert poll.attributes["feedagent.venue"] == "bybit"
        assert poll.attributes["feedagent.poll.kind"] in ("positions", "prices")
        assert poll.attributes["feedagent.rest.outcome"] == "ok" and not poll.parent_span_id
        requests = [s for s in spans if s.parent_span_id == poll.span_id and s.kind == KIND_CLIENT]
        assert requests, poll
        for request in requests:
            assert request.name.startswith("GET /v5/")
            assert request.attributes["http.request.method"] == "GET"
            assert request.attributes["server.address"] == "127.0.0.1"
            assert request.attributes["http.response.status_code"] == 200

    # no secret, signature or query string in any attribute
    values = [str(v) for s in spans for v in s.attributes.values()]
    assert not [v for v in values if any(secret in v for secret in secrets) or "?" in v or "sign" in v.lower()]

    # exemplars only in OpenMetrics, pointing at exported poll traces
    assert om_type.startswith("application/openmetrics-text")
    trace_ids = {m.group(1) for m in EXEMPLAR.finditer(om_text)}
    assert trace_ids and trace_ids <= {p.trace_id for p in bybit_polls}
    assert classic_type.startswith("text/plain") and "trace_id" not in classic_text


async def test_ratio_zero_exports_transitions_and_errors_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with OtlpReceiver() as rx:
        # Configured by the standard variables alone (the YAML says exporter: none).
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "feedagent-canary")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        with json_log_lines() as logs:
            async with traced_agent(tmp_path, {"bybit": "hybrid"}, {"exporter": "none"}) as (agent, sim, _):
                await eventually(agent.is_ready, 10, what="ready")
                await agent.controllers["bybit-x"].operator_set_mode("rest")
                status = agent.controllers["bybit-x"].pipeline.rest.status["positions"].outcomes
                await eventually(lambda: status["ok"] >= 2, 5, what="ok polls")
                sim.faults.inject("bybit", "rest_error", status=503, count=3, endpoint="/v5/position/list")
                await eventually(lambda: status["unavailable"] >= 3 and status["ok"] >= 8, 10, what="polls")
                _, om_text = await get_metrics(agent, "application/openmetrics-text")
        ok_polls = status["ok"]

    assert {s.resource["service.name"] for s in rx.spans} == {"feedagent-canary"}
    (transition,) = rx.named("feedagent.mode.transition")
    assert transition.attributes["feedagent.sampling.keep_reason"] == "mode_transition"

    exported = polls(rx, "bybit-x")
    failed = [p for p in exported if p.error]
    assert len(failed) == 3 and len(exported) == 3  # every failed poll, none of the ok ones
    assert ok_polls >= 8
    for poll in failed:
        assert poll.attributes["error.type"] == "unavailable"
        assert poll.attributes["feedagent.rest.outcome"] == "unavailable"
        (request,) = [s for s in rx.spans if s.parent_span_id == poll.span_id]
        assert request.error and request.attributes["http.response.status_code"] == 503
    assert not rx.named("feedagent.ws.connect")  # routine at ratio 0

    # the warning logged inside each failed poll carries that poll's ids
    logged = {(r["trace_id"], r["span_id"]) for r in log_records(logs, "poll_failed")}
    assert logged == {(p.trace_id, p.span_id) for p in failed}

    # exemplars point at exported (failed) polls only
    trace_ids = {m.group(1) for m in EXEMPLAR.finditer(om_text)}
    assert trace_ids and trace_ids <= {p.trace_id for p in failed}


async def test_shadow_samples_and_divergence_exemplars_link_to_their_rest_poll(tmp_path: Path) -> None:
    async with OtlpReceiver() as rx:
        section = {"exporter": "otlp", "endpoint": rx.endpoint, "sample_ratio": 1.0, "export_interval_seconds": 0.1}
        shadow = {"window_seconds": 1, "min_samples": 1}
        async with traced_agent(tmp_path, {"bybit": "shadow"}, section, shadow=shadow) as (agent, _, _eps):
            controller = agent.controllers["bybit-x"]
            await eventually(lambda: controller.shadow is not None and controller.shadow.last_verdict, 10,
                             what="a judged shadow window")
            assert agent.store is not None
            samples = agent.store.samples("bybit-x")  # those of the judged window(s), as stored
            _, om_text = await get_metrics(agent, "application/openmetrics-text")

    poll_traces = {p.trace_id for p in polls(rx, "bybit-x")}
    assert samples and all(s.trace_id in poll_traces for s in samples)
    divergence = set(re.findall(r'^feedagent_shadow_price_divergence_ratio_bucket\{.*# \{trace_id="([0-9a-f]{32})"\}',
                                om_text, re.M))
    assert divergence and divergence <= poll_traces
    window = rx.named("feedagent.shadow.window")[0]
    assert window.attributes["feedagent.shadow.verdict"] in ("pass", "fail", "inconclusive", "error")
    assert window.attributes["feedagent.shadow.primary"] == "rest"
    assert window.attributes["feedagent.shadow.samples"] >= 0


async def test_a_reload_turns_tracing_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with OtlpReceiver() as rx:
        async with traced_agent(tmp_path, {"bybit": "rest"}, None) as (agent, _, eps):
            for name, value in credentials_env(eps).items():  # a reload reads the process environment
                if name.startswith("T_"):
                    monkeypatch.setenv(name, value)
            await eventually(agent.is_ready, 10, what="ready")
            assert tracing.active_provider() is None
            exchanges = {"bybit-x": custom_exchange(eps, "bybit", mode="rest")}
            write_config(tmp_path, exchanges, telemetry={
                "log": {"format": "json", "level": "warning"},
                "tracing": {"exporter": "otlp", "endpoint": rx.endpoint, "sample_ratio": 1.0,
                            "export_interval_seconds": 0.1}})
            await agent.reload("api")
            assert agent.tracing is not None and agent.tracing.enabled
            await eventually(lambda: polls(rx, "bybit-x"), 5, what="poll spans after the reload")
        assert tracing.active_provider() is None


async def test_tracing_off_installs_no_sdk_provider(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    with json_log_lines() as logs:
        async with traced_agent(tmp_path, {"bybit": "rest"}, None) as (agent, sim, _):
            await eventually(agent.is_ready, 10, what="ready")
            sim.faults.inject("bybit", "rest_error", status=503, count=1, endpoint="/v5/position/list")
            status = agent.controllers["bybit-x"].pipeline.rest.status["positions"].outcomes
            await eventually(lambda: status["unavailable"] >= 1, 5, what="a failed poll")
            assert agent.tracing is not None and not agent.tracing.enabled
            assert tracing.active_provider() is None
            assert isinstance(tracing.tracer(), NoOpTracer)
            assert not isinstance(trace.get_tracer_provider(), TracerProvider)
            _, om_text = await get_metrics(agent, "application/openmetrics-text")

    assert "trace_id" not in om_text
    (failed,) = log_records(logs, "poll_failed")
    assert "trace_id" not in failed and "span_id" not in failed
