"""One physical WebSocket connection of a stream: socket, reader, heartbeat, acks.

A ``WsLink`` never reconnects and never closes itself: when something goes
wrong its reader or heartbeat calls ``fail(reason)``, which records the first
reason and sets ``ended``; the owner (``ResilientWebSocket``) then closes it.
That keeps one owner per resource and lets ``close`` cancel the link's tasks
without a task ever cancelling itself.

The reader only classifies frames and hands them on: data goes to a
synchronous callback that must be cheap (see ``ws_delivery``), so a slow
consumer can never delay pongs, acks or the answer to server ping frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from agent.core.tasks import TaskOwner
from agent.telemetry import tracing
from agent.transport.ws_backoff import SlidingWindowLimiter
from agent.transport.ws_config import WsConfig
from agent.transport.ws_spec import (
    AuthAck, Data, Frame, OutgoingRequest, Pong, ServerNotice, SubscribeAck, Unknown, WsProtocol,
)
from agent.transport.ws_subscriptions import LinkTopics, PendingAcks, PendingRequest, RequestKind

log = logging.getLogger(__name__)


class LinkEnded(Exception):
    """The link ended while we were waiting on it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFailed(Exception):
    """A connection attempt failed before the link was established; ``outcome`` is a metric label."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True)
class LinkHooks:
    """What the link reports to its owner; all synchronous, called from the reader or heartbeat."""

    data: Callable[[WsLink, Data, int], None]
    notice: Callable[[WsLink, ServerNotice], None]
    frame: Callable[[str], None]  # kind of a received frame, for counting
    malformed: Callable[[str], None]
    request_done: Callable[[RequestKind, str], None]  # (kind, outcome)
    rtt: Callable[[float], None]


class WsLink:
    """One connection: open, authenticate, (un)subscribe, read, ping, close."""

    def __init__(self, *, protocol: WsProtocol, config: WsConfig, owner: TaskOwner, topics: LinkTopics,
                 hooks: LinkHooks, clock: Callable[[], float], wall_ms: Callable[[], int]) -> None:
        self.protocol = protocol
        self.config = config
        self.topics = topics
        self._owner = owner
        self._hooks = hooks
        self._clock = clock
        self._wall_ms = wall_ms
        self._pending = PendingAcks()
        self._send_lock = asyncio.Lock()
        self._send_limiter = SlidingWindowLimiter(max(1, int(protocol.max_messages_per_second)), 1.0, clock)
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._auth_waiter: asyncio.Future[AuthAck] | None = None
        self._pong_waiter: asyncio.Future[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.app_ping = protocol.ping_request(wall_ms()) is not None
        self.end_reason: str | None = None
        self.end_error: str | None = None
        self.opened_mono: float | None = None
        self.established = False
        self.healthy_since: float | None = None
        self.last_rtt_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended.done()

    @property
    def ended_future(self) -> asyncio.Future[None]:
        """Done once the link ended; wait on it, never cancel it."""
        return self._ended

    def fail(self, reason: str, error: str | None = None) -> None:
        """Mark the link as ended; the first reason wins."""
        if self._ended.done():
            return
        self.end_reason = reason
        self.end_error = error
        self._ended.set_result(None)

    async def open(self, session: aiohttp.ClientSession, url: str, role: str) -> None:
        """Connect and start the reader (and heartbeat); raises ``ConnectFailed``."""
        heartbeat = None if self.app_ping else self.config.ping_interval_seconds
        try:
            async with asyncio.timeout(self.config.connect_timeout_seconds):
                self.ws = await session.ws_connect(
                    url, autoping=True, heartbeat=heartbeat, max_msg_size=self.config.max_message_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.config.close_timeout_seconds))
        except TimeoutError as e:
            raise ConnectFailed("timeout", "connect timed out") from e
        except aiohttp.WSServerHandshakeError as e:
            raise ConnectFailed(handshake_refused_outcome(self.protocol, e.status),
                                f"handshake refused with HTTP {e.status}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectFailed("error", type(e).__name__) from e
        self.opened_mono = self._clock()
        self._tasks["reader"] = self._owner.spawn(f"{role}reader", self._read_loop())
        if self.app_ping:
            self._tasks["heartbeat"] = self._owner.spawn(f"{role}heartbeat", self._heartbeat_loop())

    def rename(self, role: str) -> None:
        """Give the link's tasks the names of a new role (``""`` for the active link, ``"rotation/"``)."""
        for name, task in self._tasks.items():
            task.set_name(f"{self._owner.prefix}/{role}{name}")

    async def close(self, reason: str = "closed") -> None:
        """Cancel the link's tasks and close the socket, each under the close timeout. Idempotent."""
        self.fail(reason)
        if self._closed:
            return
        self._closed = True
        me = asyncio.current_task()
        tasks = [t for t in self._tasks.values() if not t.done() and t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.close_timeout_seconds)
        for pending in self._pending.drain():
            if not pending.future.done():
                pending.future.set_result(None)
        if self.ws is not None and not self.ws.closed:
            try:
                async with asyncio.timeout(self.config.close_timeout_seconds):
                    await self.ws.close()
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                log.debug("close failed", extra={"event": "ws_close_failed", "error": type(e).__name__})

    # -- sending and waiting ---------------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text frame at the protocol's pace; raises ``LinkEnded`` when the link is gone."""
        if self.ended or self.ws is None:
            raise LinkEnded(self.end_reason or "not_open")
        async with self._send_lock:
            await self._send_limiter.acquire()  # a deliberate wait (venue message rate), not a network one
            try:
                async with asyncio.timeout(self.config.send_timeout_seconds):
                    await self.ws.send_str(text)
            except TimeoutError:
                self.fail("send_timeout")
                raise LinkEnded("send_timeout") from None
            except (aiohttp.ClientError, OSError, RuntimeError) as e:
                self.fail("send_failed", type(e).__name__)
                raise LinkEnded("send_failed") from e

    async def wait(self, futures: Sequence[asyncio.Future[object]], timeout_seconds: float) -> None:
        """Wait until every future is done or the timeout passes; ``LinkEnded`` if the link ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        todo = {f for f in futures if not f.done()}
        while todo and not self.ended:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.wait([*todo, self._ended], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            todo = {f for f in todo if not f.done()}
        if self.ended:
            raise LinkEnded(self.end_reason or "ended")

    async def authenticate(self) -> None:
        """Send the auth request (if any) and wait for its ack; raises ``ConnectFailed``."""
        text = self.protocol.auth_request(self._wall_ms())
        if text is None:
            return
        with tracing.start_span("feedagent.ws.auth"):  # a failure's ``error.type`` is the ConnectFailed outcome
            waiter: asyncio.Future[AuthAck] = asyncio.get_running_loop().create_future()
            self._auth_waiter = waiter
            try:
                await self.send(text)
                await self.wait([waiter], self.config.auth_timeout_seconds)
            except LinkEnded as e:
                raise ConnectFailed("closed_during_setup", e.reason) from e
            finally:
                self._auth_waiter = None
            if not waiter.done():
                raise ConnectFailed("auth_timeout", "no auth ack in time")
            ack = waiter.result()
            if not ack.ok:
                raise ConnectFailed("auth_rejected", ack.reason[:200])

    async def request(self, kind: RequestKind, topics: Sequence[str]) -> list[PendingRequest]:
        """Send (un)subscribe requests for ``topics``; returns the requests awaiting an ack.

        Subscribed topics must already be tracked in ``self.topics``. Requests
        are registered before they are sent, so an ack can never beat them.
        """
        if not topics:
            return []
        build = self.protocol.subscribe_requests if kind == "subscribe" else self.protocol.unsubscribe_requests
        outgoing: list[OutgoingRequest] = build(list(topics))
        if not outgoing and kind == "subscribe":
            self.topics.on_sent_without_ack(topics, self._clock())  # the URL subscribes (Binance private)
        loop = asyncio.get_running_loop()
        waiting: list[PendingRequest] = []
        for req in outgoing:
            pending = None
            if req.expects_ack:
                pending = PendingRequest(req, kind, self._clock(), loop.create_future())
                self._pending.add(pending)
                waiting.append(pending)
            await self.send(req.text)
            if pending is None and kind == "subscribe":
                self.topics.on_sent_without_ack(req.topics, self._clock())
        return waiting

    def expire(self, requests: Sequence[PendingRequest] | None = None) -> None:
        """Treat unanswered requests as failed: the given ones, or every one past the ack timeout."""
        now = self._clock()
        if requests is None:
            overdue = self._pending.expired(now, self.config.subscribe_ack_timeout_seconds)
        else:
            overdue = [p for p in requests if not p.future.done() and self._pending.remove(p)]
        for pending in overdue:
            self._complete(pending, None, now)

    def _complete(self, pending: PendingRequest, ack: SubscribeAck | None, now: float) -> None:
        if pending.kind == "subscribe":
            self.topics.on_ack(pending.request.topics, ack, now)
        outcome = "timeout" if ack is None else ("ok" if ack.ok and not ack.failed_topics else "rejected")
        self._hooks.request_done(pending.kind, outcome)
        if not pending.future.done():
            pending.future.set_result(ack)

    # -- reader and heartbeat --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self.ws is not None
        ws = self.ws
        try:
            while not self.ended:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    try:
                        self._on_text(msg.data.decode("utf-8"))
                    except UnicodeDecodeError:
                        self._hooks.malformed("binary")
                elif msg.type is aiohttp.WSMsgType.CLOSE or msg.type is aiohttp.WSMsgType.CLOSING:
                    self.fail("closed_by_server", f"close code {ws.close_code}")
                elif msg.type is aiohttp.WSMsgType.CLOSED:
                    self.fail("connection_lost", f"close code {ws.close_code}")
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    error = msg.data
                    reason = "pong_timeout" if isinstance(error, aiohttp.ServerTimeoutError) else "error"
                    self.fail(reason, type(error).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a crash in the reader must end the link, never the stream
            log.exception("reader failed", extra={"event": "ws_reader_failed"})
            self.fail("error", type(e).__name__)

    def _on_text(self, text: str) -> None:
        received_ms = self._wall_ms()
        try:
            frame: Frame = self.protocol.classify(text)
        except Exception as e:  # the adapter's classify should not raise; count and move on if it does
            self._hooks.malformed(type(e).__name__)
            return
        if isinstance(frame, Data):
            self._hooks.data(self, frame, received_ms)
        elif isinstance(frame, Pong):
            self._hooks.frame("pong")
            if self._pong_waiter is not None and not self._pong_waiter.done():
                self._pong_waiter.set_result(None)
        elif isinstance(frame, SubscribeAck):
            self._hooks.frame("subscribe_ack")
            pending = self._pending.match(frame)
            if pending is None:
                self._hooks.frame("ack_unmatched")
            else:
                self._complete(pending, frame, self._clock())
        elif isinstance(frame, AuthAck):
            self._hooks.frame("auth_ack")
            if self._auth_waiter is not None and not self._auth_waiter.done():
                self._auth_waiter.set_result(frame)
        elif isinstance(frame, ServerNotice):
            self._hooks.frame("notice")
            self._hooks.notice(self, frame)
        elif isinstance(frame, Unknown):
            self._hooks.frame("unknown")
        else:
            self._hooks.malformed("not_a_frame")

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.ended:
            await asyncio.sleep(self.config.ping_interval_seconds)
            text = self.protocol.ping_request(self._wall_ms())
            if text is None:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._pong_waiter = waiter
            sent = self._clock()
            try:
                await self.send(text)
                async with asyncio.timeout(self.config.pong_timeout_seconds):
                    await waiter
            except LinkEnded:
                return
            except TimeoutError:
                self.fail("pong_timeout", f"no pong within {self.config.pong_timeout_seconds} s")
                return
            finally:
                self._pong_waiter = None
            self.last_rtt_seconds = self._clock() - sent
            self._hooks.rtt(self.last_rtt_seconds)


def handshake_refused_outcome(protocol: WsProtocol, status: int) -> str:
    """``auth_rejected`` when a stream whose URL carries its credential is refused with a client error, else ``rejected``.

    Such a stream (Binance's user data stream: the listenKey is in the path)
    has no auth frame to refuse; a dead or foreign key is refused at the
    handshake, and the auth-failure health check must see that. 408 and 429
    say "not now", not "not you".
    """
    credential_in_url = getattr(protocol, "credential_in_url", False)
    if credential_in_url and 400 <= status < 500 and status not in (408, 429):
        return "auth_rejected"
    return "rejected"


def wall_ms() -> int:
    """Unix time in ms; callers pass a server-corrected clock for signing."""
    return int(time.time() * 1000)
