"""The state cache against a real Redis: load.lua leaves out a document the caller holds only
while Redis holds those very bytes, and a customer erased by another worker and made again
(the same version, other bytes) is folded from what Redis holds, never from the cache."""

from __future__ import annotations

import time

import orjson
from redis.asyncio import Redis

from segengine import store_redis
from segengine.clock import make_clock
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.rules import load_rules
from segengine.store import Write
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


async def test_a_held_document_comes_back_only_while_redis_holds_those_bytes(stack, redis_client: Redis) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(stack)
    store = RedisStore(redis_client)
    processor = BatchProcessor(
        settings, load_rules(settings.rules_file), store, ListSink(), make_clock("wall"), Metrics(process=False)
    )
    await processor.process([purchase(0, "ann", 50.0), purchase(1, "bob", 20.0)])
    held = {cid: row.blob for cid in ("ann", "bob") if (found := processor.cache.peek(cid)) and (row := found[0])}
    assert set(held) == {"ann", "bob"}

    rows = await store.load(["ann", "bob", "nobody"], held)
    assert rows["ann"].blob is held["ann"] and rows["bob"].blob is held["bob"]  # not sent back: the caller's own
    assert rows["nobody"].blob is None and rows["ann"] == await store.load_state("ann")

    other = await redis_client.hget(KEYS.state("bob"), "s")
    await redis_client.hset(KEYS.state("bob"), "s", other + b"\x00")  # another writer's bytes, the version kept
    rows = await store.load(["ann", "bob"], held)
    assert rows["ann"].blob is held["ann"]
    assert rows["bob"].blob == other + b"\x00" and rows["bob"].blob is not held["bob"]


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


async def test_held_documents_past_a_call_s_bytes_are_sent_back(stack, redis_client: Redis, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """load.lua gets the held documents themselves, at most CALL_BYTES of them a call: past that,
    a held document is not named and Redis sends it back (the same bytes, another object)."""
    store = RedisStore(redis_client)
    docs = {f"c{i}": bytes([i]) * 300 for i in range(6)}
    assert await store.save([Write(cid, 0, doc, b"", {}) for cid, doc in docs.items()]) == [True] * 6
    monkeypatch.setattr(store_redis, "CALL_BYTES", 1000)  # three documents of 300 bytes
    held = {cid: bytes(doc) for cid, doc in docs.items()}  # the caller's own objects
    rows = await store.load(list(docs), held)
    assert [rows[cid].blob is held[cid] for cid in docs] == [True, True, True, False, False, False]
    assert all(rows[cid].blob == docs[cid] and rows[cid].version == 1 for cid in docs)
    held["c1"] = docs["c1"] + b"\x00"  # bytes Redis does not hold: its own come back
    rows = await store.load(["c0", "c1"], held)
    assert rows["c0"].blob is held["c0"] and rows["c1"].blob == docs["c1"]
