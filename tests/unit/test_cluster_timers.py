"""Time alone moves a customer between discovered clusters, at the computed moment.

A pack as ``segengine discover`` writes it (``nearest_cluster`` over squared distances of
standardised features) that clusters an age: the next check after a decision must be the
first millisecond at which the engine's own evaluation of the dimension puts the customer in
another cluster, found here by brute force (probes at fixed steps, then bisection to the
millisecond), for random means, scales, centroids and customers; and through the batch
pipeline a timer moves the customer at exactly that moment. A pack of features that do not
move with time schedules nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from segengine.clock import EventClock
from segengine.discover import Cluster, Clustering, pack_text
from segengine.evaluate import CHANGES_TOPIC, rfc3339
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.rules import RuleSet, load_rules, parse_rules
from segengine.state import DAY_MS, CustomerState, Features
from segengine.store_memory import MemoryStore
from segengine.timers import next_check
from tests.unit.test_batch_memory import SETTINGS, Feed, ListSink, commit, purchase, state_of, values
from tests.unit.test_discover import history as history  # a fixture: the history file
from tests.unit.test_discover import run

NOW = 1_700_000_000_123  # not on a day boundary
SCAN = 6 * 3_600_000  # brute force: a probe every 6 hours (and at each midnight and the ms before)
YEARS = 3 * 365 * DAY_MS  # how far the brute force looks


@cache
def pack(
    features: tuple[str, ...],
    mean: tuple[float, ...],
    scale: tuple[float, ...],
    centroids: tuple[tuple[float, ...], ...],
) -> RuleSet:
    found = Clustering(
        features, mean, scale, tuple(Cluster(1, c, mean) for c in centroids), labels=tuple(range(len(centroids)))
    )
    return parse_rules(pack_text(found))


def segment_at(rules: RuleSet) -> Callable[[CustomerState, int], str | None]:
    """The segment the real dimension (its compiled conditions) gives at t."""
    (dim,) = rules.dimensions

    def at(state: CustomerState, t: int) -> str | None:
        return dim.decide(Features(state, t, rules.derived), None, t, None, None).segment

    return at


def first_change(
    at: Callable[[CustomerState, int], str | None], state: CustomerState, now: int, horizon: int
) -> int | None:
    """The first ms in (now, now + horizon] at which the segment differs from the one at now:
    probes every SCAN ms and at every midnight and the ms before it (so that two successive
    probes are never on both sides of a midnight), then bisection between the last probe
    with the old segment and the first with another."""
    before = at(state, now)
    probes = sorted(
        {*range(now + 1, now + horizon, SCAN)}
        | {m + d for m in range((now // DAY_MS + 1) * DAY_MS, now + horizon, DAY_MS) for d in (-1, 0)}
    )
    last = now
    for t in probes:
        if at(state, t) != before:
            low, high = last, t
            while high - low > 1:
                middle = (low + high) // 2
                if at(state, middle) != before:
                    high = middle
                else:
                    low = middle
            return high
        last = t
    return None


def customer(orders: int, days_ago: float, age_days: float) -> CustomerState:
    state = CustomerState()
    state.orders = orders
    state.last_purchase = NOW - round(days_ago * DAY_MS)
    state.first_purchase = state.last_purchase - round(age_days * DAY_MS)
    return state


standardised = st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def clusterings(draw: st.DrawFn, features: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
    k = draw(st.integers(2, 4))
    return tuple(tuple(draw(standardised) for _ in features) for _ in range(k))


def check_against_brute_force(rules: RuleSet, state: CustomerState) -> None:
    at = segment_at(rules)
    computed = next_check(rules.time_plan, state, NOW)
    brute = first_change(at, state, NOW, YEARS)
    event("changes within the years looked at" if brute is not None else "no change within them")
    if brute is not None and brute % DAY_MS == 0:
        event("changes at a midnight")
    if brute is not None:
        assert computed == brute
    else:  # nothing within the years looked at: none, or a real first change later
        assert computed is None or (computed > NOW + YEARS and at(state, computed) != at(state, NOW))
    if computed is not None and computed <= NOW + YEARS:
        assert at(state, computed - 1) == at(state, NOW) != at(state, computed)


AGE_ONLY = ("days_since_last_purchase", "orders_total")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    centroids=clusterings(AGE_ONLY),
    mean=st.tuples(st.floats(0, 400), st.floats(0, 10)),
    scale=st.tuples(st.floats(5, 300), st.floats(0.5, 10)),
    orders=st.integers(1, 12),
    days_ago=st.floats(0, 500),
)
def test_the_next_check_is_the_first_ms_the_nearest_cluster_changes(
    centroids: tuple[tuple[float, ...], ...],
    mean: tuple[float, float],
    scale: tuple[float, float],
    orders: int,
    days_ago: float,
) -> None:
    rules = pack(AGE_ONLY, mean, scale, centroids)
    assert rules.time_plan.clusters and not rules.time_plan.thresholds
    check_against_brute_force(rules, customer(orders, days_ago, 0))


WITH_MIDNIGHTS = ("days_since_last_purchase", "customer_age_days", "orders_total")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    centroids=clusterings(WITH_MIDNIGHTS),
    mean=st.tuples(st.floats(0, 400), st.floats(0, 800), st.floats(0, 10)),
    scale=st.tuples(st.floats(5, 300), st.floats(5, 500), st.floats(0.5, 10)),
    orders=st.integers(1, 12),
    days_ago=st.floats(0, 500),
    age_days=st.floats(0, 800),
    only_midnights=st.booleans(),
)
def test_an_age_in_whole_days_moves_it_at_a_midnight_or_between(
    centroids: tuple[tuple[float, ...], ...],
    mean: tuple[float, float, float],
    scale: tuple[float, float, float],
    orders: int,
    days_ago: float,
    age_days: float,
    only_midnights: bool,
) -> None:
    """customer_age_days steps at midnight while days_since_last_purchase grows every ms: the
    distance differences are saw-teeth, and the first crossing may be at a midnight or within a
    day (only at midnights when the centroids agree on the recency)."""
    if only_midnights:
        centroids = tuple((centroids[0][0], *c[1:]) for c in centroids)
    rules = pack(WITH_MIDNIGHTS, mean, scale, centroids)
    check_against_brute_force(rules, customer(orders, days_ago, age_days))


def test_a_pack_of_features_time_does_not_move_schedules_nothing() -> None:
    rules = pack(("orders_total", "spend_total"), (3.0, 100.0), (2.0, 80.0), ((-0.5, 0.0), (1.5, 1.0)))
    assert rules.time_plan.empty and rules.time_plan.clusters == ()
    state = customer(3, 10, 0)
    state.spend = 120.0
    assert next_check(rules.time_plan, state, NOW) is None
    (dim,) = rules.dimensions
    assert "timer" not in dim.triggers


def test_a_customer_with_a_null_feature_is_in_no_cluster_and_gets_no_check() -> None:
    rules = pack(AGE_ONLY, (100.0, 3.0), (80.0, 2.0), ((-0.5, 0.0), (1.5, 0.0)))
    state = CustomerState()  # never bought: days_since_last_purchase is null
    state.orders = 2
    assert segment_at(rules)(state, NOW) == "unclustered"
    assert next_check(rules.time_plan, state, NOW) is None


async def test_a_timer_moves_the_customer_to_the_next_cluster_at_the_computed_moment() -> None:
    """Through the batch pipeline, on the memory store, with the event clock: a purchase puts
    the customer in the recent cluster; with no other event of theirs, another customer's
    later event moves the clock past the computed check, the due loop fires it, and the
    customer moves to the lapsed cluster with cause.kind = timer, at exactly that moment."""
    # days_since_last_purchase: recent around 20 days, lapsed around 220 (scale 80, mean 100)
    rules = pack(AGE_ONLY, (100.0, 3.0), (80.0, 2.0), ((-1.0, 0.0), (1.5, 0.1)))
    start = NOW - 200 * DAY_MS
    clock = EventClock()
    store, sink = MemoryStore(), ListSink()
    processor = BatchProcessor(SETTINGS, rules, store, sink, clock, Metrics(process=False))

    feed = Feed()
    feed.add(purchase("p1", "ann", start, 40.0))
    await commit(processor, store, await processor.process(feed.records))
    state = await state_of(store, "ann")
    assert state.members == {"discovered": "cluster_0"}
    due = await store.next_check("ann", 0)
    assert due is not None and due == next_check(rules.time_plan, state, start)
    # the first ms at which the dimension gives another cluster, by the engine's own evaluation
    at = segment_at(rules)
    assert at(state, due - 1) == "cluster_0" and at(state, due) == "cluster_1"
    assert start + 100 * DAY_MS < due < start + 200 * DAY_MS  # between the centroids' ages

    later = Feed()
    later.add(purchase("q1", "bob", due + DAY_MS, 10.0))  # only moves the clock
    await commit(processor, store, await processor.process(later.records))
    assert await store.due(0, clock.now(), 10) and clock.now() > due
    fired = await processor.fire_timers(await store.due(0, clock.now(), 10), 0)
    await processor.publish(fired)
    moves = [c for c in values(sink.records, CHANGES_TOPIC) if c["customer_id"] == "ann"]
    assert [(c["from"], c["to"], c["cause"]["kind"]) for c in moves] == [
        (None, "cluster_0", "event"),
        ("cluster_0", "cluster_1", "timer"),
    ]
    assert moves[-1]["at"] == rfc3339(due)
    assert (await state_of(store, "ann")).members == {"discovered": "cluster_1"}


@pytest.mark.parametrize(
    ("features", "said"), [("orders_total,days_since_last_purchase", True), ("orders_total,spend_total", False)]
)
def test_the_command_says_whether_time_alone_re_assigns_customers(
    features: str, said: bool, history: Path, tmp_path: Path
) -> None:
    output = tmp_path / "discovered.yaml"
    code, stdout, stderr = run("--features", features, "--k", "3", "--from", str(history), "-o", str(output))
    assert code == 0, stderr
    assert ("time alone re-assigns a customer" in stdout) is said
    assert bool(load_rules(output).time_plan.clusters) is said
