"""Bybit v5 REST endpoints of the simulator (an aiohttp sub-application under ``/bybit``)."""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from agent.simulator import bybit_wire as wire
from agent.simulator.auth import AuthFailure, verify_bybit
from agent.simulator.faults import Fault
from agent.simulator.ratelimit import IpLimiter, RollingWindowLimiter
from agent.simulator.rest_common import (
    VenueContext,
    apply_malformed,
    apply_slow,
    is_websocket,
    json_response,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Builder = Callable[[Mapping[str, str], int], Any]

IP_BAN_BODY = "access too frequent"
DEFAULT_ERROR_MESSAGES = {
    10001: "Request parameter error.",
    10002: "The request time exceeds the time window range.",
    10003: "API key is invalid.",
    10004: "Error sign, please check your signature generation algorithm.",
    10005: "Permission denied, please check your API key permissions.",
    10006: "Too many visits",
    10016: "Internal System Error.",
}
_AUTH_FAULTS = {
    "key": AuthFailure(10003, "API key is invalid.", 401),
    "sign": AuthFailure(10004, "error sign! origin_string[]", 200),
    "timestamp": AuthFailure(10002, "invalid request, please check your server timestamp or recv_window param.",
                             200),
}


class BybitParamError(Exception):
    """A request parameter the venue refuses, answered as an error envelope."""

    def __init__(self, message: str, code: int = 10001) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_cursor(offset: int) -> str:
    """An opaque page cursor; like Bybit's it arrives already percent-encoded."""
    return quote(f"page={offset}", safe="")


def decode_cursor(cursor: str | None) -> int:
    """Offset of a cursor, tolerating clients that encode it once more (or not at all)."""
    if not cursor:
        return 0
    text = cursor
    for _ in range(3):
        if text.startswith("page="):
            break
        text = unquote(text)
    name, _, value = text.partition("=")
    if name != "page" or not value.isdigit():
        raise BybitParamError("params error: cursor invalid")
    return int(value)


def _limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    text = query.get("limit")
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise BybitParamError(f"params error: limit must be within [1, {maximum}]")
    return int(text)


def paginate(rows: list[dict[str, Any]], query: Mapping[str, str], default: int,
             maximum: int) -> tuple[list[dict[str, Any]], str]:
    """One page of ``rows`` and the next cursor (``""`` on the last page)."""
    limit = _limit(query, default, maximum)
    offset = decode_cursor(query.get("cursor"))
    end = offset + limit
    return rows[offset:end], (encode_cursor(end) if end < len(rows) else "")


class BybitRest:
    """Bybit REST: time, tickers, instruments, positions, and the account calls ccxt makes."""

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.ip_limiter = IpLimiter(cfg.bybit_ip_limit_requests, int(cfg.bybit_ip_limit_window_seconds * 1000),
                                    int(cfg.bybit_ip_ban_seconds * 1000))
        self._limiters: dict[str, RollingWindowLimiter] = {}

    def routes(self) -> list[web.RouteDef]:
        """The REST routes, relative to the ``/bybit`` prefix."""
        return [
            web.get("/v5/market/time", self.market_time),
            web.get("/v5/market/tickers", self.market_tickers),
            web.get("/v5/market/instruments-info", self.instruments_info),
            web.get("/v5/position/list", self._private_route(self._position_list)),
            web.get("/v5/account/info", self._private_route(lambda q, now: wire.account_info(now))),
            web.get("/v5/user/query-api",
                    self._private_route(lambda q, now: wire.api_key_info(self.ctx.credentials.api_key, now))),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Slow, IP-limit, injected-error and malformed faults around every REST request."""
        if is_websocket(request):
            return await handler(request)
        ctx = self.ctx
        endpoint = ctx.endpoint(request)
        await apply_slow(ctx, endpoint)
        now = ctx.server_ms()
        if not self.ip_limiter.allow(now):
            return web.Response(status=403, text=IP_BAN_BODY)
        fault = ctx.faults.take(ctx.venue, "rest_error", endpoint)
        if fault is not None:
            return self._injected_error(fault, endpoint, now)
        response = await handler(request)
        apply_malformed(ctx, endpoint, response)
        return response

    # -- public ------------------------------------------------------------------------------

    async def market_time(self, request: web.Request) -> web.Response:
        """GET /v5/market/time."""
        now = self.ctx.server_ms()
        return json_response(wire.envelope(wire.server_time(now), now))

    async def market_tickers(self, request: web.Request) -> web.Response:
        """GET /v5/market/tickers?category=linear[&symbol=]."""
        return self._public(request, self._tickers)

    async def instruments_info(self, request: web.Request) -> web.Response:
        """GET /v5/market/instruments-info?category=linear[&symbol=][&status=][&limit=][&cursor=]."""
        return self._public(request, self._instruments)

    def _public(self, request: web.Request, build: Builder) -> web.Response:
        now = self.ctx.server_ms()
        try:
            return json_response(wire.envelope(build(request.query, now), now))
        except BybitParamError as e:
            return json_response(wire.error_envelope(e.code, e.message, now))

    def _tickers(self, query: Mapping[str, str], now: int) -> dict[str, Any]:
        category = _category(query)
        market = self.ctx.market
        symbols = market.symbols("bybit") if category == "linear" else []
        symbol = query.get("symbol")
        if symbol:
            if symbol not in symbols:
                raise BybitParamError("Not supported symbols")
            symbols = [symbol]
        rows = [wire.ticker_row(market.spec("bybit", s), market.quote("bybit", s), now) for s in symbols]
        return {"category": category, "list": rows}

    def _instruments(self, query: Mapping[str, str], now: int) -> dict[str, Any]:
        category = _category(query)
        market = self.ctx.market
        symbols = market.symbols("bybit") if category == "linear" else []
        if query.get("symbol"):
            symbols = [s for s in symbols if s == query["symbol"]]
        if query.get("status") not in (None, "", "Trading"):
            symbols = []  # every simulated instrument is trading (no PreLaunch, no Delivering)
        rows = [wire.instrument_row(market.spec("bybit", s)) for s in symbols]
        page, cursor = paginate(rows, query, default=500, maximum=1000)
        return {"category": category, "list": page, "nextPageCursor": cursor}

    # -- private -----------------------------------------------------------------------------

    def _private_route(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._private(request, build)
        return handler

    async def _private(self, request: web.Request, build: Builder) -> web.Response:
        """Verify the signature, apply the per-endpoint limit, then answer with rate-limit headers."""
        ctx = self.ctx
        now = ctx.server_ms()
        endpoint = ctx.endpoint(request)
        # Signatures cover the exact bytes received: the raw query for GET, the raw body for POST.
        payload = request.rel_url.raw_query_string if request.method == "GET" else await request.text()
        failure = self._auth_fault(endpoint) or verify_bybit(
            request.headers, payload, api_key=ctx.credentials.api_key, api_secret=ctx.credentials.api_secret,
            server_ms=now)
        if failure is not None:
            return json_response(wire.error_envelope(failure.code, failure.message, now),
                                 status=failure.http_status)
        decision = self._limiter(endpoint).acquire(now)
        headers = {"X-Bapi-Limit-Status": str(decision.remaining), "X-Bapi-Limit": str(decision.limit),
                   "X-Bapi-Limit-Reset-Timestamp": str(decision.reset_ms)}
        if not decision.allowed:
            return json_response(wire.error_envelope(10006, "Too many visits", now), headers=headers)
        try:
            result = build(request.query, now)
        except BybitParamError as e:
            return json_response(wire.error_envelope(e.code, e.message, now), headers=headers)
        return json_response(wire.envelope(result, now), headers=headers)

    def _auth_fault(self, endpoint: str) -> AuthFailure | None:
        fault = self.ctx.faults.take(self.ctx.venue, "reject_auth", endpoint)
        if fault is None:
            return None
        return _AUTH_FAULTS[fault.params.get("reason", "key")]

    def _limiter(self, endpoint: str) -> RollingWindowLimiter:
        if endpoint not in self._limiters:
            self._limiters[endpoint] = RollingWindowLimiter(self.ctx.config.bybit_limit_per_second(endpoint))
        return self._limiters[endpoint]

    def _position_list(self, query: Mapping[str, str], now: int) -> dict[str, Any]:
        category = _category(query, allowed=("linear", "inverse", "option"))
        symbol, settle = query.get("symbol"), query.get("settleCoin")
        if category == "linear" and not symbol and not settle:
            raise BybitParamError("Missing some parameters that must be filled in, symbol or settleCoin")
        market = self.ctx.market
        rows: list[dict[str, Any]] = []
        if category == "linear" and symbol:
            # With a symbol Bybit returns the slot even when it is flat.
            if not market.has_symbol("bybit", symbol):
                raise BybitParamError("params error: symbol invalid")
            rows = self._symbol_rows(symbol, now)
        elif category == "linear" and settle == "USDT":
            rows = [self._open_row(p) for p in market.positions("bybit")]
        page, cursor = paginate(rows, query, default=20, maximum=200)
        return {"list": page, "nextPageCursor": cursor, "category": category}

    def _open_row(self, pos: Any) -> dict[str, Any]:
        market = self.ctx.market
        return wire.position_row(pos, market.spec("bybit", pos.symbol), market.quote("bybit", pos.symbol))

    def _symbol_rows(self, symbol: str, now: int) -> list[dict[str, Any]]:
        market = self.ctx.market
        spec, quote = market.spec("bybit", symbol), market.quote("bybit", symbol)
        slots = (1, 2) if market.is_hedge_mode("bybit", symbol) else (0,)
        rows = []
        for idx in slots:
            pos = market.position("bybit", symbol, idx)
            if pos is not None:
                rows.append(wire.position_row(pos, spec, quote))
            else:
                rows.append(wire.flat_row(symbol, idx, quote, spec.default_leverage,
                                          market.last_seq("bybit", symbol, idx), now))
        return rows

    def _injected_error(self, fault: Fault, endpoint: str, now: int) -> web.Response:
        """The response a ``rest_error`` fault asks for, shaped as Bybit shapes it."""
        status = int(fault.params["status"])
        code = fault.params.get("code")
        message = fault.params.get("message")
        if status == 200:
            code = 10006 if code is None else int(code)
            headers = {}
            if code == 10006:
                limit = self.ctx.config.bybit_limit_per_second(endpoint)
                headers = {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit": str(limit),
                           "X-Bapi-Limit-Reset-Timestamp": str(now + 1000)}
            text = message or DEFAULT_ERROR_MESSAGES.get(code, "Internal System Error.")
            return json_response(wire.error_envelope(code, text, now), headers=headers)
        if status == 403:
            return web.Response(status=403, text=message or IP_BAN_BODY)
        if code is not None:
            text = message or DEFAULT_ERROR_MESSAGES.get(int(code), "Internal System Error.")
            return json_response(wire.error_envelope(int(code), text, now), status=status)
        return web.Response(status=status, text=message or _reason(status))


def _category(query: Mapping[str, str], allowed: tuple[str, ...] = ("linear", "inverse", "option", "spot")) -> str:
    category = query.get("category")
    if not category:
        raise BybitParamError("Missing some parameters that must be filled in, category")
    if category not in allowed:
        raise BybitParamError("Illegal category")
    return category


def _reason(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
