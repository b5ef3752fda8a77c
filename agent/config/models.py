"""The configuration schema: pydantic models, defaults in one place.

Every model forbids unknown keys and bounds every number; units are spelled out
in key names. Secrets never live here: ``credentials`` names the environment
variable or file that holds them (see ``agent.config.secrets``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.config.addresses import check_listen, check_url
from agent.shadow.model import MismatchKind

Venue = Literal["bybit", "binance"]
Environment = Literal["simulator", "testnet", "demo", "mainnet", "custom"]
Mode = Literal["rest", "hybrid", "shadow"]

_EXCHANGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: What ``*_env`` keys accept: a POSIX-style environment variable name.
ENV_VAR_PATTERN = _ENV_VAR.pattern


class ConfigValueError(ValueError):
    """A validator's error that knows which key under the validated value is at fault.

    ``at`` is relative to where pydantic reports the error (the model or field
    being validated), e.g. ``("endpoints", "ws_market_url")`` from an exchange's
    model validator; the config loader appends it to point at the exact line.
    """

    def __init__(self, message: str, at: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.at: tuple[str | int, ...] = tuple(at)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are immutable, numbers finite."""

    # YAML reads `.inf` and `.nan` as floats; no key of the agent means either.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class AgentSection(StrictModel):
    state_dir: Path = Path("./var")
    shutdown_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    reload_on_file_change: bool = False  # SIGHUP and POST /-/reload always work; this adds a file watch
    reload_check_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0


class AdminSection(StrictModel):
    listen: str = "127.0.0.1:9464"
    token_env: Annotated[str, Field(pattern=_ENV_VAR.pattern)] | None = "FEEDAGENT_ADMIN_TOKEN"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value)

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
    """OpenTelemetry traces over OTLP/HTTP (see docs/tracing.md).

    ``endpoint`` is the collector's base URL (``/v1/traces`` is appended unless
    given). ``sample_ratio`` thins routine spans only: a trace with an error or
    a mode transition is always exported. The standard ``OTEL_*`` environment
    variables override these keys (docs/tracing.md, "Precedence").
    """

    exporter: Literal["none", "otlp"] = "none"
    endpoint: str = "http://127.0.0.1:4318"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05
    service_name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")] = (
        "feedagent")
    export_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0  # batch export period
    export_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0  # per export request, and the final flush
    max_buffered_spans: Annotated[int, Field(ge=64, le=1_000_000)] = 8192  # spans of undecided traces held in memory

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_url(value, secure="https", plain="http", plain_anywhere=True)  # in-cluster collectors


class TelemetrySection(StrictModel):
    log: LogSection = LogSection()
    tracing: TracingSection = TracingSection()


class SimulatorSection(StrictModel):
    """The built-in simulator that ``environment: simulator`` exchanges run against."""

    seed: Annotated[int, Field(ge=0)] | None = None
    price_tick_interval_seconds: Annotated[float, Field(ge=0, le=60)] = 0.1
    position_change_interval_seconds: Annotated[float, Field(ge=0, le=3600)] = 2.0
    initial_positions_per_venue: Annotated[int, Field(ge=0, le=20)] = 2


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

    TLS (``https://``, ``wss://``) is required, except to a loopback host (how a
    ``custom`` exchange reaches a standalone simulator: ``http://127.0.0.1:8900/bybit``).

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
        if value is None:
            return None
        return check_url(value, secure="https", plain="http").rstrip("/")

    @field_validator("ws_public_url", "ws_market_url", "ws_private_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_url(value, secure="wss", plain="ws").rstrip("/")


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
            if from_env is None and from_file is None:
                raise ConfigValueError(f"set {what}_env (an environment variable name) or {what}_file (a file path)")
            if from_env is not None and from_file is not None:
                raise ConfigValueError(f"set only one of {what}_env and {what}_file", at=(f"{what}_file",))
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
    rotate_after_seconds: Annotated[float, Field(ge=1, le=86_400)] = 82_800.0  # Binance cuts at 24 h
    listen_key_keepalive_seconds: Annotated[float, Field(ge=1, le=3_300)] = 1_800.0

    @model_validator(mode="after")
    def _backoff_order(self) -> WsSection:
        if self.reconnect_initial_delay_seconds > self.reconnect_max_delay_seconds:
            raise ConfigValueError(
                f"must not exceed reconnect_max_delay_seconds ({self.reconnect_max_delay_seconds:g}), "
                f"got {self.reconnect_initial_delay_seconds:g}", at=("reconnect_initial_delay_seconds",))
        return self


class HybridSection(StrictModel):
    reconcile_interval_seconds: Annotated[float, Field(ge=1, le=86_400)] = 60.0


_RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class ShadowIgnoreRule(StrictModel):
    """A known difference (Scientist's ``ignore``): matching mismatches count as ``ignored``, separately.

    A rule matches when all of its conditions hold. ``mismatch_kinds`` empty
    means every kind except the critical ones (``missed_close``, ``ghost``),
    which a rule ignores only when it names them.
    """

    name: Annotated[str, Field(pattern=_RULE_NAME.pattern)]
    kind: Literal["price", "position", "any"] = "any"
    mismatch_kinds: Annotated[list[MismatchKind], Field(max_length=6)] = []
    symbols: Annotated[list[Annotated[str, Field(pattern=_SYMBOL.pattern)]], Field(max_length=1024)] = []
    around_funding_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    funding_hours_utc: Annotated[list[Annotated[int, Field(ge=0, le=23)]], Field(min_length=1, max_length=24)] = [
        0, 8, 16]
    start_utc: datetime | None = None           # a time window (e.g. announced exchange maintenance)
    end_utc: datetime | None = None

    @field_validator("start_utc", "end_utc")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    @model_validator(mode="after")
    def _has_condition(self) -> ShadowIgnoreRule:
        if not (self.symbols or self.around_funding_seconds or self.start_utc or self.end_utc):
            raise ConfigValueError("an ignore rule needs symbols, around_funding_seconds, start_utc or end_utc "
                                   "(a rule without a condition would ignore everything)")
        if self.start_utc is not None and self.end_utc is not None and self.start_utc >= self.end_utc:
            raise ConfigValueError(f"must be after start_utc ({self.start_utc.isoformat()})", at=("end_utc",))
        return self


class ShadowSection(StrictModel):
    primary: Literal["rest", "ws"] = "rest"
    # None (default): sized so that a healthy venue can pass (agent.shadow.sizing, docs/shadow-report.md)
    window_seconds: Annotated[float, Field(ge=1, le=86_400)] | None = None
    min_samples: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_mismatch_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    calibrate_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    report_interval_seconds: Annotated[float, Field(ge=10, le=604_800)] = 3_600.0
    confidence: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95          # of the Wilson interval
    max_ws_silence_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0  # WS quiet this long while REST moves: fail
    max_ws_lag_seconds: Annotated[float, Field(ge=0, le=600)] = 2.0  # WS showing REST's value this late still matches
    grace_seconds: Annotated[float, Field(ge=0, le=3600)] | None = None    # position grace; None: max(poll, p99 lag)
    max_examples_per_window: Annotated[int, Field(ge=0, le=100_000)] = 1000
    ignore: Annotated[list[ShadowIgnoreRule], Field(max_length=100)] = []

    @field_validator("ignore")
    @classmethod
    def _unique_rule_names(cls, value: list[ShadowIgnoreRule]) -> list[ShadowIgnoreRule]:
        seen: dict[str, int] = {}
        for index, rule in enumerate(value):
            if rule.name in seen:
                raise ConfigValueError(f"rule name {rule.name!r} is used twice (first at index {seen[rule.name]})",
                                       at=(index, "name"))
            seen[rule.name] = index
        return value


class RollbackSection(StrictModel):
    """The breaker (DESIGN §7): automatic rollback to rest, and (opt-in) recovery through shadow probation."""

    enabled: bool = True
    auto_recover: bool = False
    base_cooldown_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    max_cooldown_seconds: Annotated[float, Field(ge=1, le=604_800)] = 14_400.0
    healthy_decay_seconds: Annotated[float, Field(ge=1, le=604_800)] = 3_600.0
    promote_after_passing_windows: Annotated[int, Field(ge=1, le=1000)] = 3
    max_transitions_per_day: Annotated[int, Field(ge=1, le=1000)] = 6

    @model_validator(mode="after")
    def _cooldowns(self) -> RollbackSection:
        if self.max_cooldown_seconds < self.base_cooldown_seconds:
            raise ConfigValueError(f"must be >= base_cooldown_seconds ({self.base_cooldown_seconds:g})",
                                   at=("max_cooldown_seconds",))
        return self


class HealthCheckConfig(StrictModel):
    """One health check: bad above ``threshold``; failing after ``consecutive`` bad readings in a row."""

    threshold: Annotated[float, Field(ge=0)]
    consecutive: Annotated[int, Field(ge=1, le=1000)] = 3
    enabled: bool = True


def _check(threshold: float, consecutive: int = 3) -> HealthCheckConfig:
    return HealthCheckConfig(threshold=threshold, consecutive=consecutive)


class HealthSection(StrictModel):
    """Health checks of the WebSocket path, evaluated every ``check_interval_seconds``.

    Detection time of a check is about ``consecutive`` x ``check_interval_seconds``
    after its reading crosses the threshold. ``reconnects_per_window`` and
    ``auth_failures_per_window`` are critical (one bad reading trips the breaker).
    """

    check_interval_seconds: Annotated[float, Field(gt=0, le=300)] = 1.0
    window_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    ws_data_age_seconds: HealthCheckConfig = _check(10.0, 3)
    ws_private_down_seconds: HealthCheckConfig = _check(15.0, 2)
    ws_heartbeat_rtt_seconds: HealthCheckConfig = _check(5.0, 3)
    ws_reconnects_per_window: HealthCheckConfig = _check(6, 1)
    ws_auth_failures_per_window: HealthCheckConfig = _check(3, 1)
    clock_offset_seconds: HealthCheckConfig = _check(3.0, 5)
    reconcile_disagreements: HealthCheckConfig = _check(0, 2)  # two reconciliations in a row
    event_loop_lag_seconds: HealthCheckConfig = _check(1.0, 5)


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
    health: HealthSection = HealthSection()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for index, symbol in enumerate(value):
            if not _SYMBOL.match(symbol):
                raise ConfigValueError(
                    f"{symbol!r} is not an exchange symbol such as BTCUSDT (upper case, letters and digits)",
                    at=(index,))
            if symbol in seen:
                raise ConfigValueError(f"{symbol!r} is listed twice (first at index {seen[symbol]})", at=(index,))
            seen[symbol] = index
        return value

    @model_validator(mode="after")
    def _endpoints_fit(self) -> ExchangeConfig:
        eps = self.endpoints
        wrong_key = "ws_market_url" if self.venue == "bybit" else "ws_public_url"
        if eps is not None and getattr(eps, wrong_key) is not None:
            right_key = "ws_public_url" if self.venue == "bybit" else "ws_market_url"
            raise ConfigValueError(f"{wrong_key} is not a {self.venue} endpoint; use {right_key}",
                                   at=("endpoints", wrong_key))
        if self.environment == "custom":
            needed = ["rest_url", "ws_public_url" if self.venue == "bybit" else "ws_market_url", "ws_private_url"]
            missing = [k for k in needed if eps is None or getattr(eps, k) is None]
            if missing:
                raise ConfigValueError("environment custom needs endpoints." + ", endpoints.".join(missing),
                                       at=() if eps is None else ("endpoints",))
        if self.environment != "simulator" and self.credentials is None:
            raise ConfigValueError(f"environment {self.environment} needs credentials "
                                   "(api_key_env and api_secret_env, or api_key_file and api_secret_file)")
        return self


def _exchange_name(name: str) -> str:
    if not _EXCHANGE_NAME.match(name):
        raise ValueError(f"exchange name {name!r} must be lower case letters, digits, '-' or '_' (at most 63)")
    return name


#: An exchange's name in events, metrics and ``FEEDAGENT_EXCHANGES__<NAME>__...``.
ExchangeName = Annotated[str, AfterValidator(_exchange_name)]


class FeedAgentConfig(StrictModel):
    """The whole agent configuration (one YAML file)."""

    agent: AgentSection = AgentSection()
    admin: AdminSection = AdminSection()
    telemetry: TelemetrySection = TelemetrySection()
    simulator: SimulatorSection = SimulatorSection()
    sinks: list[SinkConfig] = [StdoutSinkConfig(type="stdout")]
    exchanges: dict[ExchangeName, ExchangeConfig]

    @field_validator("exchanges")
    @classmethod
    def _names(cls, value: dict[str, ExchangeConfig]) -> dict[str, ExchangeConfig]:
        if not value:
            raise ValueError("configure at least one exchange")
        env_names: dict[str, str] = {}
        for name in value:
            # FEEDAGENT_EXCHANGES__<NAME>__... cannot tell '-' from '_'.
            env_name = name.replace("-", "_")
            if env_name in env_names:
                raise ConfigValueError(f"exchange names {env_names[env_name]!r} and {name!r} differ only by "
                                       "'-' and '_', which environment overrides cannot tell apart", at=(name,))
            env_names[env_name] = name
        return value

    @model_validator(mode="after")
    def _sink_paths_unique(self) -> FeedAgentConfig:
        seen: dict[Path, int] = {}
        for index, sink in enumerate(self.sinks):
            if isinstance(sink, JsonlSinkConfig):
                if sink.path in seen:
                    raise ConfigValueError(f"sink {seen[sink.path]} already writes {str(sink.path)!r}",
                                           at=("sinks", index, "path"))
                seen[sink.path] = index
        return self
