"""The core path on the real embedded broker and Redis: events in, state, changes out."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.state import CustomerState
from tests.integration.support import KEYS, RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
NOW = int(time.time() * 1000)


def purchase(event_id: str, customer: str, ts: int, amount: float) -> dict[str, object]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "type": "purchase",
        "ts": ts,
        "order_id": f"o-{event_id}",
        "amount": amount,
    }


def browse(event_id: str, customer: str, ts: int, action: str = "view") -> dict[str, object]:
    return {"event_id": event_id, "customer_id": customer, "type": "browse", "ts": ts, "action": action}


async def load(redis: Redis, customer: str) -> CustomerState:
    blob = await redis.hget(KEYS.state(customer), "s")
    assert blob is not None, f"no state for {customer}"
    return CustomerState.loads(blob)


async def test_events_become_state_changes_and_memberships(stack: DevStack, redis_client: Redis) -> None:
    await produce(stack, "events.browse", [("alice", browse("b1", "alice", NOW - 3 * DAY))])
    await produce(stack, "events.purchase", [
        ("alice", purchase("p1", "alice", NOW - 2 * DAY, 40.0)),
        ("alice", purchase("p2", "alice", NOW - DAY, 300.0)),
        ("bob", purchase("p3", "bob", NOW - DAY, 10.0)),
    ])  # fmt: skip
    async with RunningWorker(settings_for(stack)) as w:
        await w.wait_for(4)
    alice = await load(redis_client, "alice")
    assert (alice.orders, alice.spend, alice.browse_total) == (2, 340.0, 1)
    assert (alice.members["value_tier"], alice.members["lifecycle"]) == ("A", "active")

    changes = [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] == "alice"]
    tiers = [(c["from"], c["to"]) for c in changes if c["dimension"] == "value_tier"]
    assert tiers[-1] == ("C", "A") or tiers[-1] == ("B", "A")
    last = next(c for c in reversed(changes) if c["dimension"] == "value_tier")
    assert last["cause"]["kind"] == "event" and last["cause"]["topic"] == "events.purchase"
    assert last["cause"]["event_id"] == "p2" and last["features"]["spend_365d"] == 340.0
    assert len({c["change_id"] for c in changes}) == len(changes)

    members = {r.key.decode(): orjson.loads(r.value) for r in await consume_all(stack, "segments.members")}
    assert (members["alice"]["memberships"]["value_tier"], members["alice"]["memberships"]["lifecycle"]) == (
        "A",
        "active",
    )
    assert (members["bob"]["memberships"]["value_tier"], members["bob"]["memberships"]["lifecycle"]) == ("C", "new")
    population = {k.decode(): int(v) for k, v in (await redis_client.hgetall(KEYS.population(0))).items()}
    assert (
        population["value_tier\x1fA"] == 1
        and population["value_tier\x1fC"] == 1
        and population["lifecycle\x1fnew"] == 1
    )


async def test_same_record_twice_and_same_event_id_twice_count_once(stack: DevStack, redis_client: Redis) -> None:
    p = purchase("dup-1", "carol", NOW - DAY, 25.0)
    await produce(stack, "events.purchase", [("carol", p), ("carol", p)])  # same event_id at two offsets
    quiet = {"quantiles_refresh_s": 0}  # no population re-score: only what the records cause is counted
    async with RunningWorker(settings_for(stack, **quiet)) as w:
        await w.wait_for(2)
    assert (await load(redis_client, "carol")).orders == 1
    changes_before = len(await consume_all(stack, "segments.changes"))

    # The same records delivered again (a new consumer group reads them from the start):
    async with RunningWorker(settings_for(stack, group_id="replayed", **quiet)) as w:
        await w.wait_for(2)
    state = await load(redis_client, "carol")
    assert (state.orders, state.spend) == (1, 25.0)
    assert len(await consume_all(stack, "segments.changes")) == changes_before


async def test_malformed_records_go_to_the_dlq_and_the_partition_keeps_flowing(
    stack: DevStack, redis_client: Redis
) -> None:
    bad: list[tuple[bytes | str | None, bytes | dict[str, object]]] = [
        ("dan", b"{not json"),
        ("dan", b"\xff\xfe\x00"),
        ("dan", b"[1, 2]"),
        ("dan", {"customer_id": "dan", "type": "purchase", "ts": NOW, "order_id": "x", "amount": 1}),
        ("dan", {**purchase("e-empty", "dan", NOW, 1.0), "customer_id": ""}),
        ("dan", {**purchase("e-type", "dan", NOW, 1.0), "amount": "12"}),
        ("dan", {**purchase("e-neg", "dan", NOW, -3.0)}),
        ("dan", {**purchase("e-unk", "dan", NOW, 1.0), "type": "teleport"}),
        ("dan", {**purchase("e-ts", "dan", NOW, 1.0), "ts": "last tuesday"}),
        ("dan", {**purchase("e-fut", "dan", NOW + 3_600_000, 1.0)}),
        ("dan", b'{"event_id": "big", "pad": "' + b"x" * 100_000 + b'"}'),  # over max_event_bytes below
        ("eve", {**purchase("e-key", "dan", NOW, 1.0)}),
    ]
    good = [("dan", purchase("ok-1", "dan", NOW - DAY, 5.0)), ("dan", purchase("ok-2", "dan", NOW - DAY, 7.0))]
    await produce(stack, "events.purchase", [good[0], *bad, good[1]])
    await produce(stack, "events.browse", [("dan", {**browse("e-act", "dan", NOW), "action": "teleport"})])
    async with RunningWorker(settings_for(stack, max_event_bytes=65536)) as w:
        await w.wait_for(len(bad) + 3)
    assert (await load(redis_client, "dan")).orders == 2

    dead = values(await consume_all(stack, "events.dlq"))
    codes = sorted(d["error"]["code"] for d in dead)
    assert codes == sorted([
        "not_json", "not_utf8", "not_object", "missing_field", "empty_id", "wrong_type", "bad_value",
        "unknown_type", "bad_ts", "future_ts", "too_large", "key_mismatch", "unknown_action",
    ])  # fmt: skip
    not_utf8 = next(d for d in dead if d["error"]["code"] == "not_utf8")
    assert not_utf8["value_encoding"] == "base64" and base64.b64decode(not_utf8["value"]) == b"\xff\xfe\x00"
    assert all(d["topic"] in ("events.purchase", "events.browse") and d["offset"] >= 0 for d in dead)


async def test_with_no_batch_timeout_each_batch_is_what_has_come_and_the_worker_still_stops(
    stack: DevStack, redis_client: Redis
) -> None:
    """SEGENGINE_BATCH_TIMEOUT_MS=0: a batch is what the first fetch with records brings; with
    none the loop waits for them rather than polling in a tight loop."""
    await produce(stack, "events.purchase", [("zed", purchase("z1", "zed", NOW - 2 * DAY, 25.0))])
    worker = RunningWorker(settings_for(stack, batch_timeout_ms=0, group_id="no-batch-timeout"))
    async with worker:
        await worker.wait_for(1, timeout=120)
        await produce(stack, "events.purchase", [("zed", purchase("z2", "zed", NOW - DAY, 5.0))])
        await worker.wait_for(2, timeout=120)
        worker.worker.stop()
        await asyncio.wait_for(asyncio.shield(worker.task), 60)  # type: ignore[arg-type]
    state = await load(redis_client, "zed")
    assert (state.orders, state.spend) == (2, 30.0)
