"""What a venue adapter tells the resilient WebSocket: the ``WsProtocol`` contract.

The connection (``agent.transport.ws.ResilientWebSocket``) is venue-neutral. It
owns the socket, the timers and the subscription registry; a ``WsProtocol``
owns every byte that crosses the wire: the URL, the auth request, subscribe
and unsubscribe requests (already batched within the venue's limits), the
application ping, and the classification of each received text frame into one
of the ``Frame`` types below.

How the two venues map onto it (see ``reference/protocols.md`` §1.2, §2.2, §2.3):

* Bybit public: ``url()`` returns the category URL; ``auth_request`` is None;
  ``subscribe_requests`` packs ``{"req_id","op":"subscribe","args":[…]}``
  within the 21,000-character args budget; ``ping_request`` is
  ``{"req_id":…,"op":"ping"}``; ``classify`` maps frames with ``topic`` to
  ``Data``, ``ret_msg=="pong"`` or ``op=="pong"`` to ``Pong`` (the public
  linear pong has ``op:"ping"``), ``op`` subscribe/unsubscribe to
  ``SubscribeAck`` (check ``success``; ``req_id`` when echoed).
* Bybit private: as above plus ``auth_request`` →
  ``{"op":"auth","args":[key, expires, sig]}`` and ``AuthAck(success, ret_msg)``;
  the ack of a subscribe carries no ``req_id`` (``request_id=None`` matches the
  oldest outstanding request). ``position`` is event-driven:
  ``stale_after_seconds`` returns None.
* Binance market: ``/market/stream`` base; ``SUBSCRIBE``/``UNSUBSCRIBE`` with
  an integer ``id`` (≤ 1024 streams, ≤ 10 messages/s); ``{"result":null,"id":N}``
  is a ``SubscribeAck``; ``{"code":…,"msg":…,"id":N}`` a failed one;
  ``ping_request`` is None (the server pings with frames; aiohttp answers them).
* Binance private: ``url()`` first obtains a valid listenKey (REST) and returns
  ``…/private/ws/<listenKey>``; ``subscribe_requests`` returns ``[]`` (the URL
  subscribes; topics count as acked on connect); ``listenKeyExpired`` is a
  ``ServerNotice(action="reconnect")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

NoticeAction = Literal["none", "reconnect", "rotate"]


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our application-level ping."""


@dataclass(frozen=True, slots=True)
class AuthAck:
    """The venue's answer to ``auth_request``."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    """The answer to one subscribe or unsubscribe request.

    ``request_id`` None (Bybit private acks carry no ``req_id``) matches the
    oldest outstanding request. ``failed_topics`` lists topics rejected by an
    otherwise successful ack (Bybit option ``failTopics``).
    """

    request_id: str | None
    ok: bool
    reason: str = ""
    failed_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    """A data message for one subscribed topic; ``payload`` is whatever the adapter's parser wants."""

    topic: str
    payload: object


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """A venue event about the connection itself, e.g. Binance ``listenKeyExpired``.

    ``action`` tells the connection what to do besides calling ``on_notice``:
    ``"reconnect"`` (the link is dead to us), ``"rotate"`` (make-before-break
    now) or ``"none"``.
    """

    kind: str
    payload: object = None
    action: NoticeAction = "none"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame the adapter does not recognise; counted and skipped."""

    reason: str


Frame = Pong | AuthAck | SubscribeAck | Data | ServerNotice | Unknown


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """One text frame to send and what it covers.

    ``request_id`` is what the venue echoes in the ack (None when it echoes
    nothing; such acks are matched in order). ``expects_ack`` False means the
    venue never answers this request: its topics count as acked once it is sent.
    """

    text: str
    topics: tuple[str, ...]
    request_id: str | None = None
    expects_ack: bool = True


@runtime_checkable
class WsProtocol(Protocol):
    """The venue side of one WebSocket stream (Bybit public/private, Binance market/private).

    Adapters may subclass this class explicitly to inherit the defaults of
    ``fits``, ``stale_after_seconds`` and the class attributes. ``classify``
    must not raise for ordinary frames; if it does, the frame is counted as
    malformed and skipped. Every method except ``url`` is synchronous and cheap:
    it runs in the reader task.
    """

    max_topics_per_connection: int = 1024
    """Hard cap on topics per connection (Binance 1024 streams); see also ``fits``."""

    max_messages_per_second: float = 5.0
    """Text frames per second this connection may send (Binance allows 10 incoming per second)."""

    async def url(self) -> str:
        """The URL to connect to, computed before every connect (a fresh listenKey, ``max_active_time``)."""
        ...

    def auth_request(self, now_ms: int) -> str | None:
        """The auth frame, signed with ``now_ms`` (server-corrected Unix ms); None when the stream needs no auth."""
        ...

    def subscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        """Requests that subscribe ``topics``, batched within the venue's limits; ``[]`` when the URL subscribes."""
        ...

    def unsubscribe_requests(self, topics: Sequence[str]) -> list[OutgoingRequest]:
        """Requests that unsubscribe ``topics``; ``[]`` when the venue has no such request."""
        ...

    def ping_request(self, now_ms: int) -> str | None:
        """The application ping frame; None to rely on WebSocket ping frames instead (Binance).

        Must be consistently None or not None for a given protocol.
        """
        ...

    def classify(self, text: str) -> Frame:
        """What one received text frame is."""
        ...

    def stale_after_seconds(self, topic: str) -> float | None:
        """Silence after which a streaming topic is stale; None for event-driven topics (positions)."""
        return None

    def fits(self, topics: Sequence[str]) -> bool:
        """Whether these topics fit on one connection (Bybit public: 21,000 characters of args)."""
        return len(topics) <= self.max_topics_per_connection
