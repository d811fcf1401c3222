"""All 69,659 real CDNOW purchases through the engine with its state on a real 3-primary
Redis Cluster (segengine.devcluster): every customer's purchase state equals a batch
computation over the same file (pandas), the segment populations equal a recount of every
stored state, and the customers and their counters are on every primary. The same replay
on a single primary, with more checked per customer, is test_cdnow_lifetimes.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from redis.asyncio import Redis

from segengine.datasets import (
    CDNOW_PURCHASES,
    DAY_MS,
    cdnow_path,
    customer_id,
    iter_purchase_events,
    read_cdnow,
)
from segengine.devcluster import DevCluster
from segengine.devstack import DevStack
from segengine.layout import CLUSTER_BUCKETS
from segengine.state import CustomerState
from segengine.store import Loaded
from segengine.store_redis import RedisStore, connect
from tests.integration.support import (
    RunningWorker,
    cluster_settings,
    nonzero,
    produce,
    recount_population,
    rule_packs,
)


def batch_oracle() -> pd.DataFrame:
    """Per customer: orders, spend, first and last purchase day, distinct purchase days."""
    df = pd.read_csv(cdnow_path(), sep=r"\s+", dtype={"customer_id": str, "date": str})
    df["day"] = pd.to_datetime(df["date"], format="%Y%m%d").map(lambda d: int(d.timestamp() // 86400))
    return df.groupby("customer_id").agg(
        orders=("dollar_value", "size"),
        spend=("dollar_value", "sum"),
        first_day=("day", "min"),
        last_day=("day", "max"),
        distinct_days=("day", "nunique"),
    )


async def test_the_cdnow_replay_on_a_cluster_equals_the_batch_oracle(
    kafka: DevStack, cluster: DevCluster, tmp_path: Path
) -> None:
    purchases = read_cdnow()
    await produce(kafka, "events.purchase", [(ev["customer_id"], ev) for _, ev in iter_purchase_events(purchases)])
    rules = rule_packs(tmp_path, "value_tier.yaml", "lifecycle.yaml", "frequency.yaml")  # what purchases move
    settings = cluster_settings(
        kafka, cluster, clock="event", quantiles_refresh_s=0, rules_reload_s=0, rules_file=rules
    )
    async with RunningWorker(settings) as w:
        await w.wait_for(CDNOW_PURCHASES, timeout=600)

    client = connect(cluster.cluster_url)
    try:
        store = RedisStore(client)
        layout = await store.layout()
        assert layout.buckets == CLUSTER_BUCKETS
        oracle = batch_oracle()
        loaded = await store.load(customer_id(c) for c in oracle.index)
        assert not (mismatches := oracle_mismatches(oracle, loaded)), f"{len(mismatches)} differ: {mismatches[:3]}"
        # Exact populations: the buckets' counters added up equal a recount of every state.
        population = await store.population()
        assert nonzero(population) == await recount_population(store)
        assert sum(population["value_tier"].values()) == len(oracle)
    finally:
        await client.aclose()

    # The customers, and their counters, are spread over every primary.
    for address in cluster.addresses:
        node = Redis.from_url(f"redis://{address}/0")
        try:
            customers = [k async for k in node.scan_iter(match="seg:{*}:c:*", count=1000)]
            counters = [k async for k in node.scan_iter(match="seg:{*}:pop", count=1000)]
        finally:
            await node.aclose()
        assert len(customers) > len(oracle) / 6 and counters, (address, len(customers), len(counters))


def oracle_mismatches(oracle: pd.DataFrame, loaded: dict[str, Loaded]) -> list[tuple[Any, ...]]:
    """(customer, stored, batch) for every customer whose stored purchase state differs from the oracle."""
    mismatches = []
    for cdnow_id, row in oracle.iterrows():
        state = CustomerState.loads(loaded[customer_id(str(cdnow_id))].blob)
        got = (
            state.orders,
            round(state.spend, 2),
            state.first_purchase // DAY_MS,
            state.last_purchase // DAY_MS,
            len(state.purchase_days),
        )
        want = (
            int(row.orders),
            round(float(row.spend), 2),
            int(row.first_day),
            int(row.last_day),
            int(row.distinct_days),
        )
        if got != want:
            mismatches.append((cdnow_id, got, want))
    return mismatches
