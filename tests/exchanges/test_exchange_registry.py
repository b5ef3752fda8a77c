"""The venue registry: package folders, factories and default endpoints agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import agent.exchanges as exchanges
from agent.config.models import ExchangeConfig
from agent.exchanges import REST_APIS, create_rest_api, default_endpoints
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints, VenueRestApi
from agent.telemetry.metrics import Metrics

VENUE_FILES = {"__init__.py", "urls.py", "signing.py", "schemas.py", "parse.py", "rest.py"}
ENDPOINTS = ResolvedEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:1/a", "ws://127.0.0.1:1/b")


def _venue_dirs() -> set[str]:
    root = Path(exchanges.__file__).parent
    return {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_registry_keys_are_the_venue_packages():
    assert set(REST_APIS) == _venue_dirs() == {"bybit", "binance"}


@pytest.mark.parametrize("venue", sorted(REST_APIS))
def test_every_venue_package_has_the_same_files(venue):
    files = {p.name for p in (Path(exchanges.__file__).parent / venue).glob("*.py")}
    assert VENUE_FILES <= files


@pytest.mark.parametrize("venue", sorted(REST_APIS))
def test_factory_builds_the_venue_adapter(venue):
    config = ExchangeConfig(venue=venue)
    api = create_rest_api(f"{venue}-main", config, ENDPOINTS, ApiCredentials("k" * 12, "s" * 12),
                          Metrics(CollectorRegistry()))

    assert isinstance(api, REST_APIS[venue]) and api.venue == venue
    for member in ("start", "close", "sync_clock", "fetch_positions", "fetch_mark_prices", "status"):
        assert hasattr(api, member), member
    _: VenueRestApi = api  # the adapter satisfies the protocol (checked by type checkers)


def test_credentials_never_show_in_repr():
    api = create_rest_api("bybit-main", ExchangeConfig(venue="bybit"), ENDPOINTS,
                          ApiCredentials("KEYKEYKEYKEY", "SECRETSECRET"), Metrics(CollectorRegistry()))
    assert "SECRETSECRET" not in repr(api._credentials) and "SECRETSECRET" not in repr(api.status)


@pytest.mark.parametrize("environment", ["simulator", "custom"])
@pytest.mark.parametrize("venue", ["bybit", "binance"])
def test_no_default_endpoints_for_simulator_and_custom(venue, environment):
    assert default_endpoints(venue, environment) is None


def test_default_endpoints():
    assert default_endpoints("bybit", "mainnet") == ResolvedEndpoints(
        "https://api.bybit.com", "wss://stream.bybit.com/v5/public/linear", "wss://stream.bybit.com/v5/private")
    assert default_endpoints("bybit", "testnet").rest_url == "https://api-testnet.bybit.com"
    demo = default_endpoints("bybit", "demo")
    assert demo.rest_url == "https://api-demo.bybit.com"
    assert demo.ws_public_url == "wss://stream.bybit.com/v5/public/linear"  # demo public data is mainnet's
    assert demo.ws_private_url == "wss://stream-demo.bybit.com/v5/private"

    binance = default_endpoints("binance", "mainnet")
    assert binance == ResolvedEndpoints(
        "https://fapi.binance.com", "wss://fstream.binance.com/market", "wss://fstream.binance.com/private")
    for environment in ("mainnet", "testnet", "demo"):
        urls = default_endpoints("binance", environment)
        assert urls.ws_public_url.endswith("/market") and urls.ws_private_url.endswith("/private")


def test_unknown_venue_is_refused():
    with pytest.raises(ValueError, match="unknown venue"):
        default_endpoints("kraken", "mainnet")
