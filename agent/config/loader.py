"""Load, validate and resolve the configuration: the one entry point for ``run``,
``validate``, ``print-config`` and reload.

    try:
        loaded = load_config(Path("configs/feedagent.yaml"))
    except ConfigError as e:
        for issue in e.issues:      # every error, in file order
            print(issue)            # FILE:LINE:COL: dotted.path: message
        raise SystemExit(78)        # EX_CONFIG

Steps: read the file and hash it; parse YAML keeping the position of every key
(top-level ``x-*`` keys are ignored: they hold YAML anchors to share); layer the
``FEEDAGENT_*`` environment overrides; validate with the pydantic models;
resolve the secrets the config names. Problems from every step are collected
and reported together.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from agent.config.env import EnvOverrideSource
from agent.config.issues import FILE_PATH, YAML_PATH, ConfigError, ConfigIssue, Severity, sort_issues
from agent.config.messages import describe_errors
from agent.config.models import AdminSection, CredentialsConfig, Environment, FeedAgentConfig
from agent.config.secrets import SecretProblem, credentials_needed, resolve_admin_token, resolve_credentials
from agent.config.yaml_source import KeyPath, YamlDocument, dotted, parse_yaml
from agent.exchanges.base import ApiCredentials


@dataclass(frozen=True, repr=False)
class LoadedConfig:
    """A validated configuration and what was resolved along with it.

    Attributes
    ----------
    config:
        The validated model: defaults filled in, environment overrides applied.
    path:
        The file it was read from.
    sha256:
        Hex SHA-256 of the file's bytes (``feedagent_config_info{sha256=...}``).
    credentials:
        API keys per exchange name, for every exchange outside the simulator
        whose secrets could be read.
    admin_token:
        The admin bearer token, or ``None`` (state-changing calls are refused).
    env_overrides:
        Dotted key path → name of the ``FEEDAGENT_*`` variable that set it.
    secret_sources:
        Dotted path of each key naming a secret (``exchanges.x.credentials.api_key_env``,
        ``admin.token_env``) → whether that source held a value.
    warnings:
        Warning-level issues (e.g. a secret file readable by others).
    locator:
        Where each key was written (file line or ``FEEDAGENT_*`` variable); see ``issue``.
    """

    config: FeedAgentConfig
    path: Path
    sha256: str
    credentials: Mapping[str, ApiCredentials] = field(default_factory=dict)
    admin_token: str | None = None
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    secret_sources: Mapping[str, bool] = field(default_factory=dict)
    warnings: tuple[ConfigIssue, ...] = ()
    locator: _Locator | None = field(default=None, compare=False)

    def issue(self, path: KeyPath, message: str, severity: Severity = "error") -> ConfigIssue:
        """A problem found later (e.g. by the environment checks) about the key at ``path``, located
        like the loader's own: ``FILE:LINE:COL`` of the key, or ``env:VAR`` when a variable set it."""
        if self.locator is None:
            return ConfigIssue(str(self.path), 0, 0, dotted(path), message, severity)
        return self.locator.issue(path, message, severity)

    def credentials_for(self, exchange: str) -> ApiCredentials | None:
        """The key pair of ``exchange``; ``None`` in the simulator (it brings its own)."""
        return self.credentials.get(exchange)

    @property
    def summary_hash(self) -> str:
        """Hash of the effective config (after defaults and overrides); see ``render.config_summary_hash``."""
        from agent.config.render import config_summary_hash

        return config_summary_hash(self.config)

    def __repr__(self) -> str:
        # Never the secrets, not even a prefix of a key.
        creds = {name: "(set)" for name in self.credentials}
        token = "(set)" if self.admin_token else None
        return (f"LoadedConfig(path={str(self.path)!r}, sha256={self.sha256[:12]!r}, "
                f"exchanges={list(self.config.exchanges)!r}, credentials={creds!r}, admin_token={token!r}, "
                f"env_overrides={dict(self.env_overrides)!r}, warnings={len(self.warnings)})")


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> LoadedConfig:
    """Read, validate and resolve the configuration at ``path``.

    Parameters
    ----------
    path:
        The YAML file. Issues name it as given.
    environ:
        Environment for overrides and secrets; ``os.environ`` when ``None``.
    require_secrets:
        When false (``validate --no-environment``, ``print-config`` on a
        workstation), unreadable secrets are warnings instead of errors.

    Raises
    ------
    ConfigError
        With every error found, in file order, then environment overrides.
    """
    path = Path(path)
    file = str(path)
    env: Mapping[str, str] = os.environ if environ is None else environ
    raw = _read(path, file)
    text = _decode(raw, file)
    doc = parse_yaml(text, file)
    if doc.data is None:
        raise ConfigError(doc.issues)

    issues = list(doc.issues)
    source = EnvOverrideSource(_without_extensions(doc.data), env)
    data = source()
    issues += source.issues
    locator = _Locator(file, doc, source.origins)

    config: FeedAgentConfig | None = None
    try:
        config = FeedAgentConfig.model_validate(data)
    except ValidationError as e:
        # A value YAML could not build (e.g. an unsafe tag) is already reported; skip the echo.
        unbuilt = {issue.path for issue in doc.issues}
        issues += [locator.issue(key_path, message) for key_path, message in describe_errors(e, data)
                   if dotted(key_path) not in unbuilt]

    secrets = _Secrets(env, locator, require_secrets)
    secrets.resolve(config, data)
    issues += secrets.issues

    errors = [i for i in issues if i.is_error]
    warnings = [i for i in issues if not i.is_error]
    if errors or config is None:
        raise ConfigError(errors, warnings)
    return LoadedConfig(
        config=config,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        credentials=secrets.credentials,
        admin_token=secrets.admin_token,
        env_overrides={dotted(p): var for p, var in sorted(source.origins.items(), key=lambda kv: dotted(kv[0]))},
        secret_sources=secrets.present,
        warnings=tuple(sort_issues(warnings)),
        locator=locator,
    )


def _without_extensions(data: dict[Any, Any]) -> dict[Any, Any]:
    """Drop top-level ``x-*`` keys: a place for YAML anchors shared by several sections
    (the Compose file convention), never configuration themselves."""
    return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}


class _Locator:
    """Where a key path was written: a file line, or the variable that overrode it."""

    def __init__(self, file: str, doc: YamlDocument, origins: Mapping[KeyPath, str]) -> None:
        self.file = file
        self.doc = doc
        self.origins = origins

    def issue(self, path: KeyPath, message: str, severity: Severity = "error") -> ConfigIssue:
        var = self._origin(path)
        if var is not None:
            return ConfigIssue(f"env:{var}", 0, 0, dotted(path), message, severity)
        mark = self.doc.locate(path)
        return ConfigIssue(self.file, mark.line, mark.col, dotted(path), message, severity)

    def _origin(self, path: KeyPath) -> str | None:
        best: tuple[int, str] | None = None
        for origin, var in self.origins.items():
            if path[: len(origin)] == origin and (best is None or len(origin) > best[0]):
                best = (len(origin), var)
        return best[1] if best else None


class _Secrets:
    """Resolves every secret the config names, collecting problems as issues."""

    def __init__(self, environ: Mapping[str, str], locator: _Locator, required: bool) -> None:
        self.environ = environ
        self.locator = locator
        self.required = required
        self.credentials: dict[str, ApiCredentials] = {}
        self.admin_token: str | None = None
        self.present: dict[str, bool] = {}
        self.issues: list[ConfigIssue] = []

    def resolve(self, config: FeedAgentConfig | None, data: dict[str, Any]) -> None:
        """Use the validated config or, when it is invalid, every part that is valid on its own,
        so that a missing key variable is reported together with the schema errors."""
        admin = config.admin if config is not None else _try(AdminSection, data.get("admin") or {})
        if admin is not None:
            self.admin_token = resolve_admin_token(admin, self.environ)
            if admin.token_env is not None:
                self.present["admin.token_env"] = self.admin_token is not None
        if config is not None:
            views = {name: (credentials_needed(ex.environment), ex.credentials)
                     for name, ex in config.exchanges.items()}
        else:
            views = _credential_views(data.get("exchanges"))
        for name, (needed, creds) in views.items():
            if creds is None:
                continue
            found, problems, present = resolve_credentials(creds, self.environ)
            base = ("exchanges", name)
            self.present.update({dotted(base + at): ok for at, ok in present.items()})
            if not needed:
                continue  # the simulator brings its own keys; configured ones are ignored
            self.issues += [self._issue(base, problem) for problem in problems]
            if found is not None:
                self.credentials[name] = found

    def _issue(self, base: KeyPath, problem: SecretProblem) -> ConfigIssue:
        severity: Severity = problem.severity if self.required else "warning"
        return self.locator.issue(base + problem.at, problem.message, severity)


def _credential_views(raw: Any) -> dict[str, tuple[bool, CredentialsConfig | None]]:
    """Per exchange of an invalid config: whether it needs keys, and its credentials if they are valid."""
    if not isinstance(raw, dict):
        return {}
    views = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            continue
        environment = value.get("environment", "simulator")
        if environment not in get_args(Environment):
            continue
        views[str(name)] = (credentials_needed(environment), _try(CredentialsConfig, value.get("credentials")))
    return views


def _try(model: type[Any], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _read(path: Path, file: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        reason = "it is a directory"
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
    raise ConfigError([ConfigIssue(file, 0, 0, FILE_PATH, f"cannot read the config file: {reason}")])


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        message = f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x})"
        raise ConfigError([ConfigIssue(file, line, col, YAML_PATH, message)]) from None
