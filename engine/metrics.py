"""All of segengine's Prometheus metrics, created once against an injected registry.

Processing code calls the hooks of ``Metrics``; it never creates a metric itself.
Labels never carry a customer id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "segengine_events", "Input records by topic, type and outcome (applied, duplicate, redelivered, rejected)",
            ["topic", "type", "outcome"], registry=r,
        )  # fmt: skip
        self.dlq = Counter("segengine_dlq", "Records sent to events.dlq by reason code", ["code"], registry=r)
        self.changes = Counter(
            "segengine_segment_changes", "Segment changes by dimension, from and to", ["dimension", "from_segment", "to_segment"], registry=r
        )
        self.batch_seconds = Histogram(
            "segengine_batch_seconds", "Time to process one batch, from fetch to commit",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "segengine_batch_records", "Records per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r
        )
        self.event_lag = Histogram(
            "segengine_event_lag_seconds", "Event time to applied (wall clock)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.population = Gauge(
            "segengine_segment_population", "Customers per dimension and segment (exact)", ["dimension", "segment"], registry=r
        )
        self.redis_errors = Counter("segengine_redis_errors", "Failed Redis round trips", registry=r)
        self.batch_retries = Counter("segengine_batch_retries", "Batches retried after a retriable error", registry=r)
        self.cas_conflicts = Counter("segengine_cas_conflicts", "Customer writes retried after a concurrent write", registry=r)
        self.timer_lag = Histogram(
            "segengine_timer_lag_seconds", "Due time to timer re-evaluation (live clock)", buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60), registry=r
        )
        self.timer_backlog = Gauge("segengine_timer_backlog", "Customers whose next check is due and not yet taken", registry=r)
        self.timers_fired = Counter("segengine_timers_fired", "Customers re-evaluated because their next check was due", registry=r)
        self.rules_info = Info("segengine_rules", "The rules version in force", registry=r)
        self.rules_reloads = Counter("segengine_rules_reloads", "Rules files picked up, by outcome (applied, refused)", ["outcome"], registry=r)
        self.reevaluated = Counter("segengine_reevaluated_customers", "Customers re-evaluated after a rules switch", registry=r)

    def set_population(self, population: dict[str, dict[str, int]]) -> None:
        for dimension, segments in population.items():
            for segment, count in segments.items():
                self.population.labels(dimension, segment).set(count)
