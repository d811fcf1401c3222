"""The state cache against a real Redis: a customer folded from the cache, unread, is written
only while Redis holds the very bytes its fold started from (save.lua), and a customer erased
by another worker and made again (the same version, other bytes) is folded from what Redis
holds, never from the cache."""

from __future__ import annotations

import time

import orjson
from redis.asyncio import Redis

from segengine.clock import make_clock
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.rules import load_rules
from segengine.store_redis import RedisStore
from segengine.writes import loaded_state
from tests.integration.support import KEYS, settings_for
from tests.integration.test_hostile_input import ListSink, Rec

NOW = int(time.time() * 1000)
DAY = 86_400_000


def event(offset: int, body: dict[str, object], topic: str) -> Rec:
    return Rec(topic, 0, offset, str(body["customer_id"]).encode(), orjson.dumps(body), NOW)


def purchase(offset: int, cid: str, amount: float) -> Rec:
    body = {"event_id": f"p{offset}", "customer_id": cid, "type": "purchase", "ts": NOW - DAY + offset,
            "order_id": f"o{offset}", "amount": amount}  # fmt: skip
    return event(offset, body, "events.purchase")


async def test_a_cached_customer_is_written_only_while_redis_holds_the_bytes_it_started_from(
    stack, redis_client: Redis
) -> None:  # type: ignore[no-untyped-def]
    """bob's hash gets another customer's document at bob's version (another writer's bytes):
    the batch folds ann and bob from the cache, unread; ann's write lands, bob's loses, and bob
    is read from Redis and folded again."""
    settings = settings_for(stack)
    processor = BatchProcessor(
        settings,
        load_rules(settings.rules_file),
        RedisStore(redis_client),
        ListSink(),
        make_clock("wall"),
        Metrics(process=False),
    )
    await processor.process(
        [purchase(0, "ann", 50.0), purchase(1, "bob", 20.0), purchase(2, "cy", 700.0), purchase(3, "cy", 300.0)]
    )
    assert processor.cache.peek("ann") is not None and processor.cache.peek("bob") is not None
    version = int(await redis_client.hget(KEYS.state("bob"), "v"))
    await redis_client.hset(KEYS.state("bob"), "s", await redis_client.hget(KEYS.state("cy"), "s"))

    await processor.process([purchase(4, "ann", 5.0), purchase(5, "bob", 5.0)])
    ann = loaded_state(await processor.store.load_state("ann"))
    bob = loaded_state(await processor.store.load_state("bob"))
    assert ann.spend == 55.0 and ann.orders == 2  # from the cache, written
    assert bob.spend == 1005.0 and bob.orders == 3  # what Redis held, folded again: not the cached 20.0
    assert int(await redis_client.hget(KEYS.state("bob"), "v")) == version + 1
    assert processor.cache.hits == 1 and processor.cache.misses == 1


async def test_a_customer_erased_and_made_again_elsewhere_is_folded_from_redis(stack, redis_client: Redis) -> None:  # type: ignore[no-untyped-def]
    """Worker A wrote ann (version 1, cached). Worker B (its events came on B's partitions: a
    producer that partitions otherwise) erases ann, the erase is committed and the hash
    deleted, then writes ann anew: version 1 again, with B's one purchase. A's next event for
    ann must fold B's customer: the erased purchases must not come back."""
    settings = settings_for(stack)
    rules = load_rules(settings.rules_file)
    a = BatchProcessor(
        settings, rules, RedisStore(redis_client), ListSink(), make_clock("wall"), Metrics(process=False)
    )
    b = BatchProcessor(
        settings.model_copy(update={"state_cache_customers": 0}),
        rules, RedisStore(redis_client), ListSink(), make_clock("wall"), Metrics(process=False),
    )  # fmt: skip
    stats = await a.process([purchase(0, "ann", 900.0), purchase(1, "ann", 900.0)])
    await a.outbox_published(stats.outboxes)  # published: no outbox in Redis nor in the cache
    assert a.cache.peek("ann") is not None
    version = int(await redis_client.hget(KEYS.state("ann"), "v"))

    erase = {"event_id": "x1", "customer_id": "ann", "type": "erase", "ts": NOW - DAY + 10}
    stats = await b.process([Rec("events.profile", 3, 0, b"ann", orjson.dumps(erase), NOW)])
    b.committed.update(stats.next_offsets)
    await b.outbox_published(stats.outboxes)
    assert not await redis_client.exists(KEYS.state("ann"))  # erased, committed: nothing names ann
    again = {"event_id": "p9", "customer_id": "ann", "type": "purchase", "ts": NOW - DAY + 20, "order_id": "o9",
             "amount": 7.0}  # fmt: skip
    stats = await b.process([Rec("events.purchase", 3, 0, b"ann", orjson.dumps(again), NOW)])
    await b.outbox_published(stats.outboxes)
    assert int(await redis_client.hget(KEYS.state("ann"), "v")) == version  # the same version, another customer
    assert not await redis_client.hexists(KEYS.state("ann"), "p")  # and no outbox, as A holds it: only the bytes differ

    view = {"event_id": "b1", "customer_id": "ann", "type": "browse", "ts": NOW - DAY + 30, "action": "view"}
    await a.process([Rec("events.browse", 0, 0, b"ann", orjson.dumps(view), NOW)])
    ann = loaded_state(await a.store.load_state("ann"))
    assert ann.orders == 1 and ann.spend == 7.0 and ann.browse_total == 1
    assert a.cache.misses == 1 and a.cache.hits == 0
