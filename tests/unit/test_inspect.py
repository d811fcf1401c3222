"""The pure helpers behind the lookup API and the inspect / tail / produce commands."""

from __future__ import annotations

from segengine.events import Event, Rejected
from segengine.inspect import TailFilter, check_customer_id, check_event, describe
from segengine.records import TopicPartition
from segengine.state import CustomerState
from segengine.writes import home_of


def change(change_id: str, dimension: str, old: str | None, new: str | None) -> dict[str, object]:
    return {
        "change_id": change_id, "customer_id": "c1", "dimension": dimension, "from": old, "to": new, "at": "2024-01-01T00:00:00.000Z",
        "rules_version": "r@1", "reason": "x", "cause": {"kind": "event", "event_id": "e", "topic": "events.purchase", "partition": 3, "offset": 9},
    }  # fmt: skip


def test_customer_ids_are_1_to_128_characters() -> None:
    assert check_customer_id("a") is None and check_customer_id("x" * 128) is None
    assert check_customer_id("") is not None and check_customer_id("x" * 129) is not None


def test_a_customers_home_is_the_partition_its_records_arrived_on_never_a_formula() -> None:
    state = CustomerState()
    assert home_of(state) is None  # nothing applied yet
    state.offsets = {
        TopicPartition("events.browse", 4): 10,
        TopicPartition("events.purchase", 2): 7,
    }  # a state written before homes were recorded
    assert home_of(state) == 2
    state.home = 5  # recorded from its first record
    assert home_of(state) == 5


def test_tail_filter_shows_matching_changes_and_the_actions_they_triggered() -> None:
    wanted = TailFilter(dimension="value_tier", segment="A")
    assert wanted("segments.changes", change("k1", "value_tier", "B", "A"))
    assert wanted("segments.changes", change("k2", "value_tier", "A", None))
    assert not wanted("segments.changes", change("k3", "value_tier", "B", "C"))
    assert not wanted("segments.changes", change("k4", "lifecycle", None, "A"))
    assert wanted("actions.loyalty", {"action_id": "a1", "trigger_change_id": "k1"})
    assert not wanted("actions.loyalty", {"action_id": "a2", "trigger_change_id": "k3"})
    everything = TailFilter()
    assert everything("actions.retention", {"trigger_change_id": "zz"}) and everything(
        "segments.changes", change("k5", "x", None, "y")
    )


def test_tail_filter_remembers_a_bounded_number_of_changes() -> None:
    wanted = TailFilter(segment="A", remember=2)
    for k in ("k1", "k2", "k3"):
        wanted("segments.changes", change(k, "d", None, "A"))
    assert not wanted("actions.x", {"trigger_change_id": "k1"}) and wanted("actions.x", {"trigger_change_id": "k3"})


def test_describe_says_when_who_what_and_why() -> None:
    line = describe("segments.changes", change("k1", "value_tier", None, "A"))
    assert line == "2024-01-01T00:00:00.000Z  c1  value_tier: - -> A  (event events.purchase:3@9; x)"
    action = {
        "action_id": "a",
        "customer_id": "c1",
        "action": "winback",
        "params": {"discount": 10},
        "at": "2024-01-01T00:00:00.000Z",
    }
    assert (
        describe("actions.retention", action)
        == "2024-01-01T00:00:00.000Z  c1  action winback [actions.retention]  discount=10"
    )


def test_check_event_is_the_engines_validation() -> None:
    ok = check_event("events.purchase", '{"event_id":"e1","customer_id":"c1","type":"purchase","ts":1000,"order_id":"o","amount":5}',
                     now_ms=10_000, max_bytes=1 << 20, future_skew_ms=0)  # fmt: skip
    assert isinstance(ok, Event) and ok.customer_id == "c1"
    bad = check_event("events.purchase", '{"event_id":"e1","customer_id":"c1","type":"purchase","ts":1000,"order_id":"o","amount":-5}',
                      now_ms=10_000, max_bytes=1 << 20, future_skew_ms=0)  # fmt: skip
    assert isinstance(bad, Rejected) and bad.code == "bad_value"
    wrong_topic = check_event("events.browse", '{"event_id":"e1","customer_id":"c1","type":"purchase","ts":1000,"order_id":"o","amount":5}',
                              now_ms=10_000, max_bytes=1 << 20, future_skew_ms=0)  # fmt: skip
    assert isinstance(wrong_topic, Rejected) and wrong_topic.code == "unknown_type"
