"""The metrics bundle's hooks, on a registry of the test's own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from segengine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, Output
from segengine.metrics import Metrics
from segengine.records import TopicPartition
from segengine.writes import produced_at as _produced_at


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_each_bundle_has_its_own_registry_and_process_metrics() -> None:
    a, b = Metrics(), Metrics(CollectorRegistry())
    for m in (a, b):
        assert value(m, "process_cpu_seconds_total") is not None
        assert value(m, "python_info", **_python_labels(m)) == 1
    a.dlq.labels("not_json").inc()
    assert (
        value(a, "segengine_dlq_total", code="not_json") == 1
        and value(b, "segengine_dlq_total", code="not_json") is None
    )
    assert value(Metrics(process=False), "process_cpu_seconds_total") is None


def _python_labels(m: Metrics) -> dict[str, str]:
    for family in m.registry.collect():
        if family.name == "python_info":
            return dict(family.samples[0].labels)
    raise AssertionError("no python_info")


def test_consumer_lag_follows_the_assignment() -> None:
    m = Metrics(process=False)
    m.set_consumer_lag({("events.browse", 0): 5, ("events.browse", 1): 3})
    assert value(m, "segengine_consumer_lag_records", topic="events.browse", partition="0") == 5
    m.set_consumer_lag({("events.browse", 1): 0})  # partition 0 went to another worker
    assert value(m, "segengine_consumer_lag_records", topic="events.browse", partition="0") is None
    assert value(m, "segengine_consumer_lag_records", topic="events.browse", partition="1") == 0


def test_actions_by_name_and_outcome() -> None:
    m = Metrics(process=False)
    m.action("retention", "sent")
    m.action("retention", "cooled_down", 2)
    m.action("loyalty", "suppressed")
    assert value(m, "segengine_actions_total", action="retention", outcome="sent") == 1
    assert value(m, "segengine_actions_total", action="retention", outcome="cooled_down") == 2
    assert value(m, "segengine_actions_total", action="loyalty", outcome="suppressed") == 1
    with pytest.raises(ValueError):
        m.action("retention", "dropped")


def test_change_latency_from_the_produce_time() -> None:
    m = Metrics(process=False)
    m.changes_published([1_000, 1_200, 5_000], now_ms=1_300)  # 300 ms, 100 ms, a clock ahead: 0
    assert value(m, "segengine_event_to_change_seconds_count") == 3
    assert value(m, "segengine_event_to_change_seconds_sum") == pytest.approx(0.4)
    assert value(m, "segengine_event_to_change_seconds_bucket", le="0.25") == 2


def test_the_produce_time_of_each_change_comes_from_its_causing_record() -> None:
    change = {"change_id": "x"}
    outputs = [
        Output(CHANGES_TOPIC, "c1", change, TopicPartition("events.purchase", 2), 40),
        Output(MEMBERS_TOPIC, "c1", {"memberships": {}}, TopicPartition("events.purchase", 2), 40),  # not a change
        Output(CHANGES_TOPIC, "c2", change, TopicPartition("events.browse", 0), 7),
        Output(
            CHANGES_TOPIC, "c3", change, TopicPartition("events.browse", 0), 3
        ),  # from an older batch's outbox: unknown here
        Output(CHANGES_TOPIC, "c4", change, None, None),  # a timer's change: no record
    ]
    produced = {("events.purchase", 2, 40): 111, ("events.browse", 0, 7): 222}
    assert sorted(_produced_at(outputs, produced)) == [111, 222]
    many = [Output(CHANGES_TOPIC, f"c{i}", change, TopicPartition("events.browse", 0), i) for i in range(10_000)]
    assert (
        len(_produced_at(many, {("events.browse", 0, i): i + 1 for i in range(10_000)}, sample=100)) == 100
    )  # sampled


async def test_redis_calls_are_timed_and_failures_counted() -> None:
    m = Metrics(process=False)
    with m.redis_call("load"):
        pass
    with pytest.raises(RedisConnectionError), m.redis_call("save"):
        raise RedisConnectionError("down")
    with pytest.raises(KeyError), m.redis_call("save"):
        raise KeyError("not a Redis error")
    assert value(m, "segengine_redis_command_seconds_count", command="load") == 1
    assert value(m, "segengine_redis_command_seconds_count", command="save") == 2
    assert value(m, "segengine_redis_errors_total") == 1
