"""Per-customer limits, end to end through the batch pipeline on a real Redis: an event
that would break one goes to the dead-letter topic with ``limit_exceeded``, the state
stays as it was, and the events beside it (the same customer's included) apply."""

from __future__ import annotations

import time

import orjson
import pytest
from redis.asyncio import Redis

from segengine import state as state_module
from segengine.clock import make_clock
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.records import TopicPartition
from segengine.rules import load_rules
from segengine.state import MAX_ATTRIBUTES, CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import KEYS, settings_for
from tests.integration.test_hostile_input import ListSink, Rec

NOW = int(time.time() * 1000)
DAY = 86_400_000


def profile(n: int, customer: str, attributes: dict[str, object]) -> Rec:
    body = {
        "event_id": f"pr{n}",
        "customer_id": customer,
        "type": "profile",
        "ts": NOW - DAY + n,
        "attributes": attributes,
    }
    return Rec("events.profile", 1, n, customer.encode(), orjson.dumps(body), NOW)


def dead_letters(sink: ListSink) -> list[tuple[str, int]]:
    return [
        (d["error"]["code"], d["offset"])
        for d in (orjson.loads(v) for t, _, v in sink.records if t == "events.dlq" and v)
    ]


async def test_attributes_past_the_cap_are_dead_lettered_and_the_rest_applies(stack, redis_client: Redis) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(stack)
    sink = ListSink()
    processor = BatchProcessor(
        settings,
        load_rules(settings.rules_file),
        RedisStore(redis_client),
        sink,
        make_clock("wall"),
        Metrics(process=False),
    )
    full = {f"a{i}": i for i in range(MAX_ATTRIBUTES)}
    stats = await processor.process([
        profile(0, "ann", full),                       # exactly the cap: fine
        profile(1, "ann", {"one_more": 1}),            # a new name past the cap
        profile(2, "ann", {"a0": "changed"}),          # an update at the cap: fine
        profile(3, "bob", {"city": "Lyon"}),
    ])  # fmt: skip
    assert dead_letters(sink) == [("limit_exceeded", 1)]
    assert stats.applied == 3 and stats.rejected == 1
    ann = CustomerState.loads(await redis_client.hget(KEYS.state("ann"), "s"))
    assert (
        len(ann.attributes) == MAX_ATTRIBUTES and ann.attributes["a0"] == "changed" and "one_more" not in ann.attributes
    )
    # the rejected record is behind the applied one: nothing re-reads it
    assert ann.offsets == {TopicPartition("events.profile", 1): 2}


async def test_an_event_that_would_grow_the_state_past_its_size_limit_is_dead_lettered(
    stack, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(state_module, "MAX_STATE_BYTES", 4_000)  # a small limit, so a few events reach it
    settings = settings_for(stack)
    sink = ListSink()
    processor = BatchProcessor(
        settings,
        load_rules(settings.rules_file),
        RedisStore(redis_client),
        sink,
        make_clock("wall"),
        Metrics(process=False),
    )
    records = [profile(i, "cy", {f"field{i}": "x" * 200}) for i in range(30)]
    stats = await processor.process(records)
    letters = dead_letters(sink)
    assert letters and {code for code, _ in letters} == {"limit_exceeded"}
    assert stats.applied + stats.rejected == len(records)  # each record applied or dead-lettered, once
    stored = await redis_client.hget(KEYS.state("cy"), "s")
    assert stored is not None and len(stored) <= 4_000
    assert len(CustomerState.loads(stored).attributes) == stats.applied
