"""Request signing and verification as the venues do it (the simulator's own implementation).

Bybit v5: ``X-BAPI-SIGN = hex(HMAC_SHA256(secret, timestamp + apiKey + recvWindow + payload))``
where the payload is the raw query string (GET) or the raw body (POST).
Binance USDⓈ-M: ``signature = hex(HMAC_SHA256(secret, totalParams))`` where totalParams is
the query string concatenated with the body, without the trailing ``signature`` parameter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

BYBIT_DEFAULT_RECV_WINDOW_MS = 5000
BINANCE_DEFAULT_RECV_WINDOW_MS = 5000
# Both venues refuse timestamps more than one second ahead of their clock.
FUTURE_TOLERANCE_MS = 1000


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a signed request was refused: the venue's code, message and HTTP status."""

    code: int
    message: str
    http_status: int


def hmac_sha256_hex(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` under ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def bybit_sign(secret: str, timestamp_ms: int | str, api_key: str, recv_window_ms: int | str,
               payload: str) -> str:
    """Bybit v5 REST signature over ``timestamp + apiKey + recvWindow + payload``."""
    return hmac_sha256_hex(secret, f"{timestamp_ms}{api_key}{recv_window_ms}{payload}")


def binance_sign(secret: str, total_params: str) -> str:
    """Binance HMAC signature over ``totalParams``."""
    return hmac_sha256_hex(secret, total_params)


def bybit_timestamp_ok(timestamp_ms: int, server_ms: int, recv_window_ms: int) -> bool:
    """Bybit: ``server_time - recv_window <= timestamp < server_time + 1000``."""
    return server_ms - recv_window_ms <= timestamp_ms < server_ms + FUTURE_TOLERANCE_MS


def binance_timestamp_ok(timestamp_ms: int, server_ms: int, recv_window_ms: int) -> bool:
    """Binance: ``timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow``."""
    return timestamp_ms < server_ms + FUTURE_TOLERANCE_MS and server_ms - timestamp_ms <= recv_window_ms


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def verify_bybit(headers: Mapping[str, str], payload: str, *, api_key: str, api_secret: str,
                 server_ms: int) -> AuthFailure | None:
    """Check a Bybit private request; None when it is authentic and on time.

    ``payload`` must be exactly what the client signed: the raw query string as received
    for GET, the raw body for POST.
    """
    key = headers.get("X-BAPI-API-KEY", "")
    sign = headers.get("X-BAPI-SIGN", "")
    ts_text = headers.get("X-BAPI-TIMESTAMP", "")
    recv_text = headers.get("X-BAPI-RECV-WINDOW", str(BYBIT_DEFAULT_RECV_WINDOW_MS))
    if not key or not _same(key, api_key):
        # Bybit answers a missing or unknown key with HTTP 401 (docs: "use the correct key").
        return AuthFailure(10003, "API key is invalid.", 401)
    try:
        timestamp = int(ts_text)
        recv_window = int(recv_text)
    except ValueError:
        return AuthFailure(10002, f"invalid request, please check your timestamp and recv_window param. "
                                  f"req_timestamp[{ts_text}],recv_window[{recv_text}]", 200)
    if not bybit_timestamp_ok(timestamp, server_ms, recv_window):
        return AuthFailure(10002, "invalid request, please check your server timestamp or recv_window param. "
                                  f"req_timestamp[{timestamp}],server_timestamp[{server_ms}],"
                                  f"recv_window[{recv_window}]", 200)
    origin = f"{ts_text}{key}{recv_text}{payload}"
    if not sign or not _same(sign.lower(), hmac_sha256_hex(api_secret, origin)):
        return AuthFailure(10004, f"error sign! origin_string[{origin}]", 200)
    return None


def split_binance_signature(query: str, body: str) -> tuple[str, str] | None:
    """``(totalParams, signature)`` of a signed Binance request; None if unsigned.

    The signature must be the last parameter (of the body when the body has one, else of
    the query); a signature anywhere else yields an empty signature, which never verifies.
    """
    for part, is_body in ((body, True), (query, False)):
        if not part:
            continue
        head, sep, tail = part.rpartition("signature=")
        if sep and (head == "" or head.endswith("&")) and "&" not in tail:
            stripped = head[:-1] if head.endswith("&") else head
            return (query + stripped, tail) if is_body else (stripped + body, tail)
    if "signature" in dict(parse_qsl(query + "&" + body)):
        return (query + body, "")
    return None


def verify_binance(api_key_header: str | None, query: str, body: str, *, api_key: str, api_secret: str,
                   server_ms: int) -> AuthFailure | None:
    """Check a Binance SIGNED request (``X-MBX-APIKEY`` + timestamp + signature)."""
    if not api_key_header:
        return AuthFailure(-2014, "API-key format invalid.", 401)
    if not _same(api_key_header, api_key):
        return AuthFailure(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    try:
        timestamp = int(params["timestamp"])
    except (KeyError, ValueError):
        return AuthFailure(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
                           400)
    try:
        recv_window = int(params.get("recvWindow", BINANCE_DEFAULT_RECV_WINDOW_MS))
    except ValueError:
        return AuthFailure(-1102, "Mandatory parameter 'recvWindow' was not sent, was empty/null, or malformed.",
                           400)
    if timestamp >= server_ms + FUTURE_TOLERANCE_MS:
        return AuthFailure(-1021, "Timestamp for this request was 1000ms ahead of the server's time.", 400)
    if not binance_timestamp_ok(timestamp, server_ms, recv_window):
        return AuthFailure(-1021, "Timestamp for this request is outside of the recvWindow.", 400)
    split = split_binance_signature(query, body)
    if split is None:
        return AuthFailure(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
                           400)
    total_params, signature = split
    if not signature or not _same(signature.lower(), binance_sign(api_secret, total_params)):
        return AuthFailure(-1022, "Signature for this request is not valid.", 400)
    return None


def verify_binance_api_key(api_key_header: str | None, *, api_key: str) -> AuthFailure | None:
    """Check a Binance USER_STREAM request, which needs the API-key header but no signature."""
    if not api_key_header:
        return AuthFailure(-2014, "API-key format invalid.", 401)
    if not _same(api_key_header, api_key):
        return AuthFailure(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return None
