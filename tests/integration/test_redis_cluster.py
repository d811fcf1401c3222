"""The engine on a real Redis Cluster: three primaries started from the same redis-server
binary (``--cluster-enabled yes``, joined with ``redis-cli --cluster create``), named to the
engine as ``redis+cluster://``. On it: the population counts are exact; an erase leaves no
key naming the customer on any node; the API and the CLI look customers up, whatever bytes
their ids hold. (The CDNOW replay on a cluster is tests/integration/test_cdnow.py.)"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.crc import key_slot

from segengine.devcluster import DevCluster
from segengine.devstack import DevStack, free_port
from segengine.store_redis import RedisStore, connect
from tests.integration.support import RunningWorker, cluster_settings, nonzero, produce, recount_population
from tests.integration.test_erase import erase_event, naming

DAY = 86_400_000
NOW = int(time.time() * 1000)
QUIET = {"quantiles_refresh_s": 0, "rules_reload_s": 0}
ODD_IDS = ["}x", "{a}", "a}:c:b", "{", "}{", "ü-ñ-客户", "seg:{0.1}:c:x", "plain-id"]


async def on_every_node(cluster: DevCluster, needle: str) -> list[str]:
    """Every place on every node that names ``needle`` (a plain client per node: no redirects)."""
    found = []
    for address in cluster.addresses:
        node = Redis.from_url(f"redis://{address}/0")
        try:
            found += [f"{address}: {place}" for place in await naming(node, needle)]
        finally:
            await node.aclose()
    return found


def purchase(n: int, customer: str, amount: float) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-p{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": NOW - (3 - n) * DAY,
        "order_id": f"{customer}-o{n}",
        "amount": amount,
    }


async def test_lookups_and_erase_on_a_cluster_whatever_the_ids_hold(kafka: DevStack, cluster: DevCluster) -> None:
    for customer in ODD_IDS:
        await produce(kafka, "events.purchase", [(customer, purchase(n, customer, 100.0 * n)) for n in (1, 2)])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = cluster_settings(kafka, cluster, http_port=port, http_host="127.0.0.1", **QUIET)
    client = connect(cluster.cluster_url)
    store = RedisStore(client)
    try:
        async with RunningWorker(settings) as w, aiohttp.ClientSession() as http:
            await w.wait_for(2 * len(ODD_IDS), timeout=120)
            layout = await store.layout()
            for customer in ODD_IDS:  # all of a customer's keys in one slot
                assert key_slot(layout.state(customer).encode()) == key_slot(layout.changes(customer).encode())
                async with http.get(f"{base}/customers/{_quote(customer)}") as response:
                    assert response.status == 200, (customer, await response.text())
                    report = await response.json()
                assert report["customer_id"] == customer and report["features"]["orders_total"] == 2
                assert report["memberships"]["value_tier"]["segment"] and report["changes"]
                assert report["next_check"] is not None  # its timer is in its bucket's set

            # The CLI, as a user runs it.
            code, out, err = await _segengine(kafka, cluster, "inspect", "}x", "--json")
            assert code == 0, err
            assert orjson.loads(out)["features"]["spend_total"] == 300.0
            code, out, err = await _segengine(kafka, cluster, "segments", "--json")
            assert code == 0, err
            assert orjson.loads(out) == {"population": await store.population()}
            assert nonzero(await store.population()) == await recount_population(store)

            # Erase: nothing names the customer on any node once the erase is committed.
            erased = "a}:c:b"
            before = await store.population()
            await produce(kafka, "events.profile", [(erased, erase_event(erased))])
            await w.wait_for(2 * len(ODD_IDS) + 1, timeout=120)
            deadline = asyncio.get_running_loop().time() + 60
            while (left := await on_every_node(cluster, erased)) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            assert left == []
            others = [c for c in ODD_IDS if c != erased]
            for kept in ("plain-id", "ü-ñ-客户", "}x"):  # the others stay
                assert await on_every_node(cluster, kept)
            after = await store.population()
            assert sum(after["value_tier"].values()) == sum(before["value_tier"].values()) - 1 == len(others)
            assert nonzero(after) == await recount_population(store)
    finally:
        await client.aclose()


def _quote(customer: str) -> str:
    from urllib.parse import quote

    return quote(customer, safe="")


async def _segengine(kafka: DevStack, cluster: DevCluster, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "SEGENGINE_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "SEGENGINE_REDIS_URL": cluster.cluster_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
