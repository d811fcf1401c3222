"""All 69,659 real CDNOW purchases replayed (``segengine.replay``) through one worker with the
event-time clock, timers on, until time has caught up with the last event (1998-06-30).
Then, for every one of the 23,570 customers, checked against independent oracles:

  - frequency, recency, T and monetary value read from the stored state (the features
    repeat_purchase_days, purchase_recency_days, customer_age_days and repeat_purchase_value
    at the watermark) equal ``lifetimes.utils.summary_data_from_transaction_data`` (daily
    periods, observation end 1998-06-30) over the raw file;
  - the stored memberships equal a batch evaluation of the same rules on the stored state
    at the watermark (``RuleSet.evaluate`` on ``Features(state, at)``): what the event and
    timer path decided incrementally is what the rules say at that moment;
  - the timer-caused changes published are, change_id for change_id, those of a pure fold
    of each customer's purchases followed by its checks due by the watermark."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data
from redis.asyncio import Redis

from segengine.datasets import CDNOW_CUSTOMERS, CDNOW_PURCHASES, DAY_MS, cdnow_path, customer_id
from segengine.devstack import DevStack
from segengine.evaluate import CHANGES_TOPIC, FoldResult, fold_customer, reevaluate_customer, rfc3339
from segengine.events import Event, Source
from segengine.replay import Record, load, produce
from segengine.rules import RuleSet, load_rules
from segengine.state import CustomerState, Features
from segengine.store_redis import RedisStore
from segengine.timers import next_check
from tests.integration.support import RunningWorker, consume_all, settings_for, values

ROOT = Path(__file__).resolve().parents[2]
END = "1998-06-30"
END_DAY = int(datetime.fromisoformat(END).replace(tzinfo=UTC).timestamp() * 1000) // DAY_MS


def lifetimes_summary() -> pd.DataFrame:
    df = pd.read_csv(cdnow_path(), sep=r"\s+", dtype={"customer_id": str, "date": str})
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return summary_data_from_transaction_data(
        df, "customer_id", "date", monetary_value_col="dollar_value", observation_period_end=END, freq="D"
    )


def rfm_from_state(state: CustomerState, at: int) -> tuple[int, int, int, float]:
    """(frequency, recency, T, monetary value): the state's lifetime summary features at
    ``at``, a moment of the observation end day (T counts the days up to it)."""
    assert at // DAY_MS == END_DAY
    f = Features(state, at)
    return f["repeat_purchase_days"], f["purchase_recency_days"], f["customer_age_days"], f["repeat_purchase_value"]


def timer_changes_of_a_pure_fold(rules: RuleSet, records: list[Record], until: int) -> list[str]:
    """The change_ids of every timer decision: each customer's purchases folded in the replayed
    order (checks due by an event's time are decided before it, as the engine does), then its
    checks due by ``until``, each at its due time, as the due loop takes them."""
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for offset, record in enumerate(records):
        ev = orjson.loads(record.value)
        by_customer[ev["customer_id"]].append(
            Event(ev["event_id"], ev["customer_id"], ev["type"], record.ts, ev, Source(record.topic, 0, offset))
        )
    ids: list[str] = []
    for cid, events in by_customer.items():
        state = CustomerState()
        results = [
            fold_customer(rules, state, cid, events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY_MS)
        ]
        decided = results[0].decided_at
        assert decided is not None
        while (due := next_check(rules.time_plan, state, decided)) is not None and due <= until:
            state.pending = []  # published: the outbox is emptied
            decided = max(due, state.max_ts or 0)
            results.append(FoldResult())
            reevaluate_customer(rules, state, cid, decided, results[-1], {"kind": "timer"}, f"timer:{decided}")
        ids += [
            o.value["change_id"]
            for r in results
            for o in r.outputs
            if o.topic == CHANGES_TOPIC and o.value and o.value["cause"]["kind"] == "timer"
        ]
    return ids


async def test_cdnow_replay_with_timers_matches_lifetimes_and_a_batch_evaluation(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    started = time.perf_counter()
    for pack in ("value_tier.yaml", "lifecycle.yaml"):  # the core path: a windowed tier and the lifecycle's thresholds
        shutil.copy(ROOT / "rules" / pack, tmp_path / pack)
    records = load(cdnow_path(), "cdnow")
    assert len(records) == CDNOW_PURCHASES
    replayed = await produce(stack.kafka_bootstrap, records)

    settings = settings_for(
        stack, clock="event", rules_file=tmp_path, quantiles_refresh_s=0, rules_reload_s=0, timer_batch=2000
    )
    async with RunningWorker(settings) as w:
        await w.wait_for(CDNOW_PURCHASES, timeout=120)
        clock, store = w.worker.processor.clock, RedisStore(redis_client)
        at = clock.now()
        assert rfc3339(at) == "1998-06-30T12:00:00.000Z"  # the watermark: the last purchase's time
        deadline = asyncio.get_running_loop().time() + 120
        while await store.timer_backlog(range(6), at):  # time catches up: every check due by then fires
            assert asyncio.get_running_loop().time() < deadline, "timers due by the last event did not all fire"
            await asyncio.sleep(0.2)
    engine_s = time.perf_counter() - started

    rules = load_rules(tmp_path)
    oracle = lifetimes_summary()
    assert len(oracle) == CDNOW_CUSTOMERS
    loaded = await store.load(customer_id(c) for c in oracle.index)
    mismatches, segment_mismatches = [], []
    for row in oracle.itertuples():
        cdnow_id = row.Index
        state = CustomerState.loads(loaded[customer_id(str(cdnow_id))].blob)
        frequency, recency, age, monetary = rfm_from_state(state, at)
        want = (int(row.frequency), int(row.recency), int(row.T))
        if (frequency, recency, age) != want or abs(monetary - row.monetary_value) > 1e-6:
            mismatches.append((cdnow_id, (frequency, recency, age, monetary), (*want, row.monetary_value)))
        batch = {
            d: decision.segment
            for d, decision in rules.evaluate(Features(state, at, rules.derived), state.members, at).items()
        }
        if batch != state.members:
            segment_mismatches.append((cdnow_id, state.members, batch))
    assert not mismatches, f"{len(mismatches)} customers differ from lifetimes, e.g. {mismatches[:3]}"
    assert not segment_mismatches, (
        f"{len(segment_mismatches)} customers' segments differ from a batch evaluation, e.g. {segment_mismatches[:3]}"
    )

    changes = values(await consume_all(stack, "segments.changes", timeout=60))
    assert len({c["change_id"] for c in changes}) == len(changes), "no change published twice"
    by_timer = sorted(c["change_id"] for c in changes if c["cause"]["kind"] == "timer")
    want = sorted(timer_changes_of_a_pure_fold(rules, records, at))
    assert by_timer == want, (
        f"{len(by_timer):,} timer changes published, {len(want):,} in a pure fold; {len(set(want) - set(by_timer)):,} missing"
    )
    print(
        f"\nCDNOW: {CDNOW_PURCHASES:,} purchases replayed at {replayed.eps:,.0f} events/s; engine and timers done in {engine_s:.1f} s;"
        f" {len(changes):,} segment changes, {len(by_timer):,} caused by timers; frequency, recency, T and monetary"
        f" value equal lifetimes' for all {CDNOW_CUSTOMERS:,} customers"
    )
