"""Effective tracing settings: OTEL_* environment variables override the YAML section, key by key."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from agent.config.models import TracingSection
from agent.telemetry import tracing
from agent.telemetry.tracing import resolve_settings

YAML_ON = TracingSection(exporter="otlp", endpoint="http://collector:4318", sample_ratio=0.1, service_name="fa")


def test_yaml_alone() -> None:
    s = resolve_settings(YAML_ON, {})
    assert (s.enabled, s.endpoint, s.sample_ratio, s.service_name) == (
        True, "http://collector:4318/v1/traces", 0.1, "fa")
    assert s.sources["endpoint"] == "config" and s.sources["exporter"] == "config"
    assert s.sources["export_interval_seconds"] == "default"
    assert resolve_settings(TracingSection(), {}).enabled is False
    given = "http://c:4318/v1/traces"
    assert resolve_settings(TracingSection(endpoint=given), {}).endpoint == given


def test_the_standard_endpoint_variables_override_yaml_and_turn_tracing_on() -> None:
    s = resolve_settings(TracingSection(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/"})
    assert s.enabled and s.endpoint == "http://otel:4318/v1/traces"
    assert s.sources["endpoint"] == s.sources["exporter"] == "env:OTEL_EXPORTER_OTLP_ENDPOINT"

    s = resolve_settings(YAML_ON, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom"})
    assert s.endpoint == "http://traces:9999/custom"  # the signal-specific one, used as given


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SDK_DISABLED": "true"},
                                 {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"}])
def test_the_environment_can_turn_yaml_tracing_off(env: dict[str, str]) -> None:
    assert resolve_settings(YAML_ON, env).enabled is False


def test_an_unsupported_exporter_is_reported_and_ignored() -> None:
    s = resolve_settings(YAML_ON, {"OTEL_TRACES_EXPORTER": "console"})
    assert s.enabled and s.sources["exporter"] == "config"
    assert any("console" in w for w in s.warnings)  # console would write spans to stdout, the event stream


def test_service_name_precedence() -> None:
    assert resolve_settings(YAML_ON, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=ra,deployment.environment=prod"}
                            ).service_name == "ra"
    s = resolve_settings(YAML_ON, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=ra", "OTEL_SERVICE_NAME": "sn"})
    assert s.service_name == "sn" and s.sources["service_name"] == "env:OTEL_SERVICE_NAME"


@pytest.mark.parametrize(("env", "ratio"), [
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, 0.25),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, 0.0),
    ({"OTEL_TRACES_SAMPLER": "always_on"}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, 0.1),  # invalid: YAML stays
    ({"OTEL_TRACES_SAMPLER_ARG": "0.5"}, 0.1),  # an argument without a sampler means nothing
])
def test_the_sampler_variables_set_the_routine_ratio(env: dict[str, str], ratio: float) -> None:
    assert resolve_settings(YAML_ON, env).sample_ratio == ratio


def test_secrets_stay_out_of_what_is_logged() -> None:
    s = resolve_settings(TracingSection(), {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:hunter2@otel.example:4318/?token=abc",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret,x-team=ops"})
    assert s.headers == {"authorization": "Bearer s3cret", "x-team": "ops"}
    described = str(s.describe())
    assert "hunter2" not in described and "token" not in described and "s3cret" not in described
    assert "https://otel.example:4318/v1/traces" in described and "authorization" in described


async def test_the_environment_resource_is_applied_over_the_code_resource() -> None:
    env = {"OTEL_SERVICE_NAME": "fa-canary", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging"}
    handle = tracing.setup_tracing(YAML_ON, service_version="9.9", resource_attributes={"process.pid": 1},
                                   environ=env, exporter=InMemorySpanExporter())
    try:
        assert handle.provider is not None
        attributes = handle.provider.resource.attributes
        assert attributes["service.name"] == "fa-canary"
        assert attributes["service.version"] == "9.9"
        assert attributes["deployment.environment.name"] == "staging"
        assert attributes["process.pid"] == 1
    finally:
        await handle.shutdown(5.0)


@pytest.mark.parametrize("bad", [{"export_timeout_seconds": 0}, {"max_buffered_spans": 10},
                                 {"service_name": ""}, {"service_name": "has space"}, {"sample_ratio": 1.5}])
def test_section_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TracingSection(**bad)  # type: ignore[arg-type]



async def test_a_broken_exporter_setting_means_no_traces_not_no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("cannot read the client certificate")

    monkeypatch.setattr(tracing, "_setup_sdk", broken)
    handle = tracing.setup_tracing(YAML_ON, service_version="t", environ={})
    assert not handle.enabled and tracing.active_provider() is None


async def test_shutdown_flush_is_bounded_when_the_collector_hangs() -> None:
    import threading
    import time

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    release = threading.Event()

    class Hanging(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            release.wait(10)
            return SpanExportResult.SUCCESS

    handle = tracing.setup_tracing(TracingSection(exporter="otlp", sample_ratio=1.0), service_version="t",
                                   environ={}, exporter=Hanging())
    with tracing.start_span("feedagent.rest.poll"):
        pass
    started = time.monotonic()
    assert await handle.shutdown(timeout_seconds=0.3) is False
    assert time.monotonic() - started < 1.0
    assert tracing.active_provider() is None
    release.set()
