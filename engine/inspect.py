"""Looking customers up, and watching and feeding the engine by hand.

The same code answers the worker's API (``segengine.api``: ``GET /customers/{id}``,
``GET /segments``) and the command line (``segengine inspect``, ``segments``, ``tail``,
``produce``): Redis is shared by every worker, so any worker, or the command line, can
answer for any customer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.table import Table

from .evaluate import rfc3339
from .events import INPUT_TOPICS, Event, Rejected
from .rules import RuleSet
from .state import CustomerState, Features
from .store import Store
from .topic_names import CHANGES_TOPIC
from .topics import load_topics
from .validate import MAX_ID, validate
from .writes import home_of

TAIL_PATTERN = r"^(segments\.changes|actions\..+)$"  # what `segengine tail` follows
NONE = "-"  # how a missing segment (first entry, exit by erase) is shown


def check_customer_id(customer_id: str) -> str | None:
    """Why ``customer_id`` cannot be a customer id (the contract: 1 to 128 characters), or None."""
    if not 1 <= len(customer_id) <= MAX_ID:
        return f"a customer id is 1 to {MAX_ID} characters"
    return None


async def customer_report(store: Store, rules: RuleSet, customer_id: str, now: int) -> dict[str, Any] | None:
    """What the engine holds about one customer at ``now``; None when it holds nothing
    (never seen, or erased)."""
    loaded, recent, quarantined = await store.lookup(customer_id)
    if loaded.blob is None:
        return None
    state = CustomerState.loads(loaded.blob)
    home = home_of(state)  # its timers live in its home partition's set, wherever a formula would put it
    due = None if home is None else await store.next_check(customer_id, home)
    try:
        features: dict[str, Any] | None = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in Features(state, now, rules.derived).all().items()
        }
    except Exception:  # a state the rules cannot read (a quarantined customer): shown without features
        features = None
    memberships = {
        dimension: {
            "segment": segment,
            "since": _time(state.member_since.get(dimension)),
            "leaving_since": _time(state.grace_since.get(dimension)),  # its stay condition failed then (exit_grace)
        }
        for dimension, segment in state.members.items()
    }
    return {
        "customer_id": customer_id,
        "as_of": rfc3339(now),
        "rules_version": rules.version,
        "memberships": memberships,
        "features": features,
        "next_check": _time(due),
        "home_partition": home,
        "quarantined": None if quarantined is None else quarantined.decode(),  # the stage whose failure set it aside
        "changes": [orjson.loads(r) for r in recent],
    }


def input_partitions(topics_file: Path) -> int:
    """How many partitions the (co-partitioned) input topics have."""
    return next(t.partitions for t in load_topics(topics_file) if t.name in INPUT_TOPICS)


async def segments_report(store: Store) -> dict[str, Any]:
    """Exact population per dimension and segment (the counters moved with every state write)."""
    population = await store.population()
    return {"population": {d: dict(sorted(s.items())) for d, s in sorted(population.items())}}


def _time(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


# -- segengine produce -----------------------------------------------------------------------


def check_event(topic: str, text: str, *, now_ms: int, max_bytes: int, future_skew_ms: int) -> Event | Rejected:
    """A hand-written event, checked exactly as the engine will check it once ``produce_event``
    has sent it keyed by its customer_id."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    customer = body.get("customer_id") if isinstance(body, dict) else None
    key = customer.encode() if isinstance(customer, str) else None
    return validate(topic, 0, 0, key, text.encode(), now_ms=now_ms, max_bytes=max_bytes, future_skew_ms=future_skew_ms)


async def produce_event(bootstrap: str, event: Event) -> tuple[int, int]:
    """Send one valid event, keyed by its customer; (partition, offset) once acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            event.source.topic, orjson.dumps(event.body), key=event.customer_id.encode()
        )
    finally:
        await producer.stop()
    return meta.partition, meta.offset


# -- segengine tail --------------------------------------------------------------------------


async def follow(bootstrap: str, *, from_beginning: bool = False) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(topic, record) from segments.changes and every actions.* topic, as they arrive
    (no consumer group: nothing is committed, nobody else's offsets move)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", metadata_max_age_ms=5000,
    )  # fmt: skip
    consumer.subscribe(pattern=TAIL_PATTERN)
    await consumer.start()
    try:
        async for record in consumer:
            if record.value is None:
                continue
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield record.topic, value
    finally:
        await consumer.stop()


class TailFilter:
    """What ``tail`` shows: changes of ``dimension`` from or to ``segment``, and the actions
    those changes triggered (every record when neither is given)."""

    def __init__(self, dimension: str | None = None, segment: str | None = None, remember: int = 10_000) -> None:
        self.dimension = dimension
        self.segment = segment
        self._shown: dict[str, None] = {}  # change ids shown, oldest first (bounded)
        self._remember = remember

    def __call__(self, topic: str, record: Mapping[str, Any]) -> bool:
        if topic != CHANGES_TOPIC:
            return (self.dimension is None and self.segment is None) or record.get("trigger_change_id") in self._shown
        if self.dimension is not None and record.get("dimension") != self.dimension:
            return False
        if self.segment is not None and self.segment not in (record.get("from"), record.get("to")):
            return False
        self._shown[str(record.get("change_id"))] = None
        if len(self._shown) > self._remember:
            del self._shown[next(iter(self._shown))]
        return True


def describe(topic: str, record: Mapping[str, Any]) -> str:
    """One line a person reads: when, who, what moved and why."""
    if topic == CHANGES_TOPIC:
        cause = record.get("cause") or {}
        where = f" {cause['topic']}:{cause['partition']}@{cause['offset']}" if "topic" in cause else ""
        return (
            f"{record.get('at')}  {record.get('customer_id')}  {record.get('dimension')}: "
            f"{record.get('from') or NONE} -> {record.get('to') or NONE}  "
            f"({cause.get('kind')}{where}; {record.get('reason')})"
        )
    params = ", ".join(f"{k}={v}" for k, v in (record.get("params") or {}).items())
    return f"{record.get('at')}  {record.get('customer_id')}  action {record.get('action')} [{topic}]" + (
        f"  {params}" if params else ""
    )


# -- tables for people -----------------------------------------------------------------------


def customer_tables(report: Mapping[str, Any]) -> list[Table]:
    """``inspect``: memberships, last changes and the features that are set."""
    who = f"{report['customer_id']} as of {report['as_of']} ({report['rules_version']})"
    who += f"; next check: {report['next_check'] or 'none'}"
    if report.get("quarantined"):
        who += (
            f"; QUARANTINED (processing failed at {report['quarantined']}; timers paused until an event for it applies)"
        )
    members = Table(title=who)
    for column in ("dimension", "segment", "since", "leaving since"):
        members.add_column(column)
    for dimension, m in sorted(report["memberships"].items()):
        members.add_row(dimension, m["segment"], m["since"] or "", m["leaving_since"] or "")
    changes = Table(title="last changes (newest first)")
    for column in ("at", "dimension", "from", "to", "cause", "reason"):
        changes.add_column(column)
    for c in report["changes"]:
        changes.add_row(
            c["at"],
            c["dimension"],
            c["from"] or NONE,
            c["to"] or NONE,
            (c.get("cause") or {}).get("kind", ""),
            c["reason"],
        )
    features = Table(title="features (zero and empty left out)")
    features.add_column("feature")
    features.add_column("value", justify="right")
    for name, value in (report["features"] or {}).items():
        if value not in (None, 0, 0.0, ""):
            features.add_row(name, str(value))
    return [members, changes, features]


def population_table(population: Mapping[str, Mapping[str, int]]) -> Table:
    """``segments``: customers per dimension and segment, largest first."""
    table = Table(title="customers per segment")
    for column, justify in (("dimension", "left"), ("segment", "left"), ("customers", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for dimension in sorted(population):
        for segment, count in sorted(population[dimension].items(), key=lambda kv: (-kv[1], kv[0])):
            if count:
                table.add_row(dimension, segment, f"{count:,}")
    return table
