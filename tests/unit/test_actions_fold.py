"""Transitions -> actions, purely, with the shipped rules: each default action fires once
per trigger with a deterministic id; cooldowns, suppression, delays (and their
cancellation) and grace-period triggers; and the checker's errors for actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from segengine.evaluate import FoldResult, fold_customer, reevaluate_customer
from segengine.events import Event, Source
from segengine.rules import RuleSet, check_files, load_rules, parse_rules
from segengine.state import DAY_MS, HOUR_MS, CustomerState
from segengine.timers import next_check

RULES = load_rules(Path(__file__).resolve().parents[2] / "rules")
T0 = 20_000 * DAY_MS
_offsets: dict[str, int] = {}


def event(type_: str, ts: int, **body: Any) -> Event:
    topic = {
        "purchase": "events.purchase",
        "browse": "events.browse",
        "feedback": "events.feedback",
        "profile": "events.profile",
    }[type_]
    n = _offsets[topic] = _offsets.get(topic, 0) + 1
    if type_ == "purchase":
        body.setdefault("order_id", f"o{n}")
    return Event(f"{type_}-{n}", "c", type_, ts, body, Source(topic, 0, n))


def fold(state: CustomerState, *events: Event, rules: RuleSet = RULES) -> list[dict[str, Any]]:
    result = fold_customer(
        rules, state, "c", list(events), now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS
    )
    state.pending = []  # published and committed
    return [{"topic": o.topic, **o.value} for o in result.outputs if o.topic.startswith("actions.")]


def timer(state: CustomerState, at: int, rules: RuleSet = RULES) -> list[dict[str, Any]]:
    result = FoldResult()
    reevaluate_customer(rules, state, "c", at, result, {"kind": "timer"}, f"timer:{at}")
    state.pending = []  # published
    return [{"topic": o.topic, **o.value} for o in result.outputs if o.topic.startswith("actions.")]


def names(actions: list[dict[str, Any]]) -> list[str]:
    return [a["action"] for a in actions]


def test_at_risk_gets_one_winback_offer_and_the_cooldown_holds_across_a_second_transition() -> None:
    state = CustomerState()
    fold(state, event("purchase", T0, amount=300.0))
    sent = timer(state, T0 + 61 * DAY_MS)  # 60 days without a purchase: at risk
    assert names(sent) == ["winback_offer"] and sent[0]["topic"] == "actions.retention"
    assert sent[0]["params"]["offer_value"] == 30.0
    fold(state, event("purchase", T0 + 62 * DAY_MS, amount=10.0))  # back (reactivated)
    again = timer(state, T0 + 62 * DAY_MS + 61 * DAY_MS)  # at risk again, 62 days after the first offer
    assert names(again) == ["winback_offer"] and again[0]["action_id"] != sent[0]["action_id"]


def test_a_second_at_risk_within_the_cooldown_sends_nothing() -> None:
    rules = parse_rules("""
dimensions:
  lifecycle:
    segments:
      - {name: at_risk, when: days_since_last_purchase > 2}
    default: active
actions:
  winback_offer: {on: {dimension: lifecycle, to: at_risk}, topic: actions.retention, cooldown: 30d}
""")
    state = CustomerState()
    fold(state, event("purchase", T0, amount=5.0), rules=rules)
    assert names(timer(state, T0 + 3 * DAY_MS, rules)) == ["winback_offer"]
    fold(state, event("purchase", T0 + 4 * DAY_MS, amount=5.0), rules=rules)
    assert timer(state, T0 + 7 * DAY_MS, rules) == []  # at risk again after 7 days: cooled down


def test_action_ids_are_deterministic_per_trigger() -> None:
    first, second = CustomerState(), CustomerState()
    _offsets.clear()
    a = fold(first, event("purchase", T0, amount=500.0))
    _offsets.clear()
    b = fold(second, event("purchase", T0, amount=500.0))
    assert names(a) == names(b) == ["key_account_manager"]
    assert a[0]["action_id"] == b[0]["action_id"] and a[0]["trigger_change_id"]


def test_do_not_contact_suppresses_and_a_recent_complaint_blocks_a_promotion() -> None:
    quiet = CustomerState()
    fold(quiet, event("profile", T0, attributes={"do_not_contact": True}), event("purchase", T0 + 1, amount=10.0))
    assert timer(quiet, T0 + 61 * DAY_MS) == []  # at risk, but asked not to be contacted
    angry = CustomerState()
    sent = fold(angry, event("feedback", T0, kind="complaint"), event("purchase", T0 + DAY_MS, amount=1200.0))
    assert "service_recovery_call" in names(sent)
    assert "tier_welcome_reward" not in names(sent)  # gold, but complained 1 day ago
    happy = CustomerState()
    assert "tier_welcome_reward" in names(fold(happy, event("purchase", T0, amount=1200.0)))


def test_the_cart_reminder_waits_two_hours_and_a_purchase_cancels_it() -> None:
    hot = [event("browse", T0, action="add_to_cart"), event("browse", T0 + 60_000, action="checkout_start")]
    waiting = CustomerState()
    assert fold(waiting, *hot) == []
    due = next_check(RULES.time_plan, waiting, T0 + 60_000)
    assert due == T0 + 60_000 + 2 * HOUR_MS  # the timer is set for the reminder
    assert names(timer(waiting, due)) == ["cart_reminder"]
    bought = CustomerState()
    fold(bought, *hot)
    fold(bought, event("purchase", T0 + HOUR_MS, amount=20.0))  # intent goes cold
    assert timer(bought, T0 + 60_000 + 2 * HOUR_MS) == [] and bought.delayed == []


def test_a_held_back_demotion_gets_a_retention_gift_once() -> None:
    state = CustomerState()
    assert "tier_welcome_reward" in names(fold(state, event("purchase", T0, amount=1100.0)))  # gold
    sent = timer(state, T0 + 366 * DAY_MS)  # the points expired: stay fails, the 30-day grace starts
    assert "retention_gift" in names(sent) and state.members["loyalty"] == "gold"
    assert "retention_gift" not in names(timer(state, T0 + 380 * DAY_MS))  # still in grace: no second gift


def test_action_errors_have_line_and_column(tmp_path: Path) -> None:
    base = "dimensions:\n  d:\n    segments:\n      - {name: x, when: orders_total > 0}\n    default: y\n"
    cases = {
        "actions:\n  a: {on: {dimension: nope, to: x}, topic: actions.retention}\n": "r.yaml:7:11: action 'a': unknown dimension 'nope'",
        "actions:\n  a: {on: {dimension: d, to: z}, topic: actions.retention}\n": "r.yaml:7:11: action 'a': dimension 'd' has no segment 'z'",
        "actions:\n  a: {on: {dimension: d, to: x}, topic: retention}\n": "r.yaml:7:41: action 'a' needs a 'topic' like actions.retention",
        "actions:\n  a: {on: {dimension: d, to: x}, topic: actions.r, cooldown: soon}\n": "r.yaml:7:62: bad duration 'soon': use a number and s, m, h, d or w (e.g. 30d)",
        "actions:\n  a: {on: {dimension: d, to: x}, topic: actions.r, suppress: 'nope > 1'}\n": "r.yaml:7:63: unknown feature 'nope'",
    }
    for text, expected in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(base + text)
        rules, problems = check_files(path)
        assert rules is None and [p.replace(str(path), "r.yaml") for p in problems] == [expected], problems


@pytest.mark.parametrize("action", [a.name for a in RULES.actions])
def test_every_default_action_has_a_declared_topic(action: str) -> None:
    import yaml

    topics = {
        t["name"]
        for t in yaml.safe_load((Path(__file__).resolve().parents[2] / "topics" / "topics.yaml").read_text())["topics"]
    }
    assert RULES.actions_by_name[action].topic in topics
