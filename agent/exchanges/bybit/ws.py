"""Bybit v5 WebSocket streams as ``WsProtocol``s: linear public (tickers) and private (position).

https://bybit-exchange.github.io/docs/v5/ws/connect. What naive clients get wrong and these do not:

* the heartbeat is a JSON ``{"op":"ping"}`` text frame (every ``ping_interval_seconds``, 20 s by default);
  its answer has three shapes: public linear/spot ``op:"ping"`` with ``ret_msg:"pong"``, private and
  option ``op:"pong"``; all are a ``Pong``;
* acks are judged by ``success`` (the stream replies have no ``retCode``); a linear ack echoes ``req_id``
  (``""`` when none was sent), a private ack may not, and option/spread acks are ``type:"COMMAND_RESP"``
  with ``failTopics``;
* a public connection takes at most 21,000 characters of ``args`` in total (``fits``), and one bad topic
  fails its whole request, so requests are kept to ``max_args_per_request`` topics;
* private auth signs ``"GET/realtime" + expires`` with ``expires`` in ms on the server's clock, a few
  seconds ahead (pybit's 1 s is too tight for real clock skew; failure-modes row 10).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import msgspec

from agent.exchanges.base import ApiCredentials
from agent.exchanges.bybit.signing import ws_auth_signature
from agent.exchanges.bybit.ws_parse import (
    decode_envelope, data_payload, fail_topics, mark_price_topic, position_topics, symbol_of_topic,
)
from agent.transport.ws_spec import AuthAck, Data, Frame, OutgoingRequest, Pong, SubscribeAck, Unknown, WsProtocol

__all__ = [
    "ARGS_BUDGET_CHARS", "BybitPrivateProtocol", "BybitPublicProtocol", "classify_frame", "args_chars",
    "mark_price_topic", "position_topics", "symbol_of_topic",
]

ARGS_BUDGET_CHARS = 21_000
"""Characters of ``args`` one public connection may subscribe (docs: "Args limits")."""
MAX_ARGS_PER_REQUEST = 200
DEFAULT_AUTH_WINDOW_MS = 5_000

_ENCODE = msgspec.json.Encoder().encode


def args_chars(topics: Sequence[str]) -> int:
    """Length of the compact JSON ``args`` array of these topics: quotes, commas and brackets counted.

    The docs do not say how the 21,000 characters are counted; this is the
    largest reading, so a set that fits here fits under any of them.
    """
    return 1 + sum(len(t) + 3 for t in topics)


def classify_frame(text: str) -> Frame:
    """What one Bybit frame is; raises ``MalformedFrame`` when it is not JSON or its typed part is broken."""
    env = decode_envelope(text)
    if env.topic is not None:
        return Data(env.topic, data_payload(env))
    if env.ret_msg == "pong" or env.op == "pong":  # public: op "ping" + ret_msg "pong"; private/option: op "pong"
        return Pong()
    ok = env.success is True
    reason = "" if ok else (env.ret_msg or "rejected")
    if env.op == "auth":
        return AuthAck(ok, reason)
    request_id = str(env.req_id) if env.req_id not in (None, "") else None
    if env.op in ("subscribe", "unsubscribe"):
        return SubscribeAck(request_id, ok, reason)
    if env.type == "COMMAND_RESP":
        return SubscribeAck(request_id, ok, reason, fail_topics(env))
    return Unknown(f"no topic, op {env.op!r}" if env.op is not None else "no topic and no op")


class _BybitStream(WsProtocol):
    """What both Bybit streams share: JSON requests with ``req_id``, the JSON ping, classification."""

    max_messages_per_second = 5.0

    def __init__(self, url: str, *, max_args_per_request: int = MAX_ARGS_PER_REQUEST,
                 args_budget_chars: int | None = None) -> None:
        if max_args_per_request < 1:
            raise ValueError(f"max_args_per_request must be >= 1, was {max_args_per_request}")
        self._url = url
        self._max_args = max_args_per_request
        self._budget = args_budget_chars
        self._ids = itertools.count(1)

    async def url(self) -> str:
        return self._url

    def subscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("subscribe", topics)

    def unsubscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        return self._requests("unsubscribe", topics)

    def ping_request(self, now_ms: int) -> str | None:
        return _ENCODE({"req_id": self._next_id(), "op": "ping"}).decode()

    def classify(self, text: str) -> Frame:
        return classify_frame(text)

    def _next_id(self) -> str:
        return str(next(self._ids))

    def _requests(self, op: str, topics: Sequence[str]) -> list[OutgoingRequest]:
        out: list[OutgoingRequest] = []
        for chunk in self._chunks(topics):
            req_id = self._next_id()
            text = _ENCODE({"req_id": req_id, "op": op, "args": list(chunk)}).decode()
            out.append(OutgoingRequest(text, chunk, req_id))
        return out

    def _chunks(self, topics: Sequence[str]) -> list[tuple[str, ...]]:
        """Topics in order, split so no request exceeds the args budget or ``max_args_per_request``."""
        chunks: list[tuple[str, ...]] = []
        current: list[str] = []
        chars = args_chars(())
        for topic in dict.fromkeys(topics):
            size = len(topic) + 3
            over_budget = self._budget is not None and chars + size > self._budget
            if current and (len(current) >= self._max_args or over_budget):
                chunks.append(tuple(current))
                current, chars = [], args_chars(())
            current.append(topic)
            chars += size
        if current:
            chunks.append(tuple(current))
        return chunks


class BybitPublicProtocol(_BybitStream):
    """The linear public stream (``…/v5/public/linear``): ``tickers.{symbol}`` for mark prices.

    ``stale_after_seconds`` is the same for every topic: tickers push every 100 ms.
    """

    max_topics_per_connection = 10_000  # the real limit is the args budget, see ``fits``

    def __init__(self, url: str, *, stale_after_seconds: float = 5.0, args_budget_chars: int = ARGS_BUDGET_CHARS,
                 max_args_per_request: int = MAX_ARGS_PER_REQUEST) -> None:
        super().__init__(url, max_args_per_request=max_args_per_request, args_budget_chars=args_budget_chars)
        if stale_after_seconds <= 0:
            raise ValueError(f"stale_after_seconds must be > 0, was {stale_after_seconds}")
        self._stale_after = stale_after_seconds
        self.args_budget_chars = args_budget_chars

    def auth_request(self, now_ms: int) -> str | None:
        return None

    def stale_after_seconds(self, topic: str) -> float | None:
        return self._stale_after

    def fits(self, topics: Sequence[str]) -> bool:
        """Whether the topics stay within the connection's args budget (21,000 characters)."""
        return args_chars(list(dict.fromkeys(topics))) <= self.args_budget_chars


class BybitPrivateProtocol(_BybitStream):
    """The private stream (``…/v5/private``): auth, then the event-driven ``position`` topic.

    ``server_now_ms`` is the REST client's server-corrected clock; ``expires``
    is that time plus ``auth_window_ms``. Without it the connection's
    ``now_ms`` is used (pass a corrected clock to the connection then).
    """

    max_topics_per_connection = 64

    def __init__(self, url: str, credentials: ApiCredentials, *, server_now_ms: Callable[[], int] | None = None,
                 auth_window_ms: int = DEFAULT_AUTH_WINDOW_MS,
                 max_args_per_request: int = MAX_ARGS_PER_REQUEST) -> None:
        super().__init__(url, max_args_per_request=max_args_per_request)
        if auth_window_ms <= 0:
            raise ValueError(f"auth_window_ms must be > 0, was {auth_window_ms}")
        self._credentials = credentials
        self._server_now_ms = server_now_ms
        self.auth_window_ms = auth_window_ms

    def __repr__(self) -> str:
        return f"BybitPrivateProtocol(url={self._url!r}, credentials={self._credentials!r})"

    def auth_request(self, now_ms: int) -> str | None:
        expires = self.auth_expires_ms(now_ms)
        signature = ws_auth_signature(self._credentials.api_secret, expires)
        return _ENCODE({"req_id": self._next_id(), "op": "auth",
                        "args": [self._credentials.api_key, expires, signature]}).decode()

    def auth_expires_ms(self, now_ms: int) -> int:
        """``expires`` for an auth sent now: server time (when known) plus the window, an int in ms."""
        base = self._server_now_ms() if self._server_now_ms is not None else now_ms
        return int(base) + self.auth_window_ms

    def stale_after_seconds(self, topic: str) -> float | None:
        return None  # positions are event-driven: silence is normal; the ping round trip shows liveness
