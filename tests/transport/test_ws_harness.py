"""Harness for the WebSocket transport tests (no tests here): a JSON test protocol and a fake server.

The fake server is a real aiohttp WebSocket server on 127.0.0.1:0 with knobs
for the faults of ``reference/failure-modes.md``: drop after N frames, go
silent with the socket open, stop answering pings (application or frame),
reject auth, fail a subscribe, delay acks, send malformed or unknown frames,
close with a code, reset the TCP connection, refuse the upgrade, stall.
Data is published by one ticker with one sequence number per topic shared by
every connection, so a consumer can check for gaps across reconnects and
rotations. Times are on ``time.monotonic``, the clock of the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.ws import ResilientWebSocket
from agent.transport.ws_config import WsConfig
from agent.transport.ws_spec import (
    AuthAck, Data, Frame, OutgoingRequest, Pong, ServerNotice, SubscribeAck, Unknown, WsProtocol,
)

EXCHANGE = "test-ex"
STREAM = "public"


async def eventually(predicate: Callable[[], bool], timeout_seconds: float = 3.0, what: str = "condition") -> float:
    """Poll until ``predicate()`` holds; returns the seconds it took. Fails after the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_seconds:
            raise AssertionError(f"{what} not met within {timeout_seconds} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def fast_config(**overrides: Any) -> WsConfig:
    """Timers in tens of milliseconds so that a whole file runs in seconds."""
    values: dict[str, Any] = dict(
        connect_timeout_seconds=1.0, auth_timeout_seconds=0.3, subscribe_ack_timeout_seconds=0.3,
        send_timeout_seconds=0.5, close_timeout_seconds=0.2, hook_timeout_seconds=0.5, stop_timeout_seconds=1.0,
        ping_interval_seconds=0.05, pong_timeout_seconds=0.1, watchdog_interval_seconds=0.01,
        backoff_initial_seconds=0.005, backoff_max_seconds=0.05, backoff_reset_after_seconds=0.2,
        subscribe_retry_initial_seconds=0.02, subscribe_retry_max_seconds=0.1,
        connect_budget_max_attempts=1000, connect_budget_window_seconds=1.0)
    values.update(overrides)
    return WsConfig(**values)


class JsonTestProtocol(WsProtocol):
    """A small JSON protocol spoken by ``FakeWsServer`` (not a real venue).

    Topics starting with ``evt.`` are event-driven (no data-age liveness).
    """

    max_topics_per_connection = 50
    max_messages_per_second = 1000.0

    def __init__(self, url: str, *, auth: bool = True, app_ping: bool = True, stale_after: float = 0.15,
                 batch: int = 2) -> None:
        self._url = url
        self._auth = auth
        self._app_ping = app_ping
        self._stale_after = stale_after
        self._batch = batch
        self._ids = itertools.count(1)
        self.url_calls = 0

    async def url(self) -> str:
        self.url_calls += 1
        return self._url

    def auth_request(self, now_ms: int) -> str | None:
        return json.dumps({"op": "auth", "key": "test-key", "ts": now_ms}) if self._auth else None

    def _requests(self, op: str, topics: Sequence[str]) -> list[OutgoingRequest]:
        out = []
        for i in range(0, len(topics), self._batch):
            chunk = tuple(topics[i:i + self._batch])
            rid = str(next(self._ids))
            out.append(OutgoingRequest(json.dumps({"op": op, "id": rid, "topics": chunk}), chunk, rid))
        return out

    def subscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("sub", topics)

    def unsubscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("unsub", topics)

    def ping_request(self, now_ms: int) -> str | None:
        return json.dumps({"op": "ping", "ts": now_ms}) if self._app_ping else None

    def classify(self, text: str) -> Frame:
        msg = json.loads(text)  # malformed JSON raises: the connection counts it and moves on
        if not isinstance(msg, dict):
            return Unknown("not an object")
        if "topic" in msg:
            return Data(msg["topic"], msg)
        op = msg.get("op")
        if op == "pong":
            return Pong()
        if op == "auth":
            return AuthAck(bool(msg.get("ok")), msg.get("reason", ""))
        if op == "ack":
            return SubscribeAck(msg.get("id"), bool(msg.get("ok")), msg.get("reason", ""),
                                tuple(msg.get("failed", ())))
        if op == "notice":
            return ServerNotice(msg.get("kind", ""), msg, msg.get("action", "none"))
        return Unknown(f"op {op!r}")

    def stale_after_seconds(self, topic: str) -> float | None:
        return None if topic.startswith("evt.") else self._stale_after


@dataclass(eq=False)
class Conn:
    """One server-side connection and what it saw."""

    index: int
    ws: web.WebSocketResponse
    request: web.Request
    opened: float
    closed: float | None = None
    authed: bool = False
    subscribed: set[str] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)
    pong_payloads: list[bytes] = field(default_factory=list)
    data_sent: int = 0

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("op") == op]

    def topics_of(self, op: str) -> list[str]:
        return [t for m in self.ops(op) for t in m["topics"]]

    def times_of(self, op: str, topic: str) -> list[float]:
        """When requests of ``op`` covering ``topic`` arrived (monotonic)."""
        return [m["_at"] for m in self.ops(op) if topic in m["topics"]]


class FakeWsServer:
    """A WebSocket server on 127.0.0.1 with fault knobs (see module docstring)."""

    def __init__(self, *, tick_seconds: float = 0.01) -> None:
        self.tick_seconds = tick_seconds
        # knobs
        self.reject_upgrades = False
        self.reject_auth = False
        self.reject_auth_from_conn: int | None = None  # reject auth on connections with index >= this
        self.ack_delay_seconds = 0.0
        self.fail_topics: dict[str, int] = {}  # topic -> rejections left (-1: always)
        self.answer_pings = True
        self.answer_ping_frames = True
        self.silent = False
        self.silent_topics: set[str] = set()
        self.silent_conns: set[int] = set()  # connection indexes that get no data
        self.silent_until_resubscribed: set[str] = set()
        self.drop_after_frames: int | None = None
        self.drop_mode = "close"  # or "abort" (TCP reset)
        self.stall = False
        self.ping_frames_every: float | None = None
        # records
        self.stalled = 0
        self.attempts: list[float] = []
        self.auth_times: list[float] = []
        self.conns: list[Conn] = []
        self.seq: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = ""

    # -- lifecycle --

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"ws://{host}:{port}/ws"
        self._spawn(self._ticker())
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.abort_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- views --

    def open_conns(self) -> list[Conn]:
        return [c for c in self.conns if c.closed is None]

    @property
    def last(self) -> Conn:
        return self.conns[-1]

    # -- actions --

    async def send_all(self, payload: str | dict[str, Any]) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        for conn in self.open_conns():
            await conn.ws.send_str(text)

    async def close_all(self, code: int = 1001) -> None:
        for conn in self.open_conns():
            await conn.ws.close(code=code, message=b"going away")

    def abort_all(self) -> None:
        for conn in self.open_conns():
            if conn.request.transport is not None:
                conn.request.transport.abort()

    # -- server side --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        if self.reject_upgrades:
            return web.Response(status=503, text="try later")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = Conn(len(self.conns), ws, request, time.monotonic())
        self.conns.append(conn)
        if self.ping_frames_every:
            self._spawn(self._ping_frames(conn))
        try:
            async for msg in ws:
                if self.stall:
                    self.stalled += 1
                    await asyncio.Event().wait()  # hold the socket and read nothing more
                if msg.type is WSMsgType.PING:
                    if self.answer_ping_frames:
                        await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.pong_payloads.append(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await self._on_text(conn, json.loads(msg.data))
        finally:
            conn.closed = time.monotonic()
        return ws

    async def _on_text(self, conn: Conn, msg: dict[str, Any]) -> None:
        msg["_at"] = time.monotonic()
        conn.received.append(msg)
        op = msg.get("op")
        if op == "ping" and self.answer_pings:
            await conn.ws.send_str(json.dumps({"op": "pong"}))
        elif op == "auth":
            self.auth_times.append(time.monotonic())
            reject = self.reject_auth or (self.reject_auth_from_conn is not None
                                          and conn.index >= self.reject_auth_from_conn)
            conn.authed = not reject
            reply = {"op": "auth", "ok": not reject, "reason": "invalid key" if reject else ""}
            self._spawn(self._reply(conn, reply, 0.0))
        elif op in ("sub", "unsub"):
            topics = list(msg["topics"])
            failed = [t for t in topics if op == "sub" and self._should_fail(t)]
            if op == "sub":
                conn.subscribed.update(t for t in topics if t not in failed)
                self.silent_until_resubscribed.difference_update(topics)
            else:
                conn.subscribed.difference_update(topics)
            reply: dict[str, Any] = {"op": "ack", "id": msg["id"], "ok": len(failed) < len(topics)}
            if failed and reply["ok"]:
                reply["failed"] = failed  # partial success: some topics rejected
            elif failed:
                reply["reason"] = "unknown topic"
            self._spawn(self._reply(conn, reply, self.ack_delay_seconds))

    def _should_fail(self, topic: str) -> bool:
        left = self.fail_topics.get(topic, 0)
        if left == 0:
            return False
        if left > 0:
            self.fail_topics[topic] = left - 1
        return True

    async def _reply(self, conn: Conn, reply: dict[str, Any], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if conn.closed is None:
            try:
                await conn.ws.send_str(json.dumps(reply))
            except ConnectionError:
                pass

    async def _ping_frames(self, conn: Conn) -> None:
        payloads = itertools.count()
        while conn.closed is None:
            await asyncio.sleep(self.ping_frames_every or 1.0)
            try:
                await conn.ws.ping(f"p{next(payloads)}".encode())
            except ConnectionError:
                return

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            conns = self.open_conns()
            topics = sorted({t for c in conns for t in c.subscribed if not t.startswith("evt.")})
            for topic in topics:
                self.seq[topic] = self.seq.get(topic, 0) + 1
                frame = json.dumps({"topic": topic, "seq": self.seq[topic]})
                for conn in conns:
                    if topic in conn.subscribed and not self._muted(topic) and conn.index not in self.silent_conns:
                        await self._send_data(conn, frame)

    def _muted(self, topic: str) -> bool:
        return self.silent or topic in self.silent_topics or topic in self.silent_until_resubscribed

    async def _send_data(self, conn: Conn, frame: str) -> None:
        if conn.closed is not None or conn.ws.closed:
            return
        if self.drop_after_frames is not None and conn.data_sent >= self.drop_after_frames:
            if self.drop_mode == "abort":
                if conn.request.transport is not None:
                    conn.request.transport.abort()
            else:
                await conn.ws.close(code=1001)
            return
        try:
            await conn.ws.send_str(frame)
            conn.data_sent += 1
        except ConnectionError:
            pass


class Recorder:
    """Hand-written stub for the callbacks: records what the stream delivered."""

    def __init__(self) -> None:
        self.data: list[tuple[str, int]] = []
        self.connected: list[int] = []
        self.disconnected: list[str] = []
        self.notices: list[ServerNotice] = []

    def on_data(self, topic: str, payload: object, ts_received_ms: int) -> None:
        assert isinstance(payload, dict)
        self.data.append((topic, payload["seq"]))

    async def on_connected(self, generation: int) -> None:
        self.connected.append(generation)

    def on_disconnected(self, reason: str) -> None:
        self.disconnected.append(reason)

    def on_notice(self, notice: ServerNotice) -> None:
        self.notices.append(notice)

    def seqs(self, topic: str) -> list[int]:
        return [s for t, s in self.data if t == topic]


@asynccontextmanager
async def fake_server(**knobs: Any):
    server = FakeWsServer(**knobs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def stream(protocol: WsProtocol, *, config: WsConfig | None = None, recorder: Recorder | None = None,
                 metrics: Metrics | None = None, **kwargs: Any):
    """A started ``ResilientWebSocket`` wired to a recorder; stopped on exit."""
    rec = recorder or Recorder()
    ws = ResilientWebSocket(
        protocol, exchange=EXCHANGE, stream=STREAM, config=config or fast_config(),
        metrics=metrics or Metrics(CollectorRegistry()), on_data=rec.on_data, on_connected=rec.on_connected,
        on_disconnected=rec.on_disconnected, on_notice=rec.on_notice, **kwargs)
    await ws.start()
    try:
        yield ws
    finally:
        await ws.stop()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric sample's value (0 when absent), with the stream's labels filled in."""
    value = metrics.registry.get_sample_value(name, {"exchange": EXCHANGE, "stream": STREAM, **labels})
    return value or 0.0


def has_gap(seqs: list[int]) -> bool:
    """Whether the de-duplicated sequence misses a number between its first and last."""
    unique = sorted(set(seqs))
    return bool(unique) and unique != list(range(unique[0], unique[-1] + 1))
