"""Binance SIGNED-endpoint signing (HMAC keys). Pure functions, no I/O.

https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info :
``signature = hex(HMAC_SHA256(secret, totalParams))`` where totalParams is the
query string followed directly by the request body (no ``&``), and the
signature is the last parameter. The key travels in ``X-MBX-APIKEY``.
USER_STREAM calls (listenKey) need only the key header, no signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlencode

API_KEY_HEADER = "X-MBX-APIKEY"
DEFAULT_RECV_WINDOW_MS = 5000


def encode_params(params: Iterable[tuple[str, str | int]]) -> str:
    """``k=v&…`` in the given order, form-encoded like the docs' examples and ccxt."""
    return urlencode([(k, str(v)) for k, v in params])


def signature(api_secret: str, total_params: str) -> str:
    """HMAC-SHA256 of ``total_params`` (query + body) under ``api_secret``, lowercase hex."""
    return hmac.new(api_secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


def signed_query(api_secret: str, params: Iterable[tuple[str, str | int]], *, timestamp_ms: int,
                 recv_window_ms: int = DEFAULT_RECV_WINDOW_MS, body: str = "") -> str:
    """The query string to send: ``params``, ``recvWindow``, ``timestamp``, then ``signature`` last."""
    query = encode_params([*params, ("recvWindow", recv_window_ms), ("timestamp", timestamp_ms)])
    return f"{query}&signature={signature(api_secret, query + body)}"


def api_key_headers(api_key: str) -> dict[str, str]:
    """The header that names the key, for SIGNED and USER_STREAM calls."""
    return {API_KEY_HEADER: api_key}
