"""WebSocket fault kinds and what they do to frames (pure functions; the hub and venues apply them).

Every kind is registered with the fault registry, so it works from ``sim.faults.inject`` and
from ``POST /_sim/faults``. Kinds marked *stream* take ``stream`` (``public``/``market`` for the
price stream, ``private`` for the account stream); without it they hit every stream of the venue.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from agent.simulator.faults import Fault, FaultKind, FaultRegistry, Param, register_kind
from agent.simulator.instruments import round_to_step
from agent.simulator.rest_common import dumps

MALFORMED_MODES = ("invalid_json", "unknown_shape", "missing_fields")
# Close codes a server may not put in a close frame (RFC 6455 §7.4.1).
_RESERVED_CLOSE_CODES = (1004, 1005, 1006, 1015)
# The field each venue's frames are identified by; missing_fields drops it unless told otherwise.
_DEFAULT_MISSING = {"bybit": ["symbol"], "binance": ["s"]}

WS_DROP = register_kind(FaultKind(
    "ws_drop", "Close the live WebSocket connections now (without count or duration, once); with count "
    "or duration_seconds, connections opened later are dropped right after the handshake too.",
    (Param("close_code", int, doc="close code of the close frame (default 1001); ignored with abort"),
     Param("abort", bool, doc="abort the TCP connection instead of a close handshake")),
    endpoint_filter=False, stream_filter=True))
WS_SILENCE = register_kind(FaultKind(
    "ws_silence", "Stay connected and answer pings, but send no data frames (acks and pongs still flow); "
    "with symbols, only those symbols' data stops (a silent topic: the subscription looks alive).",
    (Param("symbols", list, doc="symbols whose frames (or array rows) are withheld (default: all)"),),
    endpoint_filter=False, stream_filter=True))
WS_IGNORE_PING = register_kind(FaultKind(
    "ws_ignore_ping", "Stop answering ping frames and Bybit {\"op\":\"ping\"} requests.",
    endpoint_filter=False, stream_filter=True))
WS_DELAY = register_kind(FaultKind(
    "ws_delay", "Wait before sending each text frame (frames keep their order).",
    (Param("delay_seconds", (int, float), required=True),),
    endpoint_filter=False, stream_filter=True))
WS_MALFORMED = register_kind(FaultKind(
    "ws_malformed", "Spoil data frames: invalid_json and unknown_shape insert a bad frame before a good one; "
    "missing_fields sends the frame without some fields.",
    (Param("mode", str, required=True, choices=MALFORMED_MODES),
     Param("fields", list, doc="missing_fields: names to drop (default: symbol on Bybit, s on Binance)")),
    endpoint_filter=False, stream_filter=True))
WS_REJECT_AUTH = register_kind(FaultKind(
    "ws_reject_auth", "Bybit: refuse the private auth op; Binance: refuse the private connection as if "
    "the listenKey did not exist.",
    (Param("message", str, doc="Bybit ret_msg (default 'Params Error')"),),
    endpoint_filter=False))
WS_REJECT_SUBSCRIBE = register_kind(FaultKind(
    "ws_reject_subscribe", "Refuse subscribe requests: Bybit success:false, Binance {\"code\",\"msg\"}.",
    (Param("message", str, doc="Bybit ret_msg / Binance msg"),
     Param("code", int, doc="Binance error code (default 2)")),
    endpoint_filter=False, stream_filter=True))
WS_DROP_EVENT = register_kind(FaultKind(
    "ws_drop_event", "Do not push the next position events on the private stream (REST still shows them).",
    endpoint_filter=False))
LISTEN_KEY_EXPIRE = register_kind(FaultKind(
    "listen_key_expire", "Expire the Binance listenKey now: listenKeyExpired on its connections, then no "
    "more data there; keepalive answers -1125.",
    (Param("e_as_string", bool, doc="send E as a string, as production once did"),),
    counted=False, endpoint_filter=False, timed=False, venues=("binance",)))
WS_PRICE_DRIFT = register_kind(FaultKind(
    "ws_price_drift", "The WebSocket mark price drifts from the REST mark price by a ratio.",
    (Param("ratio", (int, float), required=True, doc="relative offset, e.g. 0.002 for +0.2 %"),
     Param("symbols", list, doc="symbols affected (default: all)")),
    counted=False, endpoint_filter=False))


def close_code_of(fault: Fault) -> int:
    """The close code a ``ws_drop`` fault asks for (1001 going away by default)."""
    code = int(fault.params.get("close_code", 1001))
    if not 1000 <= code <= 4999 or code in _RESERVED_CLOSE_CODES:
        return 1001
    return code


def drifted_mark(faults: FaultRegistry, venue: str, symbol: str, mark: Decimal, tick: Decimal) -> Decimal:
    """The WebSocket mark price: ``mark`` moved by an active ``ws_price_drift``, on the tick grid."""
    fault = faults.peek(venue, WS_PRICE_DRIFT.name)
    if fault is None:
        return mark
    symbols = fault.params.get("symbols")
    if symbols and symbol not in symbols:
        return mark
    return round_to_step(mark * (1 + Decimal(str(fault.params["ratio"]))), tick)


def silenced(payload: Any, fault: Fault) -> Any | None:
    """What of ``payload`` a ``ws_silence`` fault lets through: None (nothing), or the payload itself, or an
    array frame without the silenced symbols' rows. Without ``symbols`` the whole frame is withheld."""
    symbols = fault.params.get("symbols")
    if not symbols:
        return None
    if isinstance(payload, dict) and "stream" in payload and "data" in payload:  # Binance combined wrapper
        inner = silenced(payload["data"], fault)
        return None if inner is None else payload if inner is payload["data"] else {**payload, "data": inner}
    if isinstance(payload, list):  # Binance !markPrice@arr
        kept = [row for row in payload if _symbol_of(row) not in symbols]
        return None if not kept else payload if len(kept) == len(payload) else kept
    return None if _symbol_of(payload) in symbols else payload


def _symbol_of(frame: Any) -> str | None:
    """The symbol a frame is about: Binance ``s``, Bybit ``data.symbol`` or the ``tickers.{symbol}`` topic."""
    if not isinstance(frame, dict):
        return None
    if isinstance(frame.get("s"), str):
        return frame["s"]
    data = frame.get("data")
    if isinstance(data, dict) and isinstance(data.get("symbol"), str):
        return data["symbol"]
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        names = {r.get("symbol") for r in data}
        return names.pop() if len(names) == 1 else None
    topic = frame.get("topic")
    return topic.rpartition(".")[2] if isinstance(topic, str) and topic.startswith("tickers.") else None


def malformed_frames(venue: str, payload: Any, text: str, fault: Fault) -> list[str]:
    """What to send instead of ``text`` under a ``ws_malformed`` fault (bad frames, then maybe the good one)."""
    mode = fault.params["mode"]
    if mode == "invalid_json":
        return [text[: max(1, len(text) // 2)], text]
    if mode == "unknown_shape":
        return [_unknown_shape(venue, payload), text]
    damaged = copy.deepcopy(payload)
    fields = fault.params.get("fields") or _DEFAULT_MISSING[venue]
    for row in _rows(damaged):
        for name in fields:
            row.pop(name, None)
    return [dumps(damaged)]


def _unknown_shape(venue: str, payload: Any) -> str:
    """Valid JSON no client has a handler for: a new event type, as venues add them without notice."""
    if venue == "bybit":
        ts = payload.get("ts", payload.get("creationTime", 0)) if isinstance(payload, dict) else 0
        return dumps({"topic": "simulated.unknown", "type": "notice", "ts": ts, "data": [{"note": "unknown"}]})
    return dumps({"e": "SIMULATED_UNKNOWN_EVENT", "E": 0, "x": [1, 2, 3]})


def _rows(payload: Any) -> list[dict[str, Any]]:
    """The record dicts inside a frame: Bybit ``data`` (object or rows), Binance events and ``P`` rows."""
    if isinstance(payload, list):
        return [r for item in payload for r in _rows(item)]
    if not isinstance(payload, dict):
        return []
    if "stream" in payload and "data" in payload:  # Binance combined wrapper
        return _rows(payload["data"])
    data = payload.get("data")
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    account = payload.get("a")
    if isinstance(account, dict) and isinstance(account.get("P"), list):
        return [r for r in account["P"] if isinstance(r, dict)]
    return [payload]
