"""save.lua against a real Redis: a batch's writes go as one MessagePack argument, so every byte
of a document, an outbox and a change record must arrive as sent (any byte value, any length),
numbers must keep their exact value (versions, the next check in ms, population deltas), and a
batch split into several calls by size must answer each write in its own place."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from segengine import store_redis
from segengine.store import HISTORY, Write
from segengine.store_redis import RedisStore


def write(cid: str, version: int, blob: bytes, **fields: object) -> Write:
    return Write(cid, version, blob, fields.pop("outbox", b""), fields.pop("population", {}), **fields)  # type: ignore[arg-type]


async def stored(redis: Redis, store: RedisStore, cid: str) -> dict[bytes, bytes]:
    layout = await store.layout()
    return await redis.hgetall(layout.state(cid))  # type: ignore[no-any-return]


binary = st.binary(min_size=1, max_size=3000)
NEXT = 1_796_342_400_123  # ms, odd in its last digit: the timer score must be exactly it


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(
        st.tuples(binary, st.binary(max_size=500), st.lists(st.binary(min_size=1, max_size=200), max_size=3)),
        min_size=1,
        max_size=6,
    )
)
async def test_every_byte_and_number_arrives_as_sent(stack, redis_client: Redis, docs) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_client)
    await redis_client.flushdb()  # this test's own Redis (the stack fixture's), emptied between examples
    moves = [{("tier", "A"): i + 1, ("tier", "B"): -i} for i in range(len(docs))]
    writes = [
        write(
            f"c{i}", 0, blob, outbox=outbox, population=moves[i], home=i % 3, next_check=NEXT + i, recent=tuple(recent)
        )
        for i, (blob, outbox, recent) in enumerate(docs)
    ]
    assert await store.save(writes) == [True] * len(writes)
    for i, (blob, outbox, recent) in enumerate(docs):
        row = await store.load_state(f"c{i}")
        assert (row.version, row.blob, row.outbox or b"") == (1, blob, outbox)
        assert await store.next_check(f"c{i}", i % 3) == NEXT + i
        assert (await store.lookup(f"c{i}")).recent == list(reversed(recent))[:HISTORY]
    population = await store.population()
    n = len(docs)
    assert population["tier"]["A"] == n * (n + 1) // 2 and population["tier"].get("B", 0) == -(n * (n - 1) // 2)


async def test_a_batch_split_by_size_answers_each_write_in_its_place(
    stack, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_client)
    first = [write(f"c{i}", 0, bytes([i]) * 400) for i in range(8)]
    assert await store.save(first) == [True] * 8

    monkeypatch.setattr(store_redis, "CALL_BYTES", 1000)  # two or three writes a call
    calls = 0
    real = store._save

    async def counted(**kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(**kwargs)

    monkeypatch.setattr(store, "_save", counted)
    # every other write names a version that is not the stored one: it loses, the rest land
    second = [write(f"c{i}", 1 if i % 2 else 7, bytes([i + 100]) * 400) for i in range(8)]
    assert await store.save(second) == [bool(i % 2) for i in range(8)]
    assert calls >= 3
    for i in range(8):
        row = await store.load_state(f"c{i}")
        assert (row.version, row.blob) == ((2, bytes([i + 100]) * 400) if i % 2 else (1, bytes([i]) * 400))


async def test_a_write_larger_than_a_call_goes_alone(
    stack, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(store_redis, "CALL_BYTES", 100)
    store = RedisStore(redis_client)
    big = bytes(range(256)) * 40
    assert await store.save([write("a", 0, b"x"), write("b", 0, big), write("c", 0, b"y")]) == [True] * 3
    assert (await store.load_state("b")).blob == big


async def test_an_erase_and_a_forget_go_through_the_one_argument(stack, redis_client: Redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_client)
    assert await store.save([write("ann", 0, b"doc", home=1, next_check=5, recent=(b"r1",))]) == [True]
    offsets = b'{"events.purchase:0": 3}'
    erase = write("ann", 1, b"", outbox=b"tombstone", home=1, forget=True, offsets=offsets)
    assert await store.save([erase]) == [True]
    fields = await stored(redis_client, store, "ann")
    assert fields[b"v"] == b"2" and b"s" not in fields and fields[b"o"] == offsets and fields[b"p"] == b"tombstone"
    assert b"h" not in fields and await store.next_check("ann", 1) is None
    assert [cid for cid, _ in await store.erasing()] == ["ann"]


async def test_a_write_that_names_the_document_it_started_from_lands_only_on_those_bytes(
    stack, redis_client: Redis
) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_client)
    assert await store.save([write("ann", 0, b"mine"), write("bob", 0, b"mine too")]) == [True, True]
    await redis_client.hset((await store.layout()).state("bob"), "s", b"theirs")  # the version kept
    second = [write("ann", 1, b"next", held=b"mine"), write("bob", 1, b"next", held=b"mine too")]
    assert await store.save(second) == [True, False]
    assert (await store.load_state("ann")).blob == b"next"
    assert (await store.load_state("bob")).version == 1 and (await store.load_state("bob")).blob == b"theirs"
    assert await store.save([write("bob", 1, b"read again")]) == [True]  # a write from a load: the version only
