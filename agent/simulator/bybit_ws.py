"""Bybit v5 WebSocket of the simulator: ``/v5/public/linear`` (tickers) and ``/v5/private`` (position).

Shapes follow https://bybit-exchange.github.io/docs/v5/ws/connect and the ticker and position
topic pages: linear acks carry ``req_id`` (``""`` when none was sent), the public pong is an
``op:"ping"`` frame with ``ret_msg:"pong"``, the private pong is ``op:"pong"`` with ``args``.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import string
import uuid
from decimal import Decimal
from typing import Any

from aiohttp import web

from agent.simulator import bybit_wire as wire
from agent.simulator.auth import hmac_sha256_hex
from agent.simulator.faults import Fault
from agent.simulator.market import BookSizeWalk
from agent.simulator.positions import PositionChange
from agent.simulator.rest_common import VenueContext, json_response
from agent.simulator.ws_common import WsConnection, new_response
from agent.simulator.ws_faults import WS_DROP_EVENT, WS_REJECT_AUTH, WS_REJECT_SUBSCRIBE, drifted_mark
from agent.simulator.ws_hub import WsHub

POSITION_TOPICS = ("position", "position.linear")
# Private topics the simulator accepts; only the position topics ever push (it has no orders).
QUIET_PRIVATE_TOPICS = ("position.inverse", "position.option", "order", "order.linear", "execution",
                        "execution.linear", "execution.fast", "wallet", "greeks")
_MAX_ACTIVE_TIME = re.compile(r"^(\d+)(s|m)$")
_CONN_ALPHABET = string.ascii_lowercase + string.digits
# The account id in front of position message ids (as in api_key_info's userID).
_UID = "24600000"


def _private_conn_id() -> str:
    """A private connection id in Bybit's style (``cejreaspqfh3sjdnldmg-p``)."""
    head = "".join(secrets.choice(_CONN_ALPHABET) for _ in range(20))
    return f"{head}-{''.join(secrets.choice(_CONN_ALPHABET) for _ in range(2))}"


def parse_max_active_time(text: str) -> float | None:
    """Seconds of ``max_active_time`` (``30s`` ... ``600s``, ``1m`` ... ``10m``); None if invalid."""
    match = _MAX_ACTIVE_TIME.match(text)
    if match is None:
        return None
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    return float(seconds) if 30 <= seconds <= 600 else None


class BybitWs:
    """The Bybit WebSocket routes, the 100 ms ticker pump and position pushes."""

    venue = "bybit"

    def __init__(self, ctx: VenueContext, hub: WsHub, *, seed: int) -> None:
        self.ctx = ctx
        self.hub = hub
        self._book = BookSizeWalk(seed=seed)
        self._last_price: dict[str, tuple[Decimal, str]] = {}
        self._cs = 9_500_000_000 + random.Random(f"{seed}/bybit-ws-cs").randrange(1_000_000)
        hub.attach(self)

    def routes(self) -> list[web.RouteDef]:
        """WebSocket routes relative to ``/bybit``."""
        return [web.get("/v5/public/linear", self.public), web.get("/v5/private", self.private)]

    # -- handshakes --------------------------------------------------------------------------

    async def public(self, request: web.Request) -> web.StreamResponse:
        """``GET /v5/public/linear``: tickers."""
        ws = new_response()
        await ws.prepare(request)
        conn = self.hub.open(venue="bybit", stream="public", fault_stream="public", request=request, ws=ws,
                             conn_id=str(uuid.uuid4()), server_ms=self.ctx.server_ms)
        conn.state["tickers"] = {}
        await self.hub.run(conn, self._public_text)
        return ws

    async def private(self, request: web.Request) -> web.StreamResponse:
        """``GET /v5/private[?max_active_time=]``: auth, then the position topic."""
        idle = self.ctx.config.bybit_ws_private_idle_timeout_seconds
        if "max_active_time" in request.query:
            parsed = parse_max_active_time(request.query["max_active_time"])
            if parsed is None:
                self.hub.refused("bybit", "private")
                return json_response({"success": False, "ret_msg": "max_active_time must be 30s to 600s"},
                                     status=400)
            idle = parsed
        ws = new_response()
        await ws.prepare(request)
        conn = self.hub.open(venue="bybit", stream="private", fault_stream="private", request=request, ws=ws,
                             conn_id=_private_conn_id(), server_ms=self.ctx.server_ms)
        conn.idle_timeout_seconds = idle
        await self.hub.run(conn, self._private_text)
        return ws

    # -- requests ----------------------------------------------------------------------------

    async def _public_text(self, conn: WsConnection, text: str) -> None:
        msg = _request(text)
        op, req_id = msg.get("op"), msg.get("req_id")
        if op == "ping":
            if not conn.ignores_ping():
                conn.send_control(self._public_ack(conn, "ping", req_id, True, "pong"))
        elif op == "subscribe":
            self._subscribe(conn, msg.get("args"), req_id, private=False)
        elif op == "unsubscribe":
            self._unsubscribe(conn, msg.get("args"), req_id, private=False)
        else:
            conn.send_control(self._public_ack(conn, str(op or ""), req_id, False, f"error:unknown op {op}"))

    async def _private_text(self, conn: WsConnection, text: str) -> None:
        msg = _request(text)
        op, req_id = msg.get("op"), msg.get("req_id")
        if op == "ping":
            if conn.ignores_ping():
                return
            conn.note_heartbeat()
            pong: dict[str, Any] = {"op": "pong", "args": [str(self.ctx.server_ms())], "conn_id": conn.conn_id}
            conn.send_control({"req_id": req_id, **pong} if req_id is not None else pong)
        elif op == "auth":
            self._auth(conn, msg.get("args"), req_id)
        elif op in ("subscribe", "unsubscribe") and not conn.authenticated:
            conn.send_control(self._private_ack(conn, op, req_id, False, "Request not authorized"))
        elif op == "subscribe":
            self._subscribe(conn, msg.get("args"), req_id, private=True)
        elif op == "unsubscribe":
            self._unsubscribe(conn, msg.get("args"), req_id, private=True)
        else:
            conn.send_control(self._private_ack(conn, str(op or ""), req_id, False, f"error:unknown op {op}"))

    def _auth(self, conn: WsConnection, args: Any, req_id: Any) -> None:
        """``args = [apiKey, expires, signature]``; expires is ms and must lie ahead of the server clock."""
        fault = self.ctx.faults.take("bybit", WS_REJECT_AUTH.name)
        ok = fault is None and self._auth_ok(args)
        if ok:
            conn.authenticated = True
        message = "" if ok else (fault.params.get("message", "Params Error") if fault else "Params Error")
        conn.send_control(self._private_ack(conn, "auth", req_id, ok, message))

    def _auth_ok(self, args: Any) -> bool:
        if not isinstance(args, list) or len(args) != 3:
            return False
        key, expires, signature = args
        creds = self.ctx.credentials
        if key != creds.api_key or not isinstance(signature, str):
            return False
        if isinstance(expires, bool) or not (isinstance(expires, int) or (isinstance(expires, str)
                                                                          and expires.isdigit())):
            return False
        if int(expires) <= self.ctx.server_ms():
            return False
        return signature.lower() == hmac_sha256_hex(creds.api_secret, f"GET/realtime{expires}")

    def _subscribe(self, conn: WsConnection, args: Any, req_id: Any, *, private: bool) -> None:
        ack = self._private_ack if private else self._public_ack
        fault = self.ctx.faults.take("bybit", WS_REJECT_SUBSCRIBE.name, stream=conn.fault_stream)
        if fault is not None:
            message = fault.params.get("message", "error:subscription refused")
            conn.send_control(ack(conn, "subscribe", req_id, False, message))
            return
        error = self._subscribe_error(conn, args, private=private)
        if error is not None:
            conn.send_control(ack(conn, "subscribe", req_id, False, error))
            return
        conn.subscriptions.extend(args)
        conn.send_control(ack(conn, "subscribe", req_id, True, ""))
        if not private:
            for topic in args:
                self._send_snapshot(conn, topic)

    def _subscribe_error(self, conn: WsConnection, args: Any, *, private: bool) -> str | None:
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return "error:args must be a non-empty list of topics"
        for topic in args:
            if topic in conn.subscriptions:
                # Bybit refuses the whole batch when one topic is already subscribed.
                return f"error:already subscribed,topic:{topic}"
            problem = self._private_topic_error(topic) if private else self._public_topic_error(topic)
            if problem is not None:
                return problem
        if private and len({t for t in [*conn.subscriptions, *args] if t in POSITION_TOPICS}) > 1:
            return "error:position and position.linear cannot be subscribed on one connection"
        if not private:
            budget = self.ctx.config.bybit_ws_public_args_max_chars
            if sum(len(t) for t in [*conn.subscriptions, *args]) > budget:
                return f"error:args exceed the {budget}-character limit of a connection"
        return None

    def _public_topic_error(self, topic: str) -> str | None:
        family, _, symbol = topic.partition(".")
        if family != "tickers":
            return f"error:handler not found,topic:{topic}"
        if not self.ctx.market.has_symbol("bybit", symbol):
            return f"Invalid symbol :[{topic}]"
        return None

    @staticmethod
    def _private_topic_error(topic: str) -> str | None:
        if topic in POSITION_TOPICS or topic in QUIET_PRIVATE_TOPICS:
            return None
        return f"error:handler not found,topic:{topic}"

    def _unsubscribe(self, conn: WsConnection, args: Any, req_id: Any, *, private: bool) -> None:
        ack = self._private_ack if private else self._public_ack
        if not isinstance(args, list) or not args or any(a not in conn.subscriptions for a in args):
            topics = ",".join(str(a) for a in args) if isinstance(args, list) else str(args)
            conn.send_control(ack(conn, "unsubscribe", req_id, False, f"error:not subscribed,topic:{topics}"))
            return
        for topic in args:
            conn.subscriptions.remove(topic)
            conn.state.get("tickers", {}).pop(topic.partition(".")[2], None)
        conn.send_control(ack(conn, "unsubscribe", req_id, True, ""))

    @staticmethod
    def _public_ack(conn: WsConnection, op: str, req_id: Any, success: bool, ret_msg: str) -> dict[str, Any]:
        """Linear public shape: ``req_id`` always present (``""`` when none was sent)."""
        return {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id,
                "req_id": "" if req_id is None else req_id, "op": op}

    @staticmethod
    def _private_ack(conn: WsConnection, op: str, req_id: Any, success: bool, ret_msg: str) -> dict[str, Any]:
        """Private shape: ``req_id`` only when the request had one."""
        ack: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op, "conn_id": conn.conn_id}
        if req_id is not None:
            ack["req_id"] = req_id
        return ack

    # -- tickers -----------------------------------------------------------------------------

    def _ticker(self, symbol: str, now: int) -> dict[str, Any]:
        market = self.ctx.market
        spec, quote = market.spec("bybit", symbol), market.quote("bybit", symbol)
        last, direction = self._last_price.get(symbol, (quote.last_price, "ZeroPlusTick"))
        if quote.last_price != last:
            direction = "PlusTick" if quote.last_price > last else "MinusTick"
        elif direction in ("PlusTick", "MinusTick"):
            direction = "Zero" + direction
        self._last_price[symbol] = (quote.last_price, direction)
        bid, ask = self._book.sizes(spec)
        mark = drifted_mark(self.ctx.faults, "bybit", symbol, quote.mark_price, spec.tick)
        return wire.ws_ticker_row(spec, quote, now, mark_price=mark, tick_direction=direction,
                                  bid_size=bid, ask_size=ask)

    def _send_snapshot(self, conn: WsConnection, topic: str, row: dict[str, Any] | None = None) -> None:
        symbol = topic.partition(".")[2]
        now = self.ctx.server_ms()
        row = self._ticker(symbol, now) if row is None else row
        self._cs += 1
        if conn.send_data({"topic": topic, "type": "snapshot", "data": row, "cs": self._cs, "ts": now}):
            conn.state["tickers"][symbol] = dict(row)

    def push_tickers(self) -> None:
        """One 100 ms beat: the book sizes move, and every subscriber gets a delta of what changed."""
        conns = [c for c in self.hub.live("bybit", "public") if c.subscriptions]
        if not conns:
            return
        now = self.ctx.server_ms()
        symbols = {t.partition(".")[2] for c in conns for t in c.subscriptions}
        rows = {}
        for symbol in sorted(symbols):
            self._book.step(self.ctx.market.spec("bybit", symbol))
            rows[symbol] = self._ticker(symbol, now)
        self._cs += 1
        for conn in conns:
            sent = conn.state["tickers"]
            for topic in conn.subscriptions:
                symbol = topic.partition(".")[2]
                if symbol not in sent:
                    # The snapshot never left (a silence fault): the client still needs one.
                    self._send_snapshot(conn, topic, rows[symbol])
                    continue
                last = sent[symbol]
                delta = {k: v for k, v in rows[symbol].items() if last.get(k) != v}
                if not delta:
                    continue
                frame = {"topic": topic, "type": "delta", "data": {"symbol": symbol, **delta}, "cs": self._cs,
                         "ts": now}
                # A silenced frame was never sent, so the next delta still carries its changes.
                if conn.send_data(frame):
                    last.update(delta)

    # -- position pushes ---------------------------------------------------------------------

    def on_position_change(self, change: PositionChange) -> None:
        """Push the changed slot to every authenticated connection subscribed to a position topic."""
        targets = [(c, t) for c in self.hub.live("bybit", "private") if c.authenticated
                   for t in c.subscriptions if t in POSITION_TOPICS]
        if not targets:
            return
        if self.ctx.faults.take("bybit", WS_DROP_EVENT.name) is not None:
            targets[0][0].totals["dropped_events"] += 1
            return
        row = wire.ws_position_row(self._position_row(change))
        now = self.ctx.server_ms()
        for conn, topic in targets:
            conn.send_data({"id": f"{_UID}{uuid.uuid4()}", "topic": topic, "creationTime": now, "data": [row]})

    def _position_row(self, change: PositionChange) -> dict[str, Any]:
        market = self.ctx.market
        spec, quote = market.spec("bybit", change.symbol), market.quote("bybit", change.symbol)
        pos = market.position("bybit", change.symbol, change.position_idx)
        if pos is not None:
            return wire.position_row(pos, spec, quote)
        seq = market.last_seq("bybit", change.symbol, change.position_idx)
        return wire.flat_row(change.symbol, change.position_idx, quote, spec.default_leverage, seq, change.ts_ms)

    # -- hub hooks ---------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Nothing beyond the hub's generic limits (the private idle cut is one of them)."""

    def on_fault(self, fault: Fault) -> None:
        """Bybit has no kinds that act at injection besides ``ws_drop`` (the hub's)."""


def _request(text: str) -> dict[str, Any]:
    """The JSON request, or an empty one (answered as an unknown op) when it is not an object."""
    try:
        msg = json.loads(text)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}
