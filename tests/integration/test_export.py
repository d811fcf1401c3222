"""Audience export on the real embedded broker and Redis: customers produced through a running
worker, then `export` (a subprocess, as a user runs it) and ``GET /segments/{d}/{s}/members``
followed page by page; both give exactly the segment's members as the states in Redis hold
them and as the events produced make them, never an erased customer."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack, free_port
from segengine.evaluate import rfc3339
from segengine.layout import CUSTOMER_MATCH, customer_of
from segengine.state import CustomerState
from tests.integration.support import RunningWorker, produce, settings_for

DAY = 86_400_000
NOW = int(time.time() * 1000)
TOKEN = "export-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUIET: dict[str, Any] = {"timers": False, "quantiles_refresh_s": 0}  # only events move customers while we compare
# value_tier: A from 250 spent in a year, B from 60, else C. Ten customers each; one id needs CSV quoting.
AMOUNTS = {"A": 300.0, "B": 100.0, "C": 20.0}
CUSTOMERS = {f"exp-{i:02d}": "ABC"[i % 3] for i in range(30)} | {'exp-"q",30': "A"}
ERASED = "exp-00"  # in A until erased
# The command as `segengine export` runs it (cli.py wires the same function).


async def export(redis_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "SEGENGINE_REDIS_URL": redis_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "segengine",
        "export",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers=headers or {}) as response:
        body = await response.read()
        assert response.content_type == "application/json", body
        return response.status, orjson.loads(body)


async def stored_members(redis: Redis, dimension: str, segment: str) -> dict[str, str | None]:
    """customer id -> member_since, from every customer's state in Redis (an independent scan)."""
    found: dict[str, str | None] = {}
    async for key in redis.scan_iter(match=CUSTOMER_MATCH, count=500):
        blob = await redis.hget(key, "s")
        if blob is None:
            continue
        state = CustomerState.loads(blob)
        if state.members.get(dimension) == segment:
            since = state.member_since.get(dimension)
            found[str(customer_of(key))] = None if since is None else rfc3339(since)
    return found


async def test_export_and_the_members_api_list_exactly_the_segment(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    purchases = [
        (cid, {"event_id": f"{cid}-p1", "customer_id": cid, "type": "purchase", "ts": NOW - DAY,
               "order_id": f"{cid}-o1", "amount": AMOUNTS[tier]})
        for cid, tier in CUSTOMERS.items()
    ]  # fmt: skip
    await produce(stack, "events.purchase", purchases)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = settings_for(stack, http_port=port, http_host="127.0.0.1", api_token=TOKEN, **QUIET)
    async with RunningWorker(settings) as w, aiohttp.ClientSession() as http:
        await w.wait_for(len(purchases), timeout=120)
        erase = {"event_id": f"{ERASED}-erase", "customer_id": ERASED, "type": "erase", "ts": NOW}
        await produce(stack, "events.profile", [(ERASED, erase)])
        await w.wait_for(len(purchases) + 1, timeout=120)

        expected = {cid for cid, tier in CUSTOMERS.items() if tier == "A"} - {ERASED}
        in_redis = await stored_members(redis_client, "value_tier", "A")
        assert set(in_redis) == expected  # what the events made, as Redis holds it
        assert all(since is not None and since.endswith("Z") for since in in_redis.values())

        # The command: CSV to a file (format from the extension), JSON Lines to stdout.
        target = tmp_path / "audience.csv"
        code, out, err = await export(
            stack.redis_url, "--dimension", "value_tier", "--segment", "A", "--output", str(target)
        )
        assert code == 0, err
        assert f"{len(expected)} customers of value_tier=A written to" in out
        assert sorted(p.name for p in tmp_path.iterdir()) == ["audience.csv"]  # no partial file left
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
        assert {r["customer_id"]: r["member_since"] for r in rows} == in_redis and len(rows) == len(expected)
        assert {(r["dimension"], r["segment"]) for r in rows} == {("value_tier", "A")}

        code, out, err = await export(stack.redis_url, "--dimension", "value_tier", "--segment", "C")
        assert code == 0, err
        lines = [orjson.loads(line) for line in out.splitlines()]
        assert {r["customer_id"]: r["member_since"] for r in lines} == await stored_members(
            redis_client, "value_tier", "C"
        )
        assert len(lines) == 10 and all(
            set(r) == {"customer_id", "dimension", "segment", "member_since"} for r in lines
        )

        # Refusals: an unknown audience (exit 2, one line naming the known ones); Redis out of reach (exit 1).
        code, out, err = await export(stack.redis_url, "--dimension", "value_tier", "--segment", "Z")
        assert (code, out) == (2, "") and "A, B, C" in err and len(err.strip().splitlines()) == 1, err
        code, out, err = await export(stack.redis_url, "--dimension", "tier", "--segment", "A")
        assert code == 2 and "value_tier" in err and "lifecycle" in err, err
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        never = tmp_path / "never.jsonl"
        code, out, err = await export(  # the option overrides SEGENGINE_REDIS_URL
            stack.redis_url, "--redis-url", nowhere, "--dimension", "value_tier", "--segment", "A", "-o", str(never)
        )
        assert code == 1 and "cannot reach Redis" in err and len(err.strip().splitlines()) == 1, err
        assert not never.exists()

        # The API: pages of at most a few customers each, followed until next_cursor is null.
        url = f"{base}/segments/value_tier/A/members"
        listed: list[dict[str, Any]] = []
        pages, cursor = 0, None
        while True:
            query = "?limit=3" + ("" if cursor is None else f"&cursor={cursor}")
            status, body = await get(http, url + query, AUTH)
            assert status == 200 and set(body) == {"members", "next_cursor"}, body
            listed += body["members"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert isinstance(cursor, str) and pages < 1000
        assert pages > 2
        assert {m["customer_id"]: m["member_since"] for m in listed} == in_redis
        assert {(m["dimension"], m["segment"]) for m in listed} == {("value_tier", "A")}

        status, body = await get(http, f"{base}/segments/value_tier/A/members", AUTH)  # default limit: 100
        assert status == 200

        # Token-protected like /customers and /segments; bad parameters 400; unknown audiences 404.
        assert (await get(http, url))[0] == 401
        assert (await get(http, url, {"Authorization": "Bearer wrong"}))[0] == 401
        for bad in ("limit=0", "limit=1001", "limit=ten", "cursor=abc", f"cursor={2**64}"):
            status, body = await get(http, f"{url}?{bad}", AUTH)
            assert status == 400 and "error" in body, (bad, body)
        for path in ("/segments/value_tier/Z/members", "/segments/nope/A/members"):
            status, body = await get(http, base + path, AUTH)
            assert status == 404 and "unknown" in body["error"], body
