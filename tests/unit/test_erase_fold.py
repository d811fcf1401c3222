"""An erase, pure (no I/O): exits from every membership, a tombstone, the state forgotten,
the same records again on redelivery; what the store is asked to write for it."""

from __future__ import annotations

from pathlib import Path

import orjson

from segengine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, change_id, fold_customer
from segengine.events import Event, Source
from segengine.records import TopicPartition
from segengine.rules import parse_rules
from segengine.state import DAY_MS, CustomerState
from segengine.store import HISTORY, Loaded
from segengine.writes import loaded_state as _loaded_state
from segengine.writes import recent_changes as _recent_changes
from segengine.writes import recent_record
from segengine.writes import write_for as _write

ROOT = Path(__file__).resolve().parents[2]
RULES = parse_rules(
    "name: t\ndimensions:\n"
    + (ROOT / "rules" / "value_tier.yaml").read_text().split("dimensions:\n", 1)[1]
    + (ROOT / "rules" / "lifecycle.yaml").read_text().split("dimensions:\n", 1)[1]
)
T0 = 1_600_000_000_000


def purchase(offset: int, ts: int, amount: float = 50.0) -> Event:
    return Event(
        f"p{offset}",
        "c1",
        "purchase",
        ts,
        {"amount": amount, "order_id": f"o{offset}"},
        Source("events.purchase", 2, offset),
    )


def erase(offset: int, ts: int) -> Event:
    return Event(f"x{offset}", "c1", "erase", ts, {}, Source("events.profile", 2, offset))


def run(
    state: CustomerState, *events: Event, committed: dict[TopicPartition, int] | None = None, writer: str | None = None
):  # type: ignore[no-untyped-def]
    return fold_customer(
        RULES, state, "c1", list(events),
        now_for=lambda ts: ts, committed=committed or {}, dedupe_horizon_ms=7 * DAY_MS, writer=writer,
    )  # fmt: skip


def test_erase_exits_every_membership_and_leaves_a_tombstone() -> None:
    state = CustomerState()
    run(state, purchase(1, T0), purchase(2, T0 + DAY_MS))
    before = dict(state.members)
    assert before  # the customer is somewhere
    result = run(state, erase(5, T0 + 2 * DAY_MS), committed={TopicPartition("events.purchase", 2): 3})
    exits = [o.value for o in result.outputs if o.topic == CHANGES_TOPIC]
    assert {(c["dimension"], c["from"], c["to"]) for c in exits} == {(d, s, None) for d, s in before.items()}
    cause = {"kind": "erase", "event_id": "x5", "topic": "events.profile", "partition": 2, "offset": 5}
    assert all(c["cause"] == cause and c["reason"] == "erase" and c["customer_id"] == "c1" for c in exits)
    assert {c["change_id"] for c in exits} == {
        change_id("c1", d, "events.profile:2:5", s, None) for d, s in before.items()
    }
    assert [(o.topic, o.value) for o in result.outputs if o.topic == MEMBERS_TOPIC] == [(MEMBERS_TOPIC, None)]
    assert result.population == {(d, s): -1 for d, s in before.items()}
    assert result.erased and result.applied == 1
    # Forgotten: nothing but the applied offsets (for redelivery) and the outbox is left.
    assert state.is_empty and not state.members and not state.seen and state.orders == 0
    assert state.offsets == {TopicPartition("events.purchase", 2): 2, TopicPartition("events.profile", 2): 5}
    assert [p.offset for p in state.pending] == [5] * len(result.outputs)


def test_a_redelivered_erase_publishes_the_same_records_and_changes_nothing() -> None:
    state = CustomerState()
    run(state, purchase(1, T0))
    first = run(state, erase(5, T0 + DAY_MS))
    # delivered again before its commit, to a restarted worker (the purchase is committed)
    again = run(state, erase(5, T0 + DAY_MS), committed={TopicPartition("events.purchase", 2): 2}, writer="restarted")
    assert again.redelivered == 1 and again.applied == 0 and not again.population and not again.erased
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]


def test_events_after_an_erase_start_a_new_customer() -> None:
    state = CustomerState()
    run(state, purchase(1, T0, 500.0))
    result = run(state, erase(5, T0 + DAY_MS), purchase(2, T0 + 2 * DAY_MS, 10.0))
    assert state.orders == 1 and state.spend == 10.0
    entries = [
        (o.value["dimension"], o.value["from"], o.value["to"]) for o in result.outputs if o.topic == CHANGES_TOPIC
    ]
    assert ("value_tier", None, "C") in entries and ("value_tier", "A", None) in entries
    # The state is written as a live customer; its recent changes are only the new ones.
    write = _write("c1", Loaded(3, b"{}", None), state, state.dumps(), result, 2, None, "w")
    assert write.blob and write.forget and not write.erased
    assert [recent_record(r)["from"] for r in write.recent] == [None, None]


def test_an_erased_customer_is_written_without_a_state_document() -> None:
    state = CustomerState()
    run(state, purchase(1, T0))
    result = run(state, erase(5, T0 + DAY_MS))
    write = _write("c1", Loaded(3, b"{}", None), state, state.dumps(), result, 2, T0 + 9 * DAY_MS, "w")
    assert write.erased and write.forget and write.next_check is None and write.recent == ()
    assert orjson.loads(write.offsets) == {"events.purchase:2": 1, "events.profile:2": 5}
    assert write.outbox == state.dumps_outbox("w")
    # Loaded back before the erase is committed, the offsets still recognise the records.
    reloaded = _loaded_state(Loaded(4, None, write.outbox, write.offsets))
    assert run(reloaded, purchase(1, T0), erase(5, T0 + DAY_MS)).redelivered == 2


def test_recent_changes_skip_resends_and_keep_the_last_ones() -> None:
    state = CustomerState()
    first = run(state, purchase(1, T0))
    # after a crash: the outbox re-sent, then something new
    again = run(state, purchase(1, T0), purchase(2, T0 + 40 * DAY_MS, 300.0), writer="restarted")
    sent = {o.value["change_id"] for o in first.outputs if o.topic == CHANGES_TOPIC}
    assert again.resent == len(first.outputs) and sent <= {
        o.value["change_id"] for o in again.outputs if o.topic == CHANGES_TOPIC
    }
    write = _write("c1", Loaded(1, b"{}", None), state, state.dumps(), again, 2, None, "restarted")
    recent = [recent_record(r) for r in write.recent]
    assert recent and not sent & {c["change_id"] for c in recent}
    many = [o for _ in range(HISTORY) for o in first.outputs]
    assert len(_recent_changes(many)) == HISTORY
