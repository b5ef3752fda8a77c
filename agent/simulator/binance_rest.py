"""Binance USDⓈ-M REST endpoints of the simulator (an aiohttp sub-application under ``/binance``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from agent.simulator import binance_wire as wire
from agent.simulator.auth import AuthFailure, verify_binance, verify_binance_api_key
from agent.simulator.faults import Fault
from agent.simulator.listenkeys import ListenKeyBook
from agent.simulator.ratelimit import WeightDecision, WeightLimiter
from agent.simulator.rest_common import (
    VenueContext,
    apply_malformed,
    apply_slow,
    is_websocket,
    json_response,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Builder = Callable[[Mapping[str, str], int], Any]

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Request weights as documented; the two market endpoints cost more without a symbol.
_FIXED_WEIGHTS = {
    "/fapi/v1/ping": 1, "/fapi/v1/time": 1, "/fapi/v1/exchangeInfo": 1, "/fapi/v3/positionRisk": 5,
    "/fapi/v2/positionRisk": 5, "/fapi/v1/leverageBracket": 1, "/fapi/v1/positionSide/dual": 30,
    "/fapi/v1/listenKey": 1,
}
_SYMBOL_WEIGHTS = {"/fapi/v1/premiumIndex": (1, 10), "/fapi/v1/ticker/24hr": (1, 40)}
_AUTH_FAULTS = {
    "key": AuthFailure(-2015, "Invalid API-key, IP, or permissions for action.", 401),
    "sign": AuthFailure(-1022, "Signature for this request is not valid.", 400),
    "timestamp": AuthFailure(-1021, "Timestamp for this request is outside of the recvWindow.", 400),
}
_DEFAULT_MESSAGES = {
    500: (-1001, "Internal error; unable to process your request. Please try again."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
}


class BinanceParamError(Exception):
    """A parameter the venue refuses (HTTP 400 with a code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_weight(endpoint: str, query: Mapping[str, str]) -> int:
    """The documented request weight of one call."""
    if endpoint in _SYMBOL_WEIGHTS:
        with_symbol, without = _SYMBOL_WEIGHTS[endpoint]
        return with_symbol if query.get("symbol") else without
    return _FIXED_WEIGHTS.get(endpoint, 1)


class BinanceRest:
    """Binance REST: time, exchangeInfo, mark prices, tickers, positions, listenKey."""

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.weights = WeightLimiter(cfg.binance_weight_limit_per_minute,
                                     limited_answers_before_ban=cfg.binance_429s_before_ban,
                                     ban_ms=int(cfg.binance_ban_seconds * 1000))
        self.listen_keys = ListenKeyBook(int(cfg.listen_key_validity_seconds * 1000))

    def routes(self) -> list[web.RouteDef]:
        """The REST routes, relative to the ``/binance`` prefix."""
        signed = self._signed_route
        return [
            web.get("/fapi/v1/ping", self._public_route(lambda q, now: {})),
            web.get("/fapi/v1/time", self._public_route(lambda q, now: {"serverTime": now})),
            web.get("/fapi/v1/exchangeInfo", self._public_route(self._exchange_info)),
            web.get("/fapi/v1/premiumIndex", self._public_route(self._premium_index)),
            web.get("/fapi/v1/ticker/24hr", self._public_route(self._ticker_24hr)),
            web.get("/fapi/v3/positionRisk", signed(self._position_risk_v3)),
            web.get("/fapi/v2/positionRisk", signed(self._position_risk_v2)),
            web.get("/fapi/v1/leverageBracket", signed(self._leverage_bracket)),
            web.get("/fapi/v1/positionSide/dual",
                    signed(lambda q, now: {"dualSidePosition": self.ctx.market.is_hedge_mode("binance")})),
            web.post("/fapi/v1/listenKey", self.listen_key),
            web.put("/fapi/v1/listenKey", self.listen_key),
            web.delete("/fapi/v1/listenKey", self.listen_key),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Slow, injected-error, weight-limit and malformed faults; the weight header on every answer."""
        if is_websocket(request):
            return await handler(request)
        ctx = self.ctx
        endpoint = ctx.endpoint(request)
        await apply_slow(ctx, endpoint)
        now = ctx.server_ms()
        fault = ctx.faults.take(ctx.venue, "rest_error", endpoint)
        if fault is not None:
            response: web.StreamResponse = self._injected_error(fault, request, now)
            response.headers[WEIGHT_HEADER] = str(self.weights.used(now))
            return response
        decision = self.weights.charge(request_weight(endpoint, request.query), now)
        if decision.outcome != "ok":
            response = self._limit_error(decision, request)
        else:
            response = await handler(request)
            apply_malformed(ctx, endpoint, response)
        response.headers[WEIGHT_HEADER] = str(decision.used_weight)
        return response

    # -- public ------------------------------------------------------------------------------

    def _public_route(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            now = self.ctx.server_ms()
            try:
                return json_response(build(request.query, now))
            except BinanceParamError as e:
                return json_response(wire.error(e.code, e.message), status=400)
        return handler

    def _symbols(self, query: Mapping[str, str]) -> tuple[list[str], bool]:
        """Requested symbols and whether one was named; -1121 for an unknown one."""
        market = self.ctx.market
        symbol = query.get("symbol")
        if symbol is None:
            return market.symbols("binance"), False
        if not market.has_symbol("binance", symbol):
            raise BinanceParamError(-1121, "Invalid symbol.")
        return [symbol], True

    def _exchange_info(self, query: Mapping[str, str], now: int) -> dict[str, Any]:
        return wire.exchange_info(self.ctx.config.binance_symbols, now,
                                  self.ctx.config.binance_weight_limit_per_minute)

    def _premium_index(self, query: Mapping[str, str], now: int) -> Any:
        symbols, single = self._symbols(query)
        market = self.ctx.market
        rows = [wire.premium_index(market.spec("binance", s), market.quote("binance", s), now) for s in symbols]
        return rows[0] if single else rows

    def _ticker_24hr(self, query: Mapping[str, str], now: int) -> Any:
        symbols, single = self._symbols(query)
        market = self.ctx.market
        rows = [wire.ticker_24hr(market.spec("binance", s), market.quote("binance", s), now) for s in symbols]
        return rows[0] if single else rows

    # -- signed ------------------------------------------------------------------------------

    def _signed_route(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._signed(request, build)
        return handler

    async def _signed(self, request: web.Request, build: Builder) -> web.Response:
        """Verify key, timestamp and signature over the raw query + body, then answer."""
        ctx = self.ctx
        now = ctx.server_ms()
        query = request.rel_url.raw_query_string
        body = "" if request.method == "GET" else await request.text()
        failure = self._auth_fault(ctx.endpoint(request)) or verify_binance(
            request.headers.get("X-MBX-APIKEY"), query, body, api_key=ctx.credentials.api_key,
            api_secret=ctx.credentials.api_secret, server_ms=now)
        if failure is not None:
            return json_response(wire.error(failure.code, failure.message), status=failure.http_status)
        params = dict(parse_qsl(query + ("&" + body if body else ""), keep_blank_values=True))
        try:
            return json_response(build(params, now))
        except BinanceParamError as e:
            return json_response(wire.error(e.code, e.message), status=400)

    def _auth_fault(self, endpoint: str) -> AuthFailure | None:
        fault = self.ctx.faults.take(self.ctx.venue, "reject_auth", endpoint)
        if fault is None:
            return None
        return _AUTH_FAULTS[fault.params.get("reason", "key")]

    def _position_risk_v3(self, query: Mapping[str, str], now: int) -> list[dict[str, Any]]:
        symbols, _ = self._symbols(query)
        market = self.ctx.market
        # v3 lists only symbols with a position (or open orders, which the simulator has none of).
        return [wire.position_risk_v3(p, market.spec("binance", p.symbol), market.quote("binance", p.symbol))
                for s in symbols for p in market.positions("binance", s)]

    def _position_risk_v2(self, query: Mapping[str, str], now: int) -> list[dict[str, Any]]:
        symbols, _ = self._symbols(query)
        market = self.ctx.market
        slots = (1, 2) if market.is_hedge_mode("binance") else (0,)
        rows = []
        for symbol in symbols:
            spec, quote = market.spec("binance", symbol), market.quote("binance", symbol)
            for idx in slots:
                pos = market.position("binance", symbol, idx)
                rows.append(wire.flat_risk_v2(symbol, idx, spec, quote) if pos is None
                            else wire.position_risk_v2(pos, spec, quote))
        return rows

    def _leverage_bracket(self, query: Mapping[str, str], now: int) -> Any:
        symbols, single = self._symbols(query)
        rows = [wire.leverage_bracket(self.ctx.market.spec("binance", s)) for s in symbols]
        return rows[0] if single else rows

    # -- user data stream --------------------------------------------------------------------

    async def listen_key(self, request: web.Request) -> web.Response:
        """POST/PUT/DELETE /fapi/v1/listenKey: API-key header only, no signature."""
        ctx = self.ctx
        now = ctx.server_ms()
        failure = self._auth_fault(ctx.endpoint(request)) or verify_binance_api_key(
            request.headers.get("X-MBX-APIKEY"), api_key=ctx.credentials.api_key)
        if failure is not None:
            return json_response(wire.error(failure.code, failure.message), status=failure.http_status)
        params = dict(parse_qsl(request.rel_url.raw_query_string + "&" + await request.text()))
        if request.method == "POST":
            return json_response({"listenKey": self.listen_keys.create_or_extend(now)})
        if request.method == "PUT":
            key = self.listen_keys.keepalive(now, params.get("listenKey"))
            if key is None:
                return json_response(wire.error(-1125, "This listenKey does not exist."), status=400)
            return json_response({"listenKey": key})
        self.listen_keys.close(now, params.get("listenKey"))
        return json_response({})

    # -- errors ------------------------------------------------------------------------------

    def _limit_error(self, decision: WeightDecision, request: web.Request) -> web.Response:
        ip = request.remote or "127.0.0.1"
        headers = {"Retry-After": str(decision.retry_after_s)}
        if decision.outcome == "banned":
            msg = (f"Way too many requests; IP({ip}) banned until {decision.banned_until_ms}. "
                   "Please use the websocket for live updates to avoid bans.")
            return json_response(wire.error(-1003, msg), status=418, headers=headers)
        msg = (f"Too many requests; current limit of IP({ip}) is {self.weights.limit} requests per minute. "
               "Please use the websocket for live updates to avoid polling the API.")
        return json_response(wire.error(-1003, msg), status=429, headers=headers)

    def _injected_error(self, fault: Fault, request: web.Request, now: int) -> web.Response:
        """The response a ``rest_error`` fault asks for, shaped as Binance shapes it."""
        status = int(fault.params["status"])
        code = fault.params.get("code")
        message = fault.params.get("message")
        retry_after = fault.params.get("retry_after_seconds")
        headers: dict[str, str] = {}
        ip = request.remote or "127.0.0.1"
        if status == 429:
            retry_after = retry_after if retry_after is not None else max(1, (60_000 - now % 60_000 + 999) // 1000)
            code, message = code or -1003, message or (
                f"Too many requests; current limit of IP({ip}) is {self.weights.limit} requests per minute.")
        elif status == 418:
            ban_s = retry_after if retry_after is not None else int(self.ctx.config.binance_ban_seconds)
            retry_after = ban_s
            code, message = code or -1003, message or (
                f"Way too many requests; IP({ip}) banned until {now + ban_s * 1000}.")
        elif code is None:
            code, default = _DEFAULT_MESSAGES.get(status, (-1000, "An unknown error occurred while processing "
                                                                  "the request."))
            message = message or default
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return json_response(wire.error(int(code), message or "An unknown error occurred."), status=status,
                             headers=headers)
