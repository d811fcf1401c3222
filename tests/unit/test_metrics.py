"""The metrics bundle's hooks and what /metrics serves, on a registry of the test's own."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

import segengine
from segengine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, Output
from segengine.events import Rejected, Source
from segengine.metrics import Metrics, wants_openmetrics
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


# -- what /metrics serves: the format asked for, no *_created series, build info ---------------

# What Prometheus 2.x sends by default (OpenMetrics first), and the shape of what it sends with
# `scrape_protocols: [PrometheusText0.0.4, OpenMetricsText1.0.0]` (the text format first).
PROMETHEUS_DEFAULT_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_TEXT_FIRST_ACCEPT = (
    "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;q=0.3"
)
_PURCHASES = {"topic": "events.purchase", "type": "purchase", "outcome": "applied"}


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_DEFAULT_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; version=1.0.0; charset=utf-8", True),
        ("text/plain;q=0.5, application/openmetrics-text;q=0.5", True),  # a tie: the richer format
        (PROMETHEUS_TEXT_FIRST_ACCEPT, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/json", False),
        ("application/openmetrics-text;q=0", False),  # "not this one"
        ("application/openmetrics-text;q=x", False),  # malformed: not acceptable
        ("application/openmetrics-text;q=2", False),
    ],
)
def test_openmetrics_only_when_the_scraper_prefers_it(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


def _busy_metrics() -> Metrics:
    """A bundle with counter and histogram children, hence ``_created`` samples to leave out."""
    m = Metrics()
    m.events.labels("events.purchase", "purchase", "applied").inc(3)
    m.dlq.labels("not_json").inc()
    m.changes.labels("value_tier", "B", "A").inc()
    m.action("retention", "sent")
    m.changes_published([1_000], now_ms=1_100)
    with m.redis_call("load"):
        pass
    m.rules_info.info({"version": "tiers@abc"})
    return m


def test_the_classic_text_format_by_default_without_created_series() -> None:
    m = _busy_metrics()
    assert m.registry.get_sample_value("segengine_events_created", _PURCHASES) is not None  # the client makes them
    body, content_type = m.exposition("")
    assert content_type == "text/plain; version=1.0.0; charset=utf-8"
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["segengine_events"].type == "counter"
    assert [(s.name, s.labels, s.value) for s in families["segengine_events"].samples] == [
        ("segengine_events_total", _PURCHASES, 3.0)
    ]
    assert families["segengine_event_to_change_seconds"].type == "histogram"
    assert "process_cpu_seconds_total" in text and "python_info" in text
    assert "_created" not in text


def test_openmetrics_when_asked_without_created_series() -> None:
    m = _busy_metrics()
    body, content_type = m.exposition(PROMETHEUS_DEFAULT_ACCEPT)
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}  # the strict parser: the page is valid OpenMetrics
    assert [(s.name, s.labels, s.value) for s in families["segengine_events"].samples] == [
        ("segengine_events_total", _PURCHASES, 3.0)
    ]
    assert families["segengine_rules"].type == "info"
    assert families["segengine_build_info"].type == "gauge"
    assert {s.name for s in families["segengine_redis_command_seconds"].samples} == {
        "segengine_redis_command_seconds_bucket",
        "segengine_redis_command_seconds_count",
        "segengine_redis_command_seconds_sum",
    }
    assert "_created" not in text
    # The same series in both formats.
    classic = text_string_to_metric_families(m.exposition("")[0].decode())
    assert _series(families.values()) == _series(classic)


def _series(families: Iterable[Metric]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples}


def build_info(m: Metrics) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value) for f in m.registry.collect() if f.name == "segengine_build_info" for s in f.samples
    ]


def test_build_info_follows_the_rules_in_force() -> None:
    m = Metrics(process=False)
    assert build_info(m) == []  # no rules yet: nothing to report
    m.rules_info.info({"version": "tiers@aaa"})  # what the worker does at start
    assert build_info(m) == [({"version": segengine.__version__, "rules_version": "tiers@aaa"}, 1.0)]
    m.rules_info.info({"version": "tiers@bbb"})  # what a hot reload does (segengine.worker.reload)
    assert build_info(m) == [({"version": segengine.__version__, "rules_version": "tiers@bbb"}, 1.0)]
    assert value(m, "segengine_rules_info", version="tiers@bbb") == 1
    m.rules_info.info({"version": "tiers@bbb"})
    assert len(build_info(m)) == 1
    assert b'segengine_build_info{rules_version="tiers@bbb",version="' in m.exposition("")[0]


def test_rules_reloads_are_served_at_zero_from_the_start() -> None:
    """A counter child born at 1 is invisible to increase(): the refused-reload alert would
    miss the first refusal of every worker."""
    m = Metrics(process=False)
    text = m.exposition("")[0].decode()
    assert 'segengine_rules_reloads_total{outcome="refused"} 0.0' in text
    assert 'segengine_rules_reloads_total{outcome="applied"} 0.0' in text


def _rejected(topic: str, type_: str = "unknown", code: str = "bad_value") -> Rejected:
    return Rejected(code, "a reason", Source(topic, 0, 1), b"c1", b"{}", type_)


def test_rejected_records_count_by_topic_and_type_within_the_contract() -> None:
    m = Metrics(process=False)
    m.rejected(
        [
            _rejected("events.purchase", "purchase"),
            _rejected("events.purchase", "purchase", "key_mismatch"),
            _rejected("events.purchase", "refund"),
            _rejected("events.purchase"),
            _rejected("events.browse", "purchase", "unknown_type"),  # a producer that writes to the wrong topic
            _rejected("events.browse", "gift-card"),  # not a type of the contract: never a label
        ]
    )
    m.rejected([])

    def rejected(topic: str, type_: str) -> float | None:
        return value(m, "segengine_events_total", topic=topic, type=type_, outcome="rejected")

    assert rejected("events.purchase", "purchase") == 2
    assert rejected("events.purchase", "refund") == 1
    assert rejected("events.purchase", "unknown") == 1
    assert rejected("events.browse", "purchase") == 1
    assert rejected("events.browse", "unknown") == 1
    assert rejected("events.browse", "gift-card") is None
