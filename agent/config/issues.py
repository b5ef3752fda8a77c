"""Configuration problems, each located in a file (or an environment variable).

Every problem prints as ``FILE:LINE:COL: dotted.path: message``, the form
``feedagent validate`` shows and editors understand. Lines and columns are
1-based; ``0:0`` means "no position" (an environment variable, an unreadable
file).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

#: ``path`` used for problems that belong to no key.
YAML_PATH = "(yaml)"
ROOT_PATH = "(root)"
FILE_PATH = "(file)"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration.

    ``file`` is the config file as given, or ``env:VARNAME`` for a problem in an
    environment override. ``path`` is the dotted key path (``sinks.1.path``).
    Warnings (e.g. a secret file readable by others) never stop the agent.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def sort_issues(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """File order first (line, column), then environment overrides by name; no duplicates."""
    unique = dict.fromkeys(issues)
    return sorted(unique, key=lambda i: (i.file.startswith("env:"), i.file, i.line, i.col, i.path))


class ConfigError(Exception):
    """The configuration is invalid. ``issues`` holds every error (never only the first).

    ``warnings`` holds the warning-level issues found on the way; print them too.
    ``str(error)`` is one issue per line, ready for a terminal or a log.
    """

    def __init__(self, issues: Sequence[ConfigIssue], warnings: Sequence[ConfigIssue] = ()) -> None:
        self.issues: list[ConfigIssue] = sort_issues(issues)
        self.warnings: list[ConfigIssue] = sort_issues(warnings)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def lines(self) -> list[str]:
        """Each error formatted on its own line, in file order."""
        return [str(issue) for issue in self.issues]


class ReloadError(Exception):
    """A reload was refused; the running config is unchanged. ``lines`` say why (FILE:LINE:COL: ...)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class ReloadUndone(ReloadError):
    """A valid config failed while being applied; every change already applied was undone.

    The running config is the one before the reload (or as close as ``lines`` say).
    """
