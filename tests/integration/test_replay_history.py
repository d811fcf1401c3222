"""A replay of history yields the history live processing would have published, through
worker restarts and crashes, with the full default rules (every pack: population-ranked
RFM re-scores, loyalty graces, actions) and a rules switch mid-replay.

A deterministic eighth of CDNOW (about 2,950 customers, 8,700 purchases over 18 months) is
replayed as `segengine replay` produces it (event-time order, at full speed) in three
parts, in event-clock mode: a first worker takes part one and stops; a worker process
takes part two and is SIGKILLed right after its first state write (before publishing or
committing); a second worker finishes part two, and the rules change under it (a pack is
added: every customer is re-evaluated at the watermark); a worker process takes part three
and is SIGKILLed right after writing its first timers' decisions; a last worker finishes.

Then, for every dimension but the population-ranked RFM scores (lifecycle, value tier,
loyalty, frequency, ...), each customer's changes on segments.changes (without
the copies at-least-once allows after a crash) are the pure fold's, change_id for
change_id, at the same times (tests/integration/oracle.py): timers decided at their due
times, in order with the customer's purchases, whatever the watermark, the re-scores and
the re-evaluation did meanwhile. For every dimension, RFM included, a customer's changes
never go back in time, and a copy of a change is identical to the first."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from segengine import replay
from segengine.datasets import cdnow_path
from segengine.devstack import DevStack
from segengine.evaluate import rfc3339
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.oracle import Folded, events_from_records, fold_all, last_event_time
from tests.integration.support import (
    FAST_GROUP,
    REPO_ROOT,
    RunningWorker,
    alive,
    at_going_back,
    changes_per_customer,
    consume_all,
    faulty_worker,
    metric,
    murmur2_partition,
    produce,
    settings_for,
    values,
    wait_committed,
    wait_timers_done,
)

GROUP = "segengine-history"
# Every shipped dimension but the population-ranked RFM ones, whose scores are ranked against
# population samples taken while the replay runs (when depends on timing): for those only
# "never back in time" is checked.
RANKED = ("rfm_segment", "recency_score", "frequency_score", "monetary_score")
DIMENSIONS = tuple(d.name for d in load_rules(REPO_ROOT / "rules").dimensions if d.name not in RANKED)
PROBE_PACK = """\
# Added mid-replay: a rules switch re-evaluates every customer at the watermark.
name: probe
dimensions:
  repeat_buyer:
    segments:
      - name: repeat
        when: orders_total >= 2
    default: once
"""


def subset_file(folder: Path, every: int = 8) -> Path:
    """Every ``every``-th CDNOW customer, all of their purchases, in CDNOW's own format."""
    lines = cdnow_path().read_text().splitlines()
    kept = [line for line in lines if line.split() and line.split()[0].isdigit() and int(line.split()[0]) % every == 0]
    path = folder / "cdnow_subset.txt"
    path.write_text("\n".join(kept) + "\n")
    return path


def full_rules(folder: Path) -> Path:
    """A copy of the default rules folder (every shipped pack), to add a pack to later."""
    rules = folder / "rules"
    rules.mkdir()
    for pack in sorted((REPO_ROOT / "rules").glob("*.yaml")):
        (rules / pack.name).write_bytes(pack.read_bytes())
    shutil.copytree(REPO_ROOT / "rules" / "models", rules / "models")  # the CLV model the predictive pack reads
    return rules


def worker_env(stack: DevStack, rules: Path) -> dict[str, str]:
    return {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url,
            "SEGENGINE_GROUP_ID": GROUP, "SEGENGINE_CLOCK": "event", "SEGENGINE_RULES_FILE": str(rules),
            "SEGENGINE_TIMER_INTERVAL_MS": "50", "SEGENGINE_QUANTILES_REFRESH_S": "1", "SEGENGINE_BATCH_MAX_RECORDS": "500",
            **{f"SEGENGINE_{k.upper()}": str(v) for k, v in FAST_GROUP.items()}}  # fmt: skip


async def crash(stack: DevStack, rules: Path, fault: str, part: list[replay.Record]) -> None:
    """A worker process that SIGKILLs itself at ``fault``; ``part`` is replayed once it runs."""
    log = rules.parent / f"{fault}.log"
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *faulty_worker(fault),
            env=worker_env(stack, rules),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )
        try:
            await replay.produce(stack.kafka_bootstrap, part)
            code = await asyncio.wait_for(proc.wait(), 180)  # start, join the group, consume: minutes on a slow machine
        except TimeoutError:
            code = None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    assert code == -signal.SIGKILL, (
        f"the worker process with fault {fault} ended with {code}, not by its SIGKILL; its log ends:\n{tail}"
    )


def worker(stack: DevStack, rules: Path) -> RunningWorker:
    w = RunningWorker(
        settings_for(
            stack,
            **FAST_GROUP,
            group_id=GROUP,
            clock="event",
            rules_file=rules,
            timer_interval_ms=50,
            quantiles_refresh_s=1,
            rules_reload_s=0.5,
            batch_max_records=500,
        )
    )
    return w


def clock_events(until: int) -> list[tuple[str, dict[str, Any]]]:
    """One browse at the last event time on every input partition: whichever worker owns a
    partition at the end has seen the last event time (its watermark), as the replay's
    last records would have shown it live."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < 6:
        key = f"clock-{n}"
        keys.setdefault(murmur2_partition(key.encode(), 6), key)
        n += 1
    return [
        (k, {"event_id": f"{k}-end", "customer_id": k, "type": "browse", "ts": until, "action": "view"})
        for k in keys.values()
    ]


async def wait_metric(
    w: RunningWorker, name: str, at_least: float, labels: dict[str, str] | None = None, timeout: float = 120
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := metric(w, name, labels)) < at_least:
        alive(w)()
        assert asyncio.get_running_loop().time() < deadline, (
            f"{name}{labels or ''} is {value} after {timeout} s, expected {at_least}"
        )
        await asyncio.sleep(0.2)


def decided_ahead(
    per_customer: dict[str, list[dict[str, Any]]], event_ts: dict[tuple[str, int, int], int]
) -> list[str]:
    """Customers with a change caused by an event but decided later than that event's time:
    something decided them at a later time before their own event was read."""
    found = []
    for cid, changes in per_customer.items():
        for c in changes:
            cause = c["cause"]
            if cause["kind"] == "event":
                ts = event_ts.get((cause["topic"], cause["partition"], cause["offset"]))
                if ts is not None and c["at"] != rfc3339(ts):
                    found.append(
                        f"{cid}: {c['dimension']} {c['from']}->{c['to']} at {c['at']} for an event of {rfc3339(ts)}"
                    )
                    break
    return found


def diverging(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    """Where a customer's published history first leaves the fold's, with a little context."""

    def row(c: dict[str, Any]) -> tuple[Any, ...]:
        return (c["dimension"], c["from"], c["to"], c["at"], c["cause"]["kind"], c["change_id"][:8])

    i = next(
        (i for i, (g, w) in enumerate(zip(got, want)) if g["change_id"] != w["change_id"] or g["at"] != w["at"]),
        min(len(got), len(want)),
    )
    return f"at #{i}: engine {[row(c) for c in got[max(0, i - 1) : i + 2]]} / fold {[row(c) for c in want[max(0, i - 1) : i + 2]]}"


async def test_replayed_history_through_restarts_and_crashes_equals_the_pure_fold(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    records = replay.load(subset_file(tmp_path), "cdnow")  # event-time order, as `segengine replay` sends it
    assert len(records) > 8000
    rules = full_rules(tmp_path)
    thirds = [
        records[: len(records) // 3],
        records[len(records) // 3 : 2 * len(records) // 3],
        records[2 * len(records) // 3 :],
    ]

    async with worker(stack, rules) as first:  # part one, then a graceful stop mid-replay
        await replay.produce(stack.kafka_bootstrap, thirds[0])
        await first.wait_for(len(thirds[0]), timeout=180)

    await crash(stack, rules, "kill_after_save", thirds[1])  # part two: killed after its first state write
    async with worker(stack, rules) as second:
        await wait_committed(stack, GROUP, timeout=180, alive=alive(second))
        customers = sum([len(ids) async for ids in RedisStore(redis_client).scan_customers()])
        start = metric(
            second, "segengine_reevaluated_customers_total"
        )  # re-scores count there too: at least this many more
        (rules / "probe.yaml").write_text(PROBE_PACK)  # a rules switch: every customer re-evaluated at the watermark
        await wait_metric(second, "segengine_rules_reloads_total", 1, {"outcome": "applied"})
        await wait_metric(second, "segengine_reevaluated_customers_total", start + customers)

    await crash(stack, rules, "kill_after_timer_save", thirds[2])  # part three: killed after writing timers' decisions
    until = max(r.ts for r in records)
    async with worker(stack, rules) as last:
        await produce(stack, "events.browse", clock_events(until))  # type: ignore[arg-type]
        await wait_committed(stack, GROUP, timeout=240, alive=alive(last))
        await wait_timers_done(stack, until, timeout=180, alive=alive(last))
        assert not last.task.done(), "the worker stopped on its own"  # type: ignore[union-attr]

    inputs = await consume_all(stack, "events.purchase", timeout=60) + await consume_all(
        stack, "events.browse", timeout=60
    )
    by_customer = events_from_records(inputs)
    assert last_event_time(by_customer) == until
    expected: dict[str, Folded] = fold_all(load_rules(rules), by_customer, until)

    published = values(await consume_all(stack, "segments.changes", timeout=120))
    per_customer, copies_differ = changes_per_customer(published)
    failures: list[str] = []  # every finding at once: one slow run tells the whole story
    if copies_differ:
        failures.append(f"{len(copies_differ)} changes published again with other content, e.g. {copies_differ[:2]}")
    beyond = [
        c for c in published if c["at"] > rfc3339(until)
    ]  # the clock is the events' time: nothing happens after the last one
    if beyond:
        failures.append(
            f"{len(beyond)} changes decided after the last event time {rfc3339(until)}, e.g. {[(c['customer_id'], c['dimension'], c['at']) for c in beyond[:3]]}"
        )

    wrong = {}
    for cid, folded in expected.items():
        want = [c for c in folded.changes if c["dimension"] in DIMENSIONS]
        got = [c for c in per_customer.get(cid, []) if c["dimension"] in DIMENSIONS]
        if [(c["change_id"], c["at"]) for c in got] != [(c["change_id"], c["at"]) for c in want]:
            wrong[cid] = diverging(got, want)
    if wrong:
        event_ts = {
            (e.source.topic, e.source.partition, e.source.offset): e.ts for evs in by_customer.values() for e in evs
        }
        ahead = decided_ahead(per_customer, event_ts)
        failures.append(
            f"{len(wrong)} of {len(expected)} customers' lifecycle / value_tier histories differ from the pure fold "
            f"({len(ahead)} customers have an event decided after a later time, e.g. {ahead[:2]}); e.g. "
            + "; ".join(f"{cid} {d}" for cid, d in list(wrong.items())[:4])
        )
    if back := at_going_back(per_customer):
        failures.append(
            f"{len(back)} customers' changes go back in time (all dimensions, RFM included), e.g. {back[:4]}"
        )

    loaded = await RedisStore(redis_client).load(list(expected))
    final = {cid: {d: CustomerState.loads(loaded[cid].blob).members.get(d) for d in DIMENSIONS} for cid in expected}
    if off := {
        cid: (final[cid], f.memberships(DIMENSIONS))
        for cid, f in expected.items()
        if final[cid] != f.memberships(DIMENSIONS)
    }:
        failures.append(
            f"{len(off)} customers end in other segments than the fold (engine, fold), e.g. {list(off.items())[:3]}"
        )
    assert not failures, "\n".join(failures)
