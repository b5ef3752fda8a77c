"""One file per mistake, each with the exact lines ``feedagent validate`` prints (OTel Collector style)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "bad"

# Variables every case may rely on; a case that tests a missing one leaves it out.
ENV = {
    "BINANCE_API_KEY": "dummy-binance-key",
    "BINANCE_API_SECRET": "dummy-binance-secret",
    "SIM_KEY": "dummy-sim-key",
    "SIM_SECRET": "dummy-sim-secret",
}

CASES: dict[str, list[str]] = {
    "unknown_key.yaml": [
        "{f}:6:7: exchanges.bybit-main.rest.positons_interval_seconds: "
        "unknown key 'positons_interval_seconds' (did you mean 'positions_interval_seconds'?)",
    ],
    "unknown_key_no_suggestion.yaml": [
        "{f}:4:5: telemetry.log.colour: unknown key 'colour'; valid keys: format, level",
    ],
    "wrong_type.yaml": [
        "{f}:5:7: exchanges.bybit-main.rest.positions_interval_seconds: expected a number, got 'fast'",
    ],
    "out_of_range.yaml": [
        "{f}:5:7: exchanges.bybit-main.ws.stale_after_seconds: must be > 0, got -5",
        "{f}:7:7: exchanges.bybit-main.shadow.max_mismatch_ratio: must be <= 1, got 1.5",
    ],
    "invalid_mode.yaml": [
        "{f}:4:5: exchanges.bybit-main.mode: invalid value 'hybird'; expected one of: rest, hybrid, shadow "
        "(did you mean 'hybrid'?)",
    ],
    "missing_credential_env.yaml": [
        "{f}:7:7: exchanges.bybit-main.credentials.api_key_env: environment variable BYBIT_API_KEY is not set",
        "{f}:8:7: exchanges.bybit-main.credentials.api_secret_env: "
        "environment variable BYBIT_API_SECRET is not set",
    ],
    "missing_credentials_file.yaml": [
        "{f}:6:7: exchanges.binance-main.credentials.api_key_file: "
        "file /nonexistent/feedagent-test/api_key does not exist",
    ],
    "missing_credentials.yaml": [
        "{f}:3:3: exchanges.bybit-main: environment mainnet needs credentials "
        "(api_key_env and api_secret_env, or api_key_file and api_secret_file)",
    ],
    "both_credential_sources.yaml": [
        "{f}:7:7: exchanges.bybit-main.credentials.api_key_file: set only one of api_key_env and api_key_file",
    ],
    "custom_without_endpoints.yaml": [
        "{f}:2:3: exchanges.sim-bybit: environment custom needs "
        "endpoints.rest_url, endpoints.ws_public_url, endpoints.ws_private_url",
    ],
    "wrong_endpoint_key.yaml": [
        "{f}:8:7: exchanges.binance-main.endpoints.ws_public_url: "
        "ws_public_url is not a binance endpoint; use ws_market_url",
    ],
    "unknown_sink_type.yaml": [
        "{f}:3:5: sinks.1.type: unknown sink type 'kafka'; expected one of: jsonl, stdout",
    ],
    "duplicate_key.yaml": [
        "{f}:6:5: exchanges.bybit-main.mode: duplicate key 'mode' (first at line 4, again at line 6)",
    ],
    "yaml_syntax.yaml": [
        "{f}:5:9: (yaml): expected ',' or ']', but got ':' (while parsing a flow sequence started at line 4)",
    ],
    "empty.yaml": [
        "{f}:1:1: (root): the file is empty; it needs at least an 'exchanges' mapping",
    ],
    "comments_only.yaml": [
        "{f}:1:1: (root): the file is empty; it needs at least an 'exchanges' mapping",
    ],
    "not_a_mapping.yaml": [
        "{f}:1:1: (root): the top level must be a mapping of sections "
        "(agent, admin, telemetry, sinks, exchanges), got a list",
    ],
    "missing_exchanges.yaml": [
        "{f}:2:1: exchanges: missing required key 'exchanges'",
    ],
    "bad_exchange_name.yaml": [
        "{f}:3:3: exchanges.Bybit Main: exchange name 'Bybit Main' must be lower case letters, digits, "
        "'-' or '_' (at most 63)",
        "{f}:5:5: exchanges.Bybit Main.mode: invalid value 'fast'; expected one of: rest, hybrid, shadow",
    ],
    "several_errors.yaml": [
        "{f}:4:3: agent.shutdown_timeout_seconds: must be > 0, got 0",
        "{f}:6:3: admin.listen: must be HOST:PORT with a port from 0 to 65535, got 'localhost'",
        "{f}:8:5: sinks.0.path: missing required key 'path'",
        "{f}:14:7: exchanges.bybit-main.credentials.api_key_env: environment variable BYBIT_API_KEY is not set",
        "{f}:15:7: exchanges.bybit-main.credentials.api_secret_env: "
        "environment variable BYBIT_API_SECRET is not set",
        "{f}:16:24: exchanges.bybit-main.symbols.1: "
        "'btcusdt' is not an exchange symbol such as BTCUSDT (upper case, letters and digits)",
        "{f}:18:7: exchanges.bybit-main.rest.prices_interval_seconds: must be >= 0.05, got 0",
        "{f}:20:5: exchanges.binance-main.venue: invalid value 'binanse'; expected one of: bybit, binance "
        "(did you mean 'binance'?)",
        "{f}:22:7: exchanges.binance-main.rollback.enabled: expected true or false, got 'maybe'",
    ],
}


def test_every_bad_fixture_has_a_case() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_config_reports_exact_lines(name: str) -> None:
    path = BAD / name

    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)

    expected = [line.format(f=path) for line in CASES[name]]
    assert caught.value.lines == expected
    assert str(caught.value) == "\n".join(expected)


def test_issue_fields_match_the_formatted_line() -> None:
    path = BAD / "wrong_type.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)

    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.col) == (str(path), 5, 7)
    assert issue.path == "exchanges.bybit-main.rest.positions_interval_seconds"
    assert issue.message == "expected a number, got 'fast'"
    assert issue.severity == "error"


def test_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [f"{path}:0:0: (file): cannot read the config file: no such file or directory"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"exchanges:\n  caf\xe9:\n    venue: bybit\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [f"{path}:2:6: (yaml): the file is not UTF-8 text (byte 0xe9)"]


def test_more_than_one_document(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("exchanges: {a: {venue: bybit}}\n---\nexchanges: {}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [
        f"{path}:2:1: (yaml): the file holds more than one YAML document (---); keep only one"]


def test_unsafe_tag_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("exchanges:\n  a:\n    venue: !!python/object:os.system echo\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines[0] == (
        f"{path}:3:12: exchanges.a.venue: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'")


def test_second_exchange_colliding_in_env_names(tmp_path: Path) -> None:
    path = tmp_path / "collide.yaml"
    path.write_text("exchanges:\n  bybit-main: {venue: bybit}\n  bybit_main: {venue: bybit}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [
        f"{path}:3:3: exchanges.bybit_main: exchange names 'bybit-main' and 'bybit_main' differ only by '-' "
        "and '_', which environment overrides cannot tell apart"]


def test_duplicate_jsonl_path_points_at_the_second_sink(tmp_path: Path) -> None:
    path = tmp_path / "sinks.yaml"
    path.write_text("sinks:\n  - {type: jsonl, path: ./var/e.jsonl}\n  - {type: jsonl, path: var/e.jsonl}\n"
                    "exchanges:\n  a: {venue: bybit}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [f"{path}:3:19: sinks.1.path: sink 0 already writes 'var/e.jsonl'"]
