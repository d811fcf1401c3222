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

The way through: the text is read keeping where every value was written
(segengine.rules.source), its shape is validated (segengine.rules.schema), the model it
references is loaded (segengine.rules.models), then its conditions are checked and compiled
(segengine.rules.build, with the types of segengine.rules.types and the dependencies of
segengine.rules.deps). A folder of rule packs is checked pack by pack, then merged.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..actions import Action
from ..aggregates import Aggregate
from ..clv.features import PREDICTED
from ..timers import TimePlan, plan_for
from . import build, clusters, models, schema
from .deps import base_features, derived_used
from .expr import Expression, compile_value, population_features
from .models import ModelRef
from .names import did_you_mean
from .population import DEFAULT_MIN_SAMPLE, Population
from .refusals import problems
from .ruleset import Dimension, RulesError, RuleSet
from .schema import parse_duration
from .source import Checker, read
from .source import Path as SourcePath
from .types import base_type

__all__ = [
    "base_type",
    "check_actions",
    "check_files",
    "check_rules",
    "load_rules",
    "pack_files",
    "parse_duration",
    "parse_rules",
    "rule_files",
]

ROUNDS = 64  # at most this many passes to find the part of a refused document that has the right shape


def check_rules(
    text: str, origin: str = "<rules>", population: Population | None = None, folder: Path | None = None
) -> tuple[RuleSet | None, list[str]]:
    """Every problem in the file, as 'origin:line:column: message'; the RuleSet when none.
    ``folder``: where the paths the file names (its model) start from; default the working
    directory."""
    population = population if population is not None else Population()
    try:
        source = read(text)
    except yaml.YAMLError as exc:  # the pure-Python parser's error (see segengine.rules.source)
        line, column = _position(exc, text)
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        return None, [f"{origin}:{line}:{column}: not valid YAML: {problem}"]
    if not isinstance(source.data, dict):
        return None, [f"{origin}:1:1: expected a mapping with 'dimensions'"]
    check = Checker(origin, source)
    for mark in source.odd_keys:
        check.add(mark, "a key must be a name, not a list or a mapping")
    for path, mark in source.duplicates:
        if path[:-1] in schema.DUPLICATE_KEY:
            check.add(mark, schema.DUPLICATE_KEY[path[:-1]].replace("{key}", repr(path[-1])))
    document, failed = _validated(check)
    if document is None:
        return None, check.formatted()
    min_sample = None
    if document.population is not None and "min_sample" in document.population.model_fields_set:
        min_sample = (document.population.min_sample, check.where(("population", "min_sample")))
        population.min_sample = min_sample[0]  # a folder's packs share one: see _merged
    model, refused = models.referenced(check, document, folder if folder is not None else Path())
    features = build.features(check, document, failed, refused)
    actions = build.actions(check, document, features)
    dimensions = [
        build.dimension(check, name, spec, features, population) for name, spec in (document.dimensions or {}).items()
    ]
    if not actions and "dimensions" not in source.data:
        check.at((), "expected a non-empty 'dimensions' mapping")  # only an actions-only pack may have none
    if check.problems:
        return None, check.formatted()
    return _rule_set(text, document.title, features, dimensions, actions, population, min_sample, model), []


def _position(exc: yaml.YAMLError, text: str) -> tuple[int, int]:
    """1-based line and column of a YAML error (a bad character has only an offset)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return mark.line + 1, mark.column + 1
    offset = getattr(exc, "position", None)
    if isinstance(offset, int):
        before = text[:offset]
        return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1
    return 1, 1


def _validated(check: Checker) -> tuple[schema.Document | None, set[str]]:
    """The document, when its shape is right. Otherwise every refusal goes to ``check``, and
    what is left once the refused parts are cut out is returned, so that the conditions
    elsewhere in the file are checked too; with the names of the declared features cut out."""
    data: Any = check.source.data
    failed: set[str] = set()
    for round_ in range(ROUNDS):
        try:
            return schema.Document.model_validate(data), failed
        except ValidationError as exc:
            refused = problems(exc)
        if round_ == 0:  # later rounds find what cutting out the first refusals left incomplete
            for loc, message, key in refused:
                check.at(loc, message, key=key)
        cut = {check.source.path(loc, data) for loc, _, _ in refused}
        if () in cut:
            break
        failed |= {str(path[1]) for path in cut if len(path) > 1 and path[0] == "features"}
        data = _without(data, cut, (), check.source.kept)
    return None, failed


def _without(data: Any, paths: set[SourcePath], origin: SourcePath, kept: dict[SourcePath, list[int]]) -> Any:
    """``data`` less the values at ``paths`` (copied along them, shared elsewhere). A list
    that loses items is noted in ``kept``: its path in the file -> where each item left was
    in the file, so that problems found in what is left point at the right item."""
    here = {path[0] for path in paths if len(path) == 1}
    deeper: defaultdict[str | int, set[SourcePath]] = defaultdict(set)
    for path in paths:
        if len(path) > 1:
            deeper[path[0]].add(path[1:])
    if isinstance(data, dict):
        return {
            k: _without(v, deeper[k], (*origin, k), kept) if k in deeper else v
            for k, v in data.items()
            if k not in here
        }
    if isinstance(data, list):
        indexes = kept.get(origin, list(range(len(data))))
        left = [i for i in range(len(data)) if i not in here]
        if here:
            kept[origin] = [indexes[i] for i in left]
        return [_without(data[i], deeper[i], (*origin, indexes[i]), kept) if i in deeper else data[i] for i in left]
    return data


def _rule_set(
    text: str,
    name: str,
    features: build.Features,
    dimensions: list[Dimension],
    actions: list[tuple[Action, str]],
    population: Population,
    min_sample: tuple[int, str] | None,
    model: ModelRef | None,
) -> RuleSet:
    derived, aggregates = features.derived, features.aggregates
    fns = {n: compile_value(e, population=population) for n, e in derived.items()}
    fns.update({n: a.feature for n, a in aggregates.items()})
    sources = {n: e.source for n, e in derived.items()} | {
        n: f"aggregate {a.definition}" for n, a in aggregates.items()
    }
    conditions = _distinct(x for d in dimensions for s in d.segments for x in (s.enter, s.stay))
    wanted = set().union(*(population_features(e) for e in [*derived.values(), *conditions]))
    reads = base_features(set().union(*(set(d.reads) for d in dimensions), *(a.reads for a, _ in actions)), derived)
    holds = {
        d.name: (
            {s.name: s.min_dwell_ms for s in d.segments if s.min_dwell_ms},
            {s.name: s.exit_grace_ms for s in d.segments if s.exit_grace_ms},
        )
        for d in dimensions
    }
    expressions = [*(derived[n] for n in derived_used(conditions, derived)), *conditions]  # what the dimensions read
    read_aggregates = [a for n, a in aggregates.items() if n in reads]
    predictor = model.predictor if model is not None else None
    return RuleSet.build(
        name,
        _content_hash(text, model),
        tuple(dimensions),
        derived=fns,
        derived_sources=sources,
        population=population,
        population_features=frozenset(wanted),
        min_sample=min_sample,
        time_plan=plan_for(
            expressions,
            reads,
            holds,
            read_aggregates,
            population,
            delays=any(a.delay_ms for a, _ in actions),
            predictor=predictor,
            clusters=clusters.watches(expressions, derived, fns, population),
        ),
        aggregates=tuple(aggregates.values()),
        actions=tuple(a for a, _ in actions),
        action_marks=tuple((a.name, m) for a, m in actions),
        model=model,
        predictions_read=frozenset(reads & set(PREDICTED)),
    )


def _content_hash(text: str, model: ModelRef | None) -> str:
    """The rules' text and the content version of the model they read (a model fitted anew
    is a rules switch), sha256, first 12 hex digits; the text alone without a model."""
    stamp = f"\x00model {model.predictor.version}" if model is not None else ""
    return hashlib.sha256((text + stamp).encode()).hexdigest()[:12]


def _distinct(expressions: Iterable[Expression]) -> list[Expression]:
    """Each expression once (``when`` makes a segment's enter and stay the same one)."""
    return list({id(e): e for e in expressions}.values())


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
                hint = did_you_mean(trigger.dimension, dimensions)
                problems.append(f"{where}: action {action.name!r}: unknown dimension {trigger.dimension!r}{hint}")
                continue
            for segment in (trigger.from_, trigger.to):
                if segment is not None and segment not in dim.outcomes:
                    hint = did_you_mean(segment, (s for s in dim.outcomes if s is not None))
                    problems.append(
                        f"{where}: action {action.name!r}: dimension {trigger.dimension!r} has no segment {segment!r}"
                        + hint
                    )
    return problems


def parse_rules(text: str, origin: str = "<rules>", folder: Path | None = None) -> RuleSet:
    rules, problems = check_rules(text, origin, folder=folder)
    if rules is not None:
        problems = check_actions(rules)
        rules = None if problems else rules
    if rules is None:
        raise RulesError("\n".join(problems), problems)
    return rules


PACK_SUFFIXES = (".yaml", ".yml")


def pack_files(path: Path) -> list[Path]:
    """A rules file, or a folder of rule packs (every *.yaml and *.yml in it, in name order)."""
    if path.is_dir():
        files = sorted(f for suffix in PACK_SUFFIXES for f in path.glob(f"*{suffix}"))
        if not files:
            raise RulesError(f"{path}:1:1: no *.yaml rule packs (or *.yml) in this folder")
        return files
    return [path]


def rule_files(path: Path) -> list[Path]:
    """Every file the rules are made of: the packs (``pack_files``), then the model files they
    reference (segengine.rules.models), each once. The hot reload watches these."""
    packs = pack_files(path)
    found: dict[Path, None] = {}
    for pack in packs:
        try:
            text = pack.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the checker says why
        found.update(dict.fromkeys(f for f in models.model_files(pack, text) if f not in packs))
    return [*packs, *found]


def check_files(path: Path) -> tuple[RuleSet | None, list[str]]:
    """Check a rules file or a folder of packs; packs may not repeat a dimension or feature."""
    packs: list[RuleSet] = []
    problems: list[str] = []
    texts: list[str] = []
    population = Population()  # one for every pack: one refresh serves them all
    for file in pack_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{file}:1:1: cannot read rules file: {exc.strerror}")
            continue
        rules, found = check_rules(text, str(file), population, file.parent)
        problems += found
        texts.append(text)
        if rules is not None:
            packs.append(rules)
    if problems:
        return None, problems
    if len(packs) == 1 and not path.is_dir():
        problems = check_actions(packs[0])
        return (None, problems) if problems else (packs[0], [])
    merged, problems = _merged(path, packs, texts, population)
    if merged is not None:
        problems = check_actions(merged)
    return (None, problems) if problems else (merged, [])


def _merged(
    path: Path, packs: list[RuleSet], texts: list[str], population: Population
) -> tuple[RuleSet | None, list[str]]:
    """One rule set of every pack in the folder; None, and what the packs disagree on, when
    two packs define the same dimension or action, or the same feature differently, or read
    different models."""
    problems: list[str] = []
    dimensions: dict[str, Dimension] = {}
    aggregates: dict[str, Aggregate] = {}
    actions: dict[str, Action] = {}
    marks: dict[str, str] = {}
    derived: dict[str, Any] = {}
    sources: dict[str, str] = {}
    min_sample: tuple[int, str] | None = None
    model: ModelRef | None = None
    for file, pack in zip(pack_files(path), packs):
        if pack.model is not None:
            if model is not None and not model.predictor.same_model(pack.model.predictor):
                problems.append(
                    f"{pack.model.where}: models.clv: {pack.model.describe()} differs from {model.describe()} "
                    "read by another pack (one rule set reads one model)"
                )
            model = model or pack.model
        if pack.min_sample is not None:
            if min_sample is not None and min_sample[0] != pack.min_sample[0]:
                problems.append(
                    f"{pack.min_sample[1]}: population min_sample {pack.min_sample[0]} differs from "
                    f"{min_sample[0]} set by another pack (one population: one minimum)"
                )
            min_sample = min_sample or pack.min_sample
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
    population.min_sample = min_sample[0] if min_sample is not None else DEFAULT_MIN_SAMPLE
    plan = TimePlan()
    for pack in packs:
        plan = plan | pack.time_plan
    merged = RuleSet.build(
        path.name,
        _content_hash("\x00".join(texts), model),
        tuple(dimensions.values()),
        derived=derived,
        derived_sources=sources,
        population=population,
        population_features=frozenset().union(*(p.population_features for p in packs)),
        min_sample=min_sample,
        time_plan=plan,
        aggregates=tuple(aggregates.values()),
        actions=tuple(actions.values()),
        action_marks=tuple(marks.items()),
        model=model,
        predictions_read=frozenset().union(*(p.predictions_read for p in packs)),
    )
    return merged, []


def load_rules(path: Path) -> RuleSet:
    rules, problems = check_files(path)
    if rules is None:
        raise RulesError("\n".join(problems), problems)
    return rules
