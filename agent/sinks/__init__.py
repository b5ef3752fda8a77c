"""Sinks: where events go. One runner (queue + spool + writer task) per configured sink."""

from __future__ import annotations

from pathlib import Path

from agent.config.models import JsonlSinkConfig, SinkConfig, StdoutSinkConfig
from agent.sinks.base import Sink, SinkRunner
from agent.sinks.bus import EventBus
from agent.sinks.jsonl import JsonlSink
from agent.sinks.stdout import StdoutSink
from agent.telemetry.metrics import Metrics

__all__ = ["EventBus", "Sink", "SinkRunner", "create_sink", "create_bus"]


def create_sink(config: SinkConfig, index: int) -> Sink:
    """Build the sink an item of the ``sinks`` list describes."""
    if isinstance(config, StdoutSinkConfig):
        return StdoutSink(name="stdout" if index == 0 else f"stdout-{index}")
    if isinstance(config, JsonlSinkConfig):
        return JsonlSink(config.path, fsync=config.fsync, fsync_interval_seconds=config.fsync_interval_seconds,
                         name=f"jsonl-{index}")
    raise TypeError(f"no sink for {type(config).__name__}")


def create_bus(configs: list[SinkConfig], metrics: Metrics, state_dir: Path) -> EventBus:
    """The event bus with one runner per configured sink; their spools live in ``state_dir/spool``."""
    runners = [SinkRunner(create_sink(c, i), c.queue_size, metrics, spool_dir=state_dir / "spool")
               for i, c in enumerate(configs)]
    return EventBus(runners, metrics)
