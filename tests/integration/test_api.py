"""The worker's HTTP API on the real embedded broker and Redis: a real worker serving on a
free port; status codes, the bearer token, the shape of every answer; /segments equal to
a recount of every stored membership; any worker answers for any customer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.evaluate import rfc3339
from segengine.layout import CUSTOMER_MATCH
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.store_redis import HISTORY
from segengine.writes import RECENT_FIELDS
from tests.integration.support import KEYS, RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
NOW = int(time.time() * 1000)
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMERS = [f"api-{i:02d}" for i in range(12)]
QUIET: dict[str, Any] = {"timers": False, "quantiles_refresh_s": 0}  # only events move customers while we compare


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def purchase(n: int, customer: str, days_ago: float, amount: float) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-p{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": NOW - int(days_ago * DAY),
        "order_id": f"{customer}-{n}",
        "amount": amount,
    }


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers=headers or {}) as response:
        body = await response.read()
        if response.content_type == "application/json":
            return response.status, orjson.loads(body)
        return response.status, body.decode()


async def ready(http: aiohttp.ClientSession, base: str, timeout: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await get(http, f"{base}/readyz")
        if status == 200 or asyncio.get_running_loop().time() > deadline:
            assert status == 200, body
            return body
        await asyncio.sleep(0.2)


async def recount(redis: Redis) -> dict[str, dict[str, int]]:
    """Segment populations counted from every customer's stored memberships (a full SCAN)."""
    counts: Counter[tuple[str, str]] = Counter()
    async for key in redis.scan_iter(match=CUSTOMER_MATCH, count=500):
        blob = await redis.hget(key, "s")
        if blob is not None:
            counts.update(CustomerState.loads(blob).members.items())
    out: dict[str, dict[str, int]] = {}
    for (dimension, segment), n in counts.items():
        out.setdefault(dimension, {})[segment] = n
    return out


async def test_the_api_of_a_running_worker(stack: DevStack, redis_client: Redis) -> None:
    for i, customer in enumerate(CUSTOMERS):
        await produce(
            stack,
            "events.purchase",
            [
                (customer, purchase(1, customer, 40, 20.0 * (i + 1))),
                (customer, purchase(2, customer, 1 + i % 3, 15.0 * i)),
            ],
        )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        RunningWorker(settings_for(stack, http_port=port, http_host="127.0.0.1", api_token=TOKEN, **QUIET)) as w,
        aiohttp.ClientSession() as http,
    ):
        await w.wait_for(2 * len(CUSTOMERS))

        # Open: liveness, readiness, metrics.
        assert await get(http, f"{base}/healthz") == (200, {"status": "ok"})
        assert await ready(http, base) == {"ready": True, "redis": True, "kafka": True, "partitions": 24}
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            assert response.status == 200 and response.content_type == "text/plain"
        assert 'segengine_events_total{outcome="applied",topic="events.purchase",type="purchase"} 24.0' in text

        # Customer data wants the token.
        for path in ("/segments", f"/customers/{CUSTOMERS[0]}"):
            assert (await get(http, base + path))[0] == 401
            assert (await get(http, base + path, {"Authorization": "Bearer wrong"}))[0] == 401
            assert (await get(http, base + path, {"Authorization": TOKEN}))[0] == 401

        # /segments: exact, equal to a recount of every stored membership.
        status, body = await get(http, f"{base}/segments", AUTH)
        assert status == 200 and set(body) == {"rules_version", "population"}
        assert body["rules_version"] == w.worker.rules.version
        assert {d: {s: n for s, n in segs.items() if n} for d, segs in body["population"].items()} == await recount(
            redis_client
        )
        assert sum(body["population"]["value_tier"].values()) == len(CUSTOMERS)

        # /customers/{id}
        changes = [c for c in values(await consume_all(stack, "segments.changes"))]
        for customer in CUSTOMERS[:3]:
            status, report = await get(http, f"{base}/customers/{customer}", AUTH)
            assert status == 200
            assert set(report) == {
                "customer_id",
                "as_of",
                "rules_version",
                "memberships",
                "features",
                "next_check",
                "changes",
                "home_partition",
                "quarantined",
            }
            assert report["quarantined"] is None
            stored = CustomerState.loads(await redis_client.hget(KEYS.state(customer), "s"))
            assert {d: m["segment"] for d, m in report["memberships"].items()} == stored.members
            assert all(
                set(m) == {"segment", "since", "leaving_since"} and m["since"].endswith("Z")
                for m in report["memberships"].values()
            )
            assert report["features"]["orders_total"] == 2 and report["features"]["spend_total"] == stored.spend
            assert report["home_partition"] == stored.home  # the partition its records arrived on
            due = await redis_client.zscore(KEYS.timers(0, stored.home), customer)
            assert due is not None and report["next_check"] == rfc3339(
                int(due)
            )  # purchases leave their windows: a timer is set
            mine = [c for c in changes if c["customer_id"] == customer]
            kept = [{k: c[k] for k in RECENT_FIELDS} for c in mine[::-1][:HISTORY]]
            assert report["changes"] == kept  # the last change records (their main fields), newest first

        assert (await get(http, f"{base}/customers/nobody-here", AUTH))[0] == 404
        assert (await get(http, f"{base}/customers/{'x' * 128}", AUTH))[0] == 404
        for bad in ("", "x" * 129):
            status, body = await get(http, f"{base}/customers/{bad}", AUTH)
            assert status == 400 and "1 to 128" in body["error"]


async def test_any_worker_answers_for_any_customer(stack: DevStack) -> None:
    for customer in CUSTOMERS:
        await produce(stack, "events.purchase", [(customer, purchase(1, customer, 3, 50.0))])
    ports = free_port(), free_port()
    first = settings_for(stack, http_port=ports[0], http_host="127.0.0.1", **QUIET)
    second = settings_for(stack, http_port=ports[1], http_host="127.0.0.1", **QUIET)
    async with RunningWorker(first) as a, aiohttp.ClientSession() as http:
        await a.wait_for(len(CUSTOMERS))
        async with RunningWorker(second) as b:
            deadline = asyncio.get_running_loop().time() + 60
            while not (a.worker.consumer.assignment() and b.worker.consumer.assignment()):
                assert asyncio.get_running_loop().time() < deadline, "the two workers did not share the partitions"
                await asyncio.sleep(0.2)
            owned_by_a = {tp.partition for tp in a.worker.consumer.assignment()}
            assert owned_by_a and not owned_by_a & {tp.partition for tp in b.worker.consumer.assignment()}
            homes = {c: CustomerState.loads(await a.worker.redis.hget(KEYS.state(c), "s")).home for c in CUSTOMERS}
            elsewhere = [c for c in CUSTOMERS if homes[c] not in owned_by_a]
            assert elsewhere  # a's API is asked about customers it does not own
            for customer in CUSTOMERS:
                answers = [await get(http, f"http://127.0.0.1:{port}/customers/{customer}") for port in ports]
                assert [status for status, _ in answers] == [200, 200]
                assert answers[0][1]["memberships"] == answers[1][1]["memberships"]


async def test_not_ready_without_redis(stack: DevStack) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    no_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=no_redis,
        http_port=port,
        http_host="127.0.0.1",
        quantiles_refresh_s=0,
        rules_reload_s=0,
    )
    async with RunningWorker(settings) as w, aiohttp.ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + 30
        while not w.worker.consumer.assignment():  # only Redis is missing
            assert asyncio.get_running_loop().time() < deadline, "no partitions assigned"
            await asyncio.sleep(0.2)
        assert await get(http, f"{base}/healthz") == (200, {"status": "ok"})
        status, body = await get(http, f"{base}/readyz")
        assert (status, body["ready"], body["redis"], body["kafka"]) == (503, False, False, True)
        assert (await get(http, f"{base}/segments"))[0] == 503  # no token set: open, but Redis is down
        assert (await get(http, f"{base}/customers/someone"))[0] == 503
