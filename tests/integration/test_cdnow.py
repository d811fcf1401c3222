"""All 69,659 real CDNOW purchases through the engine; every customer's rolling purchase
state equals a batch computation over the same file (pandas), and the change events
equal a pure fold of the same events."""

from __future__ import annotations

from typing import Any

import pandas as pd
from redis.asyncio import Redis

from segengine.datasets import (
    CDNOW_CUSTOMERS,
    CDNOW_PURCHASES,
    DAY_MS,
    cdnow_path,
    customer_id,
    iter_purchase_events,
    read_cdnow,
)
from segengine.devstack import DevStack
from segengine.state import CustomerState
from segengine.store import Loaded
from segengine.store_redis import RedisStore
from tests.integration.support import RunningWorker, produce, settings_for


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


async def test_cdnow_replay_matches_batch_computation(stack: DevStack, redis_client: Redis) -> None:
    purchases = read_cdnow()
    assert len(purchases) == CDNOW_PURCHASES
    await produce(stack, "events.purchase", [(ev["customer_id"], ev) for _, ev in iter_purchase_events(purchases)])
    async with RunningWorker(settings_for(stack, clock="event")) as w:
        await w.wait_for(CDNOW_PURCHASES, timeout=240)

    oracle = batch_oracle()
    assert len(oracle) == CDNOW_CUSTOMERS
    loaded = await RedisStore(redis_client).load(customer_id(c) for c in oracle.index)
    mismatches = oracle_mismatches(oracle, loaded)
    assert not mismatches, f"{len(mismatches)} customers differ, e.g. {mismatches[:3]}"


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
