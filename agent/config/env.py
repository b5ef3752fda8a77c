"""Environment overrides: ``FEEDAGENT_`` + the key path joined by ``__``.

``FEEDAGENT_EXCHANGES__BYBIT_MAIN__MODE=hybrid`` sets ``exchanges.bybit-main.mode``.
Each segment matches a key case-insensitively; exchange names match with ``-``
and ``_`` treated alike, because variable names cannot hold ``-``. Values are
read as YAML scalars or flow collections (``[BTCUSDT, ETHUSDT]``,
``{positions_interval_seconds: 2}``), exactly as if written in the file.

Only variables that address a top-level section are overrides: anything with
``__`` after the prefix, or exactly ``FEEDAGENT_<SECTION>``. Other
``FEEDAGENT_*`` variables (``FEEDAGENT_ADMIN_TOKEN``, ``FEEDAGENT_SIM_API_KEY``)
are secrets or tool settings and are left alone. Shorter paths apply first, so
``FEEDAGENT_EXCHANGES__X__REST__POSITIONS_INTERVAL_SECONDS`` wins over a
``FEEDAGENT_EXCHANGES__X__REST={...}`` given at the same time. A nested
override may not create an exchange or a list item that the file does not have
(replacing a whole value, ``FEEDAGENT_SINKS='[{type: stdout}]'``, is allowed).

pydantic-settings' own ``EnvSettingsSource`` would turn ``BYBIT_MAIN`` into a new
exchange ``bybit_main``, parse values as JSON and forget which variable set what;
``EnvOverrideSource`` keeps its configuration and environment reading and does
the path resolution itself, so errors can name the variable.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, get_origin

from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from agent.config.issues import ConfigIssue
from agent.config.messages import unknown_key_message
from agent.config.models import FeedAgentConfig
from agent.config.schema_paths import KeyPath, child_type, field_names, is_model, members, model_of
from agent.config.yaml_source import dotted, parse_yaml_value

ENV_PREFIX = "FEEDAGENT_"
ENV_NESTED_DELIMITER = "__"


class FeedAgentSettings(BaseSettings):
    """The pydantic-settings declaration of how the environment addresses the config.

    It holds no fields: the values live in ``FeedAgentConfig`` and arrive through
    ``EnvOverrideSource``, which layers them over the YAML file.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER,
                                      case_sensitive=False, env_ignore_empty=False)


class EnvOverrideSource(EnvSettingsSource):
    """A settings source that returns the file's data with environment overrides applied.

    After calling it, ``origins`` maps each overridden key path to the variable
    that set it and ``issues`` lists the overrides that could not be applied.
    """

    def __init__(self, file_data: dict[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._file_data = file_data
        self.origins: dict[KeyPath, str] = {}
        self.issues: list[ConfigIssue] = []
        super().__init__(FeedAgentSettings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Keep each name as it was set: error messages cite it.
        prefix = self.env_prefix.upper()
        return {name: value for name, value in self._environ.items() if name.upper().startswith(prefix)}

    def overrides(self) -> list[tuple[str, list[str], str]]:
        """``(variable, path segments, raw value)`` of each override, in the order they apply."""
        sections = set(FeedAgentConfig.model_fields)
        found = []
        for name, value in self.env_vars.items():
            segments = name[len(self.env_prefix):].split(self.env_nested_delimiter)
            if len(segments) == 1 and segments[0].lower() not in sections:
                continue
            found.append((name, segments, value or ""))
        return sorted(found, key=lambda item: (len(item[1]), item[0]))

    def __call__(self) -> dict[str, Any]:
        data = copy.deepcopy(self._file_data)
        self.origins.clear()
        self.issues.clear()
        for name, segments, raw in self.overrides():
            self._apply(data, name, segments, raw)
        return data

    def _apply(self, data: dict[str, Any], var: str, segments: list[str], raw: str) -> None:
        node: Any = data
        tp: Any = FeedAgentConfig
        path: KeyPath = ()
        for index, segment in enumerate(segments):
            key, problem = _resolve(tp, node, segment, path)
            if problem is not None:
                self._issue(var, path + (key,), problem)
                return
            path = path + (key,)
            tp = _child(tp, node, key)
            if index == len(segments) - 1:
                try:
                    value = parse_yaml_value(raw)
                except ValueError as e:
                    self._issue(var, path, str(e))
                    return
                node[key] = value
                self.origins[path] = var
                return
            if not _is_container(tp):
                self._issue(var, path + (segments[index + 1].lower(),),
                            f"{dotted(path)} is a single value; it has no keys to override")
                return
            child = node[key] if _has(node, key) else None
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict | list):
                self._issue(var, path, f"the file sets {dotted(path)} to a single value; there is no "
                                       f"{segments[index + 1].lower()!r} under it")
                return
            node = child

    def _issue(self, var: str, path: KeyPath, message: str) -> None:
        self.issues.append(ConfigIssue(f"env:{var}", 0, 0, dotted(path), message))


def _resolve(tp: Any, node: Any, segment: str, path: KeyPath) -> tuple[Any, str | None]:
    """The key ``segment`` names under ``path``, or a reason why it names none."""
    if segment == "":
        return segment, "empty key (two delimiters '__' in a row, or one at the end)"
    model = model_of(tp, node)
    if model is not None:
        names = field_names(model)
        match = next((n for n in names if n.lower() == segment.lower()), None)
        if match is None:
            return segment.lower(), unknown_key_message(segment.lower(), names)
        return match, None
    kinds = [get_origin(m) for m in members(tp)]
    if dict in kinds:
        keys = list(node) if isinstance(node, dict) else []
        match = next((k for k in keys if _same_name(str(k), segment)), None)
        if match is None:
            known = ", ".join(map(str, keys)) or "none"
            return segment.lower(), (f"no entry matches {segment!r} in {dotted(path)} of the config file "
                                     f"(it has: {known}); an override cannot add one")
        return match, None
    if list in kinds:
        size = len(node) if isinstance(node, list) else 0
        if not segment.isdigit() or int(segment) >= size:
            return segment, (f"no item {segment!r} in {dotted(path)} of the config file "
                             f"(it has {size}); an override cannot add one")
        return int(segment), None
    return segment.lower(), f"{dotted(path)} has no keys to override"


def _child(tp: Any, node: Any, key: Any) -> Any:
    model = model_of(tp, node)
    return child_type(model if model is not None else tp, key)


def _is_container(tp: Any) -> bool:
    return any(is_model(m) or get_origin(m) in (dict, list) for m in members(tp))


def _has(node: Any, key: Any) -> bool:
    return key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)


def _same_name(key: str, segment: str) -> bool:
    return key.replace("-", "_").lower() == segment.replace("-", "_").lower()
