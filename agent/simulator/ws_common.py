"""One simulated WebSocket connection: ordered sends through the fault hooks, the read loop, records.

Venue modules decide what to send; this module decides how it reaches the wire: data frames
pass ``ws_silence`` and ``ws_malformed``, every text frame passes ``ws_delay``, pings are
answered unless ``ws_ignore_ping`` holds, and every frame is counted and (the newest few) kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from agent.simulator.faults import FaultRegistry
from agent.simulator.ratelimit import RollingWindowLimiter
from agent.simulator.rest_common import dumps
from agent.simulator.ws_faults import (
    WS_DELAY, WS_IGNORE_PING, WS_MALFORMED, WS_SILENCE, malformed_frames, silenced,
)

log = logging.getLogger(__name__)

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
# More frames than this waiting to be written (a delay fault, a stalled client) closes the connection.
MAX_BACKLOG_FRAMES = 10_000
# How long a server-initiated close waits for the client's close frame.
CLOSE_TIMEOUT_SECONDS = 1.0

TextHandler = Callable[["WsConnection", str], Awaitable[None]]
Spawn = Callable[[Awaitable[Any], str], None]


def new_response() -> web.WebSocketResponse:
    """A server socket that leaves ping/pong to the simulator (so faults and records can see them)."""
    return web.WebSocketResponse(autoping=False, autoclose=True, compress=False, timeout=CLOSE_TIMEOUT_SECONDS)


class WsConnection:
    """A live (or finished) connection of one venue and stream.

    ``stream`` names the route (Bybit ``public``/``private``; Binance ``market``, ``private``,
    ``public`` or ``legacy``); ``fault_stream`` is the stream faults select it by.
    """

    def __init__(self, *, number: int, venue: str, stream: str, fault_stream: str, path: str,
                 ws: web.WebSocketResponse, request: web.Request, faults: FaultRegistry, conn_id: str,
                 server_ms: Callable[[], int], totals: Counter[str], record_frames: int, spawn: Spawn) -> None:
        self.number = number
        self.venue, self.stream, self.fault_stream, self.path = venue, stream, fault_stream, path
        self.conn_id = conn_id
        self.ws, self.request, self._faults = ws, request, faults
        self.server_ms = server_ms
        self._spawn = spawn
        self.totals = totals
        self.counters: Counter[str] = Counter()
        self.sent: deque[tuple[int, str]] = deque(maxlen=record_frames)
        self.received: deque[tuple[int, str]] = deque(maxlen=record_frames)
        self.subscriptions: list[str] = []
        self.state: dict[str, Any] = {}
        self.authenticated = False
        # Once muted (listenKey expired) the connection stays open but carries no more data.
        self.muted = False
        self.opened_mono = time.monotonic()
        self.opened_ms = server_ms()
        self.closed = False
        self.close_reason: str | None = None
        self.close_code: int | None = None
        # Limits and heartbeats; None switches each off. The hub's housekeeping enforces them.
        self.max_age_seconds: float | None = None
        self.idle_timeout_seconds: float | None = None
        self.last_heartbeat_mono = self.opened_mono
        self.ping_interval_seconds: float | None = None
        self.pong_timeout_seconds: float | None = None
        self.next_ping_mono = self.opened_mono
        self.unanswered_ping_since: float | None = None
        self.rate_limiter: RollingWindowLimiter | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name=f"simulator/ws-{venue}-{stream}-{number}")

    # -- bookkeeping -------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        """Add to this connection's counter and the venue/stream totals."""
        self.counters[name] += n
        self.totals[name] += n

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for ``ws_stats()``."""
        return {"id": self.number, "venue": self.venue, "stream": self.stream, "path": self.path,
                "conn_id": self.conn_id, "open": not self.closed, "opened_ms": self.opened_ms,
                "close_reason": self.close_reason, "close_code": self.close_code,
                "authenticated": self.authenticated, "muted": self.muted,
                "subscriptions": list(self.subscriptions), "counters": dict(self.counters)}

    def sent_texts(self) -> list[str]:
        """The recorded text frames sent, oldest first."""
        return [text for _, text in self.sent]

    def received_texts(self) -> list[str]:
        """The recorded text frames received, oldest first."""
        return [text for _, text in self.received]

    # -- sending -----------------------------------------------------------------------------

    def send_control(self, payload: Any) -> None:
        """Queue an ack, pong or error (faults other than ws_delay leave these alone)."""
        self._enqueue("text", dumps(payload), "control")

    def send_data(self, payload: Any) -> bool:
        """Queue a data frame through ws_silence and ws_malformed; False if it was not sent."""
        if self.closed or self.muted:
            return False
        silence = self._faults.peek(self.venue, WS_SILENCE.name, stream=self.fault_stream)
        if silence is not None:
            kept = silenced(payload, silence)
            if kept is not payload:
                self._faults.take(self.venue, WS_SILENCE.name, stream=self.fault_stream)
                self.count("silenced_frames")
            if kept is None:
                return False
            payload = kept
        text = dumps(payload)
        fault = self._faults.take(self.venue, WS_MALFORMED.name, stream=self.fault_stream)
        texts = [text] if fault is None else malformed_frames(self.venue, payload, text, fault)
        if fault is not None:
            self.count("malformed_frames")
        for item in texts:
            self._enqueue("text", item, "data")
        return True

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping frame (Binance pings its clients)."""
        self._enqueue("ping", payload, "ping")

    def _enqueue(self, kind: str, item: Any, label: str) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= MAX_BACKLOG_FRAMES:
            self.request_close(POLICY_VIOLATION, "backlog")
            return
        self._queue.put_nowait((kind, (item, label)))

    async def _write_loop(self) -> None:
        try:
            while True:
                kind, (item, label) = await self._queue.get()
                if kind == "end":
                    return
                if kind == "ping":
                    await self.ws.ping(item)
                    self.count("pings_sent")
                    continue
                fault = self._faults.take(self.venue, WS_DELAY.name, stream=self.fault_stream)
                if fault is not None:
                    self.count("delayed_frames")
                    await asyncio.sleep(float(fault.params["delay_seconds"]))
                await self.ws.send_str(item)
                self.sent.append((self.server_ms(), item))
                self.count("frames_sent")
                self.count(f"{label}_frames_sent")
        except (ConnectionError, RuntimeError) as e:
            # The peer went away under us; the read loop sees it too and records the close.
            log.debug("simulator ws write failed", extra={"event": "simulator_ws_write_failed", "error": str(e)})

    # -- closing -----------------------------------------------------------------------------

    def request_close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close from synchronous code (housekeeping, fault listeners); the handshake runs as a task."""
        if self.closed:
            return
        self._finish(reason, code, flush=flush)
        self._spawn(self._close_handshake(code, reason), f"simulator/ws-close-{self.number}")

    async def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """A close handshake initiated by the server; with ``flush`` the frames queued before go first."""
        if self.closed:
            return
        self._finish(reason, code, flush=flush)
        await self._close_handshake(code, reason)

    async def _close_handshake(self, code: int, reason: str) -> None:
        # Frames queued before the close leave first (a stuck writer gets a bounded wait).
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT_SECONDS)
        self._writer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())

    def abort(self, reason: str) -> None:
        """Drop the TCP connection without a close frame."""
        if self.closed:
            return
        self._finish(reason, None, flush=False)
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def _finish(self, reason: str, code: int | None, *, flush: bool) -> None:
        self.closed = True
        self.close_reason, self.close_code = reason, code
        self.totals[f"closed:{reason}"] += 1
        if flush:
            self._queue.put_nowait(("end", (None, "")))
        else:
            self._writer.cancel()

    def finished_by_client(self) -> None:
        """The read loop ended without a server-side close: the client closed or vanished."""
        if not self.closed:
            self._finish("client", self.ws.close_code, flush=False)

    async def wait_writer(self) -> None:
        """Wait for the writer task to end after a close."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    # -- receiving ---------------------------------------------------------------------------

    def note_heartbeat(self) -> None:
        """The client proved it is alive (Bybit JSON ping): restarts the idle timer."""
        self.last_heartbeat_mono = time.monotonic()

    def ignores_ping(self) -> bool:
        """True (using one count, and counting the ping as ignored) while ``ws_ignore_ping`` holds."""
        if self._faults.take(self.venue, WS_IGNORE_PING.name, stream=self.fault_stream) is None:
            return False
        self.count("pings_ignored")
        return True

    def over_rate(self) -> bool:
        """Count one incoming message against the rate limit; True once it is exceeded."""
        if self.rate_limiter is None:
            return False
        return not self.rate_limiter.acquire(time.monotonic_ns() // 1_000_000).allowed


async def serve(conn: WsConnection, on_text: TextHandler) -> None:
    """Read frames until the connection ends: count them, answer pings, pass text to ``on_text``."""
    ws = conn.ws
    try:
        async for msg in ws:
            if conn.closed:
                break
            conn.count("frames_received")
            if conn.over_rate():
                await conn.close(POLICY_VIOLATION, "rate_limit")
                break
            if msg.type is WSMsgType.TEXT:
                conn.received.append((conn.server_ms(), msg.data))
                await on_text(conn, msg.data)
            elif msg.type is WSMsgType.PING:
                conn.count("pings_received")
                if not conn.ignores_ping():
                    await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                conn.count("pongs_received")
                conn.unanswered_ping_since = None
            elif msg.type is WSMsgType.ERROR:
                break
    except ConnectionError:
        pass
    finally:
        conn.finished_by_client()
        await conn.wait_writer()
