"""All of segengine's Prometheus metrics, created once against an injected registry.

Processing code calls the hooks of ``Metrics``; it never creates a metric itself.
Labels never carry a customer id: only topics, partitions, event types, outcomes,
reason codes, dimensions, segments, action names and store operations, all of them
bounded sets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector
from redis.exceptions import RedisError

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
# Produce -> segment change. 0.25 s is the SLO threshold (deploy/prometheus/rules): keep it a bucket bound.
CHANGE_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
ACTION_OUTCOMES = ("sent", "cooled_down", "suppressed", "cancelled")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "segengine_events", "Input records by topic, type and outcome (applied, duplicate, redelivered, rejected)",
            ["topic", "type", "outcome"], registry=r,
        )  # fmt: skip
        self.dlq = Counter("segengine_dlq", "Records sent to events.dlq by reason code", ["code"], registry=r)
        self.changes = Counter(
            "segengine_segment_changes",
            "Segment changes by dimension, from and to",
            ["dimension", "from_segment", "to_segment"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "segengine_batch_seconds", "Time to process one batch, from fetch to commit",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "segengine_batch_records",
            "Records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.event_lag = Histogram(
            "segengine_event_lag_seconds", "Event time to applied (wall clock)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.change_latency = Histogram(
            "segengine_event_to_change_seconds",
            "Kafka record timestamp of the causing event to its segment change acknowledged by the broker",
            buckets=CHANGE_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.population = Gauge(
            "segengine_segment_population",
            "Customers per dimension and segment (exact)",
            ["dimension", "segment"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "segengine_consumer_lag_records",
            "Records not yet consumed, per assigned input partition (high watermark - position)",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.redis_errors = Counter("segengine_redis_errors", "Failed Redis round trips", registry=r)
        self.redis_latency = Histogram(
            "segengine_redis_command_seconds", "Redis round trip time per store operation (a Lua script or a pipeline)",
            ["command"], buckets=REDIS_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_retries = Counter("segengine_batch_retries", "Batches retried after a retriable error", registry=r)
        self.cas_conflicts = Counter(
            "segengine_cas_conflicts", "Customer writes retried after a concurrent write", registry=r
        )
        self.timer_lag = Histogram(
            "segengine_timer_lag_seconds",
            "Due time to timer re-evaluation (live clock)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60),
            registry=r,
        )
        self.timer_backlog = Gauge(
            "segengine_timer_backlog", "Customers whose next check is due and not yet taken", registry=r
        )
        self.timers_fired = Counter(
            "segengine_timers_fired", "Customers re-evaluated because their next check was due", registry=r
        )
        self.actions = Counter(
            "segengine_actions",
            "Actions triggered by segment changes, by action name and outcome "
            "(sent, cooled_down, suppressed, cancelled)",
            ["action", "outcome"], registry=r,
        )  # fmt: skip
        self.rules_info = Info("segengine_rules", "The rules version in force", registry=r)
        self.rules_reloads = Counter(
            "segengine_rules_reloads", "Rules files picked up, by outcome (applied, refused)", ["outcome"], registry=r
        )
        self.quarantined = Counter(
            "segengine_customers_quarantined",
            "Customers set aside after processing them raised, by stage (fold, encode, timer, rules, load); "
            "skipped by timers until an event for them applies",
            ["stage"], registry=r,
        )  # fmt: skip
        self.copartition_mismatch = Counter(
            "segengine_copartition_mismatch",
            "Records that arrived on another partition number than their customer's first record (producers "
            "partition the input topics differently); still correct, but two workers then share the customer",
            ["topic"], registry=r,
        )  # fmt: skip
        self.revoked_commits = Counter(
            "segengine_revoked_commits",
            "Batch commits refused because a rebalance took the partitions away (redelivered to their new owner)",
            registry=r,
        )
        self.reevaluated = Counter(
            "segengine_reevaluated_customers", "Customers re-evaluated after a rules switch", registry=r
        )
        if process:  # process_* (CPU, memory, open files) and python_info, on this registry rather than the global one
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._lag_labels: set[tuple[str, str]] = set()

    def set_population(self, population: dict[str, dict[str, int]]) -> None:
        for dimension, segments in population.items():
            for segment, count in segments.items():
                self.population.labels(dimension, segment).set(count)

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Lag of every partition this worker owns now; partitions it lost disappear."""
        labels = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for gone in self._lag_labels - labels.keys():
            self.consumer_lag.remove(*gone)
        for (topic, partition), lag in labels.items():
            self.consumer_lag.labels(topic, partition).set(lag)
        self._lag_labels = set(labels)

    def action(self, name: str, outcome: str, n: int = 1) -> None:
        """An action (``actions.<name>``) was sent, held back by its cooldown, or suppressed."""
        if outcome not in ACTION_OUTCOMES:
            raise ValueError(f"action outcome {outcome!r} is not one of {ACTION_OUTCOMES}")
        self.actions.labels(name, outcome).inc(n)

    def changes_published(self, produced_at_ms: list[int], now_ms: int) -> None:
        """Segment changes acknowledged at ``now_ms``; their causing records were produced at ``produced_at_ms``."""
        for produced in produced_at_ms:
            self.change_latency.observe(max(0, now_ms - produced) / 1000)

    @contextmanager
    def redis_call(self, command: str) -> Iterator[None]:
        """Time one store operation; count it as a Redis error if it raises one."""
        started = time.perf_counter()
        try:
            yield
        except RedisError:
            self.redis_errors.inc()
            raise
        finally:
            self.redis_latency.labels(command).observe(time.perf_counter() - started)
