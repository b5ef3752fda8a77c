"""Walking the config schema by key path: which keys exist where, what a value may be.

Used to turn pydantic error locations into YAML key paths (dropping the
discriminator tags pydantic inserts for ``sinks``), to suggest the key a typo
meant, and to resolve environment override paths.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from agent.config.models import FeedAgentConfig

KeyPath = tuple[Any, ...]


def members(tp: Any) -> list[Any]:
    """The alternatives of a type: ``Annotated`` unwrapped, unions flattened, ``None`` dropped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in get_args(tp):
            out.extend(members(arg))
        return out
    if tp is type(None):
        return []
    return [tp]


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def model_of(tp: Any, data: Any = None) -> type[BaseModel] | None:
    """The model behind ``tp``; for a tagged union, the one whose ``type`` matches ``data``."""
    models = [m for m in members(tp) if is_model(m)]
    if len(models) == 1:
        return models[0]
    tag = data.get("type") if isinstance(data, dict) else None
    return next((m for m in models if tag_of(m) == tag), None)


def tag_of(model: type[BaseModel]) -> Any:
    """The ``type`` literal that selects ``model`` in a tagged union (``jsonl``), or ``None``."""
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    return get_args(field.annotation)[0]


def union_tags(tp: Any) -> list[str]:
    return sorted(str(tag_of(m)) for m in members(tp) if is_model(m) and tag_of(m) is not None)


def literal_values(tp: Any) -> list[Any] | None:
    values: list[Any] = []
    for member in members(tp):
        if get_origin(member) is not Literal:
            return None
        values.extend(get_args(member))
    return values or None


def child_type(tp: Any, key: Any) -> Any:
    """The type found under ``key`` in a value of type ``tp``, or ``None`` when ``key`` cannot be there."""
    for member in members(tp):
        if is_model(member):
            field = member.model_fields.get(key) if isinstance(key, str) else None
            if field is not None:
                return field.annotation
        elif get_origin(member) is dict:
            return get_args(member)[1]
        elif get_origin(member) is list and isinstance(key, int):
            return get_args(member)[0]
    return None


def clean_location(loc: tuple[Any, ...]) -> tuple[KeyPath, Any]:
    """A pydantic ``loc`` as a YAML key path, plus the schema type at that path.

    pydantic puts the union tag into the location of a tagged union member
    (``('sinks', 3, 'jsonl', 'path')``) and ``'[key]'`` after a bad dict key;
    neither is a key in the file.
    """
    tp: Any = FeedAgentConfig
    path: list[Any] = []
    for part in loc:
        if part == "[key]":
            continue
        models = [m for m in members(tp) if is_model(m)]
        if len(models) > 1:
            tagged = next((m for m in models if tag_of(m) == part), None)
            if tagged is not None:
                tp = tagged
                continue
        path.append(part)
        tp = child_type(tp, part)
    return tuple(path), tp


def type_at(path: KeyPath, data: Any = None) -> Any:
    """Schema type at a YAML key path; ``data`` (the whole config) picks tagged union members."""
    tp: Any = FeedAgentConfig
    node = data
    for part in path:
        model = model_of(tp, node)
        tp = child_type(model if model is not None else tp, part)
        node = _get(node, part)
    return tp


def field_names(tp: Any, data: Any = None) -> list[str]:
    model = model_of(tp, data)
    return list(model.model_fields) if model is not None else []


def suggest(word: Any, choices: list[str]) -> str | None:
    """The closest choice to a misspelt ``word``, if any is close enough."""
    found = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _get(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None
