"""Binance USDⓈ-M WebSocket of the simulator: routed ``/market`` and ``/private`` bases.

Shapes follow https://developers.binance.com/docs/derivatives/usds-margined-futures/
(websocket-market-streams, Mark-Price-Stream, Live-Subscribing-Unsubscribing-to-streams,
user-data-streams). Since 2026-04-23 mark prices come only from ``/market``: the routed
``/public`` base and the unrouted legacy ``/ws``/``/stream`` paths connect, ack requests and
answer pings, but never deliver a mark price.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from agent.simulator import binance_wire as wire
from agent.simulator.faults import Fault
from agent.simulator.listenkeys import ListenKeyBook
from agent.simulator.positions import PositionChange
from agent.simulator.ratelimit import RollingWindowLimiter
from agent.simulator.rest_common import VenueContext, json_response
from agent.simulator.ws_common import WsConnection, new_response
from agent.simulator.ws_faults import (
    LISTEN_KEY_EXPIRE,
    WS_DROP_EVENT,
    WS_REJECT_AUTH,
    WS_REJECT_SUBSCRIBE,
    drifted_mark,
)
from agent.simulator.ws_hub import WsHub

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALL_MARK_PRICES = ("!markPrice@arr", "!markPrice@arr@1s")
# The USDT wallet balance ACCOUNT_UPDATE reports (the simulator keeps no ledger).
WALLET_BALANCE = Decimal("10000")
_UNKNOWN_METHOD = ("Invalid request: unknown variant `{}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                   "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 28")


class RequestError(Exception):
    """A live request Binance answers with ``{"code", "msg"}`` (and ``id`` when it had a valid one)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class BinanceWs:
    """The Binance WebSocket routes, the mark-price pumps, ACCOUNT_UPDATE and listenKey expiry."""

    venue = "binance"

    def __init__(self, ctx: VenueContext, hub: WsHub, listen_keys: ListenKeyBook) -> None:
        self.ctx = ctx
        self.hub = hub
        self.listen_keys = listen_keys
        hub.attach(self)

    def routes(self) -> list[web.RouteDef]:
        """WebSocket routes relative to ``/binance``."""
        routes = []
        for base, stream in (("/market", "market"), ("/public", "public"), ("", "legacy")):
            raw, combined = self._market_route(stream, False), self._market_route(stream, True)
            routes += [web.get(f"{base}/ws", raw), web.get(f"{base}/ws/{{streams:.+}}", raw),
                       web.get(f"{base}/stream", combined)]
        raw_private, combined_private = self._private_route(False), self._private_route(True)
        routes += [web.get("/private/ws/{listen_key}", raw_private), web.get("/private/ws", raw_private),
                   web.get("/private/stream", combined_private)]
        return routes

    # -- handshakes --------------------------------------------------------------------------

    def _market_route(self, stream: str, combined: bool) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._market(request, stream, combined)
        return handler

    def _private_route(self, combined: bool) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._private(request, combined)
        return handler

    async def _market(self, request: web.Request, stream: str, combined: bool) -> web.StreamResponse:
        source = request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        names = list(dict.fromkeys(s for s in source.split("/") if s))
        limit = self.ctx.config.binance_ws_max_streams_per_connection
        if len(names) > limit:
            self.hub.refused("binance", stream)
            return json_response(wire.error(-1, f"Too many streams: at most {limit} per connection."), status=400)
        ws = new_response()
        await ws.prepare(request)
        conn = self._open(request, ws, stream)
        conn.subscriptions = names
        conn.state["combined"] = combined
        await self.hub.run(conn, self._text)
        return ws

    async def _private(self, request: web.Request, combined: bool) -> web.StreamResponse:
        key = request.match_info.get("listen_key") or request.query.get("listenKey", "")
        refused = self.ctx.faults.take("binance", WS_REJECT_AUTH.name) is not None
        if refused or not key or self.listen_keys.active(self.ctx.server_ms()) != key:
            self.hub.refused("binance", "private")
            return json_response(wire.error(-1125, "This listenKey does not exist."), status=400)
        events = request.query.get("events")
        ws = new_response()
        await ws.prepare(request)
        conn = self._open(request, ws, "private")
        conn.authenticated = True
        conn.subscriptions = [key]
        conn.state.update(combined=combined, listen_key=key,
                          events=None if not events else set(events.split("/")))
        await self.hub.run(conn, self._text)
        return ws

    def _open(self, request: web.Request, ws: web.WebSocketResponse, stream: str) -> WsConnection:
        cfg = self.ctx.config
        conn = self.hub.open(venue="binance", stream=stream, fault_stream="private" if stream == "private"
                             else "market", request=request, ws=ws, conn_id=uuid.uuid4().hex,
                             server_ms=self.ctx.server_ms)
        conn.max_age_seconds = cfg.binance_ws_max_connection_age_seconds
        conn.ping_interval_seconds = cfg.binance_ws_ping_interval_seconds
        conn.next_ping_mono = conn.opened_mono + cfg.binance_ws_ping_interval_seconds
        conn.pong_timeout_seconds = cfg.binance_ws_pong_timeout_seconds
        conn.rate_limiter = RollingWindowLimiter(cfg.binance_ws_max_incoming_per_second)
        return conn

    # -- live requests -----------------------------------------------------------------------

    async def _text(self, conn: WsConnection, text: str) -> None:
        req_id: int | None = None
        try:
            msg = _decode(text)
            req_id = _unsigned_id(msg)
            if "method" not in msg:
                raise RequestError(2, "Invalid request: missing field `method` at line 1 column 1")
            if req_id is None:
                raise RequestError(2, "Invalid request: request ID must be an unsigned integer")
            conn.send_control({"result": self._answer(conn, msg), "id": req_id})
        except RequestError as e:
            error: dict[str, Any] = {"code": e.code, "msg": e.msg}
            if req_id is not None:
                error["id"] = req_id
            conn.send_control(error)

    def _answer(self, conn: WsConnection, msg: dict[str, Any]) -> Any:
        method, params = msg.get("method"), msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise RequestError(2, "Invalid request: params must be an array of stream names")
            if method == "UNSUBSCRIBE":
                conn.subscriptions[:] = [s for s in conn.subscriptions if s not in params]
                return None
            return self._subscribe(conn, params)
        if method == "LIST_SUBSCRIPTIONS":
            return list(conn.subscriptions)
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(conn, method, params)
        raise RequestError(2, _UNKNOWN_METHOD.format(method))

    def _subscribe(self, conn: WsConnection, params: list[str]) -> None:
        fault = self.ctx.faults.take("binance", WS_REJECT_SUBSCRIBE.name, stream=conn.fault_stream)
        if fault is not None:
            raise RequestError(int(fault.params.get("code", 2)),
                               fault.params.get("message", "Invalid request: subscription refused"))
        new = [p for p in dict.fromkeys(params) if p not in conn.subscriptions]
        limit = self.ctx.config.binance_ws_max_streams_per_connection
        if len(conn.subscriptions) + len(new) > limit:
            raise RequestError(2, f"Invalid request: too many streams; at most {limit} per connection")
        conn.subscriptions.extend(new)

    @staticmethod
    def _property(conn: WsConnection, method: str, params: Any) -> Any:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise RequestError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise RequestError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return bool(conn.state.get("combined", False))
        if len(params) != 2 or not isinstance(params[1], bool):
            raise RequestError(1, "Invalid value type: expected Boolean")
        conn.state["combined"] = params[1]
        return None

    # -- mark prices -------------------------------------------------------------------------

    def push_mark_prices_fast(self) -> None:
        """One beat of the ``@markPrice@1s`` streams."""
        self._push_mark_prices(fast=True)

    def push_mark_prices(self) -> None:
        """One beat of the ``@markPrice`` (3 s) streams."""
        self._push_mark_prices(fast=False)

    def _push_mark_prices(self, *, fast: bool) -> None:
        conns = [c for c in self.hub.live("binance", "market") if c.subscriptions]
        if not conns:
            return
        now = self.ctx.server_ms()
        events: dict[str, dict[str, Any]] = {}
        for conn in conns:
            for name in conn.subscriptions:
                parsed = self.parse_stream(name)
                if parsed is None or parsed[1] != fast:
                    continue
                symbols = [parsed[0]] if parsed[0] is not None else self.ctx.market.symbols("binance")
                payload = [self._mark_event(s, now, events) for s in symbols]
                data = payload if parsed[0] is None else payload[0]
                conn.send_data({"stream": name, "data": data} if conn.state.get("combined") else data)

    def parse_stream(self, name: str) -> tuple[str | None, bool] | None:
        """``(SYMBOL or None for all, is_1s)`` of a mark-price stream name; None for anything else."""
        if name in ALL_MARK_PRICES:
            return None, name.endswith("@1s")
        base, _, kind = name.partition("@")
        if kind not in ("markPrice", "markPrice@1s"):
            return None
        # Stream names use lowercase symbols; an uppercase one is a different (empty) stream.
        if base != base.lower() or not self.ctx.market.has_symbol("binance", base.upper()):
            return None
        return base.upper(), kind.endswith("@1s")

    def _mark_event(self, symbol: str, now: int, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if symbol not in cache:
            market = self.ctx.market
            spec, quote = market.spec("binance", symbol), market.quote("binance", symbol)
            mark = drifted_mark(self.ctx.faults, "binance", symbol, quote.mark_price, spec.tick)
            cache[symbol] = wire.mark_price_update(spec, quote, now, mark)
        return cache[symbol]

    # -- user data ---------------------------------------------------------------------------

    def on_position_change(self, change: PositionChange) -> None:
        """``ACCOUNT_UPDATE`` with only the changed position, on every live user-data connection."""
        targets = [c for c in self.hub.live("binance", "private") if not c.muted
                   and (c.state["events"] is None or "ACCOUNT_UPDATE" in c.state["events"])]
        if not targets:
            return
        if self.ctx.faults.take("binance", WS_DROP_EVENT.name) is not None:
            targets[0].totals["dropped_events"] += 1
            return
        market = self.ctx.market
        spec, quote = market.spec("binance", change.symbol), market.quote("binance", change.symbol)
        pos = market.position("binance", change.symbol, change.position_idx)
        row = wire.account_position(change.symbol, change.position_idx, pos, spec, quote)
        event = wire.account_update([row], self.ctx.server_ms(), WALLET_BALANCE)
        for conn in targets:
            self._send_user(conn, event)

    def housekeeping(self) -> None:
        """A connection whose listenKey lapsed (no keepalive, DELETE, a new key) gets listenKeyExpired."""
        active = self.listen_keys.active(self.ctx.server_ms())
        for conn in self.hub.live("binance", "private"):
            if not conn.muted and conn.state["listen_key"] != active:
                self._expire(conn, e_as_string=False)

    def on_fault(self, fault: Fault) -> None:
        """``listen_key_expire``: expire the key now and tell its connections."""
        if fault.kind != LISTEN_KEY_EXPIRE.name:
            return
        key = self.listen_keys.expire()
        for conn in self.hub.live("binance", "private"):
            if not conn.muted and conn.state["listen_key"] == key:
                self._expire(conn, e_as_string=bool(fault.params.get("e_as_string", False)))
        self.ctx.faults.clear(fault.id)

    def _expire(self, conn: WsConnection, *, e_as_string: bool) -> None:
        key = conn.state["listen_key"]
        self._send_user(conn, wire.listen_key_expired(key, self.ctx.server_ms(), e_as_string=e_as_string))
        # Not a disconnect: the socket stays open, but no more user data arrives on it.
        conn.muted = True

    @staticmethod
    def _send_user(conn: WsConnection, event: dict[str, Any]) -> None:
        key = conn.state["listen_key"]
        conn.send_data({"stream": key, "data": event} if conn.state.get("combined") else event)


def _decode(text: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError as e:
        line, column = getattr(e, "lineno", 1), getattr(e, "colno", 1)
        raise RequestError(3, f"Invalid JSON: expected value at line {line} column {column}") from None
    if not isinstance(msg, dict):
        raise RequestError(2, "Invalid request: expected a JSON object")
    return msg


def _unsigned_id(msg: dict[str, Any]) -> int | None:
    req_id = msg.get("id")
    if isinstance(req_id, bool) or not isinstance(req_id, int) or req_id < 0:
        return None
    return req_id
