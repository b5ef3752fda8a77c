"""Venue adapters, registered by ``ExchangeConfig.venue``.

Each venue package has the same files (``urls``, ``signing``, ``schemas``,
``parse``, ``rest``); a test checks that the package folders and the registry
keys agree.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config.models import ExchangeConfig
from agent.exchanges import binance, bybit
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.exchanges.binance import urls as binance_urls
from agent.exchanges.binance.rest import BinanceRestApi
from agent.exchanges.bybit import urls as bybit_urls
from agent.exchanges.bybit.rest import BybitRestApi
from agent.telemetry.metrics import Metrics

RestApiFactory = Callable[[str, ExchangeConfig, ResolvedEndpoints, "ApiCredentials | None", Metrics], VenueRestApi]

REST_APIS: dict[str, RestApiFactory] = {
    "bybit": BybitRestApi,
    "binance": BinanceRestApi,
}

_DEFAULT_ENDPOINTS: dict[str, Callable[[str], ResolvedEndpoints | None]] = {
    "bybit": bybit_urls.default_endpoints,
    "binance": binance_urls.default_endpoints,
}

__all__ = ["REST_APIS", "create_rest_api", "default_endpoints", "binance", "bybit"]


def create_rest_api(exchange_name: str, config: ExchangeConfig, endpoints: ResolvedEndpoints,
                    credentials: ApiCredentials | None, metrics: Metrics) -> VenueRestApi:
    """The REST adapter of ``config.venue`` for the exchange named ``exchange_name``.

    Without credentials the adapter still serves mark prices (public
    endpoints); ``fetch_positions`` then raises ``AuthError``.
    """
    try:
        factory = REST_APIS[config.venue]
    except KeyError:
        raise ValueError(f"no REST adapter for venue {config.venue!r}; known: {', '.join(sorted(REST_APIS))}") from None
    return factory(exchange_name, config, endpoints, credentials, metrics)


def default_endpoints(venue: str, environment: str) -> ResolvedEndpoints | None:
    """The venue's URLs for ``mainnet``, ``testnet`` or ``demo``; None for ``simulator`` and ``custom``."""
    try:
        resolve = _DEFAULT_ENDPOINTS[venue]
    except KeyError:
        raise ValueError(f"unknown venue {venue!r}; known: {', '.join(sorted(_DEFAULT_ENDPOINTS))}") from None
    return resolve(environment)
