"""Discovered segments, streamed: the pack `segengine discover` writes for CDNOW, loaded by a
worker on the real embedded broker and Redis, and all 69,659 purchases replayed through it
(event clock, timers on, until time has caught up with the last purchase). Every one of the
23,570 customers is then in the cluster scikit-learn's k-means placed it in at the data's
end, and those whose nearest centroid changed with time alone were moved by a timer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from segengine.datasets import CDNOW_CUSTOMERS, CDNOW_PURCHASES, cdnow_path
from segengine.devstack import DevStack
from segengine.discover import DEFAULT_NAME, cluster, feature_rows, fold_history, pack_text
from segengine.replay import load, produce
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import RunningWorker, consume_all, settings_for, values

pytest.importorskip("sklearn")

FEATURES = ("orders_total", "spend_total", "days_since_last_purchase")


async def test_a_cdnow_replay_places_every_customer_in_its_kmeans_cluster(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    states, end = fold_history(cdnow_path(), "cdnow")
    rows = feature_rows(states, FEATURES, end)
    found = cluster(rows, 4, seed=0)
    (tmp_path / "discovered.yaml").write_text(pack_text(found, source="CDNOW_master.txt", when=end))

    await produce(stack.kafka_bootstrap, load(cdnow_path(), "cdnow"))
    settings = settings_for(
        stack, clock="event", rules_file=tmp_path, quantiles_refresh_s=0, rules_reload_s=0, timer_batch=2000
    )
    store = RedisStore(redis_client)
    async with RunningWorker(settings) as w:
        await w.wait_for(CDNOW_PURCHASES, timeout=600)
        assert w.worker.processor.clock.now() == end  # the watermark: the last purchase's time
        deadline = asyncio.get_running_loop().time() + 300
        while await store.timer_backlog(range(6), end):  # time catches up: every check due by then fires
            assert asyncio.get_running_loop().time() < deadline, "timers due by the last purchase did not all fire"
            await asyncio.sleep(0.2)

    loaded = await store.load(rows.customers)
    assert len(rows.customers) == CDNOW_CUSTOMERS
    placed = [CustomerState.loads(loaded[c].blob).members.get(DEFAULT_NAME) for c in rows.customers]
    expected = [f"cluster_{label}" for label in found.labels]
    wrong = [(c, p, e) for c, p, e in zip(rows.customers, placed, expected) if p != e]
    assert wrong == [], f"{len(wrong)} customers placed differently, e.g. {wrong[:3]}"

    changes = values(await consume_all(stack, "segments.changes", timeout=60))
    by_time = [c for c in changes if c["dimension"] == DEFAULT_NAME and c["cause"]["kind"] == "timer"]
    assert len(by_time) > 100, len(by_time)  # days_since_last_purchase moved many with no purchase
