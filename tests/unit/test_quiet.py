"""Moves that cannot change an answer (segengine.rules.quiet): how a condition may move as
windows empty, held against the conditions' own values (property test), the shipped packs'
tables, and the timers that skip such moves: every moment passed over, decided one by one,
decides nothing."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from segengine.evaluate import FoldResult, decide, deciding_moment, fold_customer, quiet_moves
from segengine.events import Event
from segengine.rules.expr import NUMBER, ExprError, compile_expression
from segengine.rules.quiet import FALL, RISE, Motion
from segengine.state import CustomerState
from segengine.store_memory import MemoryStore
from segengine.timers import next_moment
from segengine.validate import validate
from segengine.writes import loaded_state, reevaluate
from tests.unit.test_batch_memory import DAY, NOW, RULES, Feed, browse, feedback, purchase
from tests.unit.test_state_cache import fields, processor_for
from tests.unit.test_timer_catch_up import EventTime, history

HOUR = 3_600_000
MOVING = ("orders_7d", "add_to_cart_24h")  # orders_7d moves at purchase:7, add_to_cart_24h at browse:24
STILL_NAMES = ("spend_total", "orders_total")
KIND = "purchase:7"

leaf = st.one_of(
    st.integers(-3, 8).map(lambda n: f"({n})"),
    st.just("orders_7d"),  # the moving one, as often as a constant or a still one
    st.sampled_from([*MOVING, *STILL_NAMES]),
)


def numeric(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from("+-*/%"), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"(-{c})"),
        st.tuples(st.sampled_from(["coalesce", "min", "max"]), st.lists(children, min_size=1, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        children.map(lambda c: f"abs({c})"),
        children.map(lambda c: f"round({c})"),
    )


numbers = st.recursive(leaf, numeric, max_leaves=3)


def boolean(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"(not {c})"),
    )


constants = st.integers(-3, 8).map(lambda n: f"({n})")
scaled = st.one_of(  # the moving feature once, with a constant on either side
    st.tuples(st.just("orders_7d"), st.sampled_from("+-*/"), constants).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(constants, st.sampled_from("+-*/"), st.just("orders_7d")).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
)
comparisons = st.one_of(
    st.tuples(scaled, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), constants).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    ),
    st.tuples(leaf, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), leaf).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(numbers, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    ),
    st.tuples(numbers, st.sampled_from(["in", "not in"])).map(lambda t: f"({t[0]} {t[1]} [0, 2, 5])"),
    st.tuples(numbers, numbers, numbers).map(lambda t: f"({t[0]} < {t[1]} <= {t[2]})"),
)
conditions = st.recursive(comparisons, boolean, max_leaves=4)


@settings(max_examples=1000, deadline=None)
@given(source=conditions, other=st.integers(0, 8), still=st.tuples(st.integers(0, 400), st.integers(0, 20)))
def test_a_condition_moves_only_as_its_direction_says(source: str, other: int, still: tuple[int, int]) -> None:
    """orders_7d falls from any value to any smaller one up to 8 (purchases leave the 7-day
    window), all else still: a condition that goes from false to true may RISE, one that goes
    from true to false may FALL; one said to stay still does neither."""
    try:
        expression = compile_expression(source, lambda name: NUMBER)
    except ExprError:
        assume(False)
        raise
    direction = Motion(KIND, {}, {}).truth(expression.tree)
    env: dict[str, Any] = {"add_to_cart_24h": other, "spend_total": still[0], "orders_total": still[1], "now": 0}
    truth = [bool(expression({**env, "orders_7d": n})) for n in range(9)]
    for before in range(9):
        for after in range(before):
            if not truth[before] and truth[after]:
                assert direction & RISE, (source, before, after)
            if truth[before] and not truth[after]:
                assert direction & FALL, (source, before, after)


def test_a_derived_feature_moves_as_its_expression() -> None:
    derived = {"busy": compile_expression("orders_7d * 2 + spend_total", lambda name: NUMBER)}
    motion = Motion(KIND, derived, {})
    assert motion.truth(compile_expression("busy >= 4", lambda name: NUMBER).tree) == FALL
    assert motion.truth(compile_expression("not (busy >= 4)", lambda name: NUMBER).tree) == RISE
    assert motion.truth(compile_expression("busy == 4", lambda name: NUMBER).tree) == RISE | FALL
    assert Motion("browse:24", derived, {}).truth(compile_expression("busy >= 4", lambda name: NUMBER).tree) == 0


def test_the_shipped_packs_tables() -> None:
    """``intent``: cold hears no move (hot and warm only fall as browse buckets leave), hot
    hears its 24-hour window, warm its 7-day one; the ranked and predicted dimensions, which
    read more than windows, are not worked out."""
    dims = {d.name: d for d in RULES.dimensions}
    intent = dims["intent"]
    assert intent.sensitive is not None
    assert [sorted(s) for s in intent.sensitive] == [["browse:24"], ["browse:168"], []]
    assert dims["rfm_segment"].sensitive is None and dims["value_outlook"].sensitive is None
    loyalty = dims["loyalty"].sensitive
    assert loyalty is not None and all("hold:loyalty" in s for s in loyalty)  # a hold may always end
    assert "hold:loyalty" not in RULES.quiet_candidates
    assert {"browse:24", "browse:168", "aggregate:categories_browsed_30d"} <= RULES.quiet_candidates


def recent(seed: int) -> Feed:
    """Customers busy in the weeks before NOW: browsing (carts, views, categories), buying,
    complaining, so that their windows are still filling or emptying at NOW."""
    rng = random.Random(seed)
    events = []
    for c in range(80):
        cid = f"r{c}"
        for n in range(rng.randrange(2, 9)):
            ts = NOW - rng.randrange(0, 40 * 24) * HOUR - rng.randrange(HOUR)
            kind = rng.random()
            if kind < 0.6:
                body = browse(f"{cid}-{n}", cid, ts, rng.choice(["view", "add_to_cart", "checkout_start"]))
                events.append({**body, "category": rng.choice(["rock", "jazz", "pop", "hiphop", "folk"])})
            elif kind < 0.9:
                events.append(purchase(f"{cid}-{n}", cid, ts, round(rng.uniform(5, 300), 2)))
            else:
                events.append(feedback(f"{cid}-{n}", cid, ts, "complaint", None))
    feed = Feed()
    for body in sorted(events, key=lambda e: e["ts"]):
        feed.add(body)
    return feed


async def test_moments_passed_over_as_quiet_decide_nothing() -> None:
    """Each customer's moments from its last decision, decided one by one as a due loop that
    passes none over would: every one before the timer ``deciding_moment`` sets with the quiet
    moves left out decides nothing (no record, the memberships and grace periods as they
    were); the state asked about is left as it was. Quiet moves were found, moments passed
    over for them, and timers set for moments that decide something."""
    store = MemoryStore()
    processor = processor_for(store, 100)
    processor.clock = EventTime()
    quiet_found = passed = deciding = 0
    await processor.process(history(7).records)
    await processor.process(recent(8).records)
    plan = RULES.time_plan
    for cid, held in store.hashes.items():
        state = loaded_state(held.loaded())
        assert state.checked_at is not None
        quiet = quiet_moves(RULES, state, state.checked_at)
        quiet_found += bool(quiet)
        before = fields(state)
        chosen = deciding_moment(RULES, state, cid, next_moment(plan, state, state.checked_at, quiet), quiet)
        assert fields(state) == before
        moment = next_moment(plan, state, state.checked_at)
        while moment[0] is not None and (chosen[0] is None or moment[0] < chosen[0]):
            due, moving = moment
            kept = (dict(state.members), dict(state.member_since), dict(state.grace_since))
            assert not decide(RULES, state, cid, due, {"kind": "timer"}, f"timer:{due}", FoldResult(), "timer", moving)
            assert (state.members, state.member_since, state.grace_since) == kept
            moment = next_moment(plan, state, due)
            passed += 1
        if chosen[0] is None:  # no timer: every later moment decided nothing
            assert moment[0] is None
            continue
        assert moment[0] == chosen[0] and chosen[1] <= moment[1]
        result, grace = FoldResult(), dict(state.grace_since)
        due = chosen[0]
        outputs = decide(RULES, state, cid, due, {"kind": "timer"}, f"timer:{due}", result, "timer", moment[1])
        deciding += bool(outputs or state.grace_since != grace)
    assert quiet_found > 30 and passed > 100 and deciding > 50


def test_a_move_is_quiet_only_while_no_answer_can_take_it() -> None:
    """A customer in ``intent: cold`` hears neither browse window; one in ``intent: hot``
    whose one view no longer holds it there (its answer about to move) hears both; moves no
    worked-out dimension alone reads (an age, a population rank) are never quiet."""
    state = CustomerState()
    state.members = {"intent": "cold"}
    state.browse = {"0": [1, 0, 0, 0, 0, 0]}  # something in the window: its moves can come
    state.checked_at = 0
    quiet = quiet_moves(RULES, state, 0)
    assert {"browse:24", "browse:168"} <= quiet
    assert "ranked" not in quiet and "age" not in quiet
    state.members = {"intent": "hot"}
    assert not {"browse:24", "browse:168"} & quiet_moves(RULES, state, 0)


def test_what_a_decision_passes_over_holds_as_quiet_moves_would_find_it() -> None:
    """After every event and every timer of busy customers, the quiet moves worked out from
    what the decision hands over (the segment that holds in each dimension it kept, moved
    or passed over: ``Dimension.settles``) are those worked out afresh, every dimension
    selected again. Passed-over dimensions were handed over many times."""
    customers: dict[str, list[Event]] = {}
    for rec in [*history(7).records, *recent(8).records]:
        event = validate(rec.topic, rec.partition, rec.offset, rec.key, rec.value, now_ms=NOW)
        assert isinstance(event, Event)
        customers.setdefault(event.customer_id, []).append(event)
    settling = {d.name for d in RULES.dimensions if d.settles}
    assert settling and not any(d.settles for d in RULES.dimensions if d.name == "loyalty")  # a hold: never
    compared = handed_over = 0

    def same_quiet(state: CustomerState, result: FoldResult) -> None:
        nonlocal compared, handed_over
        assert result.features is not None and state.checked_at is not None
        known = quiet_moves(RULES, state, state.checked_at, result.features, result.selected)
        assert known == quiet_moves(RULES, state, state.checked_at)
        compared += 1
        handed_over += len(settling & result.selected.keys())

    for cid, events in customers.items():
        state = CustomerState()
        events.sort(key=lambda e: e.ts)
        for event, after in zip(events, [*events[1:], None]):
            result = fold_customer(
                RULES, state, cid, [event], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY
            )
            if result.features is None:  # a duplicate: nothing decided
                continue
            same_quiet(state, result)
            until = NOW if after is None else after.ts
            while (due := next_moment(RULES.time_plan, state, state.checked_at)[0]) is not None and due < until:
                same_quiet(state, reevaluate(RULES, cid, state, due, {"kind": "timer"}, "timer", "writer"))
    assert compared > 500 and handed_over > 1000
