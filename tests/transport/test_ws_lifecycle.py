"""Lifecycle: idempotent start/stop, bounded stop, no task growth across reconnects, timeouts everywhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.ws import ResilientWebSocket
from agent.transport.ws_config import WsState
from tests.transport.test_ws_harness import (
    EXCHANGE, STREAM, JsonTestProtocol, Recorder, eventually, fake_server, fast_config, sample, stream,
)

PREFIX = f"{EXCHANGE}/{STREAM}/"
BASE_TASKS = {PREFIX + name for name in ("run", "watchdog", "reader", "heartbeat")}


def loop_tasks() -> set[str]:
    """Names of every task on the loop that belongs to the stream (not only those it tracks)."""
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(PREFIX) and not t.done()}


@asynccontextmanager
async def blackhole() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: the upgrade hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"ws://{host}:{port}/ws"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_stop_without_start_and_twice_is_harmless() -> None:
    ws = ResilientWebSocket(JsonTestProtocol("ws://127.0.0.1:9/ws"), exchange=EXCHANGE, stream=STREAM,
                            config=fast_config())
    await ws.stop()
    await ws.stop()
    assert ws.state is WsState.STOPPED and ws.task_names() == []


async def test_start_is_idempotent_and_stop_twice_is_harmless() -> None:
    async with fake_server() as server:
        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM,
                                config=fast_config())
        await ws.start()
        await ws.start()
        await eventually(lambda: ws.healthy)
        assert len(server.conns) == 1 and set(ws.task_names()) == BASE_TASKS
        await ws.stop()
        await ws.stop()
        assert ws.task_names() == [] and loop_tasks() == set()
        await eventually(lambda: server.conns[0].closed is not None, what="server saw the close")


async def test_task_set_does_not_grow_across_twenty_reconnects() -> None:
    async with fake_server(tick_seconds=0.002) as server:
        server.drop_after_frames = 2
        async with stream(JsonTestProtocol(server.url)) as ws:
            await ws.subscribe(["a", "b"])
            seen: set[str] = set()
            most = 0

            def churned() -> bool:
                nonlocal most
                names = loop_tasks()
                seen.update(names)
                most = max(most, len(names))
                return ws.reconnects >= 20

            await eventually(churned, timeout_seconds=10.0, what="20 reconnects")
            server.drop_after_frames = None
            await eventually(lambda: ws.healthy)
            assert set(ws.task_names()) == BASE_TASKS
            assert loop_tasks() == BASE_TASKS  # nothing untracked either
            assert seen <= BASE_TASKS and most <= len(BASE_TASKS)
            assert len(server.conns) >= 21


async def test_stop_is_bounded_when_the_server_stalls() -> None:
    async with fake_server() as server:
        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM,
                                config=fast_config(stop_timeout_seconds=1.0, close_timeout_seconds=0.2))
        await ws.start()
        await ws.subscribe(["a"])
        await eventually(lambda: ws.healthy)
        server.stall = True  # reads nothing more: the close handshake will never complete
        await eventually(lambda: server.stalled == 1, what="server stalled (on the next ping)")
        start = time.monotonic()
        await ws.stop()
        assert time.monotonic() - start < 1.0 + 0.2
        assert ws.task_names() == [] and loop_tasks() == set()


async def test_stop_during_a_hanging_connect_is_prompt() -> None:
    async with blackhole() as url:
        metrics = Metrics(CollectorRegistry())
        ws = ResilientWebSocket(JsonTestProtocol(url), exchange=EXCHANGE, stream=STREAM, metrics=metrics,
                                config=fast_config(connect_timeout_seconds=0.1))
        await ws.start()
        await eventually(lambda: sample(metrics, "feedagent_ws_connects_total", outcome="timeout") >= 2,
                         what="connect timeouts counted")
        assert ws.state in (WsState.CONNECTING, WsState.BACKOFF)
        start = time.monotonic()
        await ws.stop()
        assert time.monotonic() - start < 0.5
        assert loop_tasks() == set()


async def test_stop_during_backoff_is_prompt() -> None:
    async with fake_server() as server:
        server.reject_upgrades = True
        config = fast_config(backoff_initial_seconds=5.0, backoff_max_seconds=5.0)
        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM, config=config,
                                rng=lambda: 1.0)
        await ws.start()
        await eventually(lambda: ws.state is WsState.BACKOFF)
        start = time.monotonic()
        await ws.stop()
        assert time.monotonic() - start < 0.5 and loop_tasks() == set()


async def test_hanging_on_connected_hook_times_out_and_the_stream_goes_on() -> None:
    async with fake_server() as server:
        metrics = Metrics(CollectorRegistry())
        hung = asyncio.Event()

        async def on_connected(generation: int) -> None:
            hung.set()
            await asyncio.Event().wait()

        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM, metrics=metrics,
                                config=fast_config(hook_timeout_seconds=0.1), on_connected=on_connected)
        await ws.start()
        try:
            await ws.subscribe(["a"])
            await eventually(lambda: sample(metrics, "feedagent_ws_callback_errors_total",
                                            callback="on_connected") == 1)
            server.abort_all()
            await eventually(lambda: len(server.conns) == 2 and ws.healthy, what="reconnect after the hook")
        finally:
            await ws.stop()


async def test_restart_after_stop_replays_the_registry() -> None:
    async with fake_server() as server:
        rec = Recorder()
        ws = ResilientWebSocket(JsonTestProtocol(server.url), exchange=EXCHANGE, stream=STREAM,
                                config=fast_config(), on_data=rec.on_data)
        await ws.start()
        await ws.subscribe(["a", "b"])
        await eventually(lambda: ws.healthy)
        await ws.stop()
        await ws.start()
        try:
            await eventually(lambda: len(server.conns) == 2 and ws.healthy)
            assert sorted(server.conns[1].topics_of("sub")) == ["a", "b"]
        finally:
            await ws.stop()
