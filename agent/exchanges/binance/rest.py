"""Binance USDⓈ-M REST: server time, positions, mark prices and the listenKey lifecycle.

Error handling follows .../usds-margined-futures/general-info and error-code:
429 holds calls (``Retry-After`` if sent, else until the weight window resets
or a growing short delay); 418 is an IP ban of 2 minutes to 3 days that grows
for repeat offenders; -1021 resyncs the clock and retries once (in
``RestClient``); -2015/-1022/-2014 are key problems; -1125 means the listenKey
is gone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

from agent.config.models import ExchangeConfig
from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.binance import signing
from agent.exchanges.binance.parse import (
    decode_error, parse_exchange_info, parse_listen_key, parse_position_risk, parse_premium_index,
    parse_server_time_ms,
)
from agent.exchanges.binance.urls import (
    EXCHANGE_INFO_PATH, LISTEN_KEY_PATH, POSITION_RISK_PATH, PREMIUM_INDEX_PATH, SERVER_TIME_PATH,
)
from agent.exchanges.rest_base import VenueRestBase
from agent.telemetry.metrics import Metrics
from agent.transport.backoff import GrowingDelay
from agent.transport.clock import SYSTEM_CLOCK, Clock
from agent.transport.errors import (
    AuthError, Banned, ClockSkew, ExchangeUnavailable, ListenKeyNotFound, RateLimited, RestError,
)
from agent.transport.ratelimit import RateLimitReading, RateLimitRule
from agent.transport.rest import RestClient, RestResponse, ServerTimeEndpoint, retry_after_seconds, scrub

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WEIGHT_LIMIT_PER_MINUTE = 2400  # REQUEST_WEIGHT per IP, from exchangeInfo
AUTH_CODES = frozenset({-2015, -1022, -2014})
CLOCK_SKEW_CODE = -1021
LISTEN_KEY_GONE_CODE = -1125
SERVER_ERROR_CODES = frozenset({-1001, -1007})  # internal disconnect, backend timeout
BAN_MIN_SECONDS = 120.0
BAN_MAX_SECONDS = 3 * 86_400.0
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")


def read_used_weight(headers: Mapping[str, str], server_now_ms: float) -> RateLimitReading | None:
    """``X-MBX-USED-WEIGHT-1M`` against 2400/min; the window resets on the server's minute boundary."""
    try:
        used = int(headers[WEIGHT_HEADER])
    except (KeyError, ValueError):
        return None
    reset_ms = (math.floor(server_now_ms / 60_000) + 1) * 60_000
    return RateLimitReading(max(0.0, 1.0 - used / WEIGHT_LIMIT_PER_MINUTE), float(reset_ms))


# Weight is per IP and shared by every endpoint; keep 2% for whatever else runs on this IP.
RATE_LIMIT_RULE = RateLimitRule(read=read_used_weight, shared=True, reserve_ratio=0.02, max_wait_seconds=1.0)


def _banned_until_wait_s(message: str, server_now_ms: float) -> float | None:
    match = _BANNED_UNTIL.search(message)
    return None if match is None else (int(match.group(1)) - server_now_ms) / 1000.0


def _seconds_to_next_minute(server_now_ms: float) -> float:
    return ((math.floor(server_now_ms / 60_000) + 1) * 60_000 - server_now_ms) / 1000.0


class BinanceRestApi(VenueRestBase):
    """``VenueRestApi`` for one Binance USDⓈ-M futures account, plus the listenKey calls."""

    venue = "binance"

    def __init__(self, exchange: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                 credentials: ApiCredentials | None, metrics: Metrics, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(exchange, config, credentials, metrics, clock)
        self._too_many_requests = GrowingDelay(initial_s=1.0, cap_s=60.0)
        self._ban = GrowingDelay(initial_s=BAN_MIN_SECONDS, cap_s=BAN_MAX_SECONDS)
        self._client = RestClient(
            exchange=exchange, base_url=endpoints.rest_url, metrics=metrics, status=self.status,
            timeout_seconds=config.rest.request_timeout_seconds,
            server_time=ServerTimeEndpoint(SERVER_TIME_PATH, lambda r: parse_server_time_ms(self._ok_body(r))),
            rate_limit=RATE_LIMIT_RULE, resync_interval_seconds=config.rest.server_time_sync_interval_seconds,
            clock=clock, secrets=self._secrets())

    async def fetch_positions(self) -> list[PositionObs]:
        """Rows of GET /fapi/v3/positionRisk: symbols with a position or open orders (weight 5)."""
        creds = self._require_credentials("fetching positions")
        recv_window_ms = self.config.rest.recv_window_ms

        def sign(timestamp_ms: int) -> tuple[str, dict[str, str]]:
            query = signing.signed_query(creds.api_secret, (), timestamp_ms=timestamp_ms,
                                         recv_window_ms=recv_window_ms)
            return query, signing.api_key_headers(creds.api_key)

        result = await self._client.request("GET", POSITION_RISK_PATH, sign=sign,
                                            decode=lambda r: parse_position_risk(self._ok_body(r)))
        self._count_malformed(result.malformed)
        self.status.last_positions_malformed_rows = result.malformed
        return result.positions

    async def fetch_mark_prices(self, symbols: Sequence[str]) -> list[MarkPriceObs]:
        """``?symbol=`` for one symbol (weight 1); otherwise one call for all (weight 10), filtered."""
        query = signing.encode_params([("symbol", symbols[0])]) if len(symbols) == 1 else ""
        result = await self._client.request("GET", PREMIUM_INDEX_PATH, query=query,
                                            decode=lambda r: parse_premium_index(self._ok_body(r), symbols))
        self._count_malformed(result.malformed)
        return result.prices

    async def _fetch_tick_sizes(self) -> dict[str, Decimal]:
        """``PRICE_FILTER.tickSize`` of every symbol in GET /fapi/v1/exchangeInfo (weight 1)."""
        result = await self._client.request("GET", EXCHANGE_INFO_PATH,
                                            decode=lambda r: parse_exchange_info(self._ok_body(r)))
        self._count_malformed(result.malformed)
        return result.tick_sizes

    # -- user data stream (USER_STREAM: key header only, no signature) --------------------------

    async def create_listen_key(self) -> str:
        """POST a listenKey; an active key is returned again and extended by 60 minutes."""
        key = await self._listen_key_call("POST")
        if not key:
            raise RestError(f"{self.exchange} POST {LISTEN_KEY_PATH}: reply has no listenKey")
        return key

    async def keepalive_listen_key(self, key: str) -> str | None:
        """PUT to extend the account's listenKey by 60 minutes; ``ListenKeyNotFound`` when it is gone.

        USDⓈ-M identifies the key by the API key, so ``key`` is not sent. Returns
        the key Binance reports (None when it reports none); a key different
        from ``key`` means the stream must move to the new one.
        """
        return await self._listen_key_call("PUT") or None

    async def close_listen_key(self, key: str) -> None:
        """DELETE the account's listenKey (``key`` is not sent, as for the keepalive)."""
        await self._listen_key_call("DELETE")

    async def _listen_key_call(self, method: str) -> str:
        creds = self._require_credentials("the user data stream")

        def decode(response: RestResponse) -> str:
            body = self._ok_body(response)
            return "" if method == "DELETE" else parse_listen_key(body)  # DELETE replies {}

        return await self._client.request(method, LISTEN_KEY_PATH, decode=decode,
                                          headers=signing.api_key_headers(creds.api_key))

    # -- errors --------------------------------------------------------------------------------

    def _ok_body(self, response: RestResponse) -> bytes:
        """The body of a 2xx response; any other status becomes the matching ``RestError``."""
        if 200 <= response.status < 300:
            self._too_many_requests.reset()
            self._ban.reset()
            return response.body
        raise self._error(response)

    def _error(self, response: RestResponse) -> RestError:
        status = response.status
        error = decode_error(response.body)
        code = error.code if error is not None else None
        message = scrub(error.msg, self._secrets()) if error is not None else ""
        text = f"{self.exchange} {response.endpoint}: HTTP {status}"
        if code is not None:
            text += f", code {code}: {message}"
        if status == 418:
            wait_s = max(self._ban.next(), retry_after_seconds(response.headers)
                         or _banned_until_wait_s(message, response.received_server_ms) or 0.0)
            return Banned(text, status=status, code=code, retry_after_seconds=min(wait_s, BAN_MAX_SECONDS))
        if status == 429:
            return RateLimited(text, status=status, code=code, retry_after_seconds=self._rate_limit_wait_s(response))
        if code == CLOCK_SKEW_CODE:
            return ClockSkew(text, status=status, code=code)
        if code in AUTH_CODES or status == 401:
            return AuthError(text, status=status, code=code)
        if code == LISTEN_KEY_GONE_CODE:
            return ListenKeyNotFound(text, status=status, code=code)
        if status == 408 or code in SERVER_ERROR_CODES:
            return ExchangeUnavailable(text, status=status, code=code)
        return RestError(text, status=status, code=code)

    def _rate_limit_wait_s(self, response: RestResponse) -> float:
        header = retry_after_seconds(response.headers)
        if header is not None:
            return header
        try:
            used = int(response.headers.get(WEIGHT_HEADER, ""))
        except ValueError:
            used = 0
        if used >= WEIGHT_LIMIT_PER_MINUTE:  # the minute's weight is gone: wait for the window
            return max(1.0, _seconds_to_next_minute(response.received_server_ms))
        return self._too_many_requests.next()
