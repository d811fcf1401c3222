"""Scenario tests of the shipped rule packs (rules/), on the real embedded stack: a
stream of events for a handful of customers, the segments each ends in, and the changes
emitted on the way."""

from __future__ import annotations

import time
from collections import defaultdict
from itertools import count
from typing import Any

from segengine.devstack import DevStack
from tests.integration.support import REPO_ROOT, RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
HOUR = 3_600_000
T = (int(time.time() * 1000) // DAY - 1) * DAY  # yesterday, midnight UTC: every event is in the past
_ids = count()
TOPIC = {"purchase": "events.purchase", "refund": "events.purchase", "browse": "events.browse",
         "feedback": "events.feedback", "profile": "events.profile"}  # fmt: skip


def ev(customer: str, type_: str, ts: int, **fields: Any) -> dict[str, Any]:
    n = next(_ids)
    base = {"event_id": f"s{n}", "customer_id": customer, "type": type_, "ts": ts}
    if type_ == "purchase":
        base["order_id"] = f"o{n}"
    return {**base, **fields}


async def run(
    stack: DevStack, events: list[dict[str, Any]]
) -> tuple[dict[tuple[str, str], list[tuple[str | None, str | None]]], dict[str, dict[str, str]]]:
    """Replay ``events`` in time order (event-time clock); (customer, dimension) -> moves, and final memberships."""
    by_topic: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["ts"]):
        by_topic[TOPIC[e["type"]]].append((e["customer_id"], e))
    for topic, records in by_topic.items():
        await produce(stack, topic, records)  # type: ignore[arg-type]
    async with RunningWorker(settings_for(stack, clock="event")) as w:
        await w.wait_for(len(events))
    moves: dict[tuple[str, str], list[tuple[str | None, str | None]]] = defaultdict(list)
    for change in values(await consume_all(stack, "segments.changes")):
        moves[(change["customer_id"], change["dimension"])].append((change["from"], change["to"]))
    members = {r.key.decode(): values([r])[0]["memberships"] for r in await consume_all(stack, "segments.members")}
    return moves, members


async def test_value_tier_and_frequency(stack: DevStack) -> None:
    events = [
        ev("big", "purchase", T - 30 * DAY, amount=200.0), ev("big", "purchase", T - 20 * DAY, amount=100.0),
        ev("mid", "purchase", T - 40 * DAY, amount=20.0), ev("mid", "purchase", T - 10 * DAY, amount=20.0),
        ev("one", "purchase", T - 5 * DAY, amount=15.0),
        *[ev("often", "purchase", T - d * DAY, amount=5.0) for d in (60, 50, 40, 30, 20, 10)],
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert {c: members[c]["value_tier"] for c in ("big", "mid", "one", "often")} == {
        "big": "A",
        "mid": "B",
        "one": "C",
        "often": "A",
    }
    assert moves[("big", "value_tier")] == [(None, "B"), ("B", "A")]
    assert {c: members[c]["frequency"] for c in ("big", "one", "often")} == {
        "big": "occasional",
        "one": "new",
        "often": "frequent",
    }
    assert moves[("often", "frequency")] == [(None, "new"), ("new", "occasional"), ("occasional", "frequent")]


async def test_lifecycle(stack: DevStack) -> None:
    events = [
        ev("looker", "browse", T - DAY, action="view"),
        ev("fresh", "purchase", T - 2 * DAY, amount=10.0),
        ev("steady", "purchase", T - 40 * DAY, amount=10.0), ev("steady", "purchase", T - 10 * DAY, amount=10.0),
        ev("back", "purchase", T - 300 * DAY, amount=10.0), ev("back", "purchase", T - 5 * DAY, amount=10.0),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert {c: members[c]["lifecycle"] for c in ("looker", "fresh", "steady", "back")} == {
        "looker": "prospect", "fresh": "new", "steady": "active", "back": "reactivated"}  # fmt: skip
    # time alone moved "back" between its purchases, as live processing would have
    assert moves[("back", "lifecycle")] == [
        (None, "new"),
        ("new", "active"),
        ("active", "at_risk"),
        ("at_risk", "churned"),
        ("churned", "reactivated"),
    ]
    assert moves[("steady", "lifecycle")] == [(None, "new"), ("new", "active")]


async def test_purchase_intent(stack: DevStack) -> None:
    events = [
        ev("cart", "browse", T - 3 * HOUR, action="view"), ev("cart", "browse", T - 2 * HOUR, action="add_to_cart"),
        ev("cart", "browse", T - HOUR, action="checkout_start"),
        ev("bought", "browse", T - 5 * HOUR, action="checkout_start"), ev("bought", "purchase", T - 4 * HOUR, amount=30.0),
        ev("warm", "browse", T - 3 * DAY, action="add_to_cart"),
        ev("cold", "browse", T - 20 * DAY, action="view"),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert {c: members[c]["intent"] for c in ("cart", "bought", "warm", "cold")} == {
        "cart": "hot", "bought": "cold", "warm": "warm", "cold": "cold"}  # fmt: skip
    assert moves[("cart", "intent")] == [(None, "cold"), ("cold", "warm"), ("warm", "hot")]
    assert moves[("bought", "intent")][-1][1] == "cold"  # the purchase ended the intent


async def test_satisfaction_and_complaints(stack: DevStack) -> None:
    events = [
        ev("fan", "feedback", T - 5 * DAY, kind="nps", score=4), ev("fan", "feedback", T - DAY, kind="nps", score=10),
        ev("meh", "feedback", T - DAY, kind="nps", score=7),
        ev("angry", "feedback", T - 2 * DAY, kind="nps", score=2), ev("angry", "feedback", T - DAY, kind="complaint"),
        ev("old", "feedback", T - 120 * DAY, kind="complaint"), ev("old", "feedback", T - DAY, kind="csat", score=4),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert {c: members[c]["satisfaction"] for c in ("fan", "meh", "angry", "old")} == {
        "fan": "promoter", "meh": "passive", "angry": "detractor", "old": "unknown"}  # fmt: skip
    assert moves[("fan", "satisfaction")] == [(None, "detractor"), ("detractor", "promoter")]
    assert members["angry"]["complaint"] == "complained"
    assert moves[("old", "complaint")] == [
        (None, "complained"),
        ("complained", "none"),
    ]  # 120 days later: out of the 90-day window


async def test_loyalty_promotes_at_once_and_demotes_after_grace(stack: DevStack) -> None:
    events = [
        ev("vip", "purchase", T - 500 * DAY, amount=2500.0),  # platinum at once
        ev("vip", "purchase", T - 100 * DAY, amount=10.0),  # the 2,500 expired: stay fails, grace starts
        ev("vip", "purchase", T - 80 * DAY, amount=10.0),  # 20 days into the grace: still platinum
        ev("vip", "purchase", T - 60 * DAY, amount=10.0),  # 40 days: demoted
        ev("climber", "purchase", T - 20 * DAY, amount=350.0), ev("climber", "purchase", T - 10 * DAY, amount=700.0),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert moves[("vip", "loyalty")] == [(None, "platinum"), ("platinum", "bronze")]
    assert moves[("climber", "loyalty")] == [(None, "silver"), ("silver", "gold")]
    assert members["vip"]["loyalty"] == "bronze" and members["climber"]["loyalty"] == "gold"


async def test_demographic_and_geographic_bands(stack: DevStack) -> None:
    events = [
        ev("li", "profile", T - DAY, attributes={"age": 23, "city": "Chengdu", "income_band": "middle"}),
        ev("anna", "profile", T - DAY, attributes={"age": 41, "city": "Berlin", "income_band": "very_high"}),
        ev("anna", "profile", T - HOUR, attributes={"age": 52, "city": None}),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert (members["li"]["age_band"], members["li"]["region"], members["li"]["income"]) == (
        "under_25",
        "greater_china",
        "middle",
    )
    assert (members["anna"]["age_band"], members["anna"]["region"], members["anna"]["income"]) == (
        "50_plus",
        "unknown",
        "high",
    )
    assert moves[("anna", "region")] == [(None, "europe"), ("europe", "unknown")]


async def test_rfm_scores_rank_customers_against_the_population(stack: DevStack, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import shutil

    rules = tmp_path / "rules"  # the shipped packs, the RFM scores ranked from 10 customers on (default: 1,000)
    shutil.copytree(REPO_ROOT / "rules", rules)
    (rules / "rfm.yaml").write_text("population: {min_sample: 10}\n" + (rules / "rfm.yaml").read_text())
    base = [  # the population: 20 customers with 1..4 orders of 10..200, bought 100..10 days ago
        ev(f"pop{i}", "purchase", T - (100 - 4 * i) * DAY - k * DAY, amount=10.0 * (i + 1))
        for i in range(20) for k in range(1 + i % 4)
    ]  # fmt: skip
    for topic_records in [[(e["customer_id"], e) for e in sorted(base, key=lambda e: e["ts"])]]:
        await produce(stack, "events.purchase", topic_records)  # type: ignore[arg-type]
    settings = settings_for(stack, clock="event", quantiles_refresh_s=0.2, rules_file=rules)
    async with RunningWorker(settings) as w:
        await w.wait_for(len(base))
        for _ in range(100):  # the worker samples the population
            if await redis_client.get("seg:quantiles"):
                break
            await asyncio.sleep(0.1)
        assert await redis_client.get("seg:quantiles"), "no population sample was taken"
        await asyncio.sleep(0.3)  # and takes it in
        newcomers = [
            *(ev("star", "purchase", T - d * DAY, amount=500.0) for d in (6, 5, 4, 3, 2)),
            ev("newbie", "purchase", T - DAY, amount=5.0),
        ]
        await produce(stack, "events.purchase", [(e["customer_id"], e) for e in newcomers])
        await w.wait_for(len(base) + len(newcomers))
    members = {r.key.decode(): values([r])[0]["memberships"] for r in await consume_all(stack, "segments.members")}
    assert (members["star"]["rfm_segment"], members["star"]["frequency_score"], members["star"]["monetary_score"]) == (
        "champions",
        "5",
        "5",
    )
    assert (
        members["newbie"]["rfm_segment"],
        members["newbie"]["recency_score"],
        members["newbie"]["monetary_score"],
    ) == ("new", "5", "1")


async def test_category_affinity_from_weighted_views_and_purchased_items(stack: DevStack) -> None:
    def item(category: str) -> list[dict[str, Any]]:
        return [{"sku": f"sku-{category}", "category": category, "qty": 1, "price": 12.0}]

    events = [
        *(ev("jazzfan", "browse", T - (10 - h) * HOUR, action="view", category="jazz") for h in range(3)),
        ev("jazzfan", "browse", T - 5 * HOUR, action="search", category="rock"),  # searches do not count
        *(ev("convert", "browse", T - 40 * DAY + h * HOUR, action="view", category="pop") for h in range(4)),
        ev("convert", "purchase", T - 20 * DAY, amount=12.0, items=item("classical")),  # 5 > 4 views
        ev("gone", "browse", T - 200 * DAY, action="view", category="rock"),
        ev("gone", "purchase", T - DAY, amount=3.0, items=[]),  # re-evaluated now: the view left the 90-day window
        *(ev("wide", "browse", T - (20 - i) * HOUR, action="view", category=c) for i, c in enumerate(["rock", "pop", "jazz", "hiphop"])),
    ]  # fmt: skip
    moves, members = await run(stack, events)
    assert {c: members[c]["category_affinity"] for c in ("jazzfan", "convert", "gone", "wide")} == {
        "jazzfan": "jazz", "convert": "classical", "gone": "none", "wide": "explorer",
    }  # fmt: skip
    assert moves[("convert", "category_affinity")] == [(None, "pop"), ("pop", "classical")]
    assert moves[("gone", "category_affinity")] == [(None, "rock"), ("rock", "none")]
