"""A worker group under churn on a Redis Cluster: three worker processes (``segengine run``)
share one consumer group while a sixteenth of CDNOW (about 1,470 customers, 4,300 purchases
over 18 months, every lifecycle transition among them) is replayed in event-clock mode at a
pace that keeps the load going for about forty seconds. Meanwhile, every few seconds, a
worker is SIGKILLed and started again, a fourth joins, or one leaves with SIGTERM.

Then, once the group has committed everything and the due timers have fired: every
customer's memberships equal the pure fold (tests/integration/oracle.py), every change the
fold makes is on segments.changes (a copy only as at-least-once allows: same id, same
content), no other change is, and no worker exited on its own: each one still running when
stopped leaves with exit code 0.

The group settings are the fast ones (``FAST_GROUP``: session 6 s, heartbeat 250 ms), so a
killed member is noticed within the session timeout and a join or leave takes a heartbeat
or two."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from segengine import replay
from segengine.devcluster import DevCluster
from segengine.devstack import DevStack
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import RedisStore, connect
from tests.integration.oracle import events_from_records, fold_all, last_event_time
from tests.integration.support import (
    FAST_GROUP,
    at_going_back,
    changes_per_customer,
    consume_all,
    produce,
    rule_packs,
    values,
    wait_committed,
    wait_timers_done,
)
from tests.integration.test_replay_history import clock_events, subset_file

log = logging.getLogger(__name__)

GROUP = "segengine-churn"
DIMENSIONS = ("lifecycle", "value_tier")
LOAD_S = 40.0  # the replay's wall duration: churn happens while records flow
MOVE_EVERY_S = 4.0
# kill: SIGKILL a worker and start another; join: a fourth worker; leave: SIGTERM one (3 remain)
SCHEDULE = ("kill", "join", "kill", "leave", "kill", "join", "leave", "kill")


class Workers:
    """Worker processes in one group; each one's stderr kept in its own log file."""

    def __init__(self, kafka: DevStack, cluster: DevCluster, rules: Path, logs: Path) -> None:
        self.env = {
            **os.environ,
            "SEGENGINE_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
            "SEGENGINE_REDIS_URL": cluster.cluster_url,
            "SEGENGINE_GROUP_ID": GROUP,
            "SEGENGINE_CLOCK": "event",
            "SEGENGINE_RULES_FILE": str(rules),
            "SEGENGINE_TIMER_INTERVAL_MS": "50",
            "SEGENGINE_QUANTILES_REFRESH_S": "0",
            "SEGENGINE_RULES_RELOAD_S": "0",
            "SEGENGINE_BATCH_MAX_RECORDS": "200",
            **{f"SEGENGINE_{k.upper()}": str(v) for k, v in FAST_GROUP.items()},
        }
        self.logs = logs
        self.running: list[asyncio.subprocess.Process] = []
        self.started = 0

    async def start(self) -> None:
        self.started += 1
        with open(self.logs / f"worker-{self.started}.log", "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "segengine", "run", env=self.env,
                stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        self.running.append(proc)

    def check(self) -> None:
        """Raise if a worker exited on its own."""
        for proc in self.running:
            if proc.returncode is not None:
                raise AssertionError(f"a worker exited on its own with {proc.returncode}:\n{self.tails()}")

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        self.running.remove(proc)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def leave(self, proc: asyncio.subprocess.Process) -> None:
        """A graceful stop: the worker must finish its batch, commit, and exit 0."""
        self.running.remove(proc)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 120)
        assert code == 0, f"a worker stopped with SIGTERM exited with {code}:\n{self.tails()}"

    async def stop_all(self) -> None:
        for proc in list(self.running):
            await self.leave(proc)

    def tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-8:])
            for path in sorted(self.logs.glob("worker-*.log"))
        )


async def test_a_worker_group_under_churn_on_a_cluster_loses_and_doubles_nothing(
    kafka: DevStack,
    cluster: DevCluster,
    tmp_path: Path,
) -> None:
    rules = rule_packs(tmp_path, "value_tier.yaml", "lifecycle.yaml")
    records = replay.load(subset_file(tmp_path, every=16), "cdnow")
    assert len(records) > 4000
    span_s = (records[-1].ts - records[0].ts) / 1000
    until = max(r.ts for r in records)
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = Workers(kafka, cluster, rules, logs)
    moves: list[str] = []
    rng = random.Random(13)
    try:
        for _ in range(3):
            await workers.start()
        load = asyncio.create_task(replay.produce(kafka.kafka_bootstrap, records, speed=span_s / LOAD_S))
        while not load.done() or len(moves) < len(SCHEDULE):
            await asyncio.sleep(MOVE_EVERY_S)
            workers.check()
            kind = SCHEDULE[len(moves) % len(SCHEDULE)]
            if kind == "join":
                await workers.start()
            elif kind == "leave":
                await workers.leave(rng.choice(workers.running))
            else:
                await workers.kill(rng.choice(workers.running))
                await workers.start()
            moves.append(kind)
            log.info("move %d: %s (%d workers)", len(moves), moves[-1], len(workers.running))
        await load
        await produce(kafka, "events.browse", clock_events(until))  # type: ignore[arg-type]
        await wait_committed(kafka, GROUP, timeout=300, alive=workers.check)
        await wait_timers_done(kafka, until, timeout=300, alive=workers.check, redis_url=cluster.cluster_url)
        workers.check()
        await workers.stop_all()
    finally:
        for proc in workers.running:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    inputs = await consume_all(kafka, "events.purchase", timeout=60) + await consume_all(
        kafka, "events.browse", timeout=60
    )
    by_customer = events_from_records(inputs)
    assert last_event_time(by_customer) == until
    expected = fold_all(load_rules(rules), by_customer, until)
    transitions = {(c["from"], c["to"]) for f in expected.values() for c in f.changes if c["dimension"] == "lifecycle"}
    log.info("lifecycle transitions covered: %s", sorted(transitions, key=str))
    # Every lifecycle segment entered; time alone (timers) and comebacks (events) among the moves.
    assert {to for _, to in transitions} == {"prospect", "new", "active", "at_risk", "churned", "reactivated"}
    assert {("active", "at_risk"), ("at_risk", "churned"), ("churned", "reactivated")} <= transitions

    client = connect(cluster.cluster_url)
    try:
        loaded = await RedisStore(client).load(list(expected))
    finally:
        await client.aclose()
    got = {cid: {d: CustomerState.loads(loaded[cid].blob).members.get(d) for d in DIMENSIONS} for cid in expected}
    want = {cid: f.memberships(DIMENSIONS) for cid, f in expected.items()}
    wrong = {cid: (got[cid], want[cid]) for cid in want if got[cid] != want[cid]}
    assert not wrong, (
        f"after {moves}: {len(wrong)} of {len(want)} customers (engine, fold) differ: {list(wrong.items())[:3]}"
    )

    published = values(await consume_all(kafka, "segments.changes", timeout=120))
    per_customer, copies_differ = changes_per_customer(published)
    assert not copies_differ, f"{len(copies_differ)} changes published again with other content: {copies_differ[:2]}"
    want_ids = {c["change_id"]: c for f in expected.values() for c in f.changes}
    got_ids = {c["change_id"] for cs in per_customer.values() for c in cs}
    missing = [want_ids[i] for i in want_ids.keys() - got_ids]
    assert not missing, f"after {moves}: {len(missing)} of {len(want_ids)} changes never published: {missing[:3]}"
    other = [c for cs in per_customer.values() for c in cs if c["change_id"] not in want_ids]
    assert not other, f"{len(other)} changes published that the fold does not make, e.g. {other[:3]}"
    assert not (back := at_going_back(per_customer)), f"{len(back)} customers' changes go back in time: {back[:3]}"
    twice = [i for i, n in Counter(c["change_id"] for c in published).items() if n > 1]
    log.info("moves %s: %d changes published more than once", moves, len(twice))
