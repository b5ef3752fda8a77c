"""Binance USDⓈ-M futures base URLs per environment, and the REST paths the agent calls.

Since 2026-04-23 mark prices and user data only flow on the routed WebSocket
bases ``/market`` and ``/private``; the un-routed host still accepts the
connection and then delivers nothing for those streams. The agent appends
``/stream?streams=…`` or ``/ws/…`` to these bases.

Testnet and demo: the docs give ``demo-fapi.binance.com`` for REST and
``fstream.binancefuture.com`` for streams (third-party code uses
``demo-fstream.binance.com``); override ``endpoints`` if yours differ.
"""

from __future__ import annotations

from agent.exchanges.base import ResolvedEndpoints

SERVER_TIME_PATH = "/fapi/v1/time"
POSITION_RISK_PATH = "/fapi/v3/positionRisk"
PREMIUM_INDEX_PATH = "/fapi/v1/premiumIndex"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
LISTEN_KEY_PATH = "/fapi/v1/listenKey"

_TESTNET = ResolvedEndpoints(
    rest_url="https://demo-fapi.binance.com",
    ws_public_url="wss://fstream.binancefuture.com/market",
    ws_private_url="wss://fstream.binancefuture.com/private",
)

_ENDPOINTS: dict[str, ResolvedEndpoints] = {
    "mainnet": ResolvedEndpoints(
        rest_url="https://fapi.binance.com",
        ws_public_url="wss://fstream.binance.com/market",
        ws_private_url="wss://fstream.binance.com/private",
    ),
    "testnet": _TESTNET,
    "demo": _TESTNET,
}


def default_endpoints(environment: str) -> ResolvedEndpoints | None:
    """Binance's URLs for ``mainnet``/``testnet``/``demo``; None for ``simulator`` and ``custom``.

    ``ws_public_url`` is the routed ``/market`` base (config key ``ws_market_url``).
    """
    return _ENDPOINTS.get(environment)
