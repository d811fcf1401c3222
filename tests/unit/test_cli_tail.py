"""What `tail` and `inspect` print, without a broker: a --dimension or --segment the rules do
not have is refused naming the ones they have; a dead letter reads as where it came from and
why; a change's cause names its kind and its record; the last-changes table shows a cause
column only when the stored changes carry their cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from segengine.inspect import cause_text, customer_tables, describe, tail_pattern, tail_problem
from segengine.rules import RuleSet, load_rules

RULES = """
name: tiny
dimensions:
  value_tier:
    segments:
      - name: A
        when: spend_total >= 250
      - name: B
        when: spend_total >= 50
    default: C
  lifecycle:
    segments:
      - name: active
        when: orders_total >= 1
    default: prospect
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path: Path = tmp_path_factory.mktemp("rules") / "tiny.yaml"
    path.write_text(RULES)
    return load_rules(path)


def test_tail_takes_only_dimensions_and_segments_the_rules_have(rules: RuleSet) -> None:
    assert tail_problem(rules, None, None) is None
    assert tail_problem(rules, "lifecycle", "prospect") is None  # a default is a segment too
    assert tail_problem(rules, None, "active") is None
    assert tail_problem(rules, "tier", None) == (
        f"unknown dimension 'tier'; the rules ({rules.version}) have: lifecycle, value_tier"
    )
    assert (
        tail_problem(rules, "value_tier", "active") == "unknown segment 'active'; dimension 'value_tier' has: A, B, C"
    )
    assert tail_problem(rules, None, "Z") == (
        f"unknown segment 'Z'; the rules ({rules.version}) have: A, B, C, active, prospect"
    )


def test_tail_follows_the_topics_given_exactly() -> None:
    import re

    pattern = tail_pattern(["events.dlq"])
    assert re.match(pattern, "events.dlq") and not re.match(pattern, "eventsXdlq")
    assert not re.match(pattern, "events.dlq.old")
    default = tail_pattern(None)
    assert re.match(default, "segments.changes") and re.match(default, "actions.retention")
    assert not re.match(default, "events.dlq")


def test_a_dead_letter_reads_as_where_it_came_from_and_why() -> None:
    dead = {
        "error": {"code": "bad_value", "message": "'amount' must be >= 0"},
        "topic": "events.purchase", "partition": 2, "offset": 41, "key": "c1", "key_encoding": "utf-8",
        "value": "{}", "value_encoding": "utf-8", "received_at": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert describe("events.dlq", dead) == (
        "2026-01-01T00:00:00.000Z  c1  rejected events.purchase:2@41: bad_value: 'amount' must be >= 0"
    )


def test_a_record_of_another_topic_is_shown_as_it_is() -> None:
    assert describe("events.purchase", {"event_id": "e1", "amount": 3}) == (
        'events.purchase  {"event_id":"e1","amount":3}'
    )


def test_a_cause_names_its_kind_and_its_record() -> None:
    event = {"kind": "event", "event_id": "e", "topic": "events.purchase", "partition": 3, "offset": 9}
    assert cause_text(event) == "event events.purchase:3@9"
    assert cause_text({"kind": "erase", "event_id": "e-9"}) == "erase e-9"
    assert cause_text({"kind": "timer"}) == "timer"
    assert cause_text({}) == ""


def report(changes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "customer_id": "c1", "as_of": "2026-01-01T00:00:00.000Z", "rules_version": "tiny@1", "next_check": None,
        "quarantined": None, "memberships": {}, "features": {}, "changes": changes,
    }  # fmt: skip


def columns_and_text(changes: list[dict[str, Any]]) -> tuple[list[str], str]:
    table = customer_tables(report(changes))[1]
    console = Console(width=250, record=True)
    console.print(table)
    return [str(c.header) for c in table.columns], console.export_text()


def test_the_last_changes_show_a_cause_column_only_when_the_changes_carry_one() -> None:
    stored = {"change_id": "k", "dimension": "value_tier", "from": None, "to": "A", "at": "t1", "reason": "r"}
    assert columns_and_text([stored])[0] == ["at", "dimension", "from", "to", "reason"]
    cause = {"kind": "event", "event_id": "e", "topic": "events.purchase", "partition": 3, "offset": 9}
    columns, text = columns_and_text([{**stored, "cause": cause}, stored])
    assert columns == ["at", "dimension", "from", "to", "cause", "reason"]
    assert "event events.purchase:3@9" in text
