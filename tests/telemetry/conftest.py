"""Tracing tests: no OTEL_* variable of the developer's shell may leak in, and no test leaves tracing on."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.config.models import TracingSection
from agent.telemetry import tracing


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    assert tracing.active_provider() is None, "a test left tracing on"


class Traced:
    """Tracing set up with an in-memory exporter; ``await spans()`` flushes and returns what was exported."""

    def __init__(self, ratio: float, **section: object) -> None:
        self.exporter = InMemorySpanExporter()
        config = TracingSection(exporter="otlp", sample_ratio=ratio, **section)  # type: ignore[arg-type]
        self.handle = tracing.setup_tracing(config, service_version="test", environ={}, exporter=self.exporter)
        assert self.handle.keeper is not None
        self.keeper = self.handle.keeper

    async def spans(self) -> list:  # type: ignore[type-arg]
        assert await self.handle.flush(5.0)
        return list(self.exporter.get_finished_spans())


@pytest.fixture
async def traced(request: pytest.FixtureRequest) -> AsyncIterator[Traced]:
    """``@pytest.mark.parametrize("traced", [ratio], indirect=True)``; default ratio 0."""
    t = Traced(getattr(request, "param", 0.0))
    try:
        yield t
    finally:
        await t.handle.shutdown(5.0)
