"""Bybit v5 base URLs per environment, and the REST paths the agent calls.

https://bybit-exchange.github.io/docs/v5/guide, /docs/v5/ws/connect and /docs/v5/demo.
Demo trading has its own REST host and private stream; its public data is
mainnet's (``stream-demo`` serves private streams only).
"""

from __future__ import annotations

from agent.exchanges.base import ResolvedEndpoints

SERVER_TIME_PATH = "/v5/market/time"
POSITION_LIST_PATH = "/v5/position/list"
TICKERS_PATH = "/v5/market/tickers"
INSTRUMENTS_INFO_PATH = "/v5/market/instruments-info"

_ENDPOINTS: dict[str, ResolvedEndpoints] = {
    "mainnet": ResolvedEndpoints(
        rest_url="https://api.bybit.com",
        ws_public_url="wss://stream.bybit.com/v5/public/linear",
        ws_private_url="wss://stream.bybit.com/v5/private",
    ),
    "testnet": ResolvedEndpoints(
        rest_url="https://api-testnet.bybit.com",
        ws_public_url="wss://stream-testnet.bybit.com/v5/public/linear",
        ws_private_url="wss://stream-testnet.bybit.com/v5/private",
    ),
    "demo": ResolvedEndpoints(
        rest_url="https://api-demo.bybit.com",
        ws_public_url="wss://stream.bybit.com/v5/public/linear",
        ws_private_url="wss://stream-demo.bybit.com/v5/private",
    ),
}


def default_endpoints(environment: str) -> ResolvedEndpoints | None:
    """Bybit's URLs for ``mainnet``/``testnet``/``demo``; None for ``simulator`` and ``custom``."""
    return _ENDPOINTS.get(environment)
