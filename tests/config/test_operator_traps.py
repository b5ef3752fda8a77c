"""Operator traps of issue 12 that live in the config: each is an error naming the key, FILE:LINE:COL.

A trap here is a config that looked fine (``validate`` passed, or the agent hung or
crashed later) although it could never work, or that leaked a secret.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, render_redacted
from agent.config.environment import check_environment

KEYS = {"K": "dummy-api-key-123", "S": "dummy-api-secret-456"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env if env is not None else KEYS)
    return caught.value.lines


def _custom(rest_url: str, ws_public_url: str = "wss://stream.example.com/v5/public/linear",
            ws_private_url: str = "wss://stream.example.com/v5/private") -> str:
    return ("exchanges:\n"
            "  x:\n"
            "    venue: bybit\n"
            "    environment: custom\n"
            "    credentials: {api_key_env: K, api_secret_env: S}\n"
            "    endpoints:\n"
            f"      rest_url: {rest_url!r}\n"
            f"      ws_public_url: {ws_public_url!r}\n"
            f"      ws_private_url: {ws_private_url!r}\n")


# -- endpoint URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "message"), [
    ("https://api .bybit.com", "must not contain spaces or control characters, got 'https://api .bybit.com'"),
    ("https://api.bybit.com ", "must not contain spaces or control characters, got 'https://api.bybit.com '"),
    ("http://api.bybit.com", "plain http:// is only allowed to a loopback host (such as the simulator); "
                             "use https://, got 'http://api.bybit.com'"),
    ("https://", "is not a URL: it has no host, got 'https://'"),
    ("https://api.bybit.com:99999", "is not a URL: port out of range 0-65535, got 'https://api.bybit.com:99999'"),
    ("https://[::1", "is not a URL: invalid IPv6 URL, got 'https://[::1'"),
    ("https://api.bybit.com/?x=1", "must not have a query (?...) or a fragment (#...), "
                                   "got 'https://api.bybit.com/?x=1'"),
    ("ftp://api.bybit.com", "must start with https:// (http:// only to a loopback host), got 'ftp://api.bybit.com'"),
])
def test_bad_rest_url_is_an_error_at_its_line(tmp_path: Path, url: str, message: str) -> None:
    path = _write(tmp_path, _custom(url))

    assert _errors(path) == [f"{path}:7:7: exchanges.x.endpoints.rest_url: {message}"]


@pytest.mark.parametrize(("key", "line", "url", "message"), [
    ("ws_public_url", 8, "ws://stream.bybit.com/v5/public/linear",
     "plain ws:// is only allowed to a loopback host (such as the simulator); use wss://, "
     "got 'ws://stream.bybit.com/v5/public/linear'"),
    ("ws_private_url", 9, "wss://stream.bybit.com/v5/ private",
     "must not contain spaces or control characters, got 'wss://stream.bybit.com/v5/ private'"),
])
def test_bad_ws_url_is_an_error_at_its_line(tmp_path: Path, key: str, line: int, url: str, message: str) -> None:
    path = _write(tmp_path, _custom("https://api.example.com", **{key: url}))

    assert _errors(path) == [f"{path}:{line}:7: exchanges.x.endpoints.{key}: {message}"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
def test_plain_schemes_stay_allowed_to_loopback_hosts(tmp_path: Path, host: str) -> None:
    """How `environment: custom` reaches a standalone simulator."""
    path = _write(tmp_path, _custom(f"http://{host}:8900/bybit", f"ws://{host}:8900/bybit/v5/public/linear",
                                    f"ws://{host}:8900/bybit/v5/private"))

    config = load_config(path, KEYS).config

    assert config.exchanges["x"].endpoints.rest_url == f"http://{host}:8900/bybit"  # type: ignore[union-attr]


def test_tracing_endpoint_with_a_space_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "telemetry:\n  tracing:\n    endpoint: 'http://otel collector:4318'\n"
                            "exchanges:\n  x: {venue: bybit}\n")

    assert _errors(path) == [f"{path}:3:5: telemetry.tracing.endpoint: must not contain spaces or control "
                             "characters, got 'http://otel collector:4318'"]


# -- admin.listen ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("listen", "message"), [
    ("::1:9464", "an IPv6 address must be written in brackets, e.g. [::1]:9464, got '::1:9464'"),
    ("[::1:9464", "an IPv6 address must be written in brackets, e.g. [::1]:9464, got '[::1:9464'"),
    ("[fe80::zz]:9464", "'fe80::zz' is not an IPv6 address, got '[fe80::zz]:9464'"),
    ("[127.0.0.1]:9464", "'127.0.0.1' is not an IPv6 address, got '[127.0.0.1]:9464'"),
    ("300.1.1.1:9464", "'300.1.1.1' is not an IPv4 address, got '300.1.1.1:9464'"),
    ("bad_host!:9464", "'bad_host!' is not a host name or an IP address, got 'bad_host!:9464'"),
])
def test_invalid_listen_address_is_an_error(tmp_path: Path, listen: str, message: str) -> None:
    path = _write(tmp_path, f"admin:\n  listen: {listen!r}\nexchanges:\n  x: {{venue: bybit}}\n")

    assert _errors(path) == [f"{path}:2:3: admin.listen: {message}"]


@pytest.mark.parametrize("listen", ["[::1]:0", "127.0.0.1:0", "localhost:0", "0.0.0.0:9464", "[::]:9464"])
def test_valid_listen_addresses(tmp_path: Path, listen: str) -> None:
    path = _write(tmp_path, f"admin:\n  listen: {listen!r}\nexchanges:\n  x: {{venue: bybit}}\n")

    assert load_config(path, {}).config.admin.listen == listen


# -- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "shown"), [(".inf", ".inf"), ("-.inf", "-.inf"), (".nan", ".nan"),
                                              (".NaN", ".nan")])
def test_infinite_and_nan_numbers_are_errors(tmp_path: Path, value: str, shown: str) -> None:
    path = _write(tmp_path, "exchanges:\n  x:\n    venue: bybit\n    health:\n"
                            f"      clock_offset_seconds: {{threshold: {value}}}\n")

    assert _errors(path) == [
        f"{path}:5:30: exchanges.x.health.clock_offset_seconds.threshold: expected a finite number, got {shown}"]


def test_infinite_number_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "exchanges:\n  x: {venue: bybit}\n")
    var = "FEEDAGENT_EXCHANGES__X__HEALTH__CLOCK_OFFSET_SECONDS__THRESHOLD"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {var: ".inf"})

    assert caught.value.lines == [
        f"env:{var}:0:0: exchanges.x.health.clock_offset_seconds.threshold: expected a finite number, got .inf"]


# -- secret files ----------------------------------------------------------------------------------

def _files_config(tmp_path: Path) -> Path:
    return _write(tmp_path, "exchanges:\n  x:\n    venue: binance\n    environment: mainnet\n    credentials:\n"
                            f"      api_key_file: {tmp_path / 'key'}\n"
                            f"      api_secret_file: {tmp_path / 'secret'}\n")


@pytest.mark.timeout(10)
def test_secret_file_that_is_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "key", 0o600)
    (tmp_path / "secret").write_text("s" * 20)
    (tmp_path / "secret").chmod(0o600)
    path = _files_config(tmp_path)

    assert _errors(path, {}) == [f"{path}:6:7: exchanges.x.credentials.api_key_file: "
                                 f"{tmp_path / 'key'} is not a regular file (it is a FIFO)"]


def test_secret_file_that_is_too_large_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"k" * 70_000)
    (tmp_path / "secret").write_text("s" * 20)
    for name in ("key", "secret"):
        (tmp_path / name).chmod(0o600)
    path = _files_config(tmp_path)

    assert _errors(path, {}) == [f"{path}:6:7: exchanges.x.credentials.api_key_file: "
                                 f"file {tmp_path / 'key'} is 70000 bytes; a secret is at most 65536"]


@pytest.mark.timeout(10)
def test_secret_from_a_socket_is_refused(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "key"))
        (tmp_path / "secret").write_text("s" * 20)
        (tmp_path / "secret").chmod(0o600)
        path = _files_config(tmp_path)

        assert _errors(path, {}) == [f"{path}:6:7: exchanges.x.credentials.api_key_file: "
                                     f"{tmp_path / 'key'} is not a regular file (it is a socket)"]


# -- print-config ----------------------------------------------------------------------------------

def test_print_config_redacts_credentials_in_urls(tmp_path: Path) -> None:
    path = _write(tmp_path, _custom("https://alice:hunter2-pass@api.example.com",
                                    "wss://tok3n-in-user@stream.example.com/v5/public/linear") +
                  "telemetry:\n  tracing: {endpoint: 'https://bob:otlp-pass@otel.example.com:4318'}\n")
    loaded = load_config(path, KEYS)

    rendered = render_redacted(loaded)

    for secret in ("alice", "hunter2-pass", "tok3n-in-user", "bob", "otlp-pass"):
        assert secret not in rendered
    assert "rest_url: https://***@api.example.com  # credentials in the URL redacted" in rendered
    assert "ws_public_url: wss://***@stream.example.com/v5/public/linear" in rendered
    assert "endpoint: https://***@otel.example.com:4318" in rendered


# -- YAML nesting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [200, 5_000])
def test_deeply_nested_yaml_is_an_error_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    path = _write(tmp_path, "exchanges:\n  x: {venue: bybit}\nx-deep: " + "[" * depth + "]" * depth + "\n")

    lines = _errors(path)

    assert lines == [f"{path}:3:72: (yaml): nested more than 64 levels deep"]  # the root mapping is level 1


def test_deep_nesting_through_aliases_is_an_error(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    path = _write(tmp_path, "\n".join(lines) + "\nexchanges:\n  x: {venue: bybit}\n")

    errors = _errors(path)

    assert len(errors) == 1 and errors[0].endswith(": nested more than 64 levels deep")


def test_deeply_nested_environment_value_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "exchanges:\n  x: {venue: bybit, symbols: [BTCUSDT]}\n")
    var = "FEEDAGENT_EXCHANGES__X__SYMBOLS"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {var: "[" * 3000 + "]" * 3000})

    assert caught.value.lines == [f"env:{var}:0:0: exchanges.x.symbols: "
                                  "not a valid YAML value: nested more than 64 levels deep"]


# -- the environment the config names --------------------------------------------------------------

def _env_config(tmp_path: Path, *, state_dir: Path, jsonl: Path, listen: str = "127.0.0.1:0") -> Path:
    return _write(tmp_path, "agent:\n"
                            f"  state_dir: {str(state_dir)!r}\n"
                            "admin:\n"
                            f"  listen: {listen!r}\n"
                            "sinks:\n"
                            f"  - {{type: jsonl, path: {str(jsonl)!r}}}\n"
                            "exchanges:\n  x: {venue: bybit}\n")


def test_environment_of_a_good_config_is_clean(tmp_path: Path) -> None:
    path = _env_config(tmp_path, state_dir=tmp_path / "var" / "new", jsonl=tmp_path / "var" / "e.jsonl")

    assert check_environment(load_config(path, {}), for_run=True) == []


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    path = _env_config(tmp_path, state_dir=tmp_path / "state", jsonl=tmp_path / "e.jsonl")

    issues = check_environment(load_config(path, {}), for_run=False)

    assert [str(i) for i in issues] == [
        f"{path}:2:3: agent.state_dir: {tmp_path / 'state'} exists and is not a directory"]


def test_state_dir_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    path = _env_config(tmp_path, state_dir=tmp_path / "state" / "var", jsonl=tmp_path / "e.jsonl")

    issues = check_environment(load_config(path, {}), for_run=False)

    assert [str(i) for i in issues] == [
        f"{path}:2:3: agent.state_dir: cannot create {tmp_path / 'state' / 'var'}: "
        f"{tmp_path / 'state'} is not a directory"]


def test_jsonl_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "events")

    issues = check_environment(load_config(path, {}), for_run=False)

    assert [str(i) for i in issues] == [f"{path}:6:19: sinks.0.path: {tmp_path / 'events'} is a directory"]


def test_admin_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "e.jsonl",
                           listen=f"127.0.0.1:{port}")

        issues = check_environment(load_config(path, {}), for_run=False)

    assert [str(i) for i in issues] == [
        f"{path}:4:3: admin.listen: cannot listen on 127.0.0.1:{port}: the address is already in use"]


def test_admin_address_not_on_this_machine(tmp_path: Path) -> None:
    path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "e.jsonl", listen="192.0.2.1:9464")

    issues = check_environment(load_config(path, {}), for_run=False)

    assert [str(i) for i in issues] == [
        f"{path}:4:3: admin.listen: cannot listen on 192.0.2.1:9464: 192.0.2.1 is not an address of this machine"]


def test_environment_override_is_located_at_the_variable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "e.jsonl")

    loaded = load_config(path, {"FEEDAGENT_AGENT__STATE_DIR": str(tmp_path / "state")})

    assert [str(i) for i in check_environment(loaded, for_run=False)] == [
        f"env:FEEDAGENT_AGENT__STATE_DIR:0:0: agent.state_dir: {tmp_path / 'state'} exists and is not a directory"]


def _runtime_file(state_dir: Path, port: int) -> None:
    state_dir.mkdir()
    (state_dir / "agent.json").write_text(
        f'{{"pid": {os.getppid()}, "admin_url": "http://127.0.0.1:{port}"}}')  # a live process that is not us


def test_another_agent_on_the_state_dir_is_refused_for_run_only(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        _runtime_file(tmp_path / "var", port)
        path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "e.jsonl")
        loaded = load_config(path, {})

        for_run = check_environment(loaded, for_run=True)
        for_validate = check_environment(loaded, for_run=False)

    assert [str(i) for i in for_run] == [
        f"{path}:2:3: agent.state_dir: another agent (pid {os.getppid()}, admin http://127.0.0.1:{port}) runs "
        "with this state directory; stop it first or give this one its own state_dir"]
    assert for_validate == []


def test_runtime_file_left_by_a_crash_is_not_another_agent(tmp_path: Path) -> None:
    """After a reboot the pid in a stale agent.json may belong to anything; its admin port answers nothing."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        _runtime_file(tmp_path / "var", port)
        path = _env_config(tmp_path, state_dir=tmp_path / "var", jsonl=tmp_path / "e.jsonl")

        assert check_environment(load_config(path, {}), for_run=True) == []
