"""Links and their subscriptions: establish (budget → URL → open → auth → replay), keep up, close.

A link counts as established once every registered topic was requested and
each request was acked, rejected or timed out. The replay loops until the
registry stops changing under it, and marks the link established with no
await in between, so a concurrent ``subscribe``/``unsubscribe`` is either
replayed here or sent on the established link by the caller, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from agent.core.tasks import TaskOwner
from agent.telemetry import tracing
from agent.transport.errors import AuthError
from agent.transport.ws_backoff import ConnectionBudget, JitterBackoff
from agent.transport.ws_config import WsConfig
from agent.transport.ws_link import ConnectFailed, LinkEnded, LinkHooks, WsLink
from agent.transport.ws_spec import WsProtocol
from agent.transport.ws_subscriptions import LinkTopics, RequestKind, SubscriptionRegistry
from agent.transport.ws_telemetry import WsTelemetry

log = logging.getLogger(__name__)


class WsConnector:
    """Makes established links for one stream and closes them."""

    def __init__(self, *, protocol: WsProtocol, config: WsConfig, owner: TaskOwner, registry: SubscriptionRegistry,
                 hooks: LinkHooks, telemetry: WsTelemetry, budget: ConnectionBudget,
                 subscribe_backoff: JitterBackoff, clock: Callable[[], float], wall_ms: Callable[[], int],
                 log_context: dict[str, str] | None = None) -> None:
        self.protocol = protocol
        self.config = config
        self._owner = owner
        self._registry = registry
        self._hooks = hooks
        self._telemetry = telemetry
        self._budget = budget
        self._sub_backoff = subscribe_backoff
        self._clock = clock
        self._wall_ms = wall_ms
        self._log_context = log_context or {}
        self.links: set[WsLink] = set()

    def established(self) -> list[WsLink]:
        """Open links that finished their setup (the active one, and a rotation candidate)."""
        return [link for link in self.links if link.established and not link.ended]

    async def connect(self, session: aiohttp.ClientSession, role: str) -> WsLink:
        """An established link whose tasks carry ``role`` in their names; raises ``ConnectFailed``."""
        with tracing.start_span("feedagent.ws.connect", kind=tracing.SpanKind.CLIENT, attributes={
                "feedagent.exchange": self._log_context.get("exchange", ""),
                "feedagent.ws.stream": self._log_context.get("stream", ""),
                "feedagent.ws.rotation": bool(role)}) as span:
            link = await self._connect(session, role, span)
            span.set_attribute("feedagent.ws.outcome", "ok")
            return link

    async def _connect(self, session: aiohttp.ClientSession, role: str, span: Any) -> WsLink:
        if await self._budget.acquire():
            self._telemetry.budget_wait()
        try:
            async with asyncio.timeout(self.config.connect_timeout_seconds):
                url = await self.protocol.url()
        except AuthError as e:  # the credential behind the URL (a Binance listenKey) was refused
            raise ConnectFailed("auth_rejected", type(e).__name__) from e
        except Exception as e:  # a listenKey request can fail in many ways; all mean "try again later"
            raise ConnectFailed("url_error", type(e).__name__) from e
        host = URL(url).host  # only the host: a Binance private URL carries the listenKey in its path
        if host:
            span.set_attribute("server.address", host)
        topics = LinkTopics(self.protocol.stale_after_seconds,
                            lambda failures: self._sub_backoff.delay_for(failures - 1))
        topics.add(self._registry.topics(), self._clock())  # before the reader starts: early data is kept
        link = WsLink(protocol=self.protocol, config=self.config, owner=self._owner, topics=topics,
                      hooks=self._hooks, clock=self._clock, wall_ms=self._wall_ms)
        self.links.add(link)
        try:
            await link.open(session, url, role)
            await link.authenticate()
            with tracing.start_span("feedagent.ws.subscribe", attributes={
                    "feedagent.exchange": self._log_context.get("exchange", ""),
                    "feedagent.ws.stream": self._log_context.get("stream", "")}) as sub_span:
                sub_span.set_attribute("feedagent.ws.topics", await self._replay(link))
        except BaseException:
            await self.discard(link)
            raise
        link.established = True
        self._telemetry.connect("ok")
        return link

    async def _replay(self, link: WsLink) -> int:
        """Subscribe the registry on a new link, until the registry stops changing under us; returns the topic count."""
        requested: set[str] = set()
        try:
            while True:
                wanted = [t for t in self._registry.topics() if t not in requested]
                extra = [t for t in requested if t not in self._registry]
                if not wanted and not extra:
                    return len(requested)  # no await between this check and ``established = True``
                requested.update(wanted)
                requested.difference_update(extra)
                link.topics.add(wanted, self._clock())
                link.topics.remove(extra)
                pending = await link.request("subscribe", wanted)
                pending += await link.request("unsubscribe", extra)
                await link.wait([p.future for p in pending], self.config.subscribe_ack_timeout_seconds)
                link.expire(pending)
        except LinkEnded as e:
            raise ConnectFailed("closed_during_setup", e.reason) from e

    async def apply(self, kind: RequestKind, topics: list[str]) -> None:
        """(Un)subscribe topics just changed in the registry on every established link, waiting for the acks."""
        if not topics:
            return
        links = self.established()
        now = self._clock()
        for link in links:  # no await before every link tracks the change: the replay relies on it
            if kind == "subscribe":
                link.topics.add(topics, now)
            else:
                link.topics.remove(topics)
        if not links:
            return  # nothing on the wire: the next link replays the registry
        with tracing.start_span(f"feedagent.ws.{kind}", attributes={
                "feedagent.exchange": self._log_context.get("exchange", ""),
                "feedagent.ws.stream": self._log_context.get("stream", ""), "feedagent.ws.topics": len(topics)}):
            for link in links:
                try:
                    pending = await link.request(kind, topics)
                    await link.wait([p.future for p in pending], self.config.subscribe_ack_timeout_seconds)
                    link.expire(pending)
                except LinkEnded:
                    pass  # the next link replays the registry

    async def maintain(self, link: WsLink) -> None:
        """One watchdog pass over a link: expire overdue acks, act on stale topics, retry failed ones.

        A topic silent past ``stale_after_seconds`` is resubscribed once; if it
        stays silent for another window the link fails with reason ``stale``.
        """
        link.expire()
        now = self._clock()
        resubscribe, dead = link.topics.check_stale(now)
        if dead:
            link.fail("stale", f"no data for {len(dead)} topic(s) after a resubscribe")
            return
        if resubscribe:
            log.warning("stale topics, resubscribing", extra={**self._log_context, "event": "ws_stale",
                                                                "topics": resubscribe[:10]})
            await link.request("unsubscribe", resubscribe)
            await link.request("subscribe", resubscribe)
        retry = link.topics.due_retries(now)
        if retry:
            await link.request("subscribe", retry)

    async def discard(self, link: WsLink, reason: str = "closed") -> None:
        """Close a link and forget it."""
        await link.close(reason)
        self.links.discard(link)

    async def close_all(self, reason: str) -> None:
        for link in list(self.links):
            await self.discard(link, reason)
