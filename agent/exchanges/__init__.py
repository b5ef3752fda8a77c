"""Venue adapters, registered by ``ExchangeConfig.venue``.

Each venue package has the same files (``urls``, ``signing``, ``schemas``,
``parse``, ``rest``, ``ws``, ``ws_parse``); a test checks that the package
folders and the registry keys agree. ``create_rest_api`` builds a venue's REST
adapter, ``create_ws_protocols`` its WebSocket side (``WsProtocols``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges import binance, bybit
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.exchanges.binance import urls as binance_urls
from agent.exchanges.binance import ws as binance_ws
from agent.exchanges.binance import ws_parse as binance_ws_parse
from agent.exchanges.binance.listen_key import ListenKeyManager
from agent.exchanges.binance.rest import BinanceRestApi
from agent.exchanges.binance.schemas import BinanceListenKeyExpiredMsg
from agent.exchanges.bybit import urls as bybit_urls
from agent.exchanges.bybit import ws as bybit_ws
from agent.exchanges.bybit import ws_parse as bybit_ws_parse
from agent.exchanges.bybit.rest import BybitRestApi
from agent.telemetry.metrics import Metrics
from agent.transport.clock import ServerClock
from agent.transport.ws_spec import ServerNotice, WsProtocol

RestApiFactory = Callable[[str, ExchangeConfig, ResolvedEndpoints, "ApiCredentials | None", Metrics], VenueRestApi]

REST_APIS: dict[str, RestApiFactory] = {
    "bybit": BybitRestApi,
    "binance": BinanceRestApi,
}

_DEFAULT_ENDPOINTS: dict[str, Callable[[str], ResolvedEndpoints | None]] = {
    "bybit": bybit_urls.default_endpoints,
    "binance": binance_urls.default_endpoints,
}

__all__ = [
    "REST_APIS", "WS_FACTORIES", "MarkPriceReader", "PositionReader", "WsProtocols", "create_rest_api",
    "create_ws_protocols", "create_ws_venue", "default_endpoints", "mark_price_topic", "position_topics",
    "symbol_of_topic", "binance", "bybit",
]


def create_rest_api(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                    credentials: ApiCredentials | None, metrics: Metrics) -> VenueRestApi:
    """The REST adapter of ``config.venue`` for the exchange named ``exchange_name``.

    Without credentials the adapter still serves mark prices (public
    endpoints); ``fetch_positions`` then raises ``AuthError``.
    """
    try:
        factory = REST_APIS[config.venue]
    except KeyError:
        raise ValueError(f"no REST adapter for venue {config.venue!r}; known: {', '.join(sorted(REST_APIS))}") from None
    return factory(exchange_name, config, endpoints, credentials, metrics)


def default_endpoints(venue: str, environment: str) -> ResolvedEndpoints | None:
    """The venue's URLs for ``mainnet``, ``testnet`` or ``demo``; None for ``simulator`` and ``custom``."""
    try:
        resolve = _DEFAULT_ENDPOINTS[venue]
    except KeyError:
        raise ValueError(f"unknown venue {venue!r}; known: {', '.join(sorted(_DEFAULT_ENDPOINTS))}") from None
    return resolve(environment)


# -- WebSocket side ---------------------------------------------------------------------------------


class MarkPriceReader(Protocol):
    """Turns the public stream's data messages into mark prices (Bybit ``TickerCache``, Binance ``MarkPriceCache``).

    ``reset(None)`` after the stream disconnected (not after a rotation);
    ``reset(topics)`` after unsubscribing them.
    """

    def read(self, topic: str, payload: object,
             received_ms: int | None = None) -> tuple[list[MarkPriceObs], int]: ...

    def reset(self, topics: Iterable[str] | None = None) -> None: ...


class PositionReader(Protocol):
    """Turns the private stream's data messages into changed position rows (a partial snapshot).

    ``seed`` takes every complete REST snapshot (Binance ``ACCOUNT_UPDATE`` is
    partial and needs it; Bybit rows are whole and ignore it).
    """

    def seed(self, rows: Iterable[PositionObs], *, as_of_ms: int | None = None, complete: bool = True) -> None: ...

    def read(self, topic: str, payload: object,
             received_ms: int | None = None) -> tuple[list[PositionObs], int]: ...

    def reset(self) -> None: ...


@dataclass
class WsProtocols:
    """A venue's WebSocket side for one exchange: protocols, topic names, readers, the listenKey owner.

    ``public`` serves mark prices (Bybit ``…/public/linear``, Binance routed
    ``/market``); ``private`` serves positions and is None without credentials.
    ``listen_keys`` (Binance only) owns the listenKey; ``start``/``stop`` run
    and end its keepalive. ``mark_prices``/``positions`` are this exchange's
    readers (fresh ones from ``new_*_reader``), behind ``parse_public``,
    ``parse_private`` and ``seed_private``, which count malformed messages.

    ``public_is_streaming`` says which public topics a ``WsDataQueue`` may
    coalesce (latest wins): Binance mark prices yes, each event is whole;
    Bybit tickers no, a delta holds only what changed, so dropping one before
    the merge would lose it. ``connection_budget`` is ``(attempts, window
    seconds)`` for a ``ConnectionBudget`` shared by both streams.
    """

    venue: str
    exchange: str
    public: WsProtocol
    private: WsProtocol | None
    listen_keys: ListenKeyManager | None
    public_stream: str
    private_stream: str
    mark_price_topic: Callable[[str], str]
    symbol_of_topic: Callable[[str], str | None]
    position_topics: Callable[[], tuple[str, ...]]
    new_mark_price_reader: Callable[[], MarkPriceReader]
    new_position_reader: Callable[[], PositionReader]
    public_is_streaming: Callable[[str], bool]
    connection_budget: tuple[int, float]
    metrics: Metrics | None = None
    mark_prices: MarkPriceReader = field(init=False)
    positions: PositionReader = field(init=False)
    last_notice: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.mark_prices = self.new_mark_price_reader()
        self.positions = self.new_position_reader()

    def private_topics(self) -> tuple[str, ...]:
        """The private topics to register (``position_topics()``)."""
        return self.position_topics()

    def parse_public(self, topic: str, payload: object, received_ms: int | None = None) -> list[MarkPriceObs]:
        """Mark prices of one public data message; malformed parts are counted and skipped."""
        prices, malformed = self.mark_prices.read(topic, payload, received_ms if received_ms else _wall_ms())
        self._malformed(malformed)
        return prices

    def parse_private(self, topic: str, payload: object, received_ms: int | None = None) -> list[PositionObs]:
        """Changed position rows of one private data message (a partial snapshot)."""
        rows, malformed = self.positions.read(topic, payload, received_ms if received_ms else _wall_ms())
        self._malformed(malformed)
        return rows

    def seed_private(self, rows: Iterable[PositionObs], *, as_of_ms: int | None = None,
                     complete: bool = True) -> None:
        """Hand every REST position snapshot to the position reader; only a complete one says what is flat."""
        self.positions.seed(rows, as_of_ms=as_of_ms, complete=complete)

    def forget_public_topic(self, topic: str) -> None:
        """The topic was unsubscribed: forget what the reader kept of it."""
        self.mark_prices.reset([topic])

    def public_reconnected(self) -> None:
        """A public link became active. Nothing to drop: after a reconnect every topic starts with a
        snapshot that replaces the kept state, and after a rotation the new link's snapshots may
        already be applied (dropping them then would lose fields until they next change)."""

    def on_notice(self, notice: ServerNotice) -> None:
        """A connection notice (Binance ``listenKeyExpired``): the key owner drops the key."""
        self.last_notice = notice.kind
        if self.listen_keys is not None and notice.kind == binance_ws_parse.LISTEN_KEY_EXPIRED:
            payload = notice.payload
            key = payload.listenKey if isinstance(payload, BinanceListenKeyExpiredMsg) else None
            self.listen_keys.on_expired(key or None)

    async def start(self) -> None:
        """Start what the WebSocket side owns beyond its connections (the listenKey keepalive)."""
        if self.listen_keys is not None:
            await self.listen_keys.start()

    async def stop(self) -> None:
        """Stop it again; idempotent."""
        if self.listen_keys is not None:
            await self.listen_keys.close()

    close = stop

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows of the venue side: duplicate and distrusted frames, the listenKey."""
        view: dict[str, Any] = {
            "duplicates_ignored": getattr(self.mark_prices, "duplicates", 0) + getattr(self.positions, "duplicates", 0),
            "implausible_timestamps": (getattr(self.mark_prices, "implausible", 0)
                                       + getattr(self.positions, "implausible", 0)),
            "last_notice": self.last_notice,
        }
        keys = self.listen_keys
        if keys is not None:
            view["listen_key"] = {"age_seconds": keys.key_age_seconds, "created": keys.created,
                                  "keepalives": keys.keepalives, "rotations": keys.rotations,
                                  "expired_notices": keys.expired_notices, "last_error": keys.last_error}
        return {"ws_venue": view}

    def _malformed(self, count: int) -> None:
        if count and self.metrics is not None:
            self.metrics.messages_malformed.labels(self.exchange, "ws").inc(count)


def _wall_ms() -> int:
    return int(time.time() * 1000)


WsFactory = Callable[..., WsProtocols]

BYBIT_CONNECTION_BUDGET = (250, 300.0)
"""Half of Bybit's 500 connections per 5 minutes per domain: room for restarts and other processes."""
BINANCE_CONNECTION_BUDGET = (150, 300.0)
"""USDⓈ-M documents no connection-attempt limit; half of Spot's 300 per 5 minutes per IP."""


def _server_clock(rest_api: VenueRestApi | None) -> ServerClock | None:
    client = getattr(rest_api, "client", None)
    clock = getattr(client, "server_clock", None)
    return clock if isinstance(clock, ServerClock) else None


def _bybit_ws(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
              credentials: ApiCredentials | None, rest_api: VenueRestApi | None, *,
              metrics: Metrics | None = None, on_rotate: Callable[[str], None] | None = None) -> WsProtocols:
    clock = _server_clock(rest_api)
    offset = (lambda: clock.offset_ms) if clock is not None else None
    private = None if credentials is None else bybit_ws.BybitPrivateProtocol(
        endpoints.ws_private_url, credentials, server_now_ms=clock.server_now_ms if clock is not None else None)
    category = config.category
    return WsProtocols(
        venue="bybit", exchange=exchange_name,
        public=bybit_ws.BybitPublicProtocol(endpoints.ws_public_url, stale_after_seconds=config.ws.stale_after_seconds),
        private=private, listen_keys=None, public_stream="public", private_stream="private",
        public_is_streaming=lambda topic: False, connection_budget=BYBIT_CONNECTION_BUDGET, metrics=metrics,
        mark_price_topic=bybit_ws_parse.mark_price_topic, symbol_of_topic=bybit_ws_parse.symbol_of_topic,
        position_topics=bybit_ws_parse.position_topics,
        new_mark_price_reader=lambda: bybit_ws_parse.TickerCache(clock_offset_ms=offset),
        new_position_reader=lambda: bybit_ws_parse.BybitPositionReader(category=category, clock_offset_ms=offset))


def _binance_ws(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                credentials: ApiCredentials | None, rest_api: VenueRestApi | None, *,
                metrics: Metrics | None = None, on_rotate: Callable[[str], None] | None = None) -> WsProtocols:
    clock = _server_clock(rest_api)
    offset = (lambda: clock.offset_ms) if clock is not None else None
    market = binance_ws.BinanceMarketProtocol(endpoints.ws_public_url,
                                              stale_after_seconds=config.ws.stale_after_seconds)
    keys: ListenKeyManager | None = None
    private: WsProtocol | None = None
    if credentials is not None:
        if not hasattr(rest_api, "create_listen_key"):
            raise ValueError(f"{exchange_name}: the Binance user data stream needs the Binance REST adapter "
                             "(listenKey calls)")
        keys = ListenKeyManager(rest_api, exchange=exchange_name,  # type: ignore[arg-type]
                                keepalive_seconds=config.ws.listen_key_keepalive_seconds,
                                metrics=metrics, on_rotate=on_rotate)
        private = binance_ws.BinancePrivateProtocol(endpoints.ws_private_url, keys)
    return WsProtocols(
        venue="binance", exchange=exchange_name, public=market, private=private, listen_keys=keys,
        public_stream="market", private_stream="private", public_is_streaming=binance_ws_parse.is_mark_price_topic,
        connection_budget=BINANCE_CONNECTION_BUDGET, metrics=metrics, mark_price_topic=market.mark_price_topic,
        symbol_of_topic=binance_ws_parse.symbol_of_topic, position_topics=binance_ws_parse.position_topics,
        new_mark_price_reader=lambda: binance_ws_parse.MarkPriceCache(clock_offset_ms=offset),
        new_position_reader=lambda: binance_ws_parse.AccountPositionCache(clock_offset_ms=offset))


WS_FACTORIES: dict[str, WsFactory] = {
    "bybit": _bybit_ws,
    "binance": _binance_ws,
}


def create_ws_protocols(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                        credentials: ApiCredentials | None, rest_api: VenueRestApi | None = None, *,
                        metrics: Metrics | None = None,
                        on_rotate: Callable[[str], None] | None = None) -> WsProtocols:
    """The WebSocket side of ``config.venue`` for the exchange named ``exchange_name``.

    ``rest_api`` (from ``create_rest_api``) lends its server clock (Bybit auth
    ``expires``, plausibility of frame times) and, for Binance, the listenKey
    calls. Without credentials only the public stream is built. ``on_rotate``
    (Binance) is told when the listenKey changed under a live stream; it can
    also be set later with ``listen_keys.set_rotation_callback``.
    """
    try:
        factory = WS_FACTORIES[config.venue]
    except KeyError:
        raise ValueError(f"no WebSocket adapter for venue {config.venue!r}; "
                         f"known: {', '.join(sorted(WS_FACTORIES))}") from None
    return factory(exchange_name, config, endpoints, credentials, rest_api, metrics=metrics, on_rotate=on_rotate)


def create_ws_venue(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                    credentials: ApiCredentials | None, rest_api: VenueRestApi | None, metrics: Metrics | None = None,
                    *, on_rotation_needed: Callable[[], None] | None = None) -> WsProtocols:
    """``create_ws_protocols`` for a source that only needs to hear *that* the private stream must rotate."""
    on_rotate = (lambda reason: on_rotation_needed()) if on_rotation_needed is not None else None
    return create_ws_protocols(exchange_name, config, endpoints, credentials, rest_api, metrics=metrics,
                               on_rotate=on_rotate)


_TOPIC_HELPERS = {
    "bybit": (bybit_ws_parse.mark_price_topic, bybit_ws_parse.symbol_of_topic, bybit_ws_parse.position_topics),
    "binance": (binance_ws_parse.mark_price_topic, binance_ws_parse.symbol_of_topic,
                binance_ws_parse.position_topics),
}


def _helpers(venue: str) -> tuple[Callable[..., str], Callable[[str], str | None], Callable[[], tuple[str, ...]]]:
    try:
        return _TOPIC_HELPERS[venue]
    except KeyError:
        raise ValueError(f"unknown venue {venue!r}; known: {', '.join(sorted(_TOPIC_HELPERS))}") from None


def mark_price_topic(venue: str, symbol: str) -> str:
    """The public topic with ``symbol``'s mark price: Bybit ``tickers.BTCUSDT``, Binance ``btcusdt@markPrice@1s``."""
    return _helpers(venue)[0](symbol)


def symbol_of_topic(venue: str, topic: str) -> str | None:
    """The symbol of a mark-price topic (``mark_price_topic``'s inverse); None for other topics."""
    return _helpers(venue)[1](topic)


def position_topics(venue: str) -> tuple[str, ...]:
    """The private topics to register for positions: Bybit ``position``; Binance ``ACCOUNT_UPDATE``,
    ``ACCOUNT_CONFIG_UPDATE`` (the listenKey URL subscribes them)."""
    return _helpers(venue)[2]()
