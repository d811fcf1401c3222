"""`segengine replay`, run as a user runs it (a subprocess), on the embedded stack: what
lands in the input topics (count, keys, event-time order per partition, --until, pacing),
and that replaying the same file twice changes the engine's state once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from segengine.datasets import cdnow_path, customer_id, date_ms
from segengine.devstack import DevStack
from segengine.replay import event_time
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import RunningWorker, consume_all, settings_for

DAY = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


async def replay(stack: DevStack | None, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SEGENGINE_KAFKA_BOOTSTRAP"}
    if stack is not None:
        env["SEGENGINE_KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "segengine",
        "replay",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def check_order_and_keys(records: list[ConsumerRecord[bytes, bytes]], replays: int = 1) -> list[dict[str, object]]:
    """Every record keyed by its customer, a customer on one partition, event time never
    going back within a partition (within each of ``replays`` runs of the same file, which
    follow one another). Returns the events."""
    partition_of: dict[bytes, int] = {}
    per_partition: dict[int, list[tuple[int, int]]] = {}
    events = []
    for rec in records:  # in (partition, offset) order
        ev = orjson.loads(rec.value)
        assert rec.key == ev["customer_id"].encode()
        assert partition_of.setdefault(rec.key, rec.partition) == rec.partition
        per_partition.setdefault(rec.partition, []).append((rec.offset, event_time(ev["ts"])))
        events.append(ev)
    for partition, rows in per_partition.items():
        assert len(rows) % replays == 0
        run = len(rows) // replays
        for start in range(0, len(rows), run):
            times = [ts for _, ts in rows[start : start + run]]
            assert times == sorted(times), (
                f"partition {partition} goes back in event time after offset {rows[start][0]}"
            )
    return events


async def test_cdnow_file_lands_in_event_time_order_and_until_stops_at_the_date(
    stack: DevStack, tmp_path: Path
) -> None:
    # The file is sorted by customer, then date: event-time order is not the file's order.
    lines = cdnow_path().read_text().splitlines()[:401]  # header + 400 purchases
    path = tmp_path / "cdnow.txt"
    path.write_text("\n".join(lines) + "\n")
    rows = [line.split() for line in lines[1:]]
    until = "1997-02-15"
    want = sorted(
        (f"cdnow-{n}", customer_id(r[0]), date_ms(r[1])) for n, r in enumerate(rows, start=2) if r[1] <= "19970215"
    )
    assert 0 < len(want) < len(rows)

    code, stdout, stderr = await replay(stack, str(path), "--format", "cdnow", "--until", until)
    assert code == 0, stderr
    assert f"replayed {len(want)} events" in stdout and "events/s" in stdout

    events = check_order_and_keys(await consume_all(stack, "events.purchase"))
    assert sorted((e["event_id"], e["customer_id"], e["ts"]) for e in events) == want
    assert len({r.partition for r in await consume_all(stack, "events.purchase")}) > 1  # spread over partitions by key


CSV = """\
event_id,customer_id,type,ts,action,category,order_id,amount,kind,score,attributes.city,attributes.age
,alice,purchase,2023-11-16T10:00:00+00:00,,,o1,19.90,,,,
,bob,browse,{t1},view,shoes,,,,,,
b2,bob,browse,{t0},add_to_cart,shoes,,,,,,
,alice,profile,{t0},,,,,,,Berlin,33
,carol,feedback,2023-11-15T08:00:00+01:00,,,,,nps,9,,
,alice,refund,2023-11-17T10:00:00Z,,,o1,5,,,,
,bob,browse,{t1},view,shoes,,,,,,
""".format(t0=T0, t1=T0 + DAY)


async def test_csv_rows_go_to_the_topic_of_their_type_with_stable_ids(stack: DevStack, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    code, _, stderr = await replay(stack, str(path), "--format", "csv")
    assert code == 0, stderr
    code, _, stderr = await replay(stack, str(path), "--format", "csv")  # the same file again
    assert code == 0, stderr

    first: dict[str, list[dict[str, object]]] = {}
    for topic in ("events.browse", "events.purchase", "events.feedback", "events.profile"):
        events = check_order_and_keys(await consume_all(stack, topic), replays=2)
        half = len(events) // 2
        assert len(events) == 2 * half
        by_customer: dict[object, list[dict[str, object]]] = {}
        for e in events:
            by_customer.setdefault(e["customer_id"], []).append(e)
        for evs in by_customer.values():  # each customer's events: the first replay, then the same again
            n = len(evs) // 2
            assert [e["event_id"] for e in evs[:n]] == [e["event_id"] for e in evs[n:]]
        first[topic] = [e for evs in by_customer.values() for e in evs[: len(evs) // 2]]

    assert {e["type"] for e in first["events.purchase"]} == {"purchase", "refund"}
    assert [e["action"] for e in first["events.browse"]] == ["add_to_cart", "view", "view"]  # event-time order
    bob_views = [e["event_id"] for e in first["events.browse"] if e["action"] == "view"]
    assert len(set(bob_views)) == 2, "identical rows still get distinct ids"
    assert first["events.browse"][0]["event_id"] == "b2"  # a given id is kept
    (purchase,) = [e for e in first["events.purchase"] if e["type"] == "purchase"]
    assert purchase["amount"] == 19.9 and purchase["order_id"] == "o1" and "kind" not in purchase
    (profile,) = first["events.profile"]
    assert profile["attributes"] == {"city": "Berlin", "age": 33}
    (feedback,) = first["events.feedback"]
    assert feedback["score"] == 9 and feedback["kind"] == "nps"


def jsonl_events() -> list[dict[str, object]]:
    """Two customers' purchases over three days, written out of time order."""
    events: list[dict[str, object]] = []
    for i in range(30):
        cid = f"c{i % 2}"
        ts = T0 + (29 - i) * 2 * 3_600_000  # newest first in the file
        events.append(
            {"event_id": f"j{i}", "customer_id": cid, "type": "purchase", "ts": ts, "order_id": f"o{i}", "amount": 10.0}
        )
    return events


async def test_jsonl_replayed_twice_counts_once_in_the_engine(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in jsonl_events()) + b"\n")
    for _ in range(2):
        code, _, stderr = await replay(stack, str(path), "--format", "jsonl")
        assert code == 0, stderr
    events = check_order_and_keys(await consume_all(stack, "events.purchase"), replays=2)
    assert len(events) == 60

    async with RunningWorker(settings_for(stack, clock="event", timers=False, quantiles_refresh_s=0)) as w:
        await w.wait_for(60)
    loaded = await RedisStore(redis_client).load(["c0", "c1"])
    states = {c: CustomerState.loads(loaded[c].blob) for c in ("c0", "c1")}
    assert {c: (s.orders, s.spend) for c, s in states.items()} == {"c0": (15, 150.0), "c1": (15, 150.0)}


async def test_speed_paces_by_event_time_and_until_takes_an_rfc3339_time(stack: DevStack, tmp_path: Path) -> None:
    # 21 events one event-time second apart: 20 s of history, 2 s at 10x.
    events = [
        {"event_id": f"s{i}", "customer_id": f"c{i % 3}", "type": "browse", "ts": T0 + i * 1000, "action": "view"}
        for i in range(25)
    ]
    path = tmp_path / "paced.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    until = "2023-11-14T22:13:40Z"  # T0 + 20 s: events 0..20
    code, _, stderr = await replay(stack, str(path), "--format", "jsonl", "--speed", "10x", "--until", until)
    assert code == 0, stderr
    records = await consume_all(stack, "events.browse")
    got = check_order_and_keys(records)
    assert sorted(int(str(e["event_id"])[1:]) for e in got) == list(range(21))
    by_id = {orjson.loads(r.value)["event_id"]: r.timestamp for r in records}  # broker timestamps: when each was sent
    assert by_id["s20"] - by_id["s0"] >= 1800, "20 s of event time took at least ~2 s at 10x"
    assert by_id["s10"] - by_id["s0"] >= 800


async def test_bad_input_and_missing_broker_are_refused_with_a_reason(stack: DevStack, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"customer_id": "a", "type": "purchase", "ts": 1, "order_id": "o", "amount": 1}\n{"customer_id": "a", "type": "teleport", "ts": 2}\n'
    )
    code, _, stderr = await replay(stack, str(path), "--format", "jsonl")
    assert code == 1 and "bad.jsonl:2" in stderr and "'type'" in stderr
    assert await consume_all(stack, "events.purchase") == [], "nothing is produced from a refused file"
    code, _, stderr = await replay(None, str(path), "--format", "jsonl")
    assert code == 2 and "SEGENGINE_KAFKA_BOOTSTRAP" in stderr
