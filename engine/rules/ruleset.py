"""The compiled, pure rule set: dimensions of ordered segments, with hysteresis.

A segment holds for a customer who is not in it when its ``enter`` condition holds, and
for one who is in it while its ``stay`` condition holds (``when`` sets both). The first
segment that holds wins; otherwise the dimension's ``default``. Moving *down* (to a later
segment or the default) is held back by the current segment's ``min_dwell`` (no exit
before that long in it) and ``exit_grace`` (exit only once stay has been false that
long); moving *up* happens at once. See docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..actions import Action
from ..aggregates import Aggregate
from ..errors import ConfigError
from ..state import Derived
from ..timers import HOLD, TimePlan, move
from .expr import Expression, Selector
from .population import Population

if TYPE_CHECKING:
    from .models import ModelRef

CURRENT = "current"


class RulesError(ConfigError):
    """The rules file is invalid; the message lists every problem as file:line:column: text."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class Decision:
    """A dimension's answer with its reason. The hot classes of the fold are plain classes with
    their own ``__init__`` (read-only by type: ``Final``): mypyc compiles that, not the one a
    dataclass generates, which stays interpreted."""

    __slots__ = ("read", "reason", "segment")

    def __init__(self, segment: str | None, reason: str, read: dict[str, Any]) -> None:
        self.segment: Final = segment
        self.reason: Final = reason
        self.read: Final = read  # the values of every feature the dimension's conditions read


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    enter: Expression
    stay: Expression
    min_dwell_ms: int = 0
    exit_grace_ms: int = 0

    @property
    def reason(self) -> str:
        if self.enter is self.stay:
            return self.enter.source
        return f"enter: {self.enter.source}; stay: {self.stay.source}"


class Move:
    """The outcome of evaluating one dimension for one customer (a plain class: see ``Decision``)."""

    __slots__ = ("grace_started", "held_back", "index", "segment", "values")

    def __init__(
        self,
        segment: str | None,
        index: int,
        values: tuple[Any, ...],
        held_back: str | None = None,
        grace_started: int | None = None,
    ) -> None:
        self.segment: Final = segment
        self.index: Final = index  # the segment that held (-1: default); may differ from ``segment`` when held back
        self.values: Final = values
        self.held_back: Final = held_back  # "min_dwell" or "exit_grace" when a move down was held back
        self.grace_started: Final = grace_started  # when stay first failed (exit_grace running)


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    segments: tuple[Segment, ...]
    default: str | None
    reads: tuple[str, ...]  # the features its conditions read (``current`` excluded), sorted
    select: Selector  # (features, current, now) -> (index of the first segment that holds or -1, values of ``reads``)
    positions: dict[str, int] = field(default_factory=dict)  # segment name -> index
    triggers: frozenset[str] = frozenset()  # event types that can change what it reads
    # what moving at a timer's moment can change what it reads (segengine.timers.next_moment);
    # None: anything, so that every moment decides it again
    moments: frozenset[str] | None = None
    outcomes: tuple[str | None, ...] = ()  # segment names, then the default: outcomes[index] for index -1 too
    # per segment that holds, then the default (sensitive[index] for index -1 too): the moves
    # at which the answer may change while it holds (segengine.rules.quiet); None: any of ``moments``
    sensitive: tuple[frozenset[str], ...] | None = None
    # its answer is read by segengine.evaluate.quiet_moves, and is the one it had whenever a
    # decision passes it over (see ``settled_index``)
    settles: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcomes", (*(s.name for s in self.segments), self.default))
        plain = all(
            s.enter is s.stay and not s.min_dwell_ms and not s.exit_grace_ms and CURRENT not in s.enter.names
            for s in self.segments
        )
        object.__setattr__(self, "settles", self.sensitive is not None and plain)

    def settled_index(self, current: str | None) -> int | None:
        """For a dimension that ``settles``, passed over by a decision (nothing it reads moved):
        the segment that holds first, which its last decision found and which the customer is
        in (-1: the default); None when that cannot be told from the membership alone.

        Its segments read neither ``current`` nor a hold, so which holds first depends on
        the features alone; they read windows alone (``sensitive``), which move only at the
        moments the timers decide or leave out as unable to change the answer
        (segengine.evaluate.quiet_moves, deciding_moment): the answer is the membership."""
        if current is None:
            return None
        index = self.positions.get(current)
        if index is None:
            return -1 if current == self.default else None  # a segment these rules do not have: moving
        return index

    def segment(self, index: int) -> str | None:
        return self.default if index < 0 else self.segments[index].name

    def decide(
        self, features: Mapping[str, Any], current: str | None, now: int, since: int | None, grace_started: int | None
    ) -> Move:
        """Pure: where the customer goes in this dimension, hysteresis included."""
        index, values = self.select(features, current, now)
        return self.resolve(index, values, current, now, since, grace_started)

    def resolve(
        self,
        index: int,
        values: tuple[Any, ...],
        current: str | None,
        now: int,
        since: int | None,
        grace_started: int | None,
    ) -> Move:
        """Hysteresis on top of the first segment that holds (``select``)."""
        target = self.segment(index)
        position = self.positions.get(current) if current is not None else None
        if target == current or position is None:
            return Move(target, index, values)
        if index != -1 and index < position:
            return Move(target, index, values)  # up: at once
        held = self.segments[position]
        if held.min_dwell_ms and since is not None and now - since < held.min_dwell_ms:
            return Move(current, index, values, held_back="min_dwell")
        if held.exit_grace_ms:
            started = grace_started if grace_started is not None else now
            if now - started < held.exit_grace_ms:
                return Move(current, index, values, held_back="exit_grace", grace_started=started)
        return Move(target, index, values)

    def explain(self, move: Move) -> Decision:
        """The decision with its reason and the values read: built only when it is published."""
        read = {f: round(v, 4) if type(v) is float else v for f, v in zip(self.reads, move.values)}
        if move.held_back:
            reason = f"{self.name}.{move.segment}: held by {move.held_back}"
        elif move.index < 0:
            reason = f"{self.name}: default"
        else:
            reason = f"{self.name}.{self.segments[move.index].name}: {self.segments[move.index].reason}"
        return Decision(move.segment, reason, read)


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    content_hash: str
    dimensions: tuple[Dimension, ...]
    derived: Mapping[str, Callable[[Mapping[str, Any], Any, Any], Any]] = field(default_factory=dict)
    derived_sources: dict[str, str] = field(default_factory=dict)
    population: Population = field(default_factory=Population)  # samples for quantile_score / pct_rank
    population_features: frozenset[str] = frozenset()  # the features those functions rank
    min_sample: tuple[int, str] | None = None  # population.min_sample as the file sets it, and where
    time_plan: TimePlan = field(default_factory=TimePlan)  # what makes answers change with time alone
    aggregates: tuple[Aggregate, ...] = ()  # declared aggregations: the state keeps their partials
    actions: tuple[Action, ...] = ()  # transition -> action (segengine.actions)
    action_marks: tuple[tuple[str, str], ...] = ()  # action name -> "file:line:column" of its trigger
    version: str = ""  # stamped on every change: the optional name plus the content hash
    aggregates_by_type: dict[str, tuple[Aggregate, ...]] = field(
        default_factory=dict
    )  # event type -> aggregations it feeds
    actions_by_name: dict[str, Action] = field(default_factory=dict)
    model: ModelRef | None = None  # the fitted model the predictions come from (segengine.rules.models)
    predictions_read: frozenset[str] = frozenset()  # the predictions the rules read: computed together
    # (dimension, from, to) -> the actions that change triggers, filled as transitions occur
    actions_on: dict[tuple[str, str | None, str | None], tuple[Action, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # the moves that may turn out quiet for a customer (segengine.evaluate.quiet_moves), and the
    # dimensions that say so: every one that reads them
    quiet_candidates: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    quiet_watch: tuple[tuple[Dimension, frozenset[str]], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.derived, Derived):  # one table resolves every feature name in one lookup
            extra = self.model.predictor.resolvers(self.predictions_read) if self.model is not None else None
            object.__setattr__(self, "derived", Derived(self.derived, extra))
        by_type: dict[str, list[Aggregate]] = {}
        for aggregate in self.aggregates:
            for event_type in aggregate.triggers:
                by_type.setdefault(event_type, []).append(aggregate)
        object.__setattr__(self, "aggregates_by_type", {t: tuple(a) for t, a in by_type.items()})
        object.__setattr__(self, "actions_by_name", {a.name: a for a in self.actions})
        # a move some dimension always hears (it reads more than windows, or holds) is never quiet
        heard = {kind for d in self.dimensions if d.sensitive is None for kind in d.moments or ()}
        heard |= {move(HOLD, d.name) for d in self.dimensions}
        if any(d.moments is None for d in self.dimensions):
            candidates: frozenset[str] = frozenset()
        else:
            read = (k for d in self.dimensions if d.sensitive is not None for k in d.moments or ())
            candidates = frozenset(read) - heard
        object.__setattr__(self, "quiet_candidates", candidates)
        watch = ((d, d.moments & candidates) for d in self.dimensions if d.moments)
        object.__setattr__(self, "quiet_watch", tuple((d, kinds) for d, kinds in watch if kinds))

    def actions_for(self, dimension: str, old: str | None, new: str | None) -> tuple[Action, ...]:
        """The actions a change of ``dimension`` from ``old`` to ``new`` triggers, in the rules'
        order (worked out once per transition: a change does not scan every action)."""
        key = (dimension, old, new)
        found = self.actions_on.get(key)
        if found is None:
            found = self.actions_on[key] = tuple(a for a in self.actions if a.matches(dimension, old, new))
        return found

    @classmethod
    def build(cls, name: str, content_hash: str, dimensions: tuple[Dimension, ...], **derived: Any) -> RuleSet:
        return cls(
            name, content_hash, dimensions, version=f"{name}@{content_hash}" if name else content_hash, **derived
        )

    def evaluate(self, features: Mapping[str, Any], current: Mapping[str, str], now: int = 0) -> dict[str, Decision]:
        """Pure, without hysteresis state (tools and tests): every dimension, explained."""
        return {
            dim.name: dim.explain(dim.decide(features, current.get(dim.name), now, None, None))
            for dim in self.dimensions
        }
