"""Looking customers up, and watching and feeding the engine by hand.

The same code answers the worker's API (``segengine.api``: ``GET /customers/{id}``,
``GET /segments``) and the command line (``segengine inspect``, ``segments``, ``tail``,
``produce``): Redis is shared by every worker, so any worker, or the command line, can
answer for any customer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from aiokafka.structs import TopicPartition as KafkaTP
from rich.table import Table

from .compress import expand_entry
from .evaluate import rfc3339
from .events import INPUT_TOPICS, Event, Rejected
from .rules import RuleSet
from .state import CustomerState, Features
from .store import Store
from .topic_names import CHANGES_TOPIC, DLQ_TOPIC
from .topics import load_topics
from .validate import MAX_ID, validate
from .writes import home_of, reason_code_of, recent_record

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
        "changes": await recent_records(store, recent),
    }


async def recent_records(store: Store, entries: Sequence[bytes]) -> list[dict[str, Any]]:
    """Entries of a recent-changes list as records, the rule texts they name by code looked up
    in the registry (segengine.reasons)."""
    entries = [expand_entry(r) for r in entries]  # expanded once: both readers below take them as they are
    texts = await store.reasons({code for r in entries if (code := reason_code_of(r)) is not None})
    return [recent_record(r, texts) for r in entries]


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


def check_event(topic: str, text: str | bytes, *, now_ms: int, max_bytes: int, future_skew_ms: int) -> Event | Rejected:
    """A hand-written event, checked exactly as the engine will check it once ``produce_event``
    has sent it keyed by its customer_id."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    customer = body.get("customer_id") if isinstance(body, dict) else None
    key = customer.encode() if isinstance(customer, str) else None
    return validate(topic, 0, 0, key, raw, now_ms=now_ms, max_bytes=max_bytes, future_skew_ms=future_skew_ms)


async def produce_event(bootstrap: str, event: Event, security: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Send one valid event, keyed by its customer; (partition, offset) once acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(security or {}))
    try:
        await producer.start()
        meta = await producer.send_and_wait(
            event.source.topic, orjson.dumps(event.body), key=event.customer_id.encode()
        )
    finally:
        await producer.stop()
    return meta.partition, meta.offset


async def produce_events(bootstrap: str, events: Sequence[Event], security: Mapping[str, Any] | None = None) -> int:
    """Send valid events in order, each keyed by its customer (so a customer's keep their
    order); how many, once the broker acknowledged every one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **(security or {}))
    try:
        await producer.start()
        acks = [await producer.send(e.source.topic, orjson.dumps(e.body), key=e.customer_id.encode()) for e in events]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return len(acks)


# -- segengine tail --------------------------------------------------------------------------


def tail_pattern(topics: Sequence[str] | None) -> str:
    """The subscription of ``tail``: the given topics exactly, else ``TAIL_PATTERN``. A pattern
    even for exact names: a metadata request for a missing topic would create it on brokers
    that create topics automatically."""
    return TAIL_PATTERN if not topics else "^(" + "|".join(re.escape(t) for t in topics) + ")$"


async def follow(
    bootstrap: str,
    *,
    from_beginning: bool = False,
    topics: Sequence[str] | None = None,
    until_end: bool = False,
    security: Mapping[str, Any] | None = None,
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """(topic, record) from segments.changes and every actions.* topic (or ``topics``), as they
    arrive (no consumer group: nothing is committed, nobody else's offsets move). With
    ``until_end``, only the records there were when it started, then it ends (like ``kcat -e``)."""
    pattern = tail_pattern(topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **(security or {}),
        auto_offset_reset="earliest" if from_beginning else "latest", metadata_max_age_ms=5000,
    )  # fmt: skip
    try:
        await consumer.start()
        records: AsyncIterator[ConsumerRecord[bytes, bytes]]
        if until_end:
            records = _until_end(consumer, pattern, from_beginning)
        else:
            consumer.subscribe(pattern=pattern)
            records = aiter(consumer)
        async for record in records:
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


async def _until_end(
    consumer: AIOKafkaConsumer, pattern: str, from_beginning: bool
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of every partition of the topics matching ``pattern``, from the start (or
    the end) until each partition's position reaches the end offset it had when this began."""
    matched = sorted(t for t in await consumer.topics() if re.match(pattern, t))
    partitions = [KafkaTP(t, p) for t in matched for p in sorted(consumer.partitions_for_topic(t) or ())]
    if not partitions:
        return
    consumer.assign(partitions)
    await (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*partitions)
    ends: dict[KafkaTP, int] = await consumer.end_offsets(partitions)
    left = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
    while left:
        batch = await consumer.getmany(*left, timeout_ms=500)
        for rows in batch.values():
            for record in rows:  # a batch reaching past the end is shown whole, as kcat does
                yield record
        left = {tp for tp in left if await consumer.position(tp) < ends[tp]}


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
    """One line a person reads: when, who, what moved and why (for a dead letter: where it
    came from and why it was rejected)."""
    if topic == CHANGES_TOPIC:
        cause = record.get("cause") or {}
        return (
            f"{record.get('at')}  {record.get('customer_id')}  {record.get('dimension')}: "
            f"{record.get('from') or NONE} -> {record.get('to') or NONE}  "
            f"({cause_text(cause) or None}; {record.get('reason')})"
        )
    if topic == DLQ_TOPIC or isinstance(record.get("error"), dict):
        error = record.get("error") or {}
        return (
            f"{record.get('received_at')}  {record.get('key') or NONE}  rejected "
            f"{record.get('topic')}:{record.get('partition')}@{record.get('offset')}: "
            f"{error.get('code')}: {error.get('message')}"
        )
    if "action" not in record:  # another topic given to ``tail --topic``: the record as it is
        return f"{topic}  {orjson.dumps(record).decode()}"
    params = ", ".join(f"{k}={v}" for k, v in (record.get("params") or {}).items())
    return f"{record.get('at')}  {record.get('customer_id')}  action {record.get('action')} [{topic}]" + (
        f"  {params}" if params else ""
    )


def cause_text(cause: Mapping[str, Any]) -> str:
    """A change's cause in a few words: its kind, and the record that decided it
    (topic:partition@offset) or, without one, the event id."""
    if not cause:
        return ""
    if "topic" in cause:
        return f"{cause.get('kind')} {cause['topic']}:{cause.get('partition')}@{cause.get('offset')}"
    if cause.get("event_id"):
        return f"{cause.get('kind')} {cause['event_id']}"
    return str(cause.get("kind"))


def tail_problem(rules: RuleSet, dimension: str | None, segment: str | None) -> str | None:
    """Why ``tail --dimension/--segment`` would never show anything under ``rules``, or None."""
    dimensions = {d.name: d for d in rules.dimensions}
    if dimension is not None and dimension not in dimensions:
        return f"unknown dimension {dimension!r}; the rules ({rules.version}) have: {', '.join(sorted(dimensions))}"
    among = [dimensions[dimension]] if dimension is not None else list(dimensions.values())
    known = sorted({name for d in among for name in d.outcomes if name is not None})
    if segment is not None and segment not in known:
        where = f"dimension {dimension!r} has" if dimension is not None else f"the rules ({rules.version}) have"
        return f"unknown segment {segment!r}; {where}: {', '.join(known)}"
    return None


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
    # The recent-changes list keeps a change's main fields (segengine.writes.RECENT_FIELDS);
    # the cause column shows only when they include it (the full record is on segments.changes).
    causes = any("cause" in c for c in report["changes"])
    for column in ("at", "dimension", "from", "to", *(("cause",) if causes else ()), "reason"):
        changes.add_column(column)
    for c in report["changes"]:
        cause = (cause_text(c.get("cause") or {}),) if causes else ()
        changes.add_row(c["at"], c["dimension"], c["from"] or NONE, c["to"] or NONE, *cause, c["reason"])
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
