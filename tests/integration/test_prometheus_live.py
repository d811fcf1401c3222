"""A real Prometheus (Debian's ``prometheus`` binary, which ``make test`` installs) scrapes a
worker running on the embedded stack, once a second, with the recording and alert rules of
deploy/prometheus loaded; the test reads what it sees through Prometheus's HTTP API."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.store_redis import FIELD_SEP
from tests.integration.support import KEYS, RunningWorker, produce, settings_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
DAY = 86_400_000
NOW = int(time.time() * 1000)
CUSTOMERS = [f"live-cust-{i:04d}" for i in range(30)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def purchase(n: int, customer: str, amount: float) -> dict[str, object]:
    return {
        "event_id": f"live-p{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": NOW - DAY,
        "order_id": f"o{n}",
        "amount": amount,
    }


def browse(n: int, customer: str) -> dict[str, object]:
    return {"event_id": f"live-b{n}", "customer_id": customer, "type": "browse", "ts": NOW - DAY, "action": "view"}


class Prometheus:
    """``prometheus`` on a free loopback port, scraping ``target`` every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted(RULES.glob("*.yml"))],
            "scrape_configs": [{"job_name": "segengine", "static_configs": [{"targets": [target]}]}],
        }))  # fmt: skip
        self.data = workdir / "data"
        self.log = workdir / "prometheus.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail(
                "prometheus is not installed: `make test` installs it (Debian package prometheus)", pytrace=False
            )
        self.proc = await asyncio.create_subprocess_exec(
            exe, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            stdout=asyncio.subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()}", pytrace=False)
            try:
                async with session.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        pytest.fail(f"prometheus was not ready in 30 s:\n{self.log.read_text()}", pytrace=False)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def query(session: aiohttp.ClientSession, prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{prom.url}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


async def eventually(check: Any, what: str, timeout: float = 30) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: not seen in {timeout} s (last: {last!r})")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def test_prometheus_scrapes_a_worker_and_sees_what_it_did(
    stack: DevStack,
    redis_client: Redis,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    first = [(c, purchase(i, c, 20.0 + 17 * i)) for i, c in enumerate(CUSTOMERS)]
    await produce(stack, "events.purchase", first)
    http_port = free_port()
    settings = settings_for(stack, http_port=http_port, http_host="127.0.0.1")
    prom = Prometheus(tmp_path, f"127.0.0.1:{http_port}")
    async with RunningWorker(settings) as w:
        try:
            await w.wait_for(len(first))
            await prom.start(session)

            async def applied() -> float | None:
                rows = await query(session, prom, 'sum(segengine_events_total{job="segengine",outcome="applied"})')
                return float(rows[0]["value"][1]) if rows else None

            assert (
                await eventually(lambda: _equals(applied, len(first)), "segengine_events_total == first batch") is True
            )

            # More events: Prometheus sees the counter grow by exactly as many.
            more = [(c, browse(i, c)) for i, c in enumerate(CUSTOMERS)] + [
                (c, purchase(100 + i, c, 500.0)) for i, c in enumerate(CUSTOMERS[:10])
            ]
            await produce(stack, "events.browse", more[: len(CUSTOMERS)])
            await produce(stack, "events.purchase", more[len(CUSTOMERS) :])
            await w.wait_for(len(first) + len(more))
            assert (
                await eventually(lambda: _equals(applied, len(first) + len(more)), "segengine_events_total grown")
                is True
            )

            # The population gauges in Prometheus equal /segments and the counters in Redis.
            async with session.get(f"http://127.0.0.1:{http_port}/segments") as resp:
                assert resp.status == 200
                api = (await resp.json())["population"]
            raw = await redis_client.hgetall(KEYS.population(0))
            redis_counts = {tuple(k.decode().split(FIELD_SEP, 1)): int(v) for k, v in raw.items()}
            assert {(d, s): n for d, segs in api.items() for s, n in segs.items()} == redis_counts
            assert sum(n for (d, _), n in redis_counts.items() if d == "value_tier") == len(CUSTOMERS)

            async def population() -> dict[tuple[str, str], int] | None:
                rows = await query(session, prom, 'segengine_segment_population{job="segengine"}')
                seen = {(r["metric"]["dimension"], r["metric"]["segment"]): int(float(r["value"][1])) for r in rows}
                return seen if seen == redis_counts else None

            await eventually(population, f"segengine_segment_population == /segments {redis_counts}")

            # The new metrics made it through: produce -> change latency, Redis latency, consumer lag (0: caught up).
            rows = await query(session, prom, "segengine_event_to_change_seconds_count")
            assert rows and float(rows[0]["value"][1]) > 0
            rows = await query(session, prom, 'segengine_redis_command_seconds_count{command="save"}')
            assert rows and float(rows[0]["value"][1]) > 0

            async def caught_up() -> list[dict[str, Any]] | None:
                rows = await query(session, prom, "segengine_consumer_lag_records")
                topics = {r["metric"]["topic"] for r in rows}
                done = {"events.purchase", "events.browse"} <= topics and all(float(r["value"][1]) == 0 for r in rows)
                return rows if done else None

            await eventually(caught_up, "consumer lag gauges at 0 for the consumed topics")

            # The recording and alert rules load and evaluate without error in a real Prometheus.
            async with session.get(f"{prom.url}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) >= 20
            await eventually(lambda: _rules_healthy(session, prom), "every rule evaluated with health ok")
            assert await query(session, prom, 'segengine:events:rate5m{outcome="applied"}')

            # No customer id in any label of any series Prometheus holds.
            async with session.get(f"{prom.url}/api/v1/series", params={"match[]": '{job="segengine"}'}) as resp:
                series = (await resp.json())["data"]
            assert len(series) > 50
            labels = {v for s in series for v in s.values()}
            assert not {v for v in labels if any(c in v for c in CUSTOMERS)}
        finally:
            await prom.stop()
    assert prom.proc is not None and prom.proc.returncode is not None

    # Nor in the worker's logs above debug level.
    leaked = [
        r.getMessage()
        for r in caplog.records
        if r.levelno > logging.DEBUG and any(c in r.getMessage() for c in CUSTOMERS)
    ]
    assert not leaked


async def _equals(read: Any, expected: float) -> bool | None:
    value = await read()
    return True if value == expected else None


async def _rules_healthy(session: aiohttp.ClientSession, prom: Prometheus) -> bool:
    async with session.get(f"{prom.url}/api/v1/rules") as resp:
        groups = (await resp.json())["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return all(r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20") for r in rules)
