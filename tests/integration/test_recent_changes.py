"""A customer's recent changes on the real Redis: kept in its hash (field h) newest first, at
most HISTORY of them, the rules' texts by their codes in the registry, and a list written by a
version before is taken over at the next change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.inspect import recent_records
from segengine.reasons import REASONS_KEY, rule_texts
from segengine.rules import load_rules
from segengine.store_redis import HISTORY, RedisStore, recent_entries
from segengine.writes import RECENT_FIELDS, reason_code_of, recent_record
from tests.integration.support import (
    KEYS,
    RunningWorker,
    consume_all,
    produce,
    purchase,
    rule_packs,
    settings_for,
    values,
)

DAY = 86_400_000
NOW = int(time.time() * 1000)
QUIET = {"timers": False, "quantiles_refresh_s": 0}


async def changes_of(stack: DevStack, customer: str) -> list[dict[str, object]]:
    return [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] == customer]


async def test_recent_changes_are_the_newest_published_ones_and_a_list_from_before_is_taken_over(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    # a customer whose purchases move it in many dimensions (every shipped pack), one batch each
    amounts = [10.0, 60.0, 200.0, 5.0, 900.0, 1.0, 3000.0]
    settings = settings_for(stack, **QUIET)
    texts = rule_texts(load_rules(settings.rules_file))
    async with RunningWorker(settings) as worker:
        async with asyncio.timeout(60):  # the worker registers its rules' texts as it starts
            while await redis_client.hlen(REASONS_KEY) < len(texts):
                await asyncio.sleep(0.05)
        for i, amount in enumerate(amounts):
            await produce(
                stack, "events.purchase", [("ria", purchase(f"r{i}", "ria", NOW - (40 - 5 * i) * DAY, amount))]
            )
            await worker.wait_for(i + 1)
    published = await changes_of(stack, "ria")
    assert len(published) > HISTORY  # enough to be trimmed
    entries = recent_entries(await redis_client.hget(KEYS.state("ria"), "h"))
    kept = await recent_records(RedisStore(redis_client), entries)
    expected = [{k: c[k] for k in RECENT_FIELDS} for c in reversed(published)][:HISTORY]
    assert kept == expected  # the reasons in full, their texts read from the registry
    coded = [e for e in entries if reason_code_of(e) is not None]
    assert coded and all(reason_code_of(e) in texts for e in coded)  # rule texts by code, not in full
    assert all(recent_record(e)["reason"].endswith("is not in the registry)") for e in coded)  # no text without it
    assert not await redis_client.exists(KEYS.changes("ria"))  # no list any more

    # another customer as a version before kept it: its recent changes in a list of JSON arrays
    old = [{"change_id": f"{i:032x}", "dimension": "value_tier", "from": None, "to": "C", "at": "2024-01-01T00:00:00.000Z",
            "reason": "value_tier: default"} for i in range(HISTORY)]  # fmt: skip
    await redis_client.rpush(KEYS.changes("olga"), *(orjson.dumps([c[k] for k in RECENT_FIELDS]) for c in old))
    store = RedisStore(redis_client)
    assert [recent_record(r) for r in (await store.lookup("olga")).recent] == old  # read where it is
    one_dimension = rule_packs(tmp_path, "value_tier.yaml")  # one change: the list's entries stay in view
    async with RunningWorker(settings_for(stack, rules_file=one_dimension, **QUIET)) as worker:
        await produce(stack, "events.purchase", [("olga", purchase("o1", "olga", NOW - DAY, 500.0))])
        await worker.wait_for(1)
    new = [{k: c[k] for k in RECENT_FIELDS} for c in reversed(await changes_of(stack, "olga"))]
    assert new
    looked_up = await recent_records(store, (await store.lookup("olga")).recent)
    assert looked_up == (new + old)[:HISTORY]  # the new ones first, then the list's, HISTORY in all
    assert not await redis_client.exists(KEYS.changes("olga"))
