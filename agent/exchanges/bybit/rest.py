"""Bybit v5 REST: server time, positions (all pages) and linear mark prices.

Error handling follows https://bybit-exchange.github.io/docs/v5/error and
/docs/v5/rate-limit: ``retCode`` decides success, never ``retMsg``; 10006 holds
calls until ``X-Bapi-Limit-Reset-Timestamp``; HTTP 403 is an IP ban of at
least 10 minutes; 10002 (timestamp outside recv window) resyncs the clock and
retries once (in ``RestClient``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import msgspec

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.bybit import signing
from agent.exchanges.bybit.parse import (
    decode_envelope, parse_instruments, parse_position_list, parse_server_time_ms, parse_tickers,
)
from agent.exchanges.bybit.schemas import BybitEnvelope
from agent.exchanges.bybit.urls import INSTRUMENTS_INFO_PATH, POSITION_LIST_PATH, SERVER_TIME_PATH, TICKERS_PATH
from agent.exchanges.rest_base import VenueRestBase
from agent.telemetry.metrics import Metrics
from agent.transport.backoff import GrowingDelay
from agent.transport.clock import SYSTEM_CLOCK, Clock
from agent.transport.errors import (
    AuthError, Banned, ClockSkew, ExchangeUnavailable, MalformedResponse, RateLimited, RestError,
)
from agent.transport.ratelimit import RateLimitReading, RateLimitRule
from agent.transport.rest import (
    RestClient, RestResponse, ServerTimeEndpoint, Signer, retry_after_seconds, scrub,
)

AUTH_CODES = frozenset({10003, 10004, 10005, 10007, 10010, 33004})
CLOCK_SKEW_CODE = 10002
RATE_LIMIT_CODE = 10006
SERVER_ERROR_CODES = frozenset({10000, 10016})

IP_BAN_SECONDS = 600.0  # HTTP 403 "access too frequent": stop for at least 10 minutes
RATE_LIMIT_DEFAULT_SECONDS = 1.0  # 10006 without a reset header; the window is 1 s
RATE_LIMIT_MAX_SECONDS = 60.0  # never trust a reset header further out than this
PAGE_LIMIT = 200
INSTRUMENTS_PAGE_LIMIT = 1000
MAX_PAGES = 100  # 20,000 positions; beyond that something is looping


def read_rate_limit(headers: Mapping[str, str], server_now_ms: float) -> RateLimitReading | None:
    """``X-Bapi-Limit-Status`` (left) over ``X-Bapi-Limit`` (limit), reset at ``X-Bapi-Limit-Reset-Timestamp``."""
    try:
        left = int(headers["X-Bapi-Limit-Status"])
        limit = int(headers["X-Bapi-Limit"])
    except (KeyError, ValueError):
        return None
    if limit <= 0:
        return None
    reset = headers.get("X-Bapi-Limit-Reset-Timestamp", "")
    return RateLimitReading(max(0.0, min(1.0, left / limit)), float(reset) if reset.isdigit() else None)


# Bybit limits are per UID per endpoint over a rolling second: one budget per endpoint.
RATE_LIMIT_RULE = RateLimitRule(read=read_rate_limit, shared=False, reserve_ratio=0.0, max_wait_seconds=1.0)


def _rate_limit_wait_s(response: RestResponse) -> float:
    reset = response.headers.get("X-Bapi-Limit-Reset-Timestamp", "")
    if not reset.isdigit():
        return RATE_LIMIT_DEFAULT_SECONDS
    wait_s = (int(reset) - response.received_server_ms) / 1000.0
    return min(RATE_LIMIT_MAX_SECONDS, max(0.1, wait_s))


def error_for_ret_code(exchange: str, envelope: BybitEnvelope, response: RestResponse,
                       secrets: Sequence[str]) -> RestError:
    """The ``RestError`` for a non-zero ``retCode``."""
    code = envelope.ret_code
    # A 10004 message quotes the signed string, API key included: scrub it.
    text = f"{exchange} {response.endpoint}: retCode {code}: {scrub(envelope.ret_msg, secrets)}"
    if code == RATE_LIMIT_CODE:
        return RateLimited(text, status=response.status, code=code, retry_after_seconds=_rate_limit_wait_s(response))
    if code == CLOCK_SKEW_CODE:
        return ClockSkew(text, status=response.status, code=code)
    if code in AUTH_CODES:
        return AuthError(text, status=response.status, code=code)
    if code in SERVER_ERROR_CODES:
        return ExchangeUnavailable(text, status=response.status, code=code)
    return RestError(text, status=response.status, code=code)


class BybitRestApi(VenueRestBase):
    """``VenueRestApi`` for one Bybit v5 account (category ``linear``)."""

    venue = "bybit"

    def __init__(self, exchange: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, metrics: Metrics, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(exchange, config, credentials, metrics, clock)
        self._too_many_requests = GrowingDelay(initial_s=1.0, cap_s=10.0)
        self._client = RestClient(
            exchange=exchange, base_url=endpoints.rest_url, metrics=metrics, status=self.status,
            timeout_seconds=config.rest.request_timeout_seconds,
            server_time=ServerTimeEndpoint(SERVER_TIME_PATH, lambda r: parse_server_time_ms(self._envelope(r))),
            rate_limit=RATE_LIMIT_RULE, resync_interval_seconds=config.rest.server_time_sync_interval_seconds,
            clock=clock, secrets=self._secrets())

    async def fetch_positions(self) -> list[PositionObs]:
        """Every open linear position of the settle coin, following ``nextPageCursor`` to the end.

        With ``settleCoin`` and no symbol Bybit lists only positions with size > 0.
        """
        creds = self._require_credentials("fetching positions")
        positions: list[PositionObs] = []
        malformed = 0
        cursor = ""
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"category": self.config.category, "settleCoin": self.config.settle_coin,
                      "limit": PAGE_LIMIT, "cursor": cursor}
            envelope = await self._client.request(
                "GET", POSITION_LIST_PATH, decode=self._envelope,
                sign=self._signer(creds, signing.encode_query(params)))
            page = parse_position_list(envelope)
            positions.extend(page.positions)
            malformed += page.malformed
            cursor = page.next_cursor
            if not cursor:
                break
            if cursor in seen:
                raise MalformedResponse(f"{self.exchange} GET {POSITION_LIST_PATH}: nextPageCursor repeats; "
                                        f"stopped after {len(seen) + 1} pages")
            seen.add(cursor)
        else:
            raise MalformedResponse(f"{self.exchange} GET {POSITION_LIST_PATH}: more than {MAX_PAGES} pages")
        self._count_malformed(malformed)
        self.status.last_positions_malformed_rows = malformed
        return positions

    async def fetch_mark_prices(self, symbols: Sequence[str]) -> list[MarkPriceObs]:
        """Linear mark prices: ``?symbol=`` for one symbol, else one call for all, filtered to ``symbols``."""
        params: dict[str, str] = {"category": self.config.category}
        if len(symbols) == 1:
            params["symbol"] = symbols[0]
        envelope = await self._client.request("GET", TICKERS_PATH, query=signing.encode_query(params),
                                              decode=self._envelope)
        result = parse_tickers(envelope, symbols)
        self._count_malformed(result.malformed)
        return result.prices

    async def _fetch_tick_sizes(self) -> dict[str, Decimal]:
        """``priceFilter.tickSize`` of every instrument of the category, following ``nextPageCursor``."""
        ticks: dict[str, Decimal] = {}
        cursor = ""
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"category": self.config.category, "limit": INSTRUMENTS_PAGE_LIMIT, "cursor": cursor}
            envelope = await self._client.request("GET", INSTRUMENTS_INFO_PATH, query=signing.encode_query(params),
                                                  decode=self._envelope)
            page = parse_instruments(envelope)
            ticks.update(page.tick_sizes)
            self._count_malformed(page.malformed)
            cursor = page.next_cursor
            if not cursor:
                return ticks
            if cursor in seen:
                raise MalformedResponse(f"{self.exchange} GET {INSTRUMENTS_INFO_PATH}: nextPageCursor repeats")
            seen.add(cursor)
        raise MalformedResponse(f"{self.exchange} GET {INSTRUMENTS_INFO_PATH}: more than {MAX_PAGES} pages")

    def _signer(self, creds: ApiCredentials, query: str) -> Signer:
        recv_window_ms = self.config.rest.recv_window_ms

        def sign(timestamp_ms: int) -> tuple[str, dict[str, str]]:
            return query, signing.auth_headers(creds.api_key, creds.api_secret, timestamp_ms=timestamp_ms,
                                               recv_window_ms=recv_window_ms, payload=query)
        return sign

    def _envelope(self, response: RestResponse) -> BybitEnvelope:
        """Check the HTTP status and ``retCode``; return the envelope of a success."""
        status = response.status
        if status == 403:
            wait_s = max(IP_BAN_SECONDS, retry_after_seconds(response.headers) or 0.0)
            raise Banned(f"{self.exchange} {response.endpoint}: HTTP 403, IP rate limit breached or region blocked",
                         status=status, retry_after_seconds=wait_s)
        if status == 429:
            wait_s = retry_after_seconds(response.headers) or self._too_many_requests.next()
            raise RateLimited(f"{self.exchange} {response.endpoint}: HTTP 429, system frequency protection",
                              status=status, retry_after_seconds=wait_s)
        if status == 401:
            raise AuthError(f"{self.exchange} {response.endpoint}: HTTP 401, API key refused", status=status)
        if status != 200:
            try:
                envelope = decode_envelope(response.body)
            except msgspec.DecodeError:  # a non-JSON error page (proxy, CDN)
                raise RestError(f"{self.exchange} {response.endpoint}: HTTP {status}", status=status) from None
            raise error_for_ret_code(self.exchange, envelope, response, self._secrets())
        envelope = decode_envelope(response.body)
        if envelope.ret_code != 0:
            raise error_for_ret_code(self.exchange, envelope, response, self._secrets())
        self._too_many_requests.reset()
        return envelope
