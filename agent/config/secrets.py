"""Reading API keys and the admin token from where the config says they are.

The config file only names a source: an environment variable (``api_key_env``)
or a file (``api_key_file``, e.g. a Kubernetes Secret volume or a systemd
credential). Values are stripped of surrounding whitespace. Relative file paths
are relative to the working directory, like every other path in the config.

No message produced here ever contains a secret value: problems name the
variable or the file, never what it holds.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.config.issues import Severity
from agent.config.models import AdminSection, CredentialsConfig
from agent.exchanges.base import ApiCredentials


@dataclass(frozen=True)
class SecretProblem:
    """A secret that could not be read, or was read from a file that is too open.

    ``at`` is the key that names the source, relative to the section that holds
    ``credentials`` (``("credentials", "api_key_env")``) or to ``admin``.
    """

    at: tuple[str, ...]
    message: str
    severity: Severity = "error"


def credentials_needed(environment: str) -> bool:
    """The built-in simulator brings its own keys; every other environment needs real ones."""
    return environment != "simulator"


def resolve_credentials(
    creds: CredentialsConfig, environ: Mapping[str, str]
) -> tuple[ApiCredentials | None, list[SecretProblem], dict[tuple[str, ...], bool]]:
    """The key pair named by ``creds``; ``None`` with problems when a part is missing.

    Also returns, per source key, whether it held a value (for ``print-config``).
    """
    values: dict[str, str] = {}
    problems: list[SecretProblem] = []
    present: dict[tuple[str, ...], bool] = {}
    for what in ("api_key", "api_secret"):
        env_name: str | None = getattr(creds, f"{what}_env")
        if env_name is not None:
            at = ("credentials", f"{what}_env")
            value, found = read_env_secret(env_name, environ, at)
        else:
            at = ("credentials", f"{what}_file")
            value, found = read_file_secret(getattr(creds, f"{what}_file"), at)
        problems.extend(found)
        present[at] = value is not None
        if value is not None:
            values[what] = value
    if len(values) < 2:
        return None, problems, present
    return ApiCredentials(api_key=values["api_key"], api_secret=values["api_secret"]), problems, present


def resolve_admin_token(admin: AdminSection, environ: Mapping[str, str]) -> str | None:
    """The bearer token for state-changing admin calls; ``None`` refuses them all."""
    if admin.token_env is None:
        return None
    value = environ.get(admin.token_env, "").strip()
    return value or None


def read_env_secret(
    name: str, environ: Mapping[str, str], at: tuple[str, ...]
) -> tuple[str | None, list[SecretProblem]]:
    if name not in environ:
        return None, [SecretProblem(at, f"environment variable {name} is not set")]
    value = environ[name].strip()
    if not value:
        return None, [SecretProblem(at, f"environment variable {name} is empty")]
    return value, []


def read_file_secret(path: Path, at: tuple[str, ...]) -> tuple[str | None, list[SecretProblem]]:
    path = path.expanduser()
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return None, [SecretProblem(at, f"{path} is a directory, not a file")]
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [SecretProblem(at, f"file {path} does not exist")]
    except PermissionError:
        return None, [SecretProblem(at, f"cannot read file {path}: permission denied")]
    except OSError as e:
        return None, [SecretProblem(at, f"cannot read file {path}: {e.strerror or e}")]
    problems = []
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        problems.append(SecretProblem(
            at, f"file {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                "chmod 600 it", severity="warning"))
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, problems + [SecretProblem(at, f"file {path} is not UTF-8 text")]
    if not value:
        return None, problems + [SecretProblem(at, f"file {path} is empty")]
    return value, problems
