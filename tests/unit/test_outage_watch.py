"""The dependency watch (segengine.worker.outage) on made-up probes and a made-up clock: one
log line per backoff step, the stop past the timeout, recovery forgotten, 0 = never stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from segengine.errors import DependencyUnavailable
from segengine.settings import Settings
from segengine.worker.outage import DependencyWatch, reason, redis_address


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def watch(timeout: float, answers: dict[str, list[str | None]], clock: Clock) -> DependencyWatch:
    def probe(name: str):  # type: ignore[no-untyped-def]
        async def ask() -> str | None:
            return answers[name].pop(0)

        return ask

    settings = Settings(dependency_timeout_s=timeout)
    return DependencyWatch(settings, {name: probe(name) for name in answers}, lambda exc: None, clock)


def test_one_line_per_backoff_step_then_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rounds = 61  # every 0.5 s for 30 s
    w = watch(30, {"Redis at r:1": ["refused"] * rounds, "the Kafka broker at k:2": [None] * rounds}, clock)
    lost = None
    with caplog.at_level(logging.WARNING, logger="segengine.worker.outage"):
        for _ in range(rounds):
            lost = asyncio.run(w.check())
            if lost is not None:
                break
            clock.t += 0.5
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" for ")[1].split(" s ")[0] for line in lines] == ["0", "1", "2", "4", "8", "16"]
    assert all(line.startswith("Redis at r:1 out of reach") and "(refused)" in line for line in lines)
    assert isinstance(lost, DependencyUnavailable) and isinstance(lost, ConnectionError)
    assert str(lost).startswith("Redis at r:1 out of reach for 30 s (refused)")


def test_a_dependency_back_in_reach_starts_over(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    answers: list[str | None] = ["refused"] * 10 + [None] + ["refused"] * 10
    w = watch(6, {"Redis at r:1": answers}, clock)
    with caplog.at_level(logging.WARNING, logger="segengine.worker.outage"):
        results = []
        for _ in range(21):
            results.append(asyncio.run(w.check()))
            clock.t += 0.5
    assert all(r is None for r in results)  # never 6 s in a row
    assert any("reachable again after 5 s" in r.getMessage() for r in caplog.records)


def test_zero_never_stops() -> None:
    clock = Clock()
    w = watch(0, {"Redis at r:1": ["refused"] * 100}, clock)
    for _ in range(100):
        assert asyncio.run(w.check()) is None
        clock.t += 60


def test_reasons_name_hosts_never_customer_data() -> None:
    assert reason(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 6390)")).startswith(
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )
    assert reason(KeyError("customer-42")) == "KeyError"  # not a connection error: the type only
    assert redis_address("redis://:secret@cache.internal:6380/2") == "cache.internal:6380"
    assert redis_address("redis://localhost") == "localhost:6379"
