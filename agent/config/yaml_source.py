"""YAML to plain data, remembering where every key and list item was written.

PyYAML's ``SafeLoader`` composes the node graph (safe tags only); we build the
Python data ourselves so that each mapping key and each sequence item records
its 1-based line and column, and so that a repeated key is an error that names
both lines instead of a silent "last one wins". Merge keys (``<<: *defaults``)
are honoured; merged entries point at the lines where they are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.config.issues import ROOT_PATH, YAML_PATH, ConfigIssue

KeyPath = tuple[Any, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Alias expansion cap ("billion laughs"); a real config has a few hundred nodes.
_MAX_NODES = 20_000
#: Nesting cap: a real config is 6 levels deep; PyYAML's composer recurses once per level and
#: would raise RecursionError (a crash, not a message) at a few hundred.
MAX_DEPTH = 64
_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    col: int


TOP = Mark(1, 1)


@dataclass
class YamlDocument:
    """Parsed data plus the position of every key (mappings) and item (sequences).

    ``marks[()]`` is the start of the top-level mapping. ``issues`` are problems
    found while building (duplicate keys, unsupported tags); when the text is not
    YAML at all, ``data`` is ``None`` and ``issues`` holds the syntax error.
    """

    data: Any
    marks: dict[KeyPath, Mark] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)

    def locate(self, path: KeyPath) -> Mark:
        """Position of ``path``, or of its nearest written parent (e.g. for a missing key)."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return TOP

    def has(self, path: KeyPath) -> bool:
        return tuple(path) in self.marks


def dotted(path: KeyPath) -> str:
    """``('sinks', 1, 'path')`` → ``sinks.1.path``; the empty path is ``(root)``."""
    return ".".join(str(part) for part in path) if path else ROOT_PATH


class _TooDeep(Exception):
    def __init__(self, mark: Mark) -> None:
        super().__init__(_TOO_DEEP)
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses documents nested deeper than ``MAX_DEPTH``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _TooDeep(Mark(event.start_mark.line + 1, event.start_mark.column + 1))
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document safely; every problem becomes a ``ConfigIssue`` of ``file``."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        return _reader_issue(file, text, e)
    try:
        root = loader.get_single_node()
        if root is None:
            return _root_issue(file, "the file is empty; it needs at least an 'exchanges' mapping")
        if not isinstance(root, MappingNode):
            got = "a list" if isinstance(root, SequenceNode) else f"{_scalar_text(root)!r}"
            return _root_issue(file, f"the top level must be a mapping of sections (agent, admin, telemetry, "
                                     f"sinks, exchanges), got {got}")
        builder = _Builder(loader, file)
        data = builder.build(root, ())
        builder.marks[()] = _mark(root)
        return YamlDocument(data, builder.marks, builder.issues)
    except yaml.MarkedYAMLError as e:
        return YamlDocument(None, {}, [_syntax_issue(file, e)])
    except yaml.reader.ReaderError as e:
        return _reader_issue(file, text, e)
    except _TooLarge:
        return YamlDocument(None, {}, [ConfigIssue(file, 1, 1, YAML_PATH,
                                                   "the document is too large once its aliases are expanded")])
    except _TooDeep as e:
        return YamlDocument(None, {}, [ConfigIssue(file, e.mark.line, e.mark.col, YAML_PATH, str(e))])
    finally:
        loader.dispose()


def parse_yaml_value(text: str) -> Any:
    """Parse an environment value as a YAML scalar or flow collection (``[a, b]``, ``{k: v}``).

    Raises ``ValueError`` with a one-line reason when it is not valid YAML.
    """
    try:
        loader = _Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"not a valid YAML value: {problem}") from None
    except _TooDeep as e:
        raise ValueError(f"not a valid YAML value: {e}") from None


class _TooLarge(Exception):
    pass


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.marks: dict[KeyPath, Mark] = {}
        self.issues: list[ConfigIssue] = []
        self.budget = _MAX_NODES
        self.active: set[int] = set()
        self.depth = 0  # aliases can nest deeper than the text: a1: [*a0], a2: [*a1], ...

    def issue(self, node: Node, path: KeyPath, message: str) -> None:
        mark = _mark(node)
        self.issues.append(ConfigIssue(self.file, mark.line, mark.col, dotted(path), message))

    def build(self, node: Node, path: KeyPath) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.issue(node, path, "an alias refers to a node that contains it (recursive alias)")
            return None
        if self.depth >= MAX_DEPTH:
            raise _TooDeep(_mark(node))
        self.active.add(id(node))
        self.depth += 1
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path)
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
            self.depth -= 1

    def scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            self.issue(node, path, e.problem or "cannot read this value")
            return None

    def sequence(self, node: SequenceNode, path: KeyPath) -> list[Any]:
        if node.tag != _SEQ_TAG:
            self.issue(node, path, f"unsupported tag {node.tag}")
        items = []
        for index, item in enumerate(node.value):
            self.marks[path + (index,)] = _mark(item)
            items.append(self.build(item, path + (index,)))
        return items

    def mapping(self, node: MappingNode, path: KeyPath) -> dict[Any, Any]:
        if node.tag != _MAP_TAG:
            self.issue(node, path, f"unsupported tag {node.tag}")
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self.issue(key_node, path, "a key must be a plain value, not a mapping or a list")
                continue
            key = self.scalar(key_node, path)
            key_mark = _mark(key_node)
            if key in first_line:
                self.issue(key_node, path + (key,), f"duplicate key {key!r} (first at line {first_line[key]}, "
                                                    f"again at line {key_mark.line})")
                continue
            first_line[key] = key_mark.line
            self.marks[path + (key,)] = key_mark
            result[key] = self.build(value_node, path + (key,))
        for merge in merges:
            self.merge_into(result, merge, path)
        return result

    def merge_into(self, result: dict[Any, Any], merge: Node, path: KeyPath) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys written here win, then earlier merges win."""
        sources = merge.value if isinstance(merge, SequenceNode) else [merge]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.issue(source, path, "a merge key (<<) needs a mapping or a list of mappings")
                continue
            outer_marks, self.marks = self.marks, {}
            merged = self.build(source, path)
            merged_marks, self.marks = self.marks, outer_marks
            for key, value in merged.items():
                if key in result:
                    continue
                result[key] = value
                for sub_path, mark in merged_marks.items():
                    if sub_path[: len(path) + 1] == path + (key,):
                        self.marks[sub_path] = mark


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar_text(node: Node) -> str:
    return node.value if isinstance(node, ScalarNode) else ""


def _root_issue(file: str, message: str) -> YamlDocument:
    return YamlDocument(None, {}, [ConfigIssue(file, TOP.line, TOP.col, ROOT_PATH, message)])


def _syntax_issue(file: str, e: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = e.problem or e.context or "invalid YAML"
    if e.context == "expected a single document in the stream":
        message = "the file holds more than one YAML document (---); keep only one"
    elif e.problem and e.context:
        where = ""
        if e.context_mark is not None and e.context_mark.line != (mark.line if mark else -1):
            where = f" started at line {e.context_mark.line + 1}"
        message = f"{e.problem} ({e.context}{where})"
    return ConfigIssue(file, line, col, YAML_PATH, message)


def _reader_issue(file: str, text: str, e: yaml.reader.ReaderError) -> YamlDocument:
    line, col = _line_col(text, e.position)
    character = ord(e.character) if isinstance(e.character, str) else e.character
    message = f"unacceptable character #x{character:04x}: {e.reason}"
    return YamlDocument(None, {}, [ConfigIssue(file, line, col, YAML_PATH, message)])


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1
