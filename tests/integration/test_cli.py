"""The lookup commands as a user runs them (a subprocess per command) against the real
embedded broker and Redis: `produce` refuses a bad event with its reason code and sends a
good one; `segments --json` and `inspect --json` print what the workers keep."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.store_redis import RedisStore
from tests.integration.support import RunningWorker, consume_all, settings_for, values

NOW = int(time.time() * 1000)


async def segengine(stack: DevStack, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "segengine",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def purchase(event_id: str, customer: str, amount: Any) -> str:
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "type": "purchase",
            "ts": NOW - 3_600_000,
            "order_id": event_id,
            "amount": amount,
        }
    ).decode()


async def test_produce_refuses_a_bad_event_and_sends_a_good_one(stack: DevStack) -> None:
    code, out, err = await segengine(stack, "produce", "events.purchase", purchase("bad-1", "kim", -4))
    assert code == 1 and "bad_value" in err, (out, err)
    code, out, err = await segengine(
        stack, "produce", "events.browse", purchase("bad-2", "kim", 4)
    )  # a purchase on the browse topic
    assert code == 1 and "unknown_type" in err, (out, err)
    code, out, err = await segengine(stack, "produce", "events.purchase", "{not json")
    assert code == 1 and "not_json" in err, (out, err)

    code, out, err = await segengine(stack, "produce", "events.purchase", purchase("good-1", "kim", 4.5))
    assert code == 0, (out, err)
    sent = values(await consume_all(stack, "events.purchase"))
    assert [e["event_id"] for e in sent] == ["good-1"]  # the refused ones never reached the topic
    (record,) = await consume_all(stack, "events.purchase")
    assert record.key == b"kim" and f"offset {record.offset}" in out


async def test_segments_and_inspect_print_what_the_workers_keep(stack: DevStack, redis_client: Redis) -> None:
    for n, customer in enumerate(("lea", "max", "noa")):
        code, out, err = await segengine(
            stack, "produce", "events.purchase", purchase(f"p{n}", customer, 30.0 + 200 * n)
        )
        assert code == 0, (out, err)
    async with RunningWorker(settings_for(stack)) as w:
        await w.wait_for(3)

    code, out, err = await segengine(stack, "segments", "--json")
    assert code == 0, err
    assert orjson.loads(out) == {"population": await RedisStore(redis_client).population()}
    assert sum(orjson.loads(out)["population"]["value_tier"].values()) == 3

    code, out, err = await segengine(stack, "inspect", "noa", "--json")
    assert code == 0, err
    report = orjson.loads(out)
    assert report["customer_id"] == "noa" and report["memberships"]["value_tier"]["segment"] == "A"
    assert report["features"]["spend_total"] == 430.0 and report["changes"]

    code, out, err = await segengine(stack, "inspect", "nobody")
    assert code == 1 and "unknown customer" in err
