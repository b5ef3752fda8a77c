"""The configuration schema: pydantic models, defaults in one place.

Every model forbids unknown keys and bounds every number; units are spelled out
in key names. Secrets never live here: ``credentials`` names the environment
variable or file that holds them (see ``agent.config.secrets``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Venue = Literal["bybit", "binance"]
Environment = Literal["simulator", "testnet", "demo", "mainnet", "custom"]
Mode = Literal["rest", "hybrid", "shadow"]

_EXCHANGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AgentSection(StrictModel):
    state_dir: Path = Path("./var")
    shutdown_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0


class AdminSection(StrictModel):
    listen: str = "127.0.0.1:9464"
    token_env: Annotated[str, Field(pattern=_ENV_VAR.pattern)] | None = "FEEDAGENT_ADMIN_TOKEN"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT with a port from 0 to 65535")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LogSection(StrictModel):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class TracingSection(StrictModel):
    exporter: Literal["none", "otlp"] = "none"
    endpoint: str = "http://127.0.0.1:4318"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05


class TelemetrySection(StrictModel):
    log: LogSection = LogSection()
    tracing: TracingSection = TracingSection()


class StdoutSinkConfig(StrictModel):
    type: Literal["stdout"]
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000


class JsonlSinkConfig(StrictModel):
    """Append-only JSON lines file.

    ``fsync``: ``always`` fsyncs after every batch written (durable, slower);
    ``interval`` fsyncs at most every ``fsync_interval_seconds``; ``never``
    leaves it to the OS. Every policy flushes and fsyncs on shutdown.
    """

    type: Literal["jsonl"]
    path: Path
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000


SinkConfig = Annotated[StdoutSinkConfig | JsonlSinkConfig, Field(discriminator="type")]


class EndpointsConfig(StrictModel):
    """Overrides of a venue's URLs; all of them are required with ``environment: custom``.

    Bybit uses ``ws_public_url`` (the full category URL); Binance uses
    ``ws_market_url`` (the routed ``/market`` base). Both use ``ws_private_url``.
    """

    rest_url: str | None = None
    ws_public_url: str | None = None
    ws_market_url: str | None = None
    ws_private_url: str | None = None

    @field_validator("rest_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("ws_public_url", "ws_market_url", "ws_private_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/") if value else value


class CredentialsConfig(StrictModel):
    """Where the API key and secret are read from: an environment variable or a file."""

    api_key_env: Annotated[str, Field(pattern=_ENV_VAR.pattern)] | None = None
    api_secret_env: Annotated[str, Field(pattern=_ENV_VAR.pattern)] | None = None
    api_key_file: Path | None = None
    api_secret_file: Path | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> CredentialsConfig:
        for what in ("api_key", "api_secret"):
            from_env = getattr(self, f"{what}_env")
            from_file = getattr(self, f"{what}_file")
            if (from_env is None) == (from_file is None):
                raise ValueError(f"set exactly one of {what}_env and {what}_file")
        return self


class RestSection(StrictModel):
    positions_interval_seconds: Annotated[float, Field(ge=0.05, le=3600)] = 5.0
    prices_interval_seconds: Annotated[float, Field(ge=0.05, le=3600)] = 5.0
    request_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    recv_window_ms: Annotated[int, Field(ge=100, le=60_000)] = 5_000
    server_time_sync_interval_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0


class WsSection(StrictModel):
    ping_interval_seconds: Annotated[float, Field(gt=0, le=300)] = 20.0
    pong_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    stale_after_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    reconnect_initial_delay_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_delay_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    rotate_after_seconds: Annotated[float, Field(ge=60, le=86_400)] = 82_800.0
    listen_key_keepalive_seconds: Annotated[float, Field(ge=1, le=3_300)] = 1_800.0


class HybridSection(StrictModel):
    reconcile_interval_seconds: Annotated[float, Field(ge=1, le=86_400)] = 60.0


class ShadowSection(StrictModel):
    primary: Literal["rest", "ws"] = "rest"
    window_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    min_samples: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    max_mismatch_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    calibrate_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    report_interval_seconds: Annotated[float, Field(ge=10, le=604_800)] = 3_600.0


class RollbackSection(StrictModel):
    enabled: bool = True
    auto_recover: bool = False


class ExchangeConfig(StrictModel):
    """One exchange account; its key in ``exchanges`` is its name in events and metrics."""

    venue: Venue
    environment: Environment = "simulator"
    endpoints: EndpointsConfig | None = None
    credentials: CredentialsConfig | None = None
    category: Literal["linear"] = "linear"
    settle_coin: Annotated[str, Field(pattern=r"^[A-Z0-9]{2,12}$")] = "USDT"
    symbols: Annotated[list[str], Field(max_length=1024)] = []
    mode: Mode = "rest"
    min_emit_interval_ms: Annotated[int, Field(ge=0, le=60_000)] = 100
    rest: RestSection = RestSection()
    ws: WsSection = WsSection()
    hybrid: HybridSection = HybridSection()
    shadow: ShadowSection = ShadowSection()
    rollback: RollbackSection = RollbackSection()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            if not _SYMBOL.match(symbol):
                raise ValueError(f"{symbol!r} is not an exchange symbol such as BTCUSDT (upper case, letters and digits)")
        if len(set(value)) != len(value):
            raise ValueError("symbols must not repeat")
        return value

    @model_validator(mode="after")
    def _endpoints_fit(self) -> ExchangeConfig:
        eps = self.endpoints
        wrong_key = "ws_market_url" if self.venue == "bybit" else "ws_public_url"
        if eps is not None and getattr(eps, wrong_key) is not None:
            right_key = "ws_public_url" if self.venue == "bybit" else "ws_market_url"
            raise ValueError(f"endpoints.{wrong_key} is not a {self.venue} endpoint; use endpoints.{right_key}")
        if self.environment == "custom":
            needed = ["rest_url", "ws_private_url", "ws_public_url" if self.venue == "bybit" else "ws_market_url"]
            missing = [k for k in needed if eps is None or getattr(eps, k) is None]
            if missing:
                raise ValueError("environment custom needs endpoints." + ", endpoints.".join(missing))
        if self.environment != "simulator" and self.credentials is None:
            raise ValueError(f"environment {self.environment} needs credentials (api_key_env/api_secret_env or *_file)")
        return self


class FeedAgentConfig(StrictModel):
    """The whole agent configuration (one YAML file)."""

    agent: AgentSection = AgentSection()
    admin: AdminSection = AdminSection()
    telemetry: TelemetrySection = TelemetrySection()
    sinks: list[SinkConfig] = [StdoutSinkConfig(type="stdout")]
    exchanges: dict[str, ExchangeConfig]

    @field_validator("exchanges")
    @classmethod
    def _names(cls, value: dict[str, ExchangeConfig]) -> dict[str, ExchangeConfig]:
        if not value:
            raise ValueError("configure at least one exchange")
        for name in value:
            if not _EXCHANGE_NAME.match(name):
                raise ValueError(f"exchange name {name!r} must be lower case letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _sink_paths_unique(self) -> FeedAgentConfig:
        paths = [s.path for s in self.sinks if isinstance(s, JsonlSinkConfig)]
        if len(set(paths)) != len(paths):
            raise ValueError("two jsonl sinks write the same path")
        return self
