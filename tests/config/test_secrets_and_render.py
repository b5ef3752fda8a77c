"""Credentials from env vars and files, and ``print-config`` redaction: a secret never shows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, render_redacted
from agent.config.render import config_summary_hash

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "good"
BAD = Path(__file__).resolve().parents[1] / "fixtures" / "config" / "bad"
API_KEY = "AKfeedagentTESTkey1234"
API_SECRET = "SKfeedagentTESTsecret987654321"
ADMIN_TOKEN = "ATfeedagentTESTtoken5555"
SECRETS = {"BYBIT_API_KEY": f"  {API_KEY}\n", "BYBIT_API_SECRET": API_SECRET, "FEEDAGENT_ADMIN_TOKEN": ADMIN_TOKEN}


def _assert_no_secret(text: str) -> None:
    for secret in (API_KEY, API_SECRET, ADMIN_TOKEN, API_KEY[:8], API_SECRET[:8]):
        assert secret not in text


def test_credentials_from_env_are_stripped() -> None:
    loaded = load_config(GOOD / "testnet_env.yaml", SECRETS)

    creds = loaded.credentials_for("bybit-main")
    assert creds is not None
    assert (creds.api_key, creds.api_secret) == (API_KEY, API_SECRET)
    assert loaded.admin_token == ADMIN_TOKEN


def test_simulator_credentials_are_optional_and_ignored() -> None:
    loaded = load_config(GOOD / "testnet_env.yaml", SECRETS)

    assert loaded.credentials_for("binance-sim") is None
    assert loaded.secret_sources["exchanges.binance-sim.credentials.api_key_env"] is False


def test_secrets_never_in_repr_str_or_print_config() -> None:
    loaded = load_config(GOOD / "testnet_env.yaml", SECRETS)

    _assert_no_secret(repr(loaded))
    _assert_no_secret(str(loaded))
    _assert_no_secret(repr(loaded.config))
    _assert_no_secret(render_redacted(loaded))
    assert API_SECRET not in repr(loaded.credentials)


def test_empty_variable_is_an_error_without_the_value() -> None:
    path = BAD / "missing_credential_env.yaml"
    env = {"BYBIT_API_KEY": "   ", "BYBIT_API_SECRET": API_SECRET}

    with pytest.raises(ConfigError) as caught:
        load_config(path, env)

    assert caught.value.lines == [
        f"{path}:7:7: exchanges.bybit-main.credentials.api_key_env: environment variable BYBIT_API_KEY is empty"]
    _assert_no_secret(str(caught.value))


def test_credentials_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    for name, value in (("api_key", API_KEY), ("api_secret", API_SECRET)):
        secret = tmp_path / "secrets" / name
        secret.write_text(value + "\n")
        secret.chmod(0o600)

    loaded = load_config(GOOD / "files.yaml", {})

    creds = loaded.credentials_for("binance-main")
    assert creds is not None and (creds.api_key, creds.api_secret) == (API_KEY, API_SECRET)
    assert loaded.warnings == ()
    _assert_no_secret(render_redacted(loaded))


def test_file_readable_by_others_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    for name, mode in (("api_key", 0o644), ("api_secret", 0o600)):
        secret = tmp_path / "secrets" / name
        secret.write_text("value-" + name)
        secret.chmod(mode)
    path = GOOD / "files.yaml"

    loaded = load_config(path, {})

    assert [str(w) for w in loaded.warnings] == [
        f"{path}:7:7: exchanges.binance-main.credentials.api_key_file: "
        "file secrets/api_key is readable by group or others (mode 0644); chmod 600 it"]
    assert loaded.warnings[0].severity == "warning"


def test_empty_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api_key").write_text("\n")
    (tmp_path / "secrets" / "api_secret").write_text(API_SECRET)
    for secret in (tmp_path / "secrets").iterdir():
        secret.chmod(0o600)
    path = GOOD / "files.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.lines == [
        f"{path}:7:7: exchanges.binance-main.credentials.api_key_file: file secrets/api_key is empty"]


def test_secrets_not_required_turns_errors_into_warnings() -> None:
    path = BAD / "missing_credential_env.yaml"

    loaded = load_config(path, {}, require_secrets=False)

    assert [w.severity for w in loaded.warnings] == ["warning", "warning"]
    assert loaded.credentials_for("bybit-main") is None
    rendered = render_redacted(loaded)
    assert "api_key_env: BYBIT_API_KEY  # (missing)" in rendered


def test_print_config_marks_sources_and_overrides() -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE": "hybrid"}
    loaded = load_config(GOOD / "testnet_env.yaml", env)

    rendered = render_redacted(loaded)

    assert "      api_key_env: BYBIT_API_KEY  # (set)\n" in rendered
    assert "      api_secret_env: BYBIT_API_SECRET  # (set)\n" in rendered
    assert "  token_env: FEEDAGENT_ADMIN_TOKEN  # (set)\n" in rendered
    assert "    mode: hybrid  # from FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE\n" in rendered
    assert "    credentials:  # ignored: the simulator brings its own keys\n" in rendered
    assert "    symbols: [BTCUSDT, ETHUSDT]\n" in rendered
    assert f"sha256: {loaded.sha256}" in rendered


def test_print_config_without_admin_token() -> None:
    loaded = load_config(GOOD / "minimal.yaml", {})

    rendered = render_redacted(loaded)

    assert "  token_env: FEEDAGENT_ADMIN_TOKEN  # (missing); state-changing admin calls are refused\n" in rendered


def test_print_config_output_loads_back_to_the_same_config(tmp_path: Path) -> None:
    env = SECRETS | {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__SYMBOLS": "[SOLUSDT]"}
    loaded = load_config(GOOD / "testnet_env.yaml", env)
    copy = tmp_path / "effective.yaml"
    copy.write_text(render_redacted(loaded))

    reloaded = load_config(copy, SECRETS)

    assert reloaded.config == loaded.config
    assert config_summary_hash(reloaded) == config_summary_hash(loaded) == loaded.summary_hash


def test_hashes() -> None:
    path = GOOD / "minimal.yaml"

    loaded = load_config(path, {})
    overridden = load_config(path, {"FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE": "hybrid"})

    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert overridden.sha256 == loaded.sha256
    assert overridden.summary_hash != loaded.summary_hash
    assert len(loaded.summary_hash) == 64
