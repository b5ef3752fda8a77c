"""Bybit v5 request signing (HMAC keys). Pure functions, no I/O.

https://bybit-exchange.github.io/docs/v5/guide#create-a-request : the signed
string is ``timestamp + apiKey + recvWindow + queryString`` (GET) or ``+ body``
(POST), HMAC-SHA256, lowercase hex. The query string must be byte-identical to
the one sent, so ``encode_query`` builds it once and the client sends exactly
that string.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

DEFAULT_RECV_WINDOW_MS = 5000

# Bybit's nextPageCursor comes already percent-encoded (``updateAt%3D1672…``)
# and pybit sends it verbatim, so '%' (and the few other characters pybit
# leaves alone) stay as they are; anything else unsafe is encoded.
_SAFE_IN_VALUE = "%:,="


def encode_query(params: Mapping[str, str | int]) -> str:
    """``k=v&…`` sorted by key, as pybit builds GET queries; empty values are dropped."""
    return "&".join(f"{k}={quote(str(v), safe=_SAFE_IN_VALUE)}"
                    for k, v in sorted(params.items()) if v is not None and str(v) != "")


def prehash(timestamp_ms: int, api_key: str, recv_window_ms: int, payload: str) -> str:
    """The exact string Bybit signs: ``timestamp + apiKey + recvWindow + payload``."""
    return f"{timestamp_ms}{api_key}{recv_window_ms}{payload}"


def hmac_hex(api_secret: str, message: str) -> str:
    """HMAC-SHA256 of ``message`` under ``api_secret``, lowercase hex."""
    return hmac.new(api_secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def auth_headers(api_key: str, api_secret: str, *, timestamp_ms: int, recv_window_ms: int,
                 payload: str) -> dict[str, str]:
    """The ``X-BAPI-*`` headers of a signed request whose query (GET) or body (POST) is ``payload``."""
    return {
        "X-BAPI-API-KEY": api_key,
        "X-BAPI-TIMESTAMP": str(timestamp_ms),
        "X-BAPI-RECV-WINDOW": str(recv_window_ms),
        "X-BAPI-SIGN": hmac_hex(api_secret, prehash(timestamp_ms, api_key, recv_window_ms, payload)),
        # Undocumented in the guide, but the official SDK (pybit) always sends it: 2 = HMAC.
        "X-BAPI-SIGN-TYPE": "2",
    }


def ws_auth_signature(api_secret: str, expires_ms: int) -> str:
    """The private-stream auth signature: HMAC of ``"GET/realtime" + expires``."""
    return hmac_hex(api_secret, f"GET/realtime{expires_ms}")
