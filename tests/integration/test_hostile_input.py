"""Hostile input on the real embedded Redis: valid records mixed with records that are wrong
in every way a producer can get them wrong (seeded), through ``BatchProcessor``. Nothing
raises; every record is applied or dead-lettered exactly once; the offsets to commit cover
every record; the same records again change nothing. The shipped rule packs run, plus a pack
that sums prices (a price of 2**63 in a declared sum once made the state unwritable)."""

from __future__ import annotations

import math
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from segengine.clock import make_clock
from segengine.devstack import DevStack
from segengine.dlq import original_value
from segengine.evaluate import CHANGES_TOPIC
from segengine.metrics import Metrics
from segengine.pipeline import DLQ_TOPIC, BatchProcessor, BatchStats
from segengine.rules import load_rules
from segengine.state import CustomerState, Features
from segengine.store_redis import RedisStore
from tests.integration.support import settings_for

DAY = 86_400_000
NOW = int(time.time() * 1000)
REPO = Path(__file__).resolve().parents[2]
PRICES_PACK = """\
# Sums of prices and quantities: a sum must stay finite and writable whatever arrives.
name: prices
features:
  browse_price_total: {op: sum, field: price, of: browse}
  item_price_total: {op: sum, field: price, of: purchase_item}
  item_qty_30d: {op: sum, field: qty, of: purchase_item, window: 30d}
dimensions:
  price_watcher:
    segments:
      - {name: whale, when: browse_price_total + item_price_total >= 1000000000}
    default: minnow
"""
TOPIC = {"browse": "events.browse", "purchase": "events.purchase", "refund": "events.purchase",
         "feedback": "events.feedback", "profile": "events.profile"}  # fmt: skip
CUSTOMERS = ["ann", "{bo}", "c}{d", "客户-7", "émile 😀", "x" * 128, "dan", "eve"]


@dataclass(frozen=True, slots=True)
class Rec:
    """A consumed Kafka record, as the pipeline reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class ListSink:
    """Keeps what the pipeline publishes (the store under it is the real Redis)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None]] = []

    async def publish(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        self.records += records


class Feed:
    """Records with offsets per topic-partition, and what each one is meant to be."""

    def __init__(self) -> None:
        self.records: list[Rec] = []
        self.meant: dict[tuple[str, int, int], str] = {}  # "valid", "dlq:<code>", or "any"
        self._next: Counter[tuple[str, int]] = Counter()
        self._n = 0

    def add(self, topic: str, key: bytes | None, value: bytes | None, meant: str, partition: int | None = None) -> None:
        p = partition if partition is not None else (sum(key or b"") % 3)
        offset = self._next[(topic, p)]
        self._next[(topic, p)] += 1
        self.records.append(Rec(topic, p, offset, key, value, NOW))
        self.meant[(topic, p, offset)] = meant

    def event(
        self, type_: str, customer: str, meant: str = "valid", *, key: bytes | str | None = "own", **fields: Any
    ) -> None:
        self._n += 1
        body = {
            "event_id": f"ev-{self._n}",
            "customer_id": customer,
            "type": type_,
            "ts": NOW - DAY + self._n,
            **fields,
        }
        raw_key = customer.encode() if key == "own" else key
        self.add(TOPIC[type_], raw_key, raw(body), meant)  # type: ignore[arg-type]


def raw(value: Any) -> bytes:
    """JSON with no limits: any int, and ``Raw`` text (NaN, 1e400, deep nesting) as is."""

    def enc(v: Any) -> str:
        if isinstance(v, Raw):
            return v.text
        if isinstance(v, dict):
            return "{" + ",".join(f"{orjson.dumps(str(k)).decode()}:{enc(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return orjson.dumps(v).decode()

    return enc(value).encode()


@dataclass(frozen=True)
class Raw:
    text: str


def valid(rng: random.Random, feed: Feed) -> None:
    customer = rng.choice(CUSTOMERS)
    kind = rng.choice(["browse", "browse", "purchase", "purchase", "refund", "feedback", "profile"])
    if kind == "browse":
        feed.event(
            "browse",
            customer,
            action=rng.choice(["view", "add_to_cart", "checkout_start"]),
            category=rng.choice(["rock", "pop"]),
            price=rng.choice([9.5, 1e9, 0]),
        )
    elif kind == "purchase":
        items = [
            {"sku": f"s{i}", "category": "rock", "qty": rng.randint(0, 1_000_000), "price": rng.choice([1.25, 1e9])}
            for i in range(rng.randint(0, 3))
        ]
        feed.event(
            "purchase",
            customer,
            order_id=f"o{rng.random()}",
            amount=rng.choice([0, 12.5, 1e9]),
            currency="EUR",
            items=items,
        )
    elif kind == "refund":
        feed.event("refund", customer, order_id="o1", amount=rng.choice([0.01, 1e9]))
    elif kind == "feedback":
        feed.event("feedback", customer, kind="nps", score=rng.randint(0, 10), text="t" * rng.randint(0, 3000))
    else:
        feed.event(
            "profile",
            customer,
            attributes={"age": rng.randint(18, 90), "city": rng.choice(["Paris", "Chengdu"]), "n" * 64: "v" * 256},
        )


HOSTILE_VALUES: list[Any] = [
    None, True, False, [], ["view"], {}, {"nps": 1}, "", "x" * 5000, 0, -1, -0.0, 1e308, 2**63, 2**64 - 1, 10**40,
    Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("[" * 40 + "]" * 40), Raw("[" * 1100 + "]" * 1100), "{}}{", "客户",
]  # fmt: skip
FIELDS = ["event_id", "customer_id", "type", "ts", "source", "schema", "action", "price", "category", "order_id",
          "amount", "currency", "items", "kind", "score", "text", "attributes"]  # fmt: skip


def hostile(rng: random.Random, feed: Feed) -> None:
    """A valid event with fields replaced, removed or added, or bytes that are no event at all."""
    roll = rng.random()
    if roll < 0.15:
        value = rng.choice(
            [
                b"",
                b"{",
                b"\xff\xfe{}",
                b"[1]",
                b"null",
                b'{"a": "\xed\xa0\x80"}',
                bytes(rng.getrandbits(8) for _ in range(40)),
            ]
        )
        feed.add(rng.choice(sorted(set(TOPIC.values()))), rng.choice([None, b"ann"]), value, "any")
        return
    customer = rng.choice(CUSTOMERS)
    type_ = rng.choice(sorted(TOPIC))
    probe = Feed()
    valid_body: dict[str, Any] = {}
    while valid_body.get("type") != type_:  # a valid body of that type, then broken
        valid(rng, probe)
        valid_body = orjson.loads(probe.records[-1].value or b"{}")
    body = {**valid_body, "customer_id": customer, "event_id": f"h-{rng.random()}"}
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(FIELDS)
        if rng.random() < 0.2:
            body.pop(field, None)
        else:
            body[field] = rng.choice(HOSTILE_VALUES)
    if rng.random() < 0.2:
        body[f"extra-{rng.randint(0, 9)}"] = rng.choice(HOSTILE_VALUES)
    cid = body.get("customer_id")
    key = cid.encode() if isinstance(cid, str) and rng.random() < 0.85 else rng.choice([None, b"someone"])
    feed.add(TOPIC[type_], key, raw(body), "any")


def poison(feed: Feed) -> None:
    """The records that once raised or poisoned state, each with the code it must get."""
    feed.event("browse", "ann", "dlq:wrong_type", action=["view"])
    feed.event("feedback", "ann", "dlq:wrong_type", kind={"nps": True}, score=3)
    feed.event("purchase", "dan", "dlq:bad_value", order_id="big-1", amount=1e308)
    feed.event("purchase", "dan", "dlq:bad_value", order_id="big-2", amount=1e308)
    feed.event("browse", "eve", "dlq:bad_value", action="view", price=2**63)
    feed.event(
        "purchase", "eve", "dlq:bad_value", order_id="o-items", amount=5, items=[{"sku": "s", "qty": 1, "price": 2**63}]
    )
    feed.event("purchase", "eve", "dlq:bad_value", order_id="o-qty", amount=5, items=[{"sku": "s", "qty": 2**64 - 1}])
    feed.event("purchase", "eve", "dlq:key_mismatch", key=None, order_id="o-keyless", amount=5)
    feed.event("purchase", "eve", "dlq:key_mismatch", key=b"ann", order_id="o-other", amount=5)
    feed.event("profile", "eve", "dlq:bad_value", attributes={f"a{i}": i for i in range(101)})
    feed.event("profile", "eve", "dlq:bad_value", attributes={"bio": "b" * 257})
    feed.event("browse", "eve", "dlq:bad_value", action="view", context=Raw("[" * 40 + "]" * 40))
    feed.event("browse", "eve", "dlq:not_json", action="view", context=Raw("[" * 1100 + "]" * 1100))
    feed.event("purchase", "eve", "dlq:not_json", order_id="o-nan", amount=Raw("NaN"))
    feed.event("purchase", "eve", "dlq:bad_value", order_id="o-many", amount=5, items=[{"qty": 1}] * 1001)
    feed.add("events.purchase", b"eve", b'{"event_id": "bytes", "customer_id": "eve", "x": "\xc3\x28"}', "dlq:not_utf8")
    feed.event("browse", "eve", "valid", action="view", price=1e9)  # at the bound: counted, and the sum stays finite
    feed.event("browse", "eve", "valid", action="view", price=1e9)


def make_feed(seed: int, size: int) -> Feed:
    rng = random.Random(seed)
    feed = Feed()
    poison(feed)
    while len(feed.records) < size:
        (valid if rng.random() < 0.5 else hostile)(rng, feed)
    return feed


async def versions(redis: Redis, customers: list[str]) -> dict[str, tuple[int, bytes | None]]:
    loaded = await RedisStore(redis).load(customers)
    return {c: (row.version, row.blob) for c, row in loaded.items()}


async def test_hostile_records_are_applied_or_dead_lettered_exactly_once(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules_dir)
    (rules_dir / "prices.yaml").write_text(PRICES_PACK, encoding="utf-8")
    settings = settings_for(stack, rules_file=rules_dir)
    rules = load_rules(rules_dir)
    sink = ListSink()
    processor = BatchProcessor(
        settings, rules, RedisStore(redis_client), sink, make_clock("wall"), Metrics(process=False)
    )
    feed = make_feed(seed=20240611, size=360)
    batches = [feed.records[i : i + 120] for i in range(0, len(feed.records), 120)]

    totals = BatchStats()
    for batch in batches:
        published = len(sink.records)
        stats = await processor.process(batch)  # nothing raises
        dead = [orjson.loads(v or b"") for t, _, v in sink.records[published:] if t == DLQ_TOPIC]
        assert stats.records == len(batch)
        assert stats.rejected == len(dead)
        assert stats.applied + stats.duplicates + stats.redelivered + stats.rejected == len(batch), stats
        for tp in {(r.topic, r.partition) for r in batch}:
            assert stats.next_offsets[tp] == max(r.offset for r in batch if (r.topic, r.partition) == tp) + 1
        totals.applied += stats.applied
        totals.changes += stats.changes

    # Every record dead-lettered at most once, with its own place and bytes; every valid one applied.
    dead = [orjson.loads(v or b"") for t, _, v in sink.records if t == DLQ_TOPIC]
    places = Counter((d["topic"], d["partition"], d["offset"]) for d in dead)
    assert max(places.values()) == 1, [p for p, n in places.items() if n > 1]
    by_place = {(r.topic, r.partition, r.offset): r for r in feed.records}
    codes = {}
    for d in dead:
        place = (d["topic"], d["partition"], d["offset"])
        assert original_value(d) == by_place[place].value
        codes[place] = d["error"]["code"]
    for place, meant in feed.meant.items():
        if meant == "valid":
            assert place not in codes, (place, codes.get(place))
        elif meant.startswith("dlq:"):
            assert codes.get(place) == meant[4:], (place, meant, codes.get(place))
    assert "processing_error" not in codes.values(), Counter(codes.values())
    assert totals.applied >= sum(m == "valid" for m in feed.meant.values())
    assert len(set(codes.values())) >= 8, Counter(codes.values())  # the generator reaches most checks

    # State is sound: every number finite, every document writable, the declared sums bounded.
    customers = sorted({*CUSTOMERS, *((k or b"").decode() for t, k, _ in sink.records if t == "segments.members")})
    before = await versions(redis_client, customers)
    for customer, (_, blob) in before.items():
        if blob is None:
            continue
        state = CustomerState.loads(blob)
        assert CustomerState.loads(state.dumps()).spend == state.spend
        assert math.isfinite(state.spend) and math.isfinite(state.refund_amount)
        features = Features(state, NOW, rules.derived).all()
        for name in ("browse_price_total", "item_price_total", "item_qty_30d", "spend_total"):
            value = features.get(name)
            assert value is None or (math.isfinite(value) and abs(value) < 1e18), (customer, name, value)
    eve = CustomerState.loads(before["eve"][1] or b"")
    assert Features(eve, NOW, rules.derived)["browse_price_total"] >= 2e9  # the two prices at the bound, none of 2**63
    for _, _, value in sink.records:
        assert value is None or isinstance(orjson.loads(value), dict)

    # The same records again: nothing new is applied or decided, no state is written.
    sent = {orjson.loads(v or b"")["change_id"] for t, _, v in sink.records if t == CHANGES_TOPIC}
    published = len(sink.records)
    for batch in batches:
        again = await processor.process(batch)
        assert (again.applied, again.changes) == (0, 0), again
        assert again.redelivered + again.rejected + again.duplicates == len(batch)
    resent = {orjson.loads(v or b"")["change_id"] for t, _, v in sink.records[published:] if t == CHANGES_TOPIC}
    assert resent <= sent  # only outbox re-sends of the same decisions
    assert await versions(redis_client, customers) == before
    assert totals.changes > 0


async def test_a_dead_letter_reaches_the_broker_whatever_the_record(stack: DevStack, redis_client: Redis) -> None:
    """A record's dead letter carries its value (escaped JSON text, or base64): one that
    grows past a producer batch in the letter must still not stop the partition."""
    from aiokafka import AIOKafkaProducer

    from segengine.kafka import KafkaSink
    from tests.integration.support import consume_all

    settings = settings_for(stack)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", max_batch_size=1 << 20, max_request_size=4 << 20
    )  # as a worker's
    await producer.start()
    try:
        processor = BatchProcessor(
            settings,
            load_rules(settings.rules_file),
            RedisStore(redis_client),
            KafkaSink(producer),
            make_clock("wall"),
            Metrics(process=False),
        )
        records = [
            Rec("events.purchase", 0, 0, b"ann", b"\x01" * 200_000, NOW),  # UTF-8, not JSON: 6 bytes each once escaped
            Rec("events.purchase", 0, 1, b"ann", b"\xff" * 800_000, NOW),  # not UTF-8: base64 in the letter
            Rec(
                "events.purchase",
                0,
                2,
                b"ann",
                raw(
                    {
                        "event_id": "ok",
                        "customer_id": "ann",
                        "type": "purchase",
                        "ts": NOW - DAY,
                        "order_id": "o",
                        "amount": 5,
                    }
                ),
                NOW,
            ),
        ]
        stats = await processor.process(records)
    finally:
        await producer.stop()
    assert (stats.applied, stats.rejected, stats.next_offsets[("events.purchase", 0)]) == (1, 2, 3)
    dead = [orjson.loads(r.value) for r in await consume_all(stack, DLQ_TOPIC, expect=2, timeout=30)]
    assert sorted((d["offset"], d["error"]["code"]) for d in dead) == [(0, "not_json"), (1, "not_utf8")]
