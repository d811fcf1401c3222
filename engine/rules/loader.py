"""A rules file (YAML) -> a checked, compiled ``RuleSet``, or every problem in it with its
file:line:column.

    name: retail
    features:                       # derived features: expressions over other features
      avg_order_value: spend_total / orders_total
    dimensions:
      loyalty:
        segments:
          - name: gold
            enter: spend_365d >= 5000
            stay: spend_365d >= 4000
            min_dwell: 30d
            exit_grace: 14d
          - name: silver
            when: spend_365d >= 1000
        default: bronze
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..actions import Action, On
from ..aggregates import OPS, SOURCES, Aggregate, Source
from ..state import FEATURES, PROFILE_PREFIX, TIME_DEPENDENT, changed_by
from ..timers import TimePlan, plan_for
from .expr import (
    ANY,
    NUMBER,
    STRING,
    ExprError,
    Expression,
    compile_dimension,
    compile_expression,
    compile_value,
    population_features,
    uses_time,
)
from .population import Population
from .ruleset import CURRENT, Dimension, RulesError, RuleSet, Segment

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: int
    message: str


class _Checker:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.problems: list[Problem] = []

    def at(self, node: Node, message: str, column_offset: int = 0) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, node.start_mark.column + 1 + column_offset, message))

    def formatted(self) -> list[str]:
        return [
            f"{self.origin}:{p.line}:{p.column}: {p.message}"
            for p in sorted(self.problems, key=lambda p: (p.line, p.column))
        ]


def parse_duration(text: str) -> int | None:
    """'30d', '12h', '90m', '45s', '2w' -> milliseconds; None when not a duration."""
    match = DURATION.match(text)
    return None if match is None else int(float(match.group(1)) * UNIT_MS[match.group(2)])


def _mapping(node: Node) -> list[tuple[ScalarNode, Node]]:
    assert isinstance(node, MappingNode)
    return node.value  # type: ignore[return-value]


def base_type(name: str) -> str | None:
    if name == CURRENT:
        return STRING
    if name in FEATURES:
        return NUMBER
    if name.startswith(PROFILE_PREFIX) and len(name) > len(PROFILE_PREFIX):
        return ANY
    return None


def _expression(check: _Checker, node: Node, type_of: Any) -> Expression | None:
    if not isinstance(node, ScalarNode) or node.tag.endswith(":null"):
        check.at(node, "expected an expression")
        return None
    quoted = 1 if node.style in ("'", '"') else 0
    try:
        return compile_expression(str(node.value), type_of)
    except ExprError as exc:
        check.at(node, exc.message, quoted + exc.column - 1)
        return None


def _derived(check: _Checker, node: Node | None) -> tuple[dict[str, Expression], dict[str, str], dict[str, Aggregate]]:
    """Declared features: aggregations over events (a mapping with ``op``), and derived
    features (an expression), checked in dependency order; cycles are errors."""
    if node is None:
        return {}, {}, {}
    if not isinstance(node, MappingNode):
        check.at(node, "'features' must be a mapping of name: expression (or name: aggregation)")
        return {}, {}, {}
    specs: dict[str, ScalarNode] = {}
    keys: dict[str, ScalarNode] = {}
    aggregates: dict[str, Aggregate] = {}
    failed: set[str] = set()
    taken: set[str] = set()
    for key, value in _mapping(node):
        name = str(key.value)
        if name in taken or name in FEATURES or name == CURRENT:
            check.at(key, f"duplicate feature name {name!r}")
            continue
        if not NAME.match(name):
            check.at(key, f"feature name {name!r} is not an identifier")
            continue
        taken.add(name)
        if isinstance(value, MappingNode):
            aggregate = _aggregate(check, name, value)
            if aggregate is not None:
                aggregates[name] = aggregate
            else:
                failed.add(name)  # reported; rules reading it should not add "unknown feature"
            continue
        specs[name] = value  # type: ignore[assignment]
        keys[name] = key
    types: dict[str, str] = {name: agg.type for name, agg in aggregates.items()} | {name: ANY for name in failed}
    compiled: dict[str, Expression] = {}
    visiting: list[str] = []

    def visit(name: str) -> str | None:
        if name in types:
            return types[name]
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            check.at(keys[visiting[visiting.index(name)]], f"dependency cycle: {cycle}")
            return None
        visiting.append(name)
        expr = _expression(
            check, specs[name], lambda n: visit(n) if n in specs else types[n] if n in types else base_type(n)
        )
        visiting.pop()
        if expr is None:
            types[name] = ANY
            return None
        compiled[name] = expr
        types[name] = ANY
        return ANY

    for name in specs:
        visit(name)
    return compiled, types, aggregates


AGGREGATE_FIELDS = ("op", "field", "of", "where", "weight", "window", "description")


def _aggregate(check: _Checker, name: str, node: MappingNode) -> Aggregate | None:
    """``{op, field, of, where, weight, window}`` -> a checked aggregation (see engine.aggregates)."""
    fields = {str(k.value): (k, v) for k, v in _mapping(node)}
    for k, _ in fields.values():
        if k.value not in AGGREGATE_FIELDS:
            check.at(k, f"unknown aggregation field {k.value!r}: use {', '.join(AGGREGATE_FIELDS)}")
    before = len(check.problems)
    op_node = fields.get("op", (None, None))[1]
    op = str(op_node.value) if isinstance(op_node, ScalarNode) else ""
    if op not in OPS:
        check.at(op_node or node, f"aggregation {name!r} needs 'op', one of {', '.join(OPS)}")
        return None
    needs_field, numeric, result_type = OPS[op]
    field_node = fields.get("field", (None, None))[1]
    field = str(field_node.value) if isinstance(field_node, ScalarNode) and field_node.value else None
    if needs_field and field is None:
        check.at(node, f"aggregation {name!r}: op {op!r} needs a 'field'")
    if not needs_field and field_node is not None:
        check.at(field_node, f"aggregation {name!r}: op {op!r} takes no 'field'")
    window_ms: int | None = None
    window_node = fields.get("window", (None, None))[1]
    if window_node is not None and not (isinstance(window_node, ScalarNode) and str(window_node.value) == "all"):
        window_ms = parse_duration(str(window_node.value)) if isinstance(window_node, ScalarNode) else None
        if not window_ms:
            check.at(
                window_node,
                f"bad duration {getattr(window_node, 'value', '')!r}: use a number and s, m, h, d or w (e.g. 30d), or 'all'",
            )
    of_node = fields.get("of", (None, None))[1]
    if of_node is None:
        check.at(node, f"aggregation {name!r} needs 'of': {', '.join(SOURCES)}")
        return None
    # of: kind | [kind, ...] | {kind: {where, weight}}; top-level where/weight apply to every kind
    per_kind: list[tuple[Node, str, Node | None, Node | None]] = []
    shared_where, shared_weight = fields.get("where", (None, None))[1], fields.get("weight", (None, None))[1]
    if isinstance(of_node, ScalarNode):
        per_kind.append((of_node, str(of_node.value), shared_where, shared_weight))
    elif isinstance(of_node, SequenceNode):
        per_kind += [(item, str(getattr(item, "value", "")), shared_where, shared_weight) for item in of_node.value]
    elif isinstance(of_node, MappingNode):
        for kind_key, spec in _mapping(of_node):
            options = {str(k.value): v for k, v in _mapping(spec)} if isinstance(spec, MappingNode) else {}
            if not isinstance(spec, MappingNode) and not (isinstance(spec, ScalarNode) and spec.tag.endswith(":null")):
                check.at(spec, "each source maps to {where: ..., weight: ...}")
            for option in options:
                if option not in ("where", "weight"):
                    check.at(spec, f"unknown source field {option!r}: use where, weight")
            per_kind.append(
                (
                    kind_key,
                    str(kind_key.value),
                    options.get("where", shared_where),
                    options.get("weight", shared_weight),
                )
            )
    sources: list[Source] = []
    described: list[list[object]] = []
    result = result_type
    for kind_node, kind, where_node, weight_node in per_kind:
        columns = SOURCES.get(kind)
        if columns is None:
            check.at(kind_node, f"unknown event kind {kind!r}: use {', '.join(SOURCES)}")
            continue
        if field is not None:
            if field not in columns:
                check.at(field_node or node, f"{kind} events have no field {field!r}")
                continue
            if numeric and columns[field] != NUMBER:
                check.at(
                    field_node or node, f"type mismatch: {op} needs a number, {kind}.{field} is a {columns[field]}"
                )
                continue
            if result is None:
                result = columns[field]
            elif result_type is None and result != columns[field]:
                result = ANY
        where = None
        if where_node is not None:
            expr = _expression(check, where_node, lambda n, c=columns: c.get(n))
            where = compile_value(expr) if expr is not None else None
        weight = 1.0
        if weight_node is not None:
            try:
                weight = float(str(weight_node.value))
                if op != "most_frequent":
                    check.at(weight_node, "'weight' applies to op most_frequent only")
            except (TypeError, ValueError):
                check.at(weight_node, "'weight' must be a number")
        sources.append(Source(kind, where, weight))
        described.append([kind, str(where_node.value).strip() if where_node is not None else None, weight])
    if len(check.problems) > before or not sources:
        return None
    definition = orjson.dumps({"op": op, "field": field, "of": described, "window": window_ms}).decode()
    return Aggregate(name, op, field, tuple(sources), window_ms, definition, result or ANY)


def _segment(check: _Checker, node: Node, type_of: Any, seen: dict[str, Node]) -> Segment | None:
    if not isinstance(node, MappingNode):
        check.at(node, "a segment is a mapping with 'name' and 'when' (or 'enter' and 'stay')")
        return None
    fields = {str(k.value): (k, v) for k, v in _mapping(node)}
    name_node = fields.get("name", (None, None))[1]
    if not isinstance(name_node, ScalarNode) or not name_node.value:
        check.at(node, "segment needs a 'name'")
        return None
    name = str(name_node.value)
    if name in seen:
        check.at(name_node, f"duplicate segment {name!r}")
    seen[name] = name_node
    for key, _ in fields.values():
        if key.value not in ("name", "when", "enter", "stay", "min_dwell", "exit_grace", "description"):
            check.at(key, f"unknown segment field {key.value!r}")
    if "when" in fields and ("enter" in fields or "stay" in fields):
        check.at(fields["when"][0], "use either 'when' or 'enter'/'stay', not both")
        return None
    if "when" in fields:
        enter = stay = _expression(check, fields["when"][1], type_of)
    elif "enter" in fields and "stay" in fields:
        enter = _expression(check, fields["enter"][1], type_of)
        stay = _expression(check, fields["stay"][1], type_of)
    else:
        check.at(name_node, f"segment {name!r} needs 'when', or both 'enter' and 'stay'")
        return None
    durations = _durations(check, fields, ("min_dwell", "exit_grace"), "14d")
    if enter is None or stay is None:
        return None
    return Segment(name, enter, stay, durations.get("min_dwell", 0), durations.get("exit_grace", 0))


def _durations(
    check: _Checker, fields: dict[str, tuple[Node, Node]], keys: tuple[str, ...], example: str
) -> dict[str, int]:
    """The duration fields present among ``keys``, in ms; a bad one is reported (and 0)."""
    durations = {}
    for key in keys:
        if key in fields:
            value = fields[key][1]
            ms = parse_duration(str(value.value)) if isinstance(value, ScalarNode) else None
            if ms is None:
                check.at(
                    value,
                    f"bad duration {getattr(value, 'value', '')!r}: use a number and s, m, h, d or w (e.g. {example})",
                )
            durations[key] = ms or 0
    return durations


def _always_true(expr: Expression) -> bool:
    return expr.source.strip() in ("true", "True")


def _base_features(names: set[str], derived: dict[str, Expression]) -> set[str]:
    """The stored features these names read, through derived features."""
    found: set[str] = set()
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name == CURRENT:
            continue
        seen.add(name)
        if name in derived:
            todo.extend(derived[name].names)
        else:
            found.add(name)
    return found


def _timed(segments: list[Segment], derived: dict[str, Expression], aggregates: dict[str, Aggregate]) -> bool:
    """Whether time alone can change the dimension's answer (then timers re-evaluate it)."""
    if any(s.min_dwell_ms or s.exit_grace_ms for s in segments):
        return True
    expressions = [x for s in segments for x in (s.enter, s.stay)]
    names = _base_features(set().union(*(e.names for e in expressions)) if expressions else set(), derived)
    used = [*expressions, *(derived[n] for n in _derived_used(expressions, derived))]
    # Population-relative scores drift as the population changes: timers re-score them too.
    windowed = {n for n, a in aggregates.items() if a.window_ms is not None}
    return bool(names & (TIME_DEPENDENT | windowed)) or any(uses_time(e) or population_features(e) for e in used)


def _derived_used(expressions: list[Expression], derived: dict[str, Expression]) -> set[str]:
    found: set[str] = set()
    todo = [n for e in expressions for n in e.names if n in derived]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(n for n in derived[name].names if n in derived)
    return found


def _triggers(names: set[str], derived: dict[str, Expression], aggregates: dict[str, Aggregate]) -> frozenset[str]:
    """Event types that can change any of these features, through derived ones too."""
    return frozenset().union(
        *(
            aggregates[n].triggers | {"erase"} if n in aggregates else changed_by(n)
            for n in _base_features(names, derived)
        )
    )


def _dimension(
    check: _Checker,
    key: ScalarNode,
    node: Node,
    type_of: Any,
    derived: dict[str, Expression],
    population: Population,
    aggregates: dict[str, Aggregate],
) -> Dimension | None:
    name = str(key.value)
    if not isinstance(node, MappingNode):
        check.at(node, f"dimension {name!r} must be a mapping with 'segments'")
        return None
    fields = {str(k.value): (k, v) for k, v in _mapping(node)}
    for k, _ in fields.values():
        if k.value not in ("segments", "default", "description"):
            check.at(k, f"unknown dimension field {k.value!r}")
    seg_node = fields.get("segments", (None, None))[1]
    if not isinstance(seg_node, SequenceNode):
        check.at(key, f"dimension {name!r} needs a 'segments' list")
        return None
    seen: dict[str, Node] = {}
    segments: list[Segment] = []
    conditions: dict[str, Node] = {}
    shadowed_by: str | None = None
    for item in seg_node.value:
        segment = _segment(check, item, type_of, seen)
        if segment is None:
            continue
        if shadowed_by is not None:
            check.at(item, f"unreachable segment {segment.name!r}: {shadowed_by!r} before it always matches")
        elif segment.enter.source.strip() in conditions:
            check.at(item, f"unreachable segment {segment.name!r}: same condition as an earlier segment")
        conditions.setdefault(segment.enter.source.strip(), item)
        if _always_true(segment.enter) and _always_true(segment.stay):
            shadowed_by = segment.name
        segments.append(segment)
    default_node = fields.get("default", (None, None))[1]
    default = None
    if default_node is not None:
        if not isinstance(default_node, ScalarNode) or default_node.tag.endswith(":null"):
            check.at(default_node, "'default' must be a segment name")
        else:
            default = str(default_node.value)
            if default in seen:
                check.at(default_node, f"duplicate segment {default!r}: the default is also listed")
            if shadowed_by is not None:
                check.at(default_node, f"unreachable default: {shadowed_by!r} always matches")
    triples = [(s.name, s.enter, s.stay) for s in segments]
    reads = (
        tuple(sorted(set().union(*(e.names for s in segments for e in (s.enter, s.stay))) - {CURRENT}))
        if segments
        else ()
    )
    positions = {s.name: i for i, s in enumerate(segments)}
    triggers = _triggers(set(reads), derived, aggregates)
    if _timed(segments, derived, aggregates):
        triggers |= {"timer"}
    return Dimension(
        name, tuple(segments), default, reads, compile_dimension(triples, population=population), positions, triggers
    )


def check_rules(
    text: str, origin: str = "<rules>", population: Population | None = None
) -> tuple[RuleSet | None, list[str]]:
    """Every problem in the file, as 'origin:line:column: message'; the RuleSet when none."""
    population = population if population is not None else Population()
    check = _Checker(origin)
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, [f"{origin}:{line}:{col}: not valid YAML: {exc.problem}"]
    if not isinstance(root, MappingNode):
        return None, [f"{origin}:1:1: expected a mapping with 'dimensions'"]
    top = {str(k.value): (k, v) for k, v in _mapping(root)}
    for k, _ in top.values():
        if k.value not in ("name", "description", "features", "dimensions", "actions"):
            check.at(k, f"unknown top-level field {k.value!r}")
    derived, derived_types, aggregates = _derived(check, top.get("features", (None, None))[1])

    def type_of(name: str) -> str | None:
        return derived_types.get(name) or base_type(name)

    dims_node = top.get("dimensions", (None, None))[1]
    actions_node = top.get("actions", (None, None))[1]
    actions = _actions(check, actions_node, type_of) if actions_node is not None else []
    dimensions: list[Dimension] = []
    if actions and dims_node is None:
        pass  # an actions-only pack: its triggers name dimensions of other packs
    elif not isinstance(dims_node, MappingNode) or not dims_node.value:
        check.at(dims_node or root, "expected a non-empty 'dimensions' mapping")
    else:
        seen: set[str] = set()
        for key, node in _mapping(dims_node):
            if key.value in seen:
                check.at(key, f"duplicate dimension {key.value!r}")
                continue
            seen.add(str(key.value))
            dim = _dimension(check, key, node, type_of, derived, population, aggregates)
            if dim is not None:
                dimensions.append(dim)
    if check.problems:
        return None, check.formatted()
    name_node = top.get("name", (None, None))[1]
    name = str(name_node.value) if isinstance(name_node, ScalarNode) and name_node.value else ""
    content_hash = hashlib.sha256(text.encode()).hexdigest()[:12]
    fns = {n: compile_value(e, population=population) for n, e in derived.items()}
    fns.update({n: _reader(a) for n, a in aggregates.items()})
    sources = {n: e.source for n, e in derived.items()} | {
        n: f"aggregate {a.definition}" for n, a in aggregates.items()
    }
    wanted = set().union(*(population_features(e) for e in derived.values()),
                         *(population_features(x) for d in dimensions for s in d.segments for x in (s.enter, s.stay)))  # fmt: skip
    reads = _base_features(set().union(*(set(d.reads) for d in dimensions), *(a.reads for a, _ in actions)), derived)
    holds = {
        d.name: (
            {s.name: s.min_dwell_ms for s in d.segments if s.min_dwell_ms},
            {s.name: s.exit_grace_ms for s in d.segments if s.exit_grace_ms},
        )
        for d in dimensions
    }
    conditions = [x for d in dimensions for s in d.segments for x in (s.enter, s.stay)]
    expressions = [*(derived[n] for n in _derived_used(conditions, derived)), *conditions]  # what the dimensions read
    read_aggregates = [a for n, a in aggregates.items() if n in reads]
    return RuleSet.build(
        name,
        content_hash,
        tuple(dimensions),
        derived=fns,
        derived_sources=sources,
        population=population,
        population_features=frozenset(wanted),
        time_plan=plan_for(
            expressions, reads, holds, read_aggregates, population, delays=any(a.delay_ms for a, _ in actions)
        ),
        aggregates=tuple(aggregates.values()),
        actions=tuple(a for a, _ in actions),
        action_marks=tuple((a.name, m) for a, m in actions),
    ), []


ACTION_FIELDS = ("on", "topic", "params", "cooldown", "suppress", "delay", "description")
TOPIC = re.compile(r"^actions\.[a-z][a-z0-9_]*$")


def _actions(check: _Checker, node: Node, type_of: Any) -> list[tuple[Action, str]]:
    """The ``actions:`` section: transition -> action (see engine.actions). Each comes with
    the line:column of its trigger, to report a dimension or segment that the merged rule
    packs do not have."""
    if not isinstance(node, MappingNode):
        check.at(node, "'actions' must be a mapping of name: action")
        return []
    found: list[tuple[Action, str]] = []
    seen: set[str] = set()
    for key, spec in _mapping(node):
        name = str(key.value)
        if name in seen or not NAME.match(name):
            check.at(
                key, f"duplicate action {name!r}" if name in seen else f"action name {name!r} is not an identifier"
            )
            continue
        seen.add(name)
        if not isinstance(spec, MappingNode):
            check.at(spec, f"action {name!r} must be a mapping with 'on' and 'topic'")
            continue
        before = len(check.problems)
        fields = {str(k.value): (k, v) for k, v in _mapping(spec)}
        for k, _ in fields.values():
            if k.value not in ACTION_FIELDS:
                check.at(k, f"unknown action field {k.value!r}: use {', '.join(ACTION_FIELDS)}")
        on = fields.get("on", (None, None))[1]
        triggers: list[On] = []
        for item in (on.value if isinstance(on, SequenceNode) else [on]) if on is not None else []:
            trigger = {str(k.value): v for k, v in _mapping(item)} if isinstance(item, MappingNode) else None
            if trigger is None or "dimension" not in trigger:
                check.at(item, f"action {name!r}: a trigger is {{dimension: ..., from: ..., to: ...}} (or grace: true)")
                continue
            for option, value in trigger.items():
                if option not in ("dimension", "from", "to", "grace"):
                    check.at(value, f"unknown trigger field {option!r}: use dimension, from, to, grace")
            text = {
                k: (None if v.tag.endswith(":null") else str(v.value)) if isinstance(v, ScalarNode) else None
                for k, v in trigger.items()
            }
            triggers.append(
                On(text["dimension"] or "", text.get("from"), text.get("to"), text.get("grace") in ("true", "True"))
            )
        if on is None:
            check.at(key, f"action {name!r} needs 'on: {{dimension: ..., from: ..., to: ...}}' (or a list of them)")
        topic_node = fields.get("topic", (None, None))[1]
        topic = str(topic_node.value) if isinstance(topic_node, ScalarNode) else ""
        if not TOPIC.match(topic):
            check.at(topic_node or key, f"action {name!r} needs a 'topic' like actions.retention")
        params: list[tuple[str, Any]] = []
        names: set[str] = set()
        param_node = fields.get("params", (None, None))[1]
        if param_node is not None and not isinstance(param_node, MappingNode):
            check.at(param_node, "'params' must be a mapping of name: expression")
        elif param_node is not None:
            for pkey, pvalue in _mapping(param_node):
                expr = _expression(check, pvalue, type_of)
                if expr is not None:
                    params.append((str(pkey.value), compile_value(expr)))
                    names |= expr.names
        suppress = None
        if "suppress" in fields:
            expr = _expression(check, fields["suppress"][1], type_of)
            suppress = compile_value(expr) if expr is not None else None
            names |= expr.names if expr is not None else set()
        durations = _durations(check, fields, ("cooldown", "delay"), "30d")
        if len(check.problems) > before:
            continue
        mark = f"{check.origin}:{on.start_mark.line + 1}:{on.start_mark.column + 1}"  # type: ignore[union-attr]
        action = Action(
            name,
            topic,
            tuple(triggers),
            tuple(params),
            durations.get("cooldown", 0),
            suppress,
            durations.get("delay", 0),
            frozenset(names - {CURRENT}),
        )
        found.append((action, mark))
    return found


def check_actions(rules: RuleSet) -> list[str]:
    """Every action's trigger names a dimension, and segments, that the rules have."""
    problems = []
    dimensions = {d.name: d for d in rules.dimensions}
    marks = dict(rules.action_marks)
    for action in rules.actions:
        where = marks.get(action.name, "<rules>:1:1")
        for trigger in action.on:
            dim = dimensions.get(trigger.dimension)
            if dim is None:
                problems.append(f"{where}: action {action.name!r}: unknown dimension {trigger.dimension!r}")
                continue
            for segment in (trigger.from_, trigger.to):
                if segment is not None and segment not in dim.outcomes:
                    problems.append(
                        f"{where}: action {action.name!r}: dimension {trigger.dimension!r} has no segment {segment!r}"
                    )
    return problems


def _reader(aggregate: Aggregate) -> Any:
    """A declared aggregation as a feature: (features, current, now) -> its value at now."""
    return lambda features, _current, now: aggregate.value(features.state, features.now if now is None else now)


def parse_rules(text: str, origin: str = "<rules>") -> RuleSet:
    rules, problems = check_rules(text, origin)
    if rules is not None:
        problems = check_actions(rules)
        rules = None if problems else rules
    if rules is None:
        raise RulesError("\n".join(problems), problems)
    return rules


def rule_files(path: Path) -> list[Path]:
    """A rules file, or a folder of rule packs (every *.yaml in it, in name order)."""
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            raise RulesError(f"{path}:1:1: no *.yaml rule packs in this folder")
        return files
    return [path]


def check_files(path: Path) -> tuple[RuleSet | None, list[str]]:
    """Check a rules file or a folder of packs; packs may not repeat a dimension or feature."""
    packs: list[RuleSet] = []
    problems: list[str] = []
    texts: list[str] = []
    population = Population()  # one for every pack: one refresh serves them all
    for file in rule_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{file}:1:1: cannot read rules file: {exc.strerror}")
            continue
        rules, found = check_rules(text, str(file), population)
        problems += found
        texts.append(text)
        if rules is not None:
            packs.append(rules)
    if problems:
        return None, problems
    if len(packs) == 1 and not path.is_dir():
        problems = check_actions(packs[0])
        return (None, problems) if problems else (packs[0], [])
    dimensions: dict[str, Dimension] = {}
    aggregates: dict[str, Aggregate] = {}
    actions: dict[str, Action] = {}
    marks: dict[str, str] = {}
    derived: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for file, pack in zip(rule_files(path), packs):
        for dim in pack.dimensions:
            if dim.name in dimensions:
                problems.append(f"{file}:1:1: dimension {dim.name!r} is also defined by another pack")
            dimensions[dim.name] = dim
        for name, fn in pack.derived.items():
            if name in derived and sources[name] != pack.derived_sources[name]:
                problems.append(f"{file}:1:1: feature {name!r} is defined differently by another pack")
            derived[name] = fn
            sources[name] = pack.derived_sources[name]
        aggregates.update((a.name, a) for a in pack.aggregates)
        for action in pack.actions:
            if action.name in actions:
                problems.append(f"{file}:1:1: action {action.name!r} is also defined by another pack")
            actions[action.name] = action
        marks.update(pack.action_marks)
    if problems:
        return None, problems
    content_hash = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    wanted = frozenset().union(*(p.population_features for p in packs))
    plan = TimePlan()
    for pack in packs:
        plan = plan | pack.time_plan
    merged = RuleSet.build(
        path.name,
        content_hash,
        tuple(dimensions.values()),
        derived=derived,
        derived_sources=sources,
        population=population,
        population_features=wanted,
        time_plan=plan,
        aggregates=tuple(aggregates.values()),
        actions=tuple(actions.values()),
        action_marks=tuple(marks.items()),
    )
    problems = check_actions(merged)
    return (None, problems) if problems else (merged, [])


def load_rules(path: Path) -> RuleSet:
    rules, problems = check_files(path)
    if rules is None:
        raise RulesError("\n".join(problems), problems)
    return rules
