"""A rules file (YAML) -> a compiled, pure ``RuleSet``.

The file declares dimensions; each is an ordered list of segments with a ``when``
condition (first match wins) and a ``default`` segment (or none). Conditions may read
any feature of ``engine.state.FEATURES``, profile attributes as ``profile_<name>``, and
``current`` (the customer's segment in this dimension before this evaluation).

    name: default
    dimensions:
      value_tier:
        segments:
          - {name: A, when: "spend_365d >= 250"}
          - {name: B, when: "spend_365d >= 60"}
        default: C
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from engine.rules.expr import ExprError, Expression, compile_conditions, compile_expression
from engine.state import is_known_feature

CURRENT = "current"


class RulesError(ValueError):
    """The rules file is invalid; the message names the file and the place."""


@dataclass(frozen=True, slots=True)
class Decision:
    segment: str | None
    reason: str
    read: dict[str, Any]  # the values of every feature the dimension's conditions read


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    when: Expression


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    segments: tuple[Segment, ...]
    default: str | None
    reads: tuple[str, ...] = ()  # the features its conditions read (``current`` excluded)
    # (features, current) -> (index of the first match or -1, values of ``reads``)
    select: Callable[[Mapping[str, Any], str | None], tuple[int, tuple[Any, ...]]] = lambda f, c: (-1, ())
    reasons: tuple[str, ...] = ()

    @classmethod
    def build(cls, name: str, segments: tuple[Segment, ...], default: str | None) -> Dimension:
        reads = tuple(sorted(set().union(*(s.when.names for s in segments)) - {CURRENT})) if segments else ()
        reasons = tuple(f"{name}.{s.name}: {s.when.source}" for s in segments)
        return cls(name, segments, default, reads, compile_conditions([s.when for s in segments]), reasons)

    def segment(self, index: int) -> str | None:
        return self.default if index < 0 else self.segments[index].name

    def explain(self, index: int, values: tuple[Any, ...]) -> Decision:
        """The decision with its reason and the values read: built only when it is published."""
        read = {f: round(v, 4) if type(v) is float else v for f, v in zip(self.reads, values)}
        reason = f"{self.name}: default" if index < 0 else self.reasons[index]
        return Decision(self.segment(index), reason, read)


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    content_hash: str
    dimensions: tuple[Dimension, ...]
    version: str = ""  # stamped on every change: the optional name plus the content hash

    @classmethod
    def build(cls, name: str, content_hash: str, dimensions: tuple[Dimension, ...]) -> RuleSet:
        return cls(name, content_hash, dimensions, f"{name}@{content_hash}" if name else content_hash)

    def evaluate(self, features: Mapping[str, Any], current: Mapping[str, str]) -> dict[str, Decision]:
        """Pure: the segment of every dimension for these features, explained."""
        return {dim.name: dim.explain(*dim.select(features, current.get(dim.name))) for dim in self.dimensions}


def _is_name(name: str) -> bool:
    return name == CURRENT or is_known_feature(name)


def parse_rules(text: str, origin: str = "<rules>") -> RuleSet:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dimensions"), dict) or not doc["dimensions"]:
        raise RulesError(f"{origin}: expected a mapping with a non-empty 'dimensions' mapping")
    dimensions = []
    for dim_name, spec in doc["dimensions"].items():
        where = f"{origin}: dimension {dim_name!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("segments"), list):
            raise RulesError(f"{where}: expected 'segments' (a list) and optional 'default'")
        segments, seen = [], set()
        for i, seg in enumerate(spec["segments"]):
            if not isinstance(seg, dict) or not isinstance(seg.get("name"), str) or not isinstance(seg.get("when"), str):
                raise RulesError(f"{where}: segment #{i + 1} needs a string 'name' and 'when'")
            if seg["name"] in seen:
                raise RulesError(f"{where}: duplicate segment {seg['name']!r}")
            seen.add(seg["name"])
            try:
                segments.append(Segment(seg["name"], compile_expression(seg["when"], _is_name)))
            except ExprError as exc:
                raise RulesError(f"{where} segment {seg['name']!r}: column {exc.column}: {exc.message}") from None
        default = spec.get("default")
        if default is not None and not isinstance(default, str):
            raise RulesError(f"{where}: 'default' must be a segment name or absent")
        dimensions.append(Dimension.build(str(dim_name), tuple(segments), default))
    name = doc.get("name") or ""
    content_hash = hashlib.sha256(text.encode()).hexdigest()[:12]
    return RuleSet.build(str(name), content_hash, tuple(dimensions))


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file: {exc.strerror}") from None
    return parse_rules(text, str(path))
