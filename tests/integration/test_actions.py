"""Every default action (rules/actions.yaml) on the real stack: each fires once for its
trigger; a cooldown holds across a second trigger; suppression blocks (do-not-contact, a
recent complaint before a promotion); a delayed cart reminder is sent when due, and
cancelled by a purchase. (Redelivery after a kill -9: tests/integration/test_crash.py.)"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from segengine.devstack import DevStack
from tests.integration.support import RunningWorker, consume_all, produce, settings_for, values
from tests.integration.test_rule_packs import DAY, HOUR, TOPIC, T, ev

ACTION_TOPICS = ("actions.retention", "actions.loyalty", "actions.service")
MINUTE = 60_000


async def sent_actions(stack: DevStack) -> list[dict[str, Any]]:
    return [a for t in ACTION_TOPICS for a in values(await consume_all(stack, t))]


async def test_every_default_action(stack: DevStack) -> None:
    events = [
        ev("sleepy", "purchase", T - 300 * DAY, amount=300.0),  # A: key account; at risk at -240, churned at -120
        ev("sleepy", "purchase", T - 50 * DAY, amount=20.0),  # back after 250 days: reactivated
        ev("vip", "purchase", T - 10 * DAY, amount=1200.0),  # gold: tier welcome; A: key account
        ev("fading", "purchase", T - 400 * DAY, amount=1200.0),  # gold; the points expire at -35: grace, a gift
        ev("quiet", "profile", T - 20 * DAY, attributes={"do_not_contact": True}),
        ev("quiet", "purchase", T - 10 * DAY, amount=1200.0),  # gold and A, but asked not to be contacted
        ev("critic", "feedback", T - 30 * DAY, kind="nps", score=3),  # detractor: a service call
        ev("critic", "feedback", T - 25 * DAY, kind="complaint"),  # a complaint 5 days later: the call cools down
        ev("critic", "purchase", T - 24 * DAY, amount=1200.0),  # gold a day after a complaint: no promotion
        ev("cart", "browse", T - 6 * HOUR, action="add_to_cart"),
        ev("cart", "browse", T - 6 * HOUR + MINUTE, action="checkout_start"),  # hot: a reminder 2 hours later
        ev("buyer", "browse", T - 6 * HOUR, action="add_to_cart"),
        ev("buyer", "browse", T - 6 * HOUR + MINUTE, action="checkout_start"),
        ev("buyer", "purchase", T - 5 * HOUR, amount=20.0),  # bought within the 2 hours: no reminder
        ev("clock", "browse", T, action="view"),  # moves the event-time watermark to T
    ]
    by_topic: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["ts"]):
        by_topic[TOPIC[e["type"]]].append((e["customer_id"], e))
    for topic, records in by_topic.items():
        await produce(stack, topic, records)  # type: ignore[arg-type]
    want = {
        ("sleepy", "key_account_manager"): 1, ("sleepy", "winback_offer"): 1, ("sleepy", "reactivation_campaign"): 1,
        ("sleepy", "welcome_back"): 1,
        ("vip", "tier_welcome_reward"): 1, ("vip", "key_account_manager"): 1,
        ("fading", "tier_welcome_reward"): 1, ("fading", "key_account_manager"): 1, ("fading", "winback_offer"): 1,
        ("fading", "reactivation_campaign"): 1, ("fading", "retention_gift"): 1,
        ("critic", "service_recovery_call"): 1, ("critic", "key_account_manager"): 1,
        ("cart", "cart_reminder"): 1,
    }  # fmt: skip
    async with RunningWorker(settings_for(stack, clock="event", timer_interval_ms=50, quantiles_refresh_s=0)) as w:
        await w.wait_for(len(events))
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:  # timers due up to T fire
            got = Counter((a["customer_id"], a["action"]) for a in await sent_actions(stack))
            if sum(got.values()) >= sum(want.values()):
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1)  # nothing more may come
    actions = await sent_actions(stack)
    got = Counter((a["customer_id"], a["action"]) for a in actions)
    assert got == want
    assert len({a["action_id"] for a in actions}) == len(actions)
    reminder = next(a for a in actions if a["action"] == "cart_reminder")
    assert reminder["at"].startswith(
        __import__("segengine.evaluate", fromlist=["rfc3339"]).rfc3339(T - 6 * HOUR + MINUTE + 2 * HOUR)[:19]
    )
    changes = {c["change_id"] for c in values(await consume_all(stack, "segments.changes"))}
    assert all(
        a["trigger_change_id"] in changes for a in actions if a["action"] != "retention_gift"
    )  # a gift's trigger is the grace
    offer = next(a for a in actions if a["customer_id"] == "sleepy" and a["action"] == "winback_offer")
    assert offer["params"]["offer_value"] == 30.0  # 10% of the year's 300
