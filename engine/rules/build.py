"""A rules document of the right shape (segengine.rules.schema) -> its checked, compiled parts:
declared features, dimensions and actions. What the shape cannot say is checked here,
each problem at its line and column: conditions (names, types, syntax), dependency
cycles, duplicate and unreachable segments, aggregations that do not fit their events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..actions import Action, On
from ..aggregates import Aggregate
from ..clv.features import PREDICTED
from ..state import FEATURES
from . import schema
from .deps import in_dependency_order, timed, timer_triggers, triggers
from .expr import ANY, Expression, TypeOf, compile_dimension, compile_value
from .population import Population
from .quiet import sensitive
from .ruleset import CURRENT, Dimension, Segment
from .source import Checker, Path
from .types import aggregate, base_type


@dataclass(slots=True)
class Features:
    """The declared features: derived ones (expressions) and aggregations, with their types."""

    derived: dict[str, Expression] = field(default_factory=dict)
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # known names the pack may not read, and why

    def type_of(self, name: str) -> str | None:
        return self.types.get(name) or base_type(name)

    def names(self) -> set[str]:
        """Every name a condition may read (but ``profile_<attribute>``): to offer for a misspelt one."""
        return {*FEATURES, *PREDICTED, CURRENT, *self.types}

    def expression(self, check: Checker, loc: Path, text: str) -> Expression | None:
        """A condition over these features, checked (see ``Checker.expression``)."""
        return check.expression(loc, text, self.type_of, self.names(), self.refused)


def features(check: Checker, document: schema.Document, failed: set[str], refused: dict[str, str]) -> Features:
    """The ``features:`` section, derived features in dependency order. ``failed`` names
    features the schema refused: conditions may read them (as anything) without a second
    problem for the same mistake; so may they an aggregation refused here. ``refused``: the
    predictions the pack may not read (segengine.rules.models)."""
    found = Features(refused=refused)
    expressions: dict[str, str] = {}
    unusable = set(failed)
    for name, spec in document.features.items():
        if isinstance(spec, str):
            expressions[name] = spec
            continue
        declared = aggregate(check, name, spec)
        if declared is None:
            unusable.add(name)
        else:
            found.aggregates[name] = declared
    found.types = {name: a.type for name, a in found.aggregates.items()}
    found.types |= {name: ANY for name in unusable if base_type(name) is None}
    known = found.names() | set(expressions)

    def compile_one(name: str, type_of: TypeOf) -> Expression | None:
        return check.expression(("features", name), expressions[name], type_of, known, refused)

    def on_cycle(names: list[str]) -> None:
        check.at(("features", names[0]), f"dependency cycle: {' -> '.join(names)}", key=True)

    found.derived = in_dependency_order(expressions, compile_one, found.type_of, on_cycle)
    found.types |= dict.fromkeys(expressions, ANY)
    return found


def dimension(check: Checker, name: str, spec: schema.Dimension, found: Features, population: Population) -> Dimension:
    """One dimension, its segments checked in order (a name given twice, a segment or a
    default no customer can reach) and compiled to one selector."""
    at: Path = ("dimensions", name)
    seen: set[str] = set()
    segments: list[Segment] = []
    conditions: set[str] = set()
    shadowed_by: str | None = None
    for index, item in enumerate(spec.segments):
        place = (*at, "segments", index)
        if item.name in seen:
            check.at((*place, "name"), f"duplicate segment {item.name!r}")
        seen.add(item.name)
        segment = _segment(check, place, item, found)
        if segment is None:
            continue
        if shadowed_by is not None:
            check.at(place, f"unreachable segment {segment.name!r}: {shadowed_by!r} before it always matches")
        elif segment.enter.source.strip() in conditions:
            check.at(place, f"unreachable segment {segment.name!r}: same condition as an earlier segment")
        conditions.add(segment.enter.source.strip())
        if _always_true(segment.enter) and _always_true(segment.stay):
            shadowed_by = segment.name
        segments.append(segment)
    if spec.default is not None:
        if spec.default in seen:
            check.at((*at, "default"), f"duplicate segment {spec.default!r}: the default is also listed")
        if shadowed_by is not None:
            check.at((*at, "default"), f"unreachable default: {shadowed_by!r} always matches")
    expressions = [e for s in segments for e in (s.enter, s.stay)]
    reads = tuple(sorted(set().union(*(e.names for e in expressions)) - {CURRENT})) if segments else ()
    selector = compile_dimension([(s.name, s.enter, s.stay) for s in segments], population=population)
    positions = {s.name: i for i, s in enumerate(segments)}
    fired_by = triggers(set(reads), found.derived, found.aggregates)
    if timed(segments, found.derived, found.aggregates):
        fired_by |= {"timer"}
    moments = timer_triggers(name, segments, found.derived, found.aggregates)
    quiet = sensitive(name, segments, moments, found.derived, found.aggregates)
    return Dimension(
        name, tuple(segments), spec.default, reads, selector, positions, fired_by, moments, sensitive=quiet
    )


def _segment(check: Checker, at: Path, spec: schema.Segment, found: Features) -> Segment | None:
    if spec.when is not None:
        enter = stay = found.expression(check, (*at, "when"), spec.when)
    else:
        assert spec.enter is not None and spec.stay is not None  # the schema has seen to it
        enter = found.expression(check, (*at, "enter"), spec.enter)
        stay = found.expression(check, (*at, "stay"), spec.stay)
    if enter is None or stay is None:
        return None
    return Segment(spec.name, enter, stay, spec.min_dwell, spec.exit_grace)


def _always_true(expression: Expression) -> bool:
    return expression.source.strip() in ("true", "True")


def actions(check: Checker, document: schema.Document, found_features: Features) -> list[tuple[Action, str]]:
    """The ``actions:`` section: transition -> action (see segengine.actions). Each comes with
    the file:line:column of its trigger, to report a dimension or segment that the merged
    rule packs do not have."""
    found: list[tuple[Action, str]] = []
    for name, spec in document.actions.items():
        at: Path = ("actions", name)
        before = len(check)
        params: list[tuple[str, Any]] = []
        reads: set[str] = set()
        for key, text in spec.params.items():
            expression = found_features.expression(check, (*at, "params", key), text)
            if expression is not None:
                params.append((key, compile_value(expression)))
                reads |= expression.names
        condition = (
            found_features.expression(check, (*at, "suppress"), spec.suppress) if spec.suppress is not None else None
        )
        suppress = compile_value(condition) if condition is not None else None
        reads |= condition.names if condition is not None else set()
        if len(check) > before:
            continue
        on = tuple(On(t.dimension or "", t.from_, t.to, t.grace) for t in spec.on)
        action = Action(
            name, spec.topic, on, tuple(params), spec.cooldown, suppress, spec.delay, frozenset(reads - {CURRENT})
        )
        found.append((action, check.where((*at, "on"))))
    return found
