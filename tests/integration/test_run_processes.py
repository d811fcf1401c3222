"""``segengine run --processes 2`` on the real embedded stack: one supervisor, two worker
processes in one consumer group, one HTTP API.

Once both children hold partitions (the set's /readyz), 3,000 purchases of 300 customers,
spread over 400 days of event time, are produced. Then: the group commits every record;
every customer's memberships in Redis equal the pure fold (tests/integration/oracle.py);
each child applied some of the events, and the set's /metrics counts them all, the sum of
what the two children's own pages count; SIGTERM stops the set with exit code 0, children
included. A child that dies (SIGKILL) makes the supervisor stop the other one and exit 1,
naming the child that died.

Event-clock mode keeps the oracle deterministic; one record at the last event time on every
partition shows each owner how far time has come, and the timers due by then must fire."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from segengine.datasets import DAY_MS
from segengine.devstack import DevStack
from segengine.processes import listening_socket
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import RedisStore, connect
from tests.integration.oracle import events_from_records, fold_all
from tests.integration.support import (
    FAST_GROUP,
    consume_all,
    murmur2_partition,
    produce,
    purchase,
    rule_packs,
    wait_committed,
    wait_timers_done,
)
from tests.integration.test_metrics_endpoint import OPENMETRICS_ACCEPT, free_port

GROUP = "segengine-processes"
CUSTOMERS = 300
EVENTS = 3000
T0 = 1_577_880_000_000  # 2020-01-01T12:00:00Z
STEP_MS = 400 * DAY_MS // EVENTS
DIMENSIONS = ("lifecycle", "value_tier")
STARTED = re.compile(r"worker process (\d+) started: pid (\d+), API on port (\d+)")
WAIT_S = 300  # a busy CI machine is slower: bound every wait generously, assert on outcomes


class WorkerSet:
    """A ``segengine run --processes 2`` subprocess, its stderr in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, port: int) -> None:
        self.proc = proc
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def check(self) -> None:
        """Raise if the set stopped on its own."""
        if self.proc.returncode is not None:
            raise AssertionError(f"the set exited on its own with {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def children(self) -> dict[int, tuple[int, int]]:
        """index -> (pid, API port), from the supervisor's log."""
        return {int(m[1]): (int(m[2]), int(m[3])) for m in STARTED.finditer(self.log.read_text(errors="replace"))}


@asynccontextmanager
async def worker_set(stack: DevStack, rules: Path, tmp_path: Path) -> AsyncIterator[WorkerSet]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")},
        "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "SEGENGINE_REDIS_URL": stack.redis_url,
        "SEGENGINE_GROUP_ID": GROUP,
        "SEGENGINE_CLOCK": "event",
        "SEGENGINE_RULES_FILE": str(rules),
        "SEGENGINE_TIMER_INTERVAL_MS": "50",
        "SEGENGINE_QUANTILES_REFRESH_S": "0",
        "SEGENGINE_RULES_RELOAD_S": "0",
        "SEGENGINE_BATCH_MAX_RECORDS": "200",
        "SEGENGINE_HTTP_HOST": "127.0.0.1",
        **{f"SEGENGINE_{k.upper()}": str(v) for k, v in FAST_GROUP.items()},
    }
    log = tmp_path / "set.log"
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segengine", "run", "--processes", "2", "--http-port", str(port),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    running = WorkerSet(proc, log, port)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()  # the supervisor only: a child it did not stop gets SIGTERM from the kernel (Linux)
            await proc.wait()
        for pid, _ in running.children().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, orjson.loads(await response.read())


async def until_ready(http: aiohttp.ClientSession, s: WorkerSet) -> dict[str, Any]:
    """The set's /readyz body, once it answers 200 (every child holds partitions)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        s.check()
        try:
            status, body = await get_json(http, f"{s.url}/readyz")
            if status == 200:
                return dict(body)
        except aiohttp.ClientError:
            pass  # not listening yet
        assert asyncio.get_running_loop().time() < deadline, f"the set was not ready in {WAIT_S} s:\n{s.tail()}"
        await asyncio.sleep(0.25)


async def applied_events(http: aiohttp.ClientSession, url: str) -> float:
    """segengine_events_total{outcome=applied}, summed over topics and types, of a /metrics page."""
    async with http.get(f"{url}/metrics", headers={"Accept": OPENMETRICS_ACCEPT}) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    return sum(
        s.value
        for f in openmetrics_families(text)
        for s in f.samples
        if s.name == "segengine_events_total" and s.labels["outcome"] == "applied"
    )


def workload() -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(11)
    records = []
    for n in range(EVENTS):
        cid = f"mp-{rng.randrange(CUSTOMERS):03d}"
        records.append((cid, purchase(f"mp{n}", cid, T0 + n * STEP_MS, rng.choice((5.0, 20.0, 45.0, 120.0)))))
    return records


def clock_purchases(at: int) -> list[tuple[str, dict[str, Any]]]:
    """One purchase at ``at`` on every partition: each owner sees how far event time has come."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < 6:
        keys.setdefault(murmur2_partition(f"mp-clock-{i}".encode(), 6), f"mp-clock-{i}")
        i += 1
    return [(cid, purchase(f"mp-clock-{k}", cid, at, 1.0)) for k, cid in enumerate(keys.values())]


async def test_two_processes_share_the_group_and_serve_one_api(stack: DevStack, tmp_path: Path) -> None:
    rules = rule_packs(tmp_path, "value_tier.yaml", "lifecycle.yaml")
    records = workload()
    until = T0 + (EVENTS - 1) * STEP_MS
    clock = clock_purchases(until)
    async with worker_set(stack, rules, tmp_path) as s, aiohttp.ClientSession() as http:
        ready = await until_ready(http, s)
        assert [p["process"] for p in ready["processes"]] == [0, 1]
        assert all(p["partitions"] > 0 for p in ready["processes"]), ready  # both children are group members
        assert ready["partitions"] == 24  # four input topics of six partitions, between them
        children = s.children()
        assert sorted(children) == [0, 1] and {pid for pid, _ in children.values()} == {
            p["pid"] for p in ready["processes"]
        }

        await produce(stack, "events.purchase", records)  # type: ignore[arg-type]
        await produce(stack, "events.purchase", clock)  # type: ignore[arg-type]
        await wait_committed(stack, GROUP, timeout=WAIT_S, alive=s.check)
        await wait_timers_done(stack, until, timeout=WAIT_S, alive=s.check)

        total = len(records) + len(clock)
        own = [await applied_events(http, f"http://127.0.0.1:{port}") for _, port in children.values()]
        assert all(n > 0 for n in own), f"applied per child: {own}"  # both did part of the work
        assert sum(own) == total
        assert await applied_events(http, s.url) == total  # the set's page: the children's sum

        status, segments = await get_json(http, f"{s.url}/segments")  # a data endpoint, through the set's port
        assert status == 200 and segments["population"]["lifecycle"]

        s.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(s.proc.wait(), WAIT_S)
        assert code == 0, s.tail()
        for pid, _ in children.values():
            assert not pid_running(pid), f"worker process pid {pid} still runs after the set stopped"

    inputs = await consume_all(stack, "events.purchase", timeout=60)
    expected = fold_all(load_rules(rules), events_from_records(inputs), until)
    client = connect(stack.redis_url)
    try:
        loaded = await RedisStore(client).load(list(expected))
    finally:
        await client.aclose()
    got = {cid: {d: CustomerState.loads(loaded[cid].blob).members.get(d) for d in DIMENSIONS} for cid in expected}
    want = {cid: f.memberships(DIMENSIONS) for cid, f in expected.items()}
    assert len(want) == CUSTOMERS + len(clock)
    wrong = {cid: (got[cid], want[cid]) for cid in want if got[cid] != want[cid]}
    assert not wrong, f"{len(wrong)} of {len(want)} customers (engine, fold) differ: {list(wrong.items())[:3]}"
    assert {m["lifecycle"] for m in want.values()} >= {"active", "churned"}  # the fold moves customers both ways


async def test_a_child_that_dies_stops_the_set_with_an_error_naming_it(stack: DevStack, tmp_path: Path) -> None:
    rules = rule_packs(tmp_path, "value_tier.yaml", "lifecycle.yaml")
    async with worker_set(stack, rules, tmp_path) as s, aiohttp.ClientSession() as http:
        ready = await until_ready(http, s)
        survivor, victim = (p["pid"] for p in ready["processes"])
        os.kill(victim, signal.SIGKILL)
        code = await asyncio.wait_for(s.proc.wait(), WAIT_S)
        assert code == 1, s.tail()
        assert f"worker process 1 (pid {victim}) was killed by SIGKILL; the other 1 were stopped" in s.tail()
        assert not pid_running(survivor), "the other worker process still runs"


def pid_running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_each_child_api_socket_is_bound_and_listening_before_the_child_starts() -> None:
    """The port is held from the moment it is chosen: a second socket (the next child's, another
    program's) cannot get it, which a port chosen and released for the child to bind could."""
    with listening_socket() as first, listening_socket() as second:
        assert first.getsockname()[1] != second.getsockname()[1]
        assert first.get_inheritable() and second.get_inheritable()
        with socket.create_connection(first.getsockname()[:2], timeout=5):
            pass  # listening already: a connection made now waits in its backlog for the child
        with socket.socket() as intruder, pytest.raises(OSError):
            intruder.bind(first.getsockname()[:2])
