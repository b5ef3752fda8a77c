"""Every file in ``configs/`` validates, and the defaults are what the docs say."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.config.models import FeedAgentConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "examples").glob("*.yaml"))
GOOD = sorted((ROOT / "tests" / "fixtures" / "config" / "good").glob("*.yaml"))

# Dummy values for every variable the examples name.
DUMMY_ENV = {
    name: f"dummy-{name.lower()}"
    for name in (
        "BYBIT_API_KEY", "BYBIT_API_SECRET", "BYBIT_TESTNET_API_KEY", "BYBIT_TESTNET_API_SECRET",
        "BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_API_SECRET",
        "FEEDAGENT_SIM_BYBIT_API_KEY", "FEEDAGENT_SIM_BYBIT_API_SECRET",
        "FEEDAGENT_SIM_BINANCE_API_KEY", "FEEDAGENT_SIM_BINANCE_API_SECRET",
    )
}


def test_the_expected_files_are_shipped() -> None:
    assert [p.relative_to(ROOT).as_posix() for p in SHIPPED] == [
        "configs/feedagent.yaml",
        "configs/examples/binance-mainnet.yaml",
        "configs/examples/binance-testnet.yaml",
        "configs/examples/bybit-mainnet.yaml",
        "configs/examples/bybit-testnet.yaml",
        "configs/examples/custom.yaml",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path) -> None:
    loaded = load_config(path, DUMMY_ENV)

    assert loaded.warnings == ()
    for name, exchange in loaded.config.exchanges.items():
        assert (loaded.credentials_for(name) is None) == (exchange.environment == "simulator")


@pytest.mark.parametrize("path", [p for p in GOOD if p.name != "files.yaml"], ids=lambda p: p.name)
def test_good_fixture_validates(path: Path) -> None:
    load_config(path, DUMMY_ENV)


def test_default_config_runs_on_the_simulator_without_keys() -> None:
    config = load_config(ROOT / "configs" / "feedagent.yaml", {}).config

    assert {name: (e.venue, e.environment, e.mode) for name, e in config.exchanges.items()} == {
        "bybit-sim": ("bybit", "simulator", "rest"),
        "binance-sim": ("binance", "simulator", "rest"),
    }
    for exchange in config.exchanges.values():
        assert exchange.symbols == ["BTCUSDT", "ETHUSDT"]
        assert exchange.rest.positions_interval_seconds == exchange.rest.prices_interval_seconds == 1
    assert [s.type for s in config.sinks] == ["stdout", "jsonl"]
    assert str(config.sinks[1].path) == "var/events.jsonl"  # type: ignore[union-attr]
    assert config.agent.state_dir == Path("var")
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9464)


@pytest.mark.parametrize(("file", "venue", "urls"), [
    ("bybit-testnet.yaml", "bybit", ("https://api-testnet.bybit.com",
                                     "wss://stream-testnet.bybit.com/v5/public/linear",
                                     "wss://stream-testnet.bybit.com/v5/private")),
    ("bybit-mainnet.yaml", "bybit", ("https://api.bybit.com", "wss://stream.bybit.com/v5/public/linear",
                                     "wss://stream.bybit.com/v5/private")),
    ("binance-mainnet.yaml", "binance", ("https://fapi.binance.com", "wss://fstream.binance.com/market",
                                         "wss://fstream.binance.com/private")),
    ("binance-testnet.yaml", "binance", ("https://demo-fapi.binance.com",
                                         "wss://fstream.binancefuture.com/market",
                                         "wss://fstream.binancefuture.com/private")),
])
def test_example_urls(file: str, venue: str, urls: tuple[str, str, str]) -> None:
    config = load_config(ROOT / "configs" / "examples" / file, DUMMY_ENV).config

    [exchange] = config.exchanges.values()
    eps = exchange.endpoints
    assert exchange.venue == venue and eps is not None
    public = eps.ws_public_url if venue == "bybit" else eps.ws_market_url
    assert (eps.rest_url, public, eps.ws_private_url) == urls


def test_defaults_are_pinned() -> None:
    config = FeedAgentConfig.model_validate({"exchanges": {"x": {"venue": "bybit"}}})

    exchange = config.exchanges["x"]
    assert (exchange.environment, exchange.mode, exchange.category) == ("simulator", "rest", "linear")
    assert (exchange.rest.positions_interval_seconds, exchange.ws.ping_interval_seconds) == (5.0, 20.0)
    assert (exchange.shadow.primary, exchange.shadow.window_seconds) == ("rest", None)  # None: sized to pass
    assert (exchange.rollback.enabled, exchange.rollback.auto_recover) == (True, False)
    assert config.admin.listen == "127.0.0.1:9464" and config.admin.token_env == "FEEDAGENT_ADMIN_TOKEN"
    assert [s.type for s in config.sinks] == ["stdout"]
