"""``FEEDAGENT_*`` environment variables layered over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "good"
TESTNET = GOOD / "testnet_env.yaml"
SECRETS = {"BYBIT_API_KEY": "k-0123456789", "BYBIT_API_SECRET": "s-0123456789"}


def test_override_is_applied_with_dash_in_exchange_name() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE": "hybrid"}

    loaded = load_config(TESTNET, env)

    assert loaded.config.exchanges["bybit-main"].mode == "hybrid"
    assert loaded.env_overrides == {"exchanges.bybit-main.mode": "FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE"}


def test_values_are_yaml_flow_and_scalars() -> None:
    env = SECRETS | {
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__SYMBOLS": "[BTCUSDT,SOLUSDT]",
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST": "{positions_interval_seconds: 2, prices_interval_seconds: 3}",
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__ROLLBACK__AUTO_RECOVER": "true",
        "FEEDAGENT_ADMIN__LISTEN": "0.0.0.0:9500",
    }

    config = load_config(TESTNET, env).config

    bybit = config.exchanges["bybit-main"]
    assert bybit.symbols == ["BTCUSDT", "SOLUSDT"]
    assert (bybit.rest.positions_interval_seconds, bybit.rest.prices_interval_seconds) == (2, 3)
    assert bybit.rollback.auto_recover is True
    assert config.admin.port == 9500


def test_names_match_case_insensitively_and_sections_absent_from_the_file() -> None:
    env = SECRETS | {"feedagent_agent__state_dir": "/srv/feedagent", "FEEDAGENT_Telemetry__Log__Level": "debug"}

    config = load_config(TESTNET, env).config

    assert config.agent.state_dir == Path("/srv/feedagent")
    assert config.telemetry.log.level == "debug"


def test_more_specific_override_wins() -> None:
    env = SECRETS | {
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST__POSITIONS_INTERVAL_SECONDS": "7",
        "FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST": "{positions_interval_seconds: 2}",
    }

    rest = load_config(TESTNET, env).config.exchanges["bybit-main"].rest

    assert rest.positions_interval_seconds == 7


def test_list_item_override() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "feedagent.yaml"

    config = load_config(path, {"FEEDAGENT_SINKS__1__PATH": "/tmp/other.jsonl"}).config

    assert str(config.sinks[1].path) == "/tmp/other.jsonl"  # type: ignore[union-attr]


def test_other_feedagent_variables_are_not_overrides() -> None:
    env = SECRETS | {"FEEDAGENT_ADMIN_TOKEN": "t-0123456789", "FEEDAGENT_SIM_BYBIT_API_KEY": "x",
                     "FEEDAGENT_REQUIRE_TOOLS": "1", "FEEDAGENT_CONFIG": "/etc/feedagent/feedagent.yaml"}

    loaded = load_config(TESTNET, env)

    assert loaded.env_overrides == {}
    assert loaded.admin_token == "t-0123456789"


def test_invalid_value_names_the_variable() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE": "hybird"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE:0:0: exchanges.bybit-main.mode: "
        "invalid value 'hybird'; expected one of: rest, hybrid, shadow (did you mean 'hybrid'?)"]


def test_invalid_value_inside_a_flow_mapping_names_the_variable() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST": "{positions_interval_seconds: fast}"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST:0:0: exchanges.bybit-main.rest.positions_interval_seconds: "
        "expected a number, got 'fast'"]


def test_value_that_is_not_yaml() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__SYMBOLS": "[BTCUSDT"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__SYMBOLS:0:0: exchanges.bybit-main.symbols: "
        "not a valid YAML value: expected ',' or ']', but got '<stream end>'"]


def test_unknown_key_is_an_error() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST__POSITONS_INTERVAL_SECONDS": "1"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__REST__POSITONS_INTERVAL_SECONDS:0:0: "
        "exchanges.bybit-main.rest.positons_interval_seconds: "
        "unknown key 'positons_interval_seconds' (did you mean 'positions_interval_seconds'?)"]


def test_unknown_section_is_an_error() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGE__BYBIT_MAIN__MODE": "rest"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGE__BYBIT_MAIN__MODE:0:0: exchange: unknown key 'exchange' (did you mean 'exchanges'?)"]


def test_unknown_exchange_cannot_be_created() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__OKX_MAIN__MODE": "rest"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__OKX_MAIN__MODE:0:0: exchanges.okx_main: no entry matches 'OKX_MAIN' in exchanges "
        "of the config file (it has: bybit-main, binance-sim); an override cannot add one"]


def test_key_under_a_single_value() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE__X": "1"}

    with pytest.raises(ConfigError) as caught:
        load_config(TESTNET, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE__X:0:0: exchanges.bybit-main.mode.x: "
        "exchanges.bybit-main.mode is a single value; it has no keys to override"]


def test_file_and_env_errors_are_reported_together() -> None:
    path = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "bad" / "wrong_type.yaml"
    env = {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE": "fast"}

    with pytest.raises(ConfigError) as caught:
        load_config(path, env)

    assert caught.value.lines == [
        f"{path}:5:7: exchanges.bybit-main.rest.positions_interval_seconds: expected a number, got 'fast'",
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE:0:0: exchanges.bybit-main.mode: "
        "invalid value 'fast'; expected one of: rest, hybrid, shadow"]


def test_override_that_makes_credentials_necessary_points_at_the_file() -> None:
    path = GOOD / "minimal.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__ENVIRONMENT": "mainnet"})

    assert caught.value.lines == [
        f"{path}:3:3: exchanges.bybit-main: environment mainnet needs credentials "
        "(api_key_env and api_secret_env, or api_key_file and api_secret_file)"]


def test_credentials_named_by_an_override_are_located_at_the_variable() -> None:
    path = GOOD / "minimal.yaml"
    env = {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__ENVIRONMENT": "testnet",
           "FEEDAGENT_EXCHANGES__BYBIT_MAIN__CREDENTIALS": "{api_key_env: K, api_secret_env: S}", "K": "key-1"}

    with pytest.raises(ConfigError) as caught:
        load_config(path, env)

    assert caught.value.lines == [
        "env:FEEDAGENT_EXCHANGES__BYBIT_MAIN__CREDENTIALS:0:0: exchanges.bybit-main.credentials.api_secret_env: "
        "environment variable S is not set"]
