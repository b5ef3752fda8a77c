"""Binance USDⓈ-M WebSocket streams as ``WsProtocol``s: routed ``/market`` (mark prices) and ``/private``.

https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams and
…/user-data-streams. What naive clients get wrong and these do not:

* since 2026-04-23 mark prices flow only on the routed ``/market`` base and user data on ``/private``;
  the un-routed host accepts the connection and then delivers nothing;
* the market stream connects to ``{ws_market_url}/stream`` (combined mode, no streams in the URL) and
  subscribes with live ``SUBSCRIBE`` requests. That way the connection's subscription registry is
  replayed with acks (``{"result":null,"id":N}``; errors ``{"code","msg","id"}``) and a stale stream
  can be resubscribed on its own, the URL stays short at 1024 streams, and every payload arrives in a
  ``{"stream","data"}`` wrapper that names its topic exactly (``@markPrice`` and ``@markPrice@1s`` of
  one symbol, or ``!markPrice@arr``, cannot be mistaken for each other);
* stream names are lower case; at most 1024 streams per connection; at most 10 incoming messages per
  second per connection, pongs included, so requests are paced at ``max_messages_per_second`` (5) and
  batched (``max_streams_per_request``);
* there is no JSON ping: the server sends ping frames (aiohttp answers them, ``autoping``) and the
  connection sends its own ping frames as the heartbeat;
* the user data stream is ``{ws_private_url}/ws/<listenKey>``: the key comes from the one
  ``ListenKeyManager`` right before every connect, nothing is subscribed by request, and
  ``listenKeyExpired`` (``E`` an int or a string, ``listenKey`` possibly missing) ends the connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import msgspec

from agent.exchanges.binance.listen_key import ListenKeyManager
from agent.exchanges.binance.schemas import BinanceListenKeyExpiredMsg
from agent.exchanges.binance.ws_parse import (
    LISTEN_KEY_EXPIRED, MARK_PRICE_EVENT, decode_envelope, decode_mark_prices,
    is_mark_price_topic, listen_key_of, mark_price_interval_seconds, mark_price_topic, position_topics,
    symbol_of_topic, user_event,
)
from agent.transport.ws_spec import Data, Frame, OutgoingRequest, ServerNotice, SubscribeAck, Unknown, WsProtocol

__all__ = [
    "MAX_STREAMS_PER_CONNECTION", "BinanceMarketProtocol", "BinancePrivateProtocol", "mark_price_topic",
    "position_topics", "symbol_of_topic",
]

MAX_STREAMS_PER_CONNECTION = 1024
MAX_STREAMS_PER_REQUEST = 200
STALE_INTERVALS = 3.0  # a mark-price stream is stale after at least this many push intervals of silence

_ENCODE = msgspec.json.Encoder().encode


class BinanceMarketProtocol(WsProtocol):
    """The routed market stream: ``<symbol>@markPrice@1s`` (and ``!markPrice@arr[@1s]``) by live SUBSCRIBE."""

    max_topics_per_connection = MAX_STREAMS_PER_CONNECTION
    max_messages_per_second = 5.0  # Binance cuts a connection at 10 incoming messages/s; pongs count too

    def __init__(self, market_url: str, *, stale_after_seconds: float = 5.0, fast: bool = True,
                 max_streams_per_request: int = MAX_STREAMS_PER_REQUEST) -> None:
        if stale_after_seconds <= 0:
            raise ValueError(f"stale_after_seconds must be > 0, was {stale_after_seconds}")
        if not 1 <= max_streams_per_request <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"max_streams_per_request must be 1 to {MAX_STREAMS_PER_CONNECTION}, "
                             f"was {max_streams_per_request}")
        self._base = market_url.rstrip("/")
        self._stale_after = stale_after_seconds
        self._batch = max_streams_per_request
        self.fast = fast
        self._ids = itertools.count(1)

    async def url(self) -> str:
        return f"{self._base}/stream"

    def auth_request(self, now_ms: int) -> str | None:
        return None

    def subscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("SUBSCRIBE", topics)

    def unsubscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("UNSUBSCRIBE", topics)

    def ping_request(self, now_ms: int) -> str | None:
        return None  # the server pings with frames; the connection's heartbeat uses frames too

    def mark_price_topic(self, symbol: str) -> str:
        """The stream this protocol uses for ``symbol``'s mark price."""
        return mark_price_topic(symbol, fast=self.fast)

    def classify(self, text: str) -> Frame:
        if text.lstrip()[:1] == "[":  # a bare ``!markPrice@arr`` (raw /ws mode)
            return Data("!markPrice@arr" + ("@1s" if self.fast else ""), decode_mark_prices(text))
        env = decode_envelope(text)
        if env.stream is not None and env.data is not msgspec.UNSET:
            payload = decode_mark_prices(env.data) if is_mark_price_topic(env.stream) else env.data
            return Data(env.stream, payload)
        if env.result is not msgspec.UNSET and env.id is not None:
            return SubscribeAck(str(env.id), True)
        if env.code is not None:
            return SubscribeAck(str(env.id) if env.id is not None else None, False,
                                f"code {env.code}: {env.msg or ''}".strip())
        if env.e == MARK_PRICE_EVENT:  # a bare event (raw /ws mode): its stream is ours by symbol
            events = decode_mark_prices(text)
            return Data(self.mark_price_topic(events[0].s), events)
        if env.e is not None:
            return Unknown(f"bare event {env.e[:40]!r} without a stream name")
        return Unknown("not a stream payload, an answer or an event")

    def stale_after_seconds(self, topic: str) -> float | None:
        """Mark-price streams: the configured silence, but never under three push intervals; others: None."""
        if not is_mark_price_topic(topic):
            return None
        return max(self._stale_after, STALE_INTERVALS * mark_price_interval_seconds(topic))

    def _requests(self, method: str, topics: Sequence[str]) -> list[OutgoingRequest]:
        unique = list(dict.fromkeys(topics))
        out: list[OutgoingRequest] = []
        for start in range(0, len(unique), self._batch):
            chunk = tuple(unique[start:start + self._batch])
            request_id = next(self._ids)
            text = _ENCODE({"method": method, "params": list(chunk), "id": request_id}).decode()
            out.append(OutgoingRequest(text, chunk, str(request_id)))
        return out


class BinancePrivateProtocol(WsProtocol):
    """The user data stream: ``{ws_private_url}/ws/<listenKey>``, event types as topics.

    Topics (``ACCOUNT_UPDATE``, ``ACCOUNT_CONFIG_UPDATE``…) are subscribed by the
    URL, so they count as acked on connect and are event-driven (no data age).
    A ``listenKeyExpired`` also tells the ``ListenKeyManager`` at once, so the
    reconnect it causes gets a fresh key even if nobody else listens.
    """

    max_topics_per_connection = 64
    max_messages_per_second = 5.0
    credential_in_url = True
    """The listenKey is the credential: a handshake refused for it is an auth failure (``ws_link``)."""

    def __init__(self, private_url: str, listen_keys: ListenKeyManager) -> None:
        self._base = private_url.rstrip("/")
        self.listen_keys = listen_keys
        self._connects = 0

    async def url(self) -> str:
        """``…/ws/<listenKey>``; every connect after the first confirms the key first (one PUT), so a
        connection refused for a dead key is never retried with that key."""
        key = await self.listen_keys.current(revalidate=self._connects > 0)
        self._connects += 1
        return f"{self._base}/ws/{key}"

    def auth_request(self, now_ms: int) -> str | None:
        return None  # the listenKey in the URL is the authentication

    def subscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return []

    def unsubscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return []

    def ping_request(self, now_ms: int) -> str | None:
        return None

    def classify(self, text: str) -> Frame:
        env = decode_envelope(text)
        raw: str | bytes = text
        if env.stream is not None and env.data is not msgspec.UNSET:  # ``/private/stream?listenKey=`` form
            raw = bytes(env.data)
            env = decode_envelope(raw)
        if env.e is None:
            return Unknown(f"error code {env.code}" if env.code is not None else "no event type")
        event = user_event(env.e, raw)
        if isinstance(event, BinanceListenKeyExpiredMsg):
            self.listen_keys.on_expired(listen_key_of(event))
            return ServerNotice(LISTEN_KEY_EXPIRED, event, action="reconnect")
        return Data(env.e, event if event is not None else env)

    def stale_after_seconds(self, topic: str) -> float | None:
        return None  # event-driven: an account without trades is silent for hours
