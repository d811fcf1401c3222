"""Window arithmetic and folding, pure (no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.events import Event, Source
from segengine.folding import already_applied, apply
from segengine.records import Output, TopicPartition
from segengine.state import DAY_MS, HOUR_MS, CustomerState, Features

T0 = 1_600_000_000_000
HORIZON = 7 * DAY_MS
_offsets = iter(range(10**9))


def ev(
    type_: str,
    ts: int,
    event_id: str | None = None,
    topic: str = "events.purchase",
    offset: int | None = None,
    **body: object,
) -> Event:
    offset = next(_offsets) if offset is None else offset
    return Event(event_id or f"e{offset}", "c1", type_, ts, dict(body), Source(topic, 0, offset))


def fold(*events: Event) -> CustomerState:
    state = CustomerState()
    for e in events:
        if not already_applied(state, e):
            apply(state, e, dedupe_horizon_ms=HORIZON)
    return state


def test_purchase_windows_are_exact_at_the_edges() -> None:
    state = fold(
        ev("purchase", T0, amount=10.0, order_id="a"), ev("purchase", T0 + 20 * DAY_MS, amount=5.0, order_id="b")
    )
    # 7 days after the first purchase: still in its 7-day window; one ms later it is out.
    assert Features(state, T0 + 7 * DAY_MS - 1)["orders_7d"] == 1
    assert Features(state, T0 + 7 * DAY_MS)["orders_7d"] == 0
    at = Features(state, T0 + 25 * DAY_MS)
    assert (at["orders_7d"], at["spend_7d"], at["orders_30d"], at["spend_30d"]) == (1, 5.0, 2, 15.0)
    assert Features(state, T0 + 366 * DAY_MS)["orders_365d"] == 1
    assert (at["orders_total"], at["spend_total"], at["purchase_days"]) == (2, 15.0, 2)


def test_late_purchase_counts_in_its_windows_and_lifetime() -> None:
    state = fold(
        ev("purchase", T0 + 10 * DAY_MS, amount=1.0, order_id="a"), ev("purchase", T0, amount=2.0, order_id="b")
    )
    f = Features(state, T0 + 10 * DAY_MS)
    assert f["first_purchase_ts"] == T0 and f["last_purchase_ts"] == T0 + 10 * DAY_MS
    assert f["orders_30d"] == 2 and f["orders_7d"] == 1
    assert state.purchase_days == sorted(state.purchase_days)


def test_same_event_id_counts_once_and_redelivery_is_detected() -> None:
    first = ev("purchase", T0, event_id="dup", offset=1, amount=3.0, order_id="a")
    again_other_offset = ev("purchase", T0, event_id="dup", offset=2, amount=3.0, order_id="a")
    state = CustomerState()
    assert apply(state, first, dedupe_horizon_ms=HORIZON)
    assert already_applied(state, first)
    assert not apply(state, again_other_offset, dedupe_horizon_ms=HORIZON)
    assert state.orders == 1 and state.offsets == {TopicPartition("events.purchase", 0): 2}


def test_browse_windows_by_action() -> None:
    state = fold(
        ev("browse", T0, topic="events.browse", action="view"),
        ev("browse", T0 + HOUR_MS, topic="events.browse", action="view"),
        ev("browse", T0 + 10 * DAY_MS, topic="events.browse", action="add_to_cart"),
    )
    f = Features(state, T0 + 10 * DAY_MS)
    assert f["view_30d"] == 2 and f["view_7d"] == 0 and f["add_to_cart_7d"] == 1
    assert f["browse_total"] == 3 and f["last_browse_ts"] == T0 + 10 * DAY_MS


def test_feedback_complaints_and_profile() -> None:
    state = fold(
        ev("feedback", T0, topic="events.feedback", kind="nps", score=9),
        ev("feedback", T0 - DAY_MS, topic="events.feedback", kind="nps", score=2),  # older: not the last
        ev("feedback", T0, topic="events.feedback", kind="complaint"),
        ev("profile", T0, topic="events.profile", attributes={"city": "Berlin", "age": 40}),
        ev("profile", T0, topic="events.profile", attributes={"age": None}),
        ev("refund", T0, amount=4.0, order_id="x"),
    )
    f = Features(state, T0 + DAY_MS)
    assert (
        f["last_nps"] == 9 and f["complaints_90d"] == 1 and f["profile_city"] == "Berlin" and f["profile_age"] is None
    )
    assert Features(state, T0 + 91 * DAY_MS)["complaints_90d"] == 0
    assert (f["refunds_total"], f["refund_amount_total"]) == (1, 4.0)


def test_state_round_trips_through_its_document() -> None:
    state = fold(ev("purchase", T0, amount=1.5, order_id="a"), ev("browse", T0, topic="events.browse", action="search"))
    state.pending.append(Output("segments.changes", "c1", {}, TopicPartition("events.purchase", 0), 1))
    again = CustomerState.loads(state.dumps(), state.dumps_outbox())
    assert again.dumps() == state.dumps() and again.pending == state.pending


@settings(max_examples=200, deadline=None)
@given(
    purchases=st.lists(
        st.tuples(st.integers(0, 800 * DAY_MS), st.floats(0, 1000, allow_nan=False)), min_size=1, max_size=30
    ),
    now_offset=st.integers(0, 900 * DAY_MS),
)
def test_windows_match_brute_force(purchases: list[tuple[int, float]], now_offset: int) -> None:
    """Whatever the order of arrival, every window equals a brute-force count over the raw events,
    for any `now` at or after the latest event (older detail is pruned only past every window)."""
    state = fold(*(ev("purchase", T0 + t, amount=a, order_id="o") for t, a in purchases))
    latest = max(T0 + t for t, _ in purchases)
    now = max(latest, T0 + now_offset)
    f = Features(state, now)
    for days in (7, 30, 90, 365):
        inside = [a for t, a in purchases if now - days * DAY_MS < T0 + t <= now]
        assert f[f"orders_{days}d"] == len(inside)
        assert abs(f[f"spend_{days}d"] - round(sum(inside), 2)) < 0.011
    assert f["orders_total"] == len(purchases)
    assert f["purchase_days"] == len({(T0 + t) // DAY_MS for t, _ in purchases})
