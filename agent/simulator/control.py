"""The control API under ``/_sim``: faults, the lifecycle record, market control, autopilot."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.simulator.faults import FaultError, kinds_json
from agent.simulator.instruments import VENUES, fmt
from agent.simulator.market import MarketError
from agent.simulator.rest_common import json_response

if TYPE_CHECKING:
    from agent.simulator.server import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(Exception):
    """A bad control request, answered with HTTP 400 (or ``status``) and ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refused control requests into JSON errors."""
    try:
        return await handler(request)
    except ControlError as e:
        return json_response({"error": str(e)}, status=e.status)
    except (FaultError, MarketError) as e:
        return json_response({"error": str(e)}, status=400)


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text:
        return {}
    try:
        body = json.loads(text)
    except ValueError as e:
        raise ControlError(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body


def _venue(request: web.Request) -> str:
    venue = request.match_info["venue"]
    if venue not in VENUES:
        raise ControlError(f"unknown venue {venue!r}; known: {list(VENUES)}", status=404)
    return venue


def _symbol(body: dict[str, Any]) -> str:
    value = body.get("symbol")
    if not isinstance(value, str) or not value:
        raise ControlError("'symbol' is required")
    return value


def _decimal(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A decimal parameter given as a JSON string (preferred) or number."""
    value = body.get(name)
    if value is None:
        if required:
            raise ControlError(f"{name!r} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ControlError(f"{name!r} must be a decimal string, was {value!r}")
    try:
        Decimal(str(value))
    except InvalidOperation:
        raise ControlError(f"{name!r} must be a decimal string, was {value!r}") from None
    return str(value)


def _idx(body: dict[str, Any]) -> int | None:
    value = body.get("position_idx")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(f"'position_idx' must be 0, 1 or 2, was {value!r}")
    return value


class ControlApi:
    """Handlers of the control API; ``routes()`` is mounted under ``/_sim``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        """Routes relative to ``/_sim``."""
        return [
            web.get("/endpoints", self.endpoints),
            web.get("/faults", self.list_faults),
            web.get("/faults/kinds", self.fault_kinds),
            web.post("/faults", self.inject_fault),
            web.delete("/faults", self.clear_faults),
            web.delete("/faults/{fault_id}", self.clear_faults),
            web.get("/record", self.record),
            web.get("/ws", self.ws_stats),
            web.get("/market/{venue}/positions", self.positions),
            web.post("/market/{venue}/positions", self.change_position),
            web.get("/market/{venue}/prices", self.prices),
            web.post("/market/{venue}/prices", self.set_price),
            web.post("/market/{venue}/mode", self.set_mode),
            web.get("/autopilot", self.autopilot),
            web.post("/autopilot", self.set_autopilot),
            web.post("/credentials/{venue}", self.rotate_credentials),
        ]

    async def endpoints(self, request: web.Request) -> web.Response:
        """GET /_sim/endpoints: the same document ``feedagent simulate`` prints."""
        if self.sim.endpoints is None:
            raise ControlError("simulator is not started", status=503)
        return web.Response(text=self.sim.endpoints.to_json(), content_type="application/json")

    async def list_faults(self, request: web.Request) -> web.Response:
        """GET /_sim/faults: the active faults."""
        return json_response({"faults": self.sim.faults.describe()})

    async def fault_kinds(self, request: web.Request) -> web.Response:
        """GET /_sim/faults/kinds: every fault kind and its parameters."""
        return json_response({"kinds": kinds_json()})

    async def inject_fault(self, request: web.Request) -> web.Response:
        """POST /_sim/faults {"venue", "kind", ...params}: returns {"id"}."""
        body = await _body(request)
        venue, kind = body.pop("venue", None), body.pop("kind", None)
        if not isinstance(venue, str) or not isinstance(kind, str):
            raise ControlError("'venue' and 'kind' are required strings")
        fault_id = self.sim.faults.inject(venue, kind, **body)
        return json_response({"id": fault_id})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """DELETE /_sim/faults[/{id}]: returns {"cleared": n}; 404 for an unknown id."""
        fault_id = request.match_info.get("fault_id")
        cleared = self.sim.faults.clear(fault_id)
        if fault_id is not None and cleared == 0:
            raise ControlError(f"no active fault {fault_id!r}", status=404)
        return json_response({"cleared": cleared})

    async def record(self, request: web.Request) -> web.Response:
        """GET /_sim/record[?venue=][&since=N]: lifecycle changes the simulator made."""
        venue = request.query.get("venue")
        since_text = request.query.get("since", "0")
        if not since_text.isdigit():
            raise ControlError(f"'since' must be a non-negative integer, was {since_text!r}")
        changes = self.sim.record.to_json(venue=venue, since=int(since_text))
        return json_response({"changes": changes, "next": len(self.sim.record)})

    async def ws_stats(self, request: web.Request) -> web.Response:
        """GET /_sim/ws: WebSocket connections and frame counters per venue and stream."""
        return json_response(self.sim.ws_stats())

    async def positions(self, request: web.Request) -> web.Response:
        """GET /_sim/market/{venue}/positions: open positions as the model holds them."""
        venue = _venue(request)
        rows = [{"symbol": p.symbol, "position_idx": p.position_idx, "side": p.side, "size": fmt(p.size),
                 "entry_price": fmt(p.entry_price), "leverage": fmt(p.leverage), "updated_ms": p.updated_ms}
                for p in self.sim.market.positions(venue)]
        return json_response({"positions": rows})

    async def change_position(self, request: web.Request) -> web.Response:
        """POST /_sim/market/{venue}/positions {"action": open|resize|close, ...}."""
        venue = _venue(request)
        body = await _body(request)
        market = self.sim.market
        action, symbol = body.get("action"), _symbol(body)
        side = body.get("side")
        if side is not None and side not in ("long", "short"):
            raise ControlError(f"'side' must be 'long' or 'short', was {side!r}")
        if action == "open":
            if side is None:
                raise ControlError("'side' is required to open")
            change = market.open_position(venue, symbol, side, _decimal(body, "size") or "0",
                                          position_idx=_idx(body), leverage=_decimal(body, "leverage", required=False))
        elif action == "resize":
            change = market.set_size(venue, symbol, _decimal(body, "size") or "0", position_idx=_idx(body), side=side)
        elif action == "close":
            change = market.close_position(venue, symbol, position_idx=_idx(body), side=side)
        else:
            raise ControlError(f"'action' must be open, resize or close, was {action!r}")
        return json_response({"change": change.to_json()})

    async def prices(self, request: web.Request) -> web.Response:
        """GET /_sim/market/{venue}/prices: mark and index price per symbol."""
        venue = _venue(request)
        market = self.sim.market
        rows = {s: {"mark_price": fmt(market.quote(venue, s).mark_price),
                    "index_price": fmt(market.quote(venue, s).index_price)} for s in market.symbols(venue)}
        return json_response({"prices": rows})

    async def set_price(self, request: web.Request) -> web.Response:
        """POST /_sim/market/{venue}/prices {"symbol", "mark_price"[, "index_price"]}."""
        venue = _venue(request)
        body = await _body(request)
        symbol, mark = _symbol(body), _decimal(body, "mark_price")
        assert mark is not None
        tick = self.sim.market.set_mark_price(venue, symbol, mark,
                                              index_price=_decimal(body, "index_price", required=False))
        return json_response({"symbol": symbol, "mark_price": fmt(tick.mark_price),
                              "index_price": fmt(tick.index_price), "ts_ms": tick.ts_ms})

    async def set_mode(self, request: web.Request) -> web.Response:
        """POST /_sim/market/{venue}/mode {"hedge": bool[, "symbol"]}: switch position mode."""
        venue = _venue(request)
        body = await _body(request)
        hedge = body.get("hedge")
        if not isinstance(hedge, bool):
            raise ControlError("'hedge' must be true or false")
        symbol = _symbol(body) if body.get("symbol") is not None else None
        self.sim.market.set_hedge_mode(venue, hedge, symbol=symbol)
        return json_response({"venue": venue, "hedge": hedge, "symbol": symbol})

    async def autopilot(self, request: web.Request) -> web.Response:
        """GET /_sim/autopilot: whether the price walk and the autopilot are paused."""
        return json_response(self._autopilot_state())

    async def set_autopilot(self, request: web.Request) -> web.Response:
        """POST /_sim/autopilot {"action": pause|resume[, "prices": bool][, "positions": bool]}."""
        body = await _body(request)
        action = body.get("action")
        prices, positions = body.get("prices", True), body.get("positions", True)
        if not isinstance(prices, bool) or not isinstance(positions, bool):
            raise ControlError("'prices' and 'positions' must be true or false")
        if action == "pause":
            self.sim.market.pause(prices=prices, autopilot=positions)
        elif action == "resume":
            self.sim.market.resume(prices=prices, autopilot=positions)
        else:
            raise ControlError(f"'action' must be pause or resume, was {action!r}")
        return json_response(self._autopilot_state())

    async def rotate_credentials(self, request: web.Request) -> web.Response:
        """POST /_sim/credentials/{venue} {["api_key"], ["api_secret"]}: the venue accepts only the new pair.

        A part left out keeps its value, except that an empty body makes a new secret.
        """
        venue = _venue(request)
        body = await _body(request)
        values = {name: body.get(name) for name in ("api_key", "api_secret")}
        for name, value in values.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ControlError(f"{name!r} must be a non-empty string")
        creds = self.sim.rotate_credentials(venue, **values)
        return json_response({"venue": venue, "api_key": creds.api_key, "api_secret": creds.api_secret})

    def _autopilot_state(self) -> dict[str, Any]:
        market = self.sim.market
        return {"prices_paused": market.price_walk_paused, "positions_paused": market.autopilot_paused}
