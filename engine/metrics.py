"""All of segengine's Prometheus metrics, created once against an injected registry.

Processing code calls the hooks of ``Metrics``; it never creates a metric itself.
Labels never carry a customer id: only topics, partitions, event types, outcomes,
reason codes, dimensions, segments, action names and store operations, all of them
bounded sets.

``Metrics.exposition`` is what ``/metrics`` serves: OpenMetrics to a scraper that prefers
it, else the classic text format; in both without the ``*_created`` series, which
OpenMetrics makes optional and no rule or dashboard reads (one more series per counter
and histogram child, for nothing).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Metric,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from redis.exceptions import RedisError

from . import __version__
from .events import EVENT_TYPES, Rejected

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
# Produce -> segment change. 0.25 s is the SLO threshold (deploy/prometheus/rules): keep it a bucket bound.
CHANGE_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
ACTION_OUTCOMES = ("sent", "cooled_down", "suppressed", "cancelled")
RELOAD_OUTCOMES = ("applied", "refused")
OPENMETRICS = "application/openmetrics-text"
_WITH_CREATED = frozenset({"counter", "histogram", "summary"})  # the types prometheus_client gives a _created


def wants_openmetrics(accept: str) -> bool:
    """Whether an HTTP Accept header prefers OpenMetrics to the classic text format: it lists
    ``application/openmetrics-text`` with a q-value above 0 and not below that of ``text/plain``
    (Prometheus lists its ``scrape_protocols`` so, in its order of preference)."""
    best = {OPENMETRICS: 0.0, "text/plain": 0.0}
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        kind = kind.lower()
        if kind not in best:
            continue
        q = 1.0
        for param in params:
            name, _, given = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(given)
                except ValueError:
                    q = 0.0
        if 0 <= q <= 1:  # else malformed: not acceptable
            best[kind] = max(best[kind], q)
    return best[OPENMETRICS] > 0 and best[OPENMETRICS] >= best["text/plain"]


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def exposition(source: Collector, accept: str = "") -> tuple[bytes, str]:
    """``source`` as ``/metrics`` serves it, and its content type: OpenMetrics 1.0 when ``accept``
    (the request's Accept header) prefers it, else the classic text format."""
    if wants_openmetrics(accept):
        body: bytes = openmetrics.generate_latest(source)  # type: ignore[no-untyped-call]
        return body, openmetrics.CONTENT_TYPE_LATEST
    return generate_latest(source), CONTENT_TYPE_LATEST


class _WithoutCreated:
    """A registry's metric families without their ``*_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.type in _WITH_CREATED:
                created = f"{family.name}_created"
                trimmed = Metric(family.name, family.documentation, family.type, family.unit)
                trimmed.samples = [s for s in family.samples if s.name != created]
                family = trimmed
            yield family


class _RulesInfo(Info):
    """``segengine_rules_info``; setting it also moves ``segengine_build_info``'s ``rules_version``,
    so that the worker's start and every hot reload, which set this, keep both right."""

    def __init__(self, build_info: Gauge, registry: CollectorRegistry) -> None:
        self._build_info = build_info
        self._rules_version: str | None = None
        super().__init__("segengine_rules", "The rules version in force", registry=registry)

    def info(self, val: dict[str, str]) -> None:
        super().info(val)
        version = val["version"]
        self._build_info.labels(__version__, version).set(1)
        if self._rules_version is not None and self._rules_version != version:
            self._build_info.remove(__version__, self._rules_version)
        self._rules_version = version


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
        self.build_info = Gauge(
            "segengine_build_info", "Always 1: the segengine version, and the rules version in force",
            ["version", "rules_version"], registry=r,
        )  # fmt: skip
        self.rules_info = _RulesInfo(self.build_info, r)
        self.rules_reloads = Counter(
            "segengine_rules_reloads", "Rules files picked up, by outcome (applied, refused)", ["outcome"], registry=r
        )
        for outcome in RELOAD_OUTCOMES:  # served at 0 from the start: increase() then sees the first refusal
            self.rules_reloads.labels(outcome)
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
            "segengine_reevaluated_customers",
            "Customers re-evaluated after a rules switch or a population re-score",
            registry=r,
        )
        if process:  # process_* (CPU, memory, open files) and python_info, on this registry rather than the global one
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._lag_labels: set[tuple[str, str]] = set()
        self._exported = _WithoutCreated(r)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry as ``/metrics`` serves it, and its content type: OpenMetrics 1.0 when
        ``accept`` (the request's Accept header) prefers it, else the classic text format."""
        return exposition(self._exported, accept)

    def rejected(self, rejects: Iterable[Rejected]) -> None:
        """Count dead-lettered input records by topic and type; a type outside the contract's
        (which ``Rejected`` should not carry) counts as "unknown", so the label stays bounded."""
        for (topic, type_), n in Tally((r.source.topic, r.type) for r in rejects).items():
            self.events.labels(topic, type_ if type_ in EVENT_TYPES else "unknown", "rejected").inc(n)

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


# -- one page for several worker processes (segengine run --processes N) ---------------------------

Merge = Callable[[Sequence[float]], float]
# How the processes' values of one gauge series add up, where summing would be wrong; any other
# gauge is summed (segengine_timer_backlog counts the due customers of each process's own
# partitions; process_resident_memory_bytes, process_open_fds: each process's own).
GAUGE_MERGE: Mapping[str, Merge] = {
    "segengine_segment_population": max,  # read from Redis: every process reports the same counts
    "segengine_consumer_lag_records": max,  # one owner per partition; two only for a moment, in a rebalance
    "segengine_build_info": max,  # always 1 per (version, rules_version)
    "process_start_time_seconds": min,  # the set started when its first process did
    "process_max_fds": max,  # a limit, not a use
    "python_info": max,  # always 1 per interpreter version
}
# Counters, histograms and summaries are sums of counts: the set's count is the processes' sum.
_SUMMED = frozenset({"counter", "histogram", "gaugehistogram", "summary"})


def merge_pages(pages: Iterable[str]) -> list[Metric]:
    """The metric families of several processes' OpenMetrics pages as one set's.

    Why a parent that scrapes and merges rather than prometheus_client's multiprocess mode:
    multiprocess mode replaces the value store of every metric in the process (mmap files
    under ``PROMETHEUS_MULTIPROCESS_DIR``), so it bypasses the registry ``Metrics`` is built on;
    it cannot ``remove()`` a labelled series (``segengine_consumer_lag_records`` drops the
    partitions a process lost in a rebalance, ``segengine_build_info`` the rules version a reload
    replaced); a gauge merges by one mode fixed where it is created, and the process and
    platform collectors and ``Info`` are not supported at all. Merging the pages each process
    already serves keeps every metric exact: a series of a counter, histogram (bucket by
    bucket, ``_count`` and ``_sum``) or summary is the sum over the processes, a gauge series
    the sum unless ``GAUGE_MERGE`` says otherwise, an info or state set the union of its
    series; ``*_created`` series are left out, as ``Metrics.exposition`` leaves them out. Series
    keep the order in which they first appear, so every histogram's buckets
    stay in order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for page in pages:
        for family in parse_openmetrics(page):  # type: ignore[no-untyped-call]
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            elif families[family.name].type != family.type:
                raise ValueError(
                    f"{family.name} is a {families[family.name].type} in one process and a {family.type} in another"
                )
            series = values[family.name]
            created = f"{family.name}_created" if family.type in _WITH_CREATED else None
            for sample in family.samples:
                if sample.name == created:  # a time, not a count: summed it would mean nothing (and is not served)
                    continue
                series.setdefault((sample.name, tuple(sorted(sample.labels.items()))), []).append(sample.value)
    merged = []
    for name, family in families.items():
        merge = _merge_of(family)
        for (sample_name, labels), given in values[name].items():
            family.add_sample(sample_name, dict(labels), merge(given))
        merged.append(family)
    return merged


def _merge_of(family: Metric) -> Merge:
    if family.type in _SUMMED:
        return sum
    if family.type == "gauge":
        return GAUGE_MERGE.get(family.name, sum)
    return max  # info, stateset, unknown: the union of the series (their values are 1, or the same)


class MergedPages:
    """Several processes' pages served as one (``exposition(MergedPages(pages), accept)``)."""

    def __init__(self, pages: Iterable[str]) -> None:
        self._families = merge_pages(pages)

    def collect(self) -> Iterable[Metric]:
        return self._families


def process_page() -> str:
    """This process's own ``process_*`` and ``python_info``, as an OpenMetrics page (the
    supervisor's share of the set's CPU and memory)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    page: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
    return page.decode()
