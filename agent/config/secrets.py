"""Reading API keys and the admin token from where the config says they are.

The config file only names a source: an environment variable (``api_key_env``)
or a file (``api_key_file``, e.g. a Kubernetes Secret volume or a systemd
credential). Values are stripped of surrounding whitespace. Relative file paths
are relative to the working directory, like every other path in the config.

No message produced here ever contains a secret value: problems name the
variable or the file, never what it holds.
"""

from __future__ import annotations

import os
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


#: A key, a secret or a token is a few hundred bytes at most; anything bigger is the wrong file.
MAX_SECRET_FILE_BYTES = 65_536

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def read_file_secret(path: Path, at: tuple[str, ...]) -> tuple[str | None, list[SecretProblem]]:
    """The secret in a regular file. Anything else (a FIFO would block the agent forever, a device
    would never end) is refused before it is read, and so is a file larger than a secret can be."""
    path = path.expanduser()
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return None, [SecretProblem(at, f"{path} is a directory, not a file")]
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            return None, [SecretProblem(at, f"{path} is not a regular file (it is {kind})")]
        raw, info = _read_regular(path)
    except FileNotFoundError:
        return None, [SecretProblem(at, f"file {path} does not exist")]
    except PermissionError:
        return None, [SecretProblem(at, f"cannot read file {path}: permission denied")]
    except _NotRegular:
        return None, [SecretProblem(at, f"{path} is not a regular file")]
    except OSError as e:
        return None, [SecretProblem(at, f"cannot read file {path}: {e.strerror or e}")]
    if len(raw) > MAX_SECRET_FILE_BYTES:
        return None, [SecretProblem(at, f"file {path} is {info.st_size} bytes; a secret is at most "
                                        f"{MAX_SECRET_FILE_BYTES}")]
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


class _NotRegular(Exception):
    pass


def _read_regular(path: Path) -> tuple[bytes, os.stat_result]:
    """Open without blocking (a FIFO swapped in after the check must not hang us), check again what
    was opened, and read at most one byte more than a secret may have."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegular
        chunks = []
        left = MAX_SECRET_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)
