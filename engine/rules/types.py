"""The types of the names a condition reads, and of declared aggregations.

Built-in features and predictions are numbers, ``current`` (the customer's segment before
the evaluation) is text, profile attributes and derived features may be anything; an
aggregation's type follows from its op and field (the ``last`` of a text field is text).
segengine.rules.expr checks every condition against these.
"""

from __future__ import annotations

import orjson

from ..aggregates import OPS, SOURCES, Aggregate, Source
from ..clv.features import PREDICTED
from ..state import FEATURES, PROFILE_PREFIX
from .expr import ANY, NUMBER, STRING, compile_value
from .names import did_you_mean
from .ruleset import CURRENT
from .schema import Aggregation
from .source import Checker, Path


def base_type(name: str) -> str | None:
    """The type of a name every rules file can read; None for an unknown one."""
    if name == CURRENT:
        return STRING
    if name in FEATURES or name in PREDICTED:  # predictions: only with a model (segengine.rules.models)
        return NUMBER
    if name.startswith(PROFILE_PREFIX) and len(name) > len(PROFILE_PREFIX):
        return ANY
    return None


def aggregate(check: Checker, name: str, spec: Aggregation) -> Aggregate | None:
    """The aggregation declared as feature ``name``, with its result type; None (and the
    problems told to ``check``) when a kind of event lacks the field, a numeric op is given
    a text field, or a ``where`` does not compile against the event's fields."""
    at: Path = ("features", name)
    before = len(check)
    _, numeric, result_type = OPS[spec.op]
    result = result_type
    sources: list[Source] = []
    described: list[list[object]] = []
    for kind, options in spec.kinds():
        columns = SOURCES[kind]
        if spec.field is not None:
            found = columns.get(spec.field)
            if found is None:
                hint = did_you_mean(spec.field, columns)
                check.at((*at, "field"), f"{kind} events have no field {spec.field!r}{hint}")
                continue
            if numeric and found != NUMBER:
                check.at((*at, "field"), f"type mismatch: {spec.op} needs a number, {kind}.{spec.field} is a {found}")
                continue
            if result is None:
                result = found
            elif result_type is None and result != found:
                result = ANY
        where_text: str | None
        if options is not None and options.where is not None:
            where_text, where_at = options.where, (*at, "of", kind, "where")
        else:
            where_text, where_at = spec.where, (*at, "where")
        where = None
        if where_text is not None:
            expression = check.expression(where_at, where_text, columns.get, columns)
            where = compile_value(expression) if expression is not None else None
        weight = options.weight if options is not None and options.weight is not None else spec.weight
        weight = 1.0 if weight is None else weight
        sources.append(Source(kind, where, weight))
        described.append([kind, where_text.strip() if where_text is not None else None, weight])
    if len(check) > before or not sources:
        return None
    # The canonical text of the declaration: the state keeps its partials under a hash of it.
    definition = orjson.dumps({"op": spec.op, "field": spec.field, "of": described, "window": spec.window}).decode()
    return Aggregate(name, spec.op, spec.field, tuple(sources), spec.window, definition, result or ANY)
