"""Live subscribers (/v1/events): one that cannot keep up is disconnected and told why, never fed a stream with holes."""

from __future__ import annotations

import json

import aiohttp

from agent.admin.server import AdminServer
from agent.core.events import PositionEvent, decode_event
from agent.sinks.bus import EventBus, StreamClosed
from tests.integration.harness import eventually
from tests.sinks.test_queue import position


def slow_consumer_drops(metrics) -> float | None:
    return metrics.registry.get_sample_value("feedagent_stream_subscribers_dropped_total", {"reason": "slow_consumer"})


async def test_a_full_subscriber_gets_what_was_queued_then_stream_closed(metrics):
    # Arrange
    bus = EventBus([], metrics)
    slow = bus.subscribe(capacity=3)
    fast = bus.subscribe(capacity=100)
    assert slow_consumer_drops(metrics) == 0
    # Act
    for seq in range(1, 6):
        bus.publish(position(seq), "rest")
    # Assert
    got = [slow.get_nowait() for _ in range(slow.qsize())]
    assert [e.seq for e in got[:-1]] == [1, 2, 3]
    assert got[-1] == StreamClosed("slow_consumer")
    assert [fast.get_nowait().seq for _ in range(fast.qsize())] == [1, 2, 3, 4, 5]
    assert bus.subscribers == 1
    assert slow_consumer_drops(metrics) == 1


async def test_http_stream_of_a_slow_client_ends_with_a_stream_closed_line(metrics):
    # Arrange: /v1/events reads only the bus
    bus = EventBus([], metrics)
    server = AdminServer(host="127.0.0.1", port=0, backend=None, metrics=metrics, bus=bus)  # type: ignore[arg-type]
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/v1/events") as resp:
            await eventually(lambda: bus.subscribers == 1, what="the stream subscribed")
            # Act: more than the stream's queue holds, before the handler gets to run
            for seq in range(1, 10_003):
                bus.publish(position(seq), "rest")
            lines = [line async for line in resp.content]
    finally:
        await server.stop()
    # Assert
    events = [decode_event(line) for line in lines[:-1]]
    assert [e.seq for e in events if isinstance(e, PositionEvent)] == list(range(1, 10_001))
    assert json.loads(lines[-1]) == {"kind": "stream_closed", "reason": "slow_consumer"}
    assert slow_consumer_drops(metrics) == 1
    assert bus.subscribers == 0
