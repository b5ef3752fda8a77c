"""pydantic validation errors as (YAML key path, human message) pairs.

pydantic's own texts ("Input should be greater than 0") are written for
programmers; operators get ``must be > 0, got -5``, ``unknown key 'x' (did you
mean 'y'?)`` and ``unknown sink type 'kafka'; expected one of: jsonl, stdout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent.config.models import ENV_VAR_PATTERN, ConfigValueError
from agent.config.schema_paths import (
    KeyPath,
    clean_location,
    field_names,
    literal_values,
    suggest,
    type_at,
    union_tags,
)

_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a file path",
}
_COMPARISONS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
                "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def describe_errors(error: ValidationError, data: Any) -> list[tuple[KeyPath, str]]:
    """Every error of ``error`` as ``(path, message)``; ``data`` is what was validated."""
    return [describe(details, data) for details in error.errors()]


def describe(details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    path, tp = clean_location(tuple(details["loc"]))
    kind = details["type"]
    handler = _HANDLERS.get(kind)
    if handler is not None:
        return handler(path, tp, details, data)
    if kind in _EXPECTED:
        return path, f"expected {_EXPECTED[kind]}, got {show(details['input'])}"
    if kind in _COMPARISONS:
        key, sign = _COMPARISONS[kind]
        return path, f"must be {sign} {show(details['ctx'][key])}, got {show(details['input'])}"
    return path, f"{_lower_first(details['msg'])}, got {show(details['input'])}"


def show(value: Any) -> str:
    """A value as an operator wrote it: strings quoted, ``null``/``true``, collections by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):  # as YAML writes them
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def unknown_key_message(key: Any, allowed: list[str]) -> str:
    close = suggest(key, allowed)
    if close is not None:
        return f"unknown key {str(key)!r} (did you mean {close!r}?)"
    return f"unknown key {str(key)!r}; valid keys: {', '.join(allowed)}"


def _extra(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    allowed = field_names(type_at(path[:-1], data), _get_path(data, path[:-1]))
    return path, unknown_key_message(path[-1], allowed)


def _missing(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    return path, f"missing required key {str(path[-1])!r}"


def _literal(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    values = literal_values(tp)
    if values is None:
        expected = details.get("ctx", {}).get("expected", "")
        return path, f"expected {expected}, got {show(details['input'])}"
    names = [str(v) for v in values]
    message = f"invalid value {show(details['input'])}; expected one of: {', '.join(names)}"
    close = suggest(details["input"], names) if isinstance(details["input"], str) else None
    return path, message + (f" (did you mean {close!r}?)" if close else "")


def _tag_invalid(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    key = details["ctx"]["discriminator"].strip("'")
    tag = details["ctx"]["tag"]
    tags = union_tags(tp)
    message = f"unknown {_item_name(path)} {key} {tag!r}; expected one of: {', '.join(tags)}"
    close = suggest(tag, tags)
    return path + (key,), message + (f" (did you mean {close!r}?)" if close else "")


def _tag_missing(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    key = details["ctx"]["discriminator"].strip("'")
    if not isinstance(details["input"], dict):
        return path, f"expected a mapping with a {key!r} key, got {show(details['input'])}"
    return path + (key,), f"missing required key {key!r}; expected one of: {', '.join(union_tags(tp))}"


def _pattern(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    pattern = details["ctx"]["pattern"]
    if pattern == ENV_VAR_PATTERN:
        return path, (f"{show(details['input'])} is not an environment variable name "
                      "(letters, digits and '_', not starting with a digit)")
    return path, f"must match the pattern {pattern}, got {show(details['input'])}"


def _length(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    ctx = details["ctx"]
    bound = f"at most {ctx['max_length']}" if details["type"] == "too_long" else f"at least {ctx['min_length']}"
    return path, f"must have {bound} items, got {ctx.get('actual_length', '?')}"


def _value_error(path: KeyPath, tp: Any, details: ErrorDetails, data: Any) -> tuple[KeyPath, str]:
    error = details.get("ctx", {}).get("error")
    if isinstance(error, ConfigValueError):
        return path + error.at, str(error)
    if isinstance(error, Exception):
        return path, str(error)
    return path, details["msg"].removeprefix("Value error, ")


_Handler = Callable[[KeyPath, Any, ErrorDetails, Any], tuple[KeyPath, str]]
_HANDLERS: dict[str, _Handler] = {
    "extra_forbidden": _extra,
    "missing": _missing,
    "literal_error": _literal,
    "union_tag_invalid": _tag_invalid,
    "union_tag_not_found": _tag_missing,
    "string_pattern_mismatch": _pattern,
    "too_long": _length,
    "too_short": _length,
    "value_error": _value_error,
    "assertion_error": _value_error,
}


def _item_name(path: KeyPath) -> str:
    """``sinks`` → ``sink``: what one item of the list at ``path`` is called."""
    parent = next((p for p in reversed(path) if isinstance(p, str)), "item")
    return parent[:-1] if parent.endswith("s") else parent


def _get_path(data: Any, path: KeyPath) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
