"""The rules file's shape, as pydantic models: what ``segengine rules check`` accepts
before it reads a single condition (segengine.rules.build reads those).

The models validate the plain data of ``segengine.rules.source``, where every scalar is the
text written and a null is a ``Null``: ``name: 5`` is the segment "5", ``default: ~`` is
refused rather than taken for no default. Each model words its own refusals (unknown
keys, wrong shapes, missing fields: see segengine.rules.refusals).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from annotated_types import MinLen
from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag
from pydantic_core import InitErrorDetails

from ..aggregates import OPS, SOURCES
from ..clv.features import DEFAULT_ANNUAL_DISCOUNT, PREDICTED
from ..state import FEATURES
from .population import DEFAULT_MIN_SAMPLE, KEPT
from .refusals import Loc, Messages, Model, refusal, refusal_at
from .ruleset import CURRENT
from .source import Null

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOPIC = re.compile(r"^actions\.[a-z][a-z0-9_]*$")
# A key repeated in these sections is an error; elsewhere its last value counts, as in YAML loaders.
DUPLICATE_KEY: dict[Loc, str] = {
    ("features",): "duplicate feature name {key}",
    ("dimensions",): "duplicate dimension {key}",
    ("actions",): "duplicate action {key}",
}


def parse_duration(text: str) -> int | None:
    """'30d', '12h', '90m', '45s', '2w' -> milliseconds; None when not a duration."""
    match = DURATION.match(text)
    return None if match is None else int(float(match.group(1)) * UNIT_MS[match.group(2)])


# -- scalar types ------------------------------------------------------------------------


def _condition(value: Any) -> str:
    if isinstance(value, str) and not isinstance(value, Null):
        return value
    raise refusal("expected an expression")


def _text(value: Any) -> str:
    """Any text but a null (a value for a field that words its own refusal)."""
    if isinstance(value, str) and not isinstance(value, Null):
        return value
    raise ValueError("expected text")


def _non_empty(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError("expected a name")


def _text_or_none(value: Any) -> str | None:
    return None if isinstance(value, Null) or not isinstance(value, str) else value


def _one_of(choices: Any) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("not one of the choices")
        return value

    return check


def _duration(example: str) -> BeforeValidator:
    def parse(value: Any) -> int:
        ms = parse_duration(value) if isinstance(value, str) else None
        if ms is None:
            raise refusal(f"bad duration {value!r}: use a number and s, m, h, d or w (e.g. {example})")
        return ms

    return BeforeValidator(parse)


def _window(value: Any) -> int | None:
    if value == "all":
        return None
    ms = parse_duration(value) if isinstance(value, str) else None
    if not ms:
        raise refusal(f"bad duration {value!r}: use a number and s, m, h, d or w (e.g. 30d), or 'all'")
    return ms


def _weight(value: Any) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise refusal("'weight' must be a number")


def _field_name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _topic(topic: str) -> str:
    if not TOPIC.match(topic):
        raise ValueError("not an actions.<name> topic")
    return topic


def _event_kind(value: Any) -> str:
    if isinstance(value, str) and value in SOURCES:
        return value
    raise refusal(f"unknown event kind {str(value)!r}: use {', '.join(SOURCES)}")


def _feature_name(name: str) -> str:
    if name in FEATURES or name in PREDICTED or name == CURRENT:
        raise refusal(f"duplicate feature name {name!r}")
    if not NAME.match(name):
        raise refusal(f"feature name {name!r} is not an identifier")
    return name


def _action_name(name: str) -> str:
    if not NAME.match(name):
        raise refusal(f"action name {name!r} is not an identifier")
    return name


def _min_sample(value: Any) -> int:
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and 1 <= int(text) <= KEPT:
        return int(text)
    raise refusal(f"'min_sample' must be a whole number from 1 to {KEPT:,} (a shared sample keeps {KEPT:,} values)")


def _model_path(value: Any) -> str:
    if isinstance(value, str) and not isinstance(value, Null) and value.strip():
        return value.strip()
    raise refusal("expected the path of a model file, like models/clv.yaml (segengine fit clv writes one)")


def _discount_rate(value: Any) -> float:
    try:
        rate = float(value) if isinstance(value, str) and not isinstance(value, Null) else -1.0
    except ValueError:
        rate = -1.0
    if 0.0 <= rate <= 1.0:
        return rate
    raise refusal("'annual_discount' must be a number from 0 to 1 (0.10: 10% a year)")


def _path_alone(value: Any) -> Any:
    """``clv: models/clv.yaml`` is short for ``clv: {path: models/clv.yaml}``."""
    return {"path": value} if isinstance(value, str) else value


def _listed(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _null_is_none(value: Any) -> Any:
    return None if isinstance(value, Null) else value


Condition = Annotated[str, BeforeValidator(_condition)]  # an expression's text: segengine.rules.expr checks it
Weight = Annotated[float, BeforeValidator(_weight)]
EventKind = Annotated[str, BeforeValidator(_event_kind)]


# -- the document --------------------------------------------------------------------------


class Segment(Model):
    """One tier of a dimension: who is in it (``when``, or ``enter`` and ``stay``), and how
    long a move down from it is held back."""

    not_a_mapping = "a segment is a mapping with 'name' and 'when' (or 'enter' and 'stay')"
    unknown_field = "unknown segment field {key}"
    field_messages: ClassVar[Messages] = {"name": ("segment needs a 'name'", "owner")}

    name: Annotated[str, BeforeValidator(_non_empty)]
    when: Condition | None = None
    enter: Condition | None = None
    stay: Condition | None = None
    min_dwell: Annotated[int, _duration("14d")] = 0
    exit_grace: Annotated[int, _duration("14d")] = 0
    description: Any = None

    def between_fields(self) -> list[InitErrorDetails]:
        given = self.model_fields_set
        if "when" in given and given & {"enter", "stay"}:
            return [refusal_at(("when",), "use either 'when' or 'enter'/'stay', not both", "key")]
        if "when" not in given and not {"enter", "stay"} <= given:
            return [refusal_at(("name",), f"segment {self.name!r} needs 'when', or both 'enter' and 'stay'")]
        return []


class Dimension(Model):
    """Ordered segments (the first that holds wins), and the segment of everyone else."""

    not_a_mapping = "dimension {name} must be a mapping with 'segments'"
    unknown_field = "unknown dimension field {key}"
    missing_at = "owner_key"
    field_messages: ClassVar[Messages] = {
        "segments": ("dimension {name} needs a 'segments' list", "owner_key"),
        "default": ("'default' must be a segment name", "value"),
    }

    segments: list[Segment]
    default: Annotated[str, BeforeValidator(_text)] | None = None
    description: Any = None


class SourceOptions(Model):
    """What one kind of event adds to an aggregation: the events it counts, and how much."""

    not_a_mapping = "each source maps to {where: ..., weight: ...}"
    unknown_field = "unknown source field {key}: use where, weight"
    unknown_at = "owner"

    where: Condition | None = None
    weight: Weight | None = None


def _shape(value: Any) -> str:
    return "<mapping>" if isinstance(value, dict) else "<list>" if isinstance(value, list) else "<one>"


Sources = Annotated[
    Annotated[EventKind, Tag("<one>")]
    | Annotated[list[EventKind], Tag("<list>")]
    | Annotated[dict[EventKind, Annotated[SourceOptions | None, BeforeValidator(_null_is_none)]], Tag("<mapping>")],
    Discriminator(_shape),
]


class Aggregation(Model):
    """A feature folded from events (segengine.aggregates): ``op`` over ``field`` of the events
    ``of`` one or more kinds, optionally filtered (``where``) and windowed."""

    unknown_field = "unknown aggregation field {key}: use op, field, of, where, weight, window, description"
    field_messages: ClassVar[Messages] = {
        "op": ("aggregation {name} needs 'op', one of " + ", ".join(OPS), "value"),
        "of": ("aggregation {name} needs 'of': " + ", ".join(SOURCES), "value"),
    }

    op: Annotated[str, AfterValidator(_one_of(OPS))]
    field: Annotated[str | None, BeforeValidator(_field_name)] = None
    of: Sources
    where: Condition | None = None
    weight: Weight | None = None
    window: Annotated[int | None, BeforeValidator(_window)] = None  # ms; None: all time
    description: Any = None

    def between_fields(self) -> list[InitErrorDetails]:
        errors = []
        needs_field = OPS[self.op][0]
        if needs_field and self.field is None:
            errors.append(refusal_at((), f"aggregation {{name}}: op {self.op!r} needs a 'field'", named=True))
        if not needs_field and "field" in self.model_fields_set:
            errors.append(refusal_at(("field",), f"aggregation {{name}}: op {self.op!r} takes no 'field'", named=True))
        if self.op != "most_frequent":
            weights: list[Loc] = [("weight",)] if self.weight is not None else []
            weights += [
                ("of", kind, "weight") for kind, options in self.kinds() if options and options.weight is not None
            ]
            errors += [refusal_at(loc, "'weight' applies to op most_frequent only") for loc in weights]
        return errors

    def kinds(self) -> list[tuple[str, SourceOptions | None]]:
        """Each kind of event read, with its own where and weight when it has them."""
        if isinstance(self.of, str):
            return [(self.of, None)]
        if isinstance(self.of, list):
            return [(kind, None) for kind in self.of]
        return list(self.of.items())


def _feature_shape(value: Any) -> str:
    return "<aggregation>" if isinstance(value, dict) else "<expression>"


Feature = Annotated[
    Annotated[Aggregation, Tag("<aggregation>")] | Annotated[Condition, Tag("<expression>")],
    Discriminator(_feature_shape),
]


class Trigger(Model):
    """A transition that fires an action: a move in ``dimension`` (from, to: None is any), or
    with ``grace`` the moment a move down from ``from`` is held back by its exit_grace."""

    not_a_mapping = "action {name}: a trigger is {dimension: ..., from: ..., to: ...} (or grace: true)"
    unknown_field = "unknown trigger field {key}: use dimension, from, to, grace"
    unknown_at = "value"
    field_messages: ClassVar[Messages] = {"dimension": (not_a_mapping, "owner")}

    dimension: Annotated[str | None, BeforeValidator(_text_or_none)]
    from_: Annotated[str | None, BeforeValidator(_text_or_none)] = Field(None, alias="from")
    to: Annotated[str | None, BeforeValidator(_text_or_none)] = None
    grace: Annotated[bool, BeforeValidator(lambda value: value in ("true", "True"))] = False


class Action(Model):
    """A record sent to ``topic`` when a customer makes one of the ``on`` transitions."""

    not_a_mapping = "action {name} must be a mapping with 'on' and 'topic'"
    unknown_field = "unknown action field {key}: use on, topic, params, cooldown, suppress, delay, description"
    missing_at = "owner_key"
    field_messages: ClassVar[Messages] = {
        "on": ("action {name} needs 'on: {dimension: ..., from: ..., to: ...}' (or a list of them)", "value"),
        "topic": ("action {name} needs a 'topic' like actions.retention", "value"),
        "params": ("'params' must be a mapping of name: expression", "value"),
    }

    on: Annotated[list[Trigger], BeforeValidator(_listed)]
    topic: Annotated[str, AfterValidator(_topic)]
    params: dict[str, Condition] = Field(default_factory=dict)
    cooldown: Annotated[int, _duration("30d")] = 0
    suppress: Condition | None = None
    delay: Annotated[int, _duration("30d")] = 0
    description: Any = None


class PopulationOptions(Model):
    """How population-relative scores (quantile_score, pct_rank) are ranked."""

    not_a_mapping = "'population' must be a mapping like {min_sample: 1000}"
    unknown_field = "unknown population field {key}: use min_sample"

    min_sample: Annotated[int, BeforeValidator(_min_sample)] = DEFAULT_MIN_SAMPLE


class ClvModel(Model):
    """A fitted CLV model file (segengine.clv.artefact), and how its predictions are read."""

    not_a_mapping = "models.clv is a model file's path, or {path: ..., annual_discount: ...}"
    unknown_field = "unknown field {key} in models.clv: use path, annual_discount"
    field_messages: ClassVar[Messages] = {
        "path": ("models.clv needs a 'path': the model file segengine fit clv writes", "owner"),
    }

    path: Annotated[str, BeforeValidator(_model_path)]  # relative to the pack's folder
    annual_discount: Annotated[float, BeforeValidator(_discount_rate)] = DEFAULT_ANNUAL_DISCOUNT


class ModelFiles(Model):
    """The fitted models a pack's rules read (segengine.rules.models)."""

    not_a_mapping = "'models' must be a mapping like {clv: models/clv.yaml}"
    unknown_field = "unknown model {key}: use clv"
    field_messages: ClassVar[Messages] = {"clv": ("'models' needs 'clv': the path of a fitted CLV model file", "owner")}

    clv: Annotated[ClvModel, BeforeValidator(_path_alone)]


class Document(Model):
    """A rules file, or one rule pack of a folder."""

    unknown_field = "unknown top-level field {key}"
    field_messages: ClassVar[Messages] = {
        "features": ("'features' must be a mapping of name: expression (or name: aggregation)", "value"),
        "dimensions": ("expected a non-empty 'dimensions' mapping", "value"),
        "actions": ("'actions' must be a mapping of name: action", "value"),
    }

    name: Any = None  # part of the rules version when it is text
    description: Any = None
    features: dict[Annotated[str, AfterValidator(_feature_name)], Feature] = Field(default_factory=dict)
    dimensions: Annotated[dict[str, Dimension], MinLen(1)] | None = None  # None: an actions-only pack
    actions: dict[Annotated[str, AfterValidator(_action_name)], Action] = Field(default_factory=dict)
    population: PopulationOptions | None = None  # None: the default minimum
    models: ModelFiles | None = None  # None: no predictive features

    @property
    def title(self) -> str:
        return str(self.name) if isinstance(self.name, str) else ""
