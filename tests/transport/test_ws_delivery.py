"""Receive is separate from processing: latest-wins for streaming topics, bounded FIFO for events."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.ws import ResilientWebSocket
from agent.transport.ws_delivery import WsDataQueue
from tests.transport.test_ws_harness import (
    EXCHANGE, STREAM, JsonTestProtocol, eventually, fake_server, fast_config, sample,
)


def streaming(topic: str) -> bool:
    return not topic.startswith("evt.")


def drain(queue: WsDataQueue) -> list[tuple[str, object]]:
    out = []
    while (message := queue.get_nowait()) is not None:
        out.append((message.topic, message.payload))
    return out


def test_streaming_topics_are_coalesced_in_place_and_events_keep_order() -> None:
    metrics = Metrics(CollectorRegistry())
    queue = WsDataQueue(streaming, metrics=metrics, exchange=EXCHANGE, stream=STREAM)
    queue.put("mark.BTC", 1, 0)
    queue.put("evt.pos", "open", 0)
    queue.put("mark.ETH", 10, 0)
    queue.put("mark.BTC", 2, 0)  # replaces 1, keeps its turn before evt.pos
    queue.put("evt.pos", "update", 0)
    queue.put("mark.BTC", 3, 0)
    assert drain(queue) == [("mark.BTC", 3), ("evt.pos", "open"), ("mark.ETH", 10), ("evt.pos", "update")]
    assert queue.coalesced == 2
    assert sample(metrics, "feedagent_ws_delivery_dropped_total", reason="coalesced") == 2
    assert len(queue) == 0


def test_event_overflow_drops_the_oldest_and_counts_it() -> None:
    metrics = Metrics(CollectorRegistry())
    queue = WsDataQueue(streaming, max_events=3, metrics=metrics, exchange=EXCHANGE, stream=STREAM)
    for i in range(5):
        queue.put("evt.pos", i, 0)
    assert drain(queue) == [("evt.pos", 2), ("evt.pos", 3), ("evt.pos", 4)]
    assert queue.overflowed == 2
    assert sample(metrics, "feedagent_ws_delivery_dropped_total", reason="overflow") == 2


async def test_get_waits_for_the_next_message() -> None:
    queue = WsDataQueue(streaming)
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put("mark.BTC", 1, 123)
    message = await asyncio.wait_for(getter, 1.0)
    assert (message.topic, message.payload, message.ts_received_ms) == ("mark.BTC", 1, 123)


async def test_slow_consumer_never_stalls_the_connection() -> None:
    async with fake_server(tick_seconds=0.002) as server:
        metrics = Metrics(CollectorRegistry())
        queue = WsDataQueue(streaming, max_events=100, metrics=metrics, exchange=EXCHANGE, stream=STREAM)
        consumed: list[object] = []
        release = asyncio.Event()

        async def slow_consumer() -> None:
            while True:
                message = await queue.get()
                consumed.append(message.payload)
                await release.wait()  # stuck on the first message, like a blocked sink

        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM,
                                config=fast_config(), metrics=metrics, on_data=queue.put)
        consumer = asyncio.ensure_future(slow_consumer())
        await ws.start()
        try:
            await ws.subscribe(["mark.a", "mark.b"])
            rtts = sample(metrics, "feedagent_ws_heartbeat_rtt_seconds_count")
            await eventually(lambda: queue.coalesced > 100, what="many updates coalesced")
            await eventually(lambda: sample(metrics, "feedagent_ws_heartbeat_rtt_seconds_count") > rtts + 3)
            assert ws.healthy and len(server.conns) == 1  # pongs and data kept flowing
            assert len(queue) <= 2  # one waiting value per streaming topic
            assert len(consumed) == 1
            release.set()
            await eventually(lambda: len(consumed) > 10, what="consumer catches up")
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await ws.stop()
