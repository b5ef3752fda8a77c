"""What both venues' REST sides share: context, JSON responses, slow and malformed faults."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.simulator.config import SimulatorConfig
from agent.simulator.faults import Fault, FaultRegistry
from agent.simulator.market import MarketModel, wall_clock_ms

# A proxy error page: what "not JSON at all" looks like in production.
INVALID_JSON_BODY = (b"<html><head><title>502 Bad Gateway</title></head>"
                     b"<body><center><h1>502 Bad Gateway</h1></center></body></html>")
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass(slots=True)
class Credentials:
    """The API key and secret one venue accepts; ``Simulator.rotate_credentials`` replaces them in place
    (every handler of the venue holds this one object)."""

    api_key: str
    api_secret: str


@dataclass(frozen=True, slots=True)
class VenueContext:
    """Everything a venue's REST handlers need from the simulator."""

    venue: str
    prefix: str
    config: SimulatorConfig
    market: MarketModel
    faults: FaultRegistry
    credentials: Credentials
    wall_ms: Callable[[], int] = wall_clock_ms

    def server_ms(self) -> int:
        """The venue's server clock: wall time plus any injected clock skew."""
        return self.wall_ms() + self.faults.clock_offset_ms(self.venue)

    def endpoint(self, request: web.Request) -> str:
        """The request path below the venue prefix, e.g. ``/v5/position/list``."""
        return request.path[len(self.prefix):] or "/"


def dumps(payload: Any) -> str:
    """Compact JSON, as the venues send it."""
    return json.dumps(payload, separators=(",", ":"))


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with the venues' content type."""
    return web.Response(text=dumps(payload), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def is_websocket(request: web.Request) -> bool:
    """True for a WebSocket upgrade; REST faults leave those alone."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def apply_slow(ctx: VenueContext, endpoint: str) -> None:
    """Sleep if a ``slow_rest`` fault matches this request."""
    fault = ctx.faults.take(ctx.venue, "slow_rest", endpoint)
    if fault is not None:
        await asyncio.sleep(float(fault.params["delay_seconds"]))


def apply_malformed(ctx: VenueContext, endpoint: str, response: web.StreamResponse) -> None:
    """Corrupt the body of ``response`` in place if a ``malformed_rest`` fault matches."""
    if not isinstance(response, web.Response) or response.body is None:
        return
    fault = ctx.faults.take(ctx.venue, "malformed_rest", endpoint)
    if fault is None:
        return
    body = response.body
    assert isinstance(body, bytes)
    response.body = corrupt_body(body, fault)


def corrupt_body(body: bytes, fault: Fault) -> bytes:
    """The body as the fault's ``mode`` spoils it (see README for the modes)."""
    mode = fault.params["mode"]
    if mode == "invalid_json":
        return INVALID_JSON_BODY
    if mode == "truncated":
        return body[: max(1, len(body) // 2)]
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    rows = _rows(payload)
    if not fault.params.get("all_rows", False):
        rows = rows[:1]
    fields = fault.params.get("fields")
    for row in rows:
        if mode == "missing_fields":
            for name in fields or ["markPrice"]:
                row.pop(name, None)
        else:  # empty_numbers
            names = fields or [k for k, v in row.items() if isinstance(v, str) and _NUMERIC.match(v)]
            for name in names:
                if name in row:
                    row[name] = ""
    return dumps(payload).encode()


def _rows(payload: Any) -> list[dict[str, Any]]:
    """The data rows of a response: Bybit ``result.list`` (or ``result``), Binance array or object."""
    if isinstance(payload, list):
        return [r for r in payload if isinstance(r, dict)]
    if not isinstance(payload, dict):
        return []
    result = payload.get("result")
    if "retCode" in payload and isinstance(result, dict):
        rows = result.get("list")
        if isinstance(rows, list):
            return [r for r in rows if isinstance(r, dict)]
        return [result]
    return [payload]
