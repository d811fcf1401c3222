"""A rules file's YAML -> plain data, with the line and column of every value and key in it,
and the problems found in it, each pointed at one of those places.

Scalars stay the text written: ``5`` is "5" and ``yes`` is "yes" (the schema, not YAML's
implicit typing, says what a value means), and a null is a ``Null`` string, so that
``default: ~`` is told apart from no default. A key met twice in one mapping keeps its
last value, as YAML loaders do; the repeats are listed in ``Source.duplicates``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .expr import ExprError, Expression, TypeOf, compile_expression
from .names import did_you_mean

Path = tuple[str | int, ...]  # keys and list indexes from the document's root
NULL_TAG = "tag:yaml.org,2002:null"


class Null(str):
    """A YAML null, as the text written: ``~``, ``null`` or nothing."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based
    quoted: bool = False  # a quoted scalar: its text starts one column after the mark


@dataclass(slots=True)
class Source:
    """The document as plain data (dicts, lists, str), and where each part of it was written."""

    data: Any = None
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)  # the key that names the value at a path
    duplicates: list[tuple[Path, Mark]] = field(default_factory=list)  # a key again in its mapping
    kept: dict[Path, list[int]] = field(default_factory=dict)  # a list checked without some items: where the rest were
    odd_keys: list[Mark] = field(default_factory=list)  # keys that are lists or mappings (``? [a, b]``)

    def path(self, loc: Sequence[str | int], within: Any = None) -> Path:
        """The part of ``loc`` (a path, or a pydantic error location) that exists in the
        document (``within`` another version of it: indexes in ``kept`` lists are not
        renumbered then). Elements that name nothing there (a union's tag, a missing field,
        ``[key]``) are passed over, so that a missing field points at its owner."""
        found: list[str | int] = []
        node = self.data if within is None else within
        for step in loc:
            if within is None and isinstance(node, list) and type(step) is int and tuple(found) in self.kept:
                indexes = self.kept[tuple(found)]
                step = indexes[step] if 0 <= step < len(indexes) else -1
            if isinstance(node, dict):
                there = step in node
            else:
                there = isinstance(node, list) and type(step) is int and 0 <= step < len(node)
            if there:
                node = node[step]
                found.append(step)
        return tuple(found)

    def mark(self, loc: Sequence[str | int], key: bool = False) -> Mark:
        """Where the value at ``loc`` (or the key naming it) was written; the root for ()."""
        path = self.path(loc)
        return self.keys[path] if key and path in self.keys else self.values[path]


def read(text: str) -> Source:
    """Parse ``text``; raises ``yaml.YAMLError`` for text that is not YAML.

    The pure-Python parser, as before: libyaml (``CSafeLoader``) composes about ten times
    faster, but accepts some text this one refuses (a tab after a colon, ``?`` inside a
    flow mapping) and counts columns differently after a byte order mark."""
    loader = yaml.SafeLoader(text)
    try:
        root: Node | None = loader.get_single_node()
    finally:
        loader.dispose()
    source = Source()
    source.data = _walk(source, root, (), set()) if root is not None else None
    if root is None:
        source.values[()] = Mark(1, 1)
    return source


def _mark(node: Node) -> Mark:
    quoted = isinstance(node, ScalarNode) and node.style in ("'", '"')
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1, quoted)


def _walk(source: Source, node: Node, path: Path, open_nodes: set[int]) -> Any:
    source.values[path] = _mark(node)
    if isinstance(node, ScalarNode):
        return Null(node.value) if node.tag == NULL_TAG else str(node.value)
    if id(node) in open_nodes:
        return Null("")  # an alias inside its own anchor (&a [*a]): no value to give
    open_nodes.add(id(node))
    try:
        if isinstance(node, SequenceNode):
            return [_walk(source, item, (*path, index), open_nodes) for index, item in enumerate(node.value)]
        mapping: dict[str, Any] = {}
        assert isinstance(node, MappingNode)
        for key_node, value_node in node.value:
            key_mark = _mark(key_node)
            if isinstance(key_node, ScalarNode):
                key = str(key_node.value)
            else:
                key = str(_walk(Source(), key_node, (), set()))
                source.odd_keys.append(key_mark)
            at = (*path, key)
            if key in mapping:
                source.duplicates.append((at, key_mark))
            source.keys[at] = key_mark
            mapping[key] = _walk(source, value_node, at, open_nodes)
        return mapping
    finally:
        open_nodes.discard(id(node))


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: int
    message: str


class Checker:
    """The problems found in one rules file, each at the line and column of the value (or the
    key) it is about."""

    def __init__(self, origin: str, source: Source) -> None:
        self.origin = origin
        self.source = source
        self.problems: list[Problem] = []

    def __len__(self) -> int:
        return len(self.problems)

    def at(self, loc: Sequence[str | int], message: str, *, key: bool = False, offset: int = 0) -> None:
        self.add(self.source.mark(loc, key), message, offset)

    def add(self, mark: Mark, message: str, offset: int = 0) -> None:
        self.problems.append(Problem(mark.line, mark.column + offset, message))

    def where(self, loc: Sequence[str | int]) -> str:
        """'file:line:column' of the value at ``loc``."""
        mark = self.source.mark(loc)
        return f"{self.origin}:{mark.line}:{mark.column}"

    def expression(
        self, loc: Path, text: str, type_of: TypeOf, known: Iterable[str] = (), refused: Mapping[str, str] | None = None
    ) -> Expression | None:
        """The condition written at ``loc``, checked; None (and a problem at the column of the
        fault inside it) when it does not compile. An unknown name is told the closest of
        ``known`` (the names it may read); a name in ``refused`` (known, but not to be read
        here) is told why, at its first place in the condition."""
        mark = self.source.mark(loc)
        try:
            expression = compile_expression(text, type_of)
        except ExprError as exc:
            hint = did_you_mean(exc.unknown, known) if exc.unknown is not None else ""
            self.add(mark, exc.message + hint, int(mark.quoted) + exc.column - 1)
            return None
        barred = expression.names & (refused or {}).keys()
        if not barred:
            return expression
        first: dict[str, int] = {}
        for node in ast.walk(expression.tree):
            if isinstance(node, ast.Name) and node.id in barred:
                first[node.id] = min(first.get(node.id, node.col_offset), node.col_offset)
        for name in sorted(barred, key=first.__getitem__):
            self.add(mark, (refused or {})[name], int(mark.quoted) + first[name])
        return None

    def formatted(self) -> list[str]:
        return [
            f"{self.origin}:{p.line}:{p.column}: {p.message}"
            for p in sorted(self.problems, key=lambda p: (p.line, p.column))
        ]
