"""Transitions -> actions: what marketing automation should do, decided purely.

    actions:
      winback_offer:
        on: {dimension: lifecycle, to: at_risk}          # from: ..., to: ...; either may be omitted; or a list
        topic: actions.retention
        params: {offer_value: "round(coalesce(spend_365d, 0) * 0.1, 2)", tier: value_tier}
        cooldown: 30d                                     # no second one within 30 days
        suppress: "complaints_7d > 0 or profile_do_not_contact == true"
      cart_reminder:
        on: {dimension: intent, to: hot}
        topic: actions.retention
        delay: 2h                                         # unless the customer left `hot` by then

Triggers: a change of a dimension (``from``/``to``), or ``grace: true`` for the moment a
demotion is held back by an ``exit_grace`` (a retention gift before the demotion takes
effect). An action fires once per trigger; its ``action_id`` is derived from the trigger,
so a redelivered or replayed trigger yields the same id, and the customer's state records
what was sent (cooldowns) and what waits (delays), written atomically with the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Value = Callable[[Mapping[str, Any], Any, Any], Any]  # compiled expression: (features, current, now)
OUTCOMES = ("sent", "cooled_down", "suppressed", "cancelled")


@dataclass(frozen=True, slots=True)
class On:
    """One trigger: a change of ``dimension`` (from, to: None = any), or with ``grace`` the
    moment a move down from ``from_`` is held back by its exit_grace."""

    dimension: str
    from_: str | None = None
    to: str | None = None
    grace: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    topic: str
    on: tuple[On, ...]
    params: tuple[tuple[str, Value], ...]
    cooldown_ms: int
    suppress: Value | None
    delay_ms: int
    reads: frozenset[str]

    def matches(self, dimension: str, old: str | None, new: str | None) -> bool:
        return old != new and any(
            not t.grace and t.dimension == dimension and t.from_ in (None, old) and t.to in (None, new) for t in self.on
        )

    def matches_grace(self, dimension: str, segment: str) -> bool:
        return any(t.grace and t.dimension == dimension and t.from_ in (None, segment) for t in self.on)


class Trigger:
    """What caused an action: a change record's id, or a grace period that started (a plain
    class: see ``segengine.rules.ruleset.Decision``)."""

    __slots__ = ("at", "dimension", "segment", "trigger_id")

    def __init__(self, trigger_id: str, dimension: str, segment: str | None, at: int) -> None:
        self.trigger_id: Final = trigger_id
        self.dimension: Final = dimension
        self.segment: Final = segment  # where the customer went (or stays, for grace)
        self.at: Final = at


def action_id(customer_id: str, name: str, trigger_id: str) -> str:
    return hashlib.blake2b(f"{customer_id}\x1f{name}\x1f{trigger_id}".encode(), digest_size=16).hexdigest()


def grace_trigger_id(customer_id: str, dimension: str, segment: str, started: int) -> str:
    return hashlib.blake2b(
        f"{customer_id}\x1f{dimension}\x1fgrace\x1f{segment}\x1f{started}".encode(), digest_size=16
    ).hexdigest()


@dataclass(slots=True)
class Decided:
    """Action records to publish (topic, value), and the outcome of every trigger."""

    records: list[tuple[str, dict[str, Any]]]
    outcomes: list[tuple[str, str]]  # (action name, outcome)


def on_trigger(
    actions: tuple[Action, ...], state: Any, customer_id: str, features: Mapping[str, Any], trigger: Trigger,
    matching: Sequence[Action], rfc3339: Callable[[int], str],
) -> Decided:  # fmt: skip
    """Actions for one trigger: sent now, scheduled (delay), or held back."""
    decided = Decided([], [])
    for action in matching:
        if action.delay_ms:
            state.delayed.append(
                {
                    "a": action.name,
                    "t": trigger.trigger_id,
                    "d": trigger.dimension,
                    "s": trigger.segment,
                    "due": trigger.at + action.delay_ms,
                }
            )
            continue
        _fire(action, state, customer_id, features, trigger.trigger_id, trigger.at, rfc3339, decided)
    return decided


def due_delayed(
    actions: Mapping[str, Action],
    state: Any,
    customer_id: str,
    features: Mapping[str, Any],
    now: int,
    rfc3339: Callable[[int], str],
) -> Decided:  # fmt: skip
    """Delayed actions whose time has come: sent if the customer is still where the trigger
    put them (the cart reminder goes only if intent is still hot), else cancelled."""
    decided = Decided([], [])
    if not state.delayed:
        return decided
    waiting = []
    for entry in sorted(state.delayed, key=lambda e: e["due"]):
        action = actions.get(entry["a"])
        if action is None:
            continue  # the rules no longer have it
        if entry["due"] > now:
            waiting.append(entry)
            continue
        if state.members.get(entry["d"]) != entry["s"]:
            decided.outcomes.append((action.name, "cancelled"))
            continue
        _fire(action, state, customer_id, features, entry["t"], entry["due"], rfc3339, decided)
    state.delayed = waiting
    return decided


def next_due(state: Any) -> int | None:
    return min((e["due"] for e in state.delayed), default=None) if state.delayed else None


def _fire(action: Action, state: Any, customer_id: str, features: Mapping[str, Any], trigger_id: str, at: int,
          rfc3339: Callable[[int], str], decided: Decided) -> None:  # fmt: skip
    last = state.actions_sent.get(action.name)
    if action.cooldown_ms and last is not None and at - last < action.cooldown_ms:
        decided.outcomes.append((action.name, "cooled_down"))
        return
    if action.suppress is not None and action.suppress(features, None, at):
        decided.outcomes.append((action.name, "suppressed"))
        return
    state.actions_sent[action.name] = at
    params = {name: _plain(fn(features, None, at)) for name, fn in action.params}
    decided.records.append((action.topic, {
        "action_id": action_id(customer_id, action.name, trigger_id), "customer_id": customer_id, "action": action.name,
        "params": params, "trigger_change_id": trigger_id, "at": rfc3339(at),
    }))  # fmt: skip
    decided.outcomes.append((action.name, "sent"))


def _plain(value: Any) -> Any:
    return round(value, 4) if type(value) is float else value
