"""Replay / backfill: a file of historical events -> the input topics, in event-time order.

    segengine replay FILE [--format cdnow|csv|jsonl] [--speed max|Nx] [--until DATE]

The format is the file's extension's (``.jsonl`` / ``.ndjson``, ``.csv``; the CDNOW file
by its name), unless ``--format`` says otherwise.

Reading is pure (``load``): the file becomes contract events sorted by event time (a
stable sort: ties keep the file's order), each encoded once, keyed by ``customer_id`` and
routed by its ``type`` (browse -> events.browse, purchase and refund -> events.purchase,
...). An event without an ``event_id`` gets one derived from its content, so that the
same file replayed twice carries the same ids and the engine counts each event once
(within its dedupe horizon, ``SEGENGINE_DEDUPE_HORIZON_DAYS``).

Producing (``produce``) groups the records into one producer batch per topic-partition
(the partition chosen from the key as Kafka's default partitioner does, so a customer's
records keep their order), either as fast as the broker acknowledges them or paced at N
times real time from the first event's time. Record timestamps are the wall clock, not
the event time: brokers apply retention to record timestamps, and a 1997 timestamp on a
7-day topic would be deleted at once.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import re
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaProducer

from .datasets import cdnow_path, purchase_event, read_cdnow
from .errors import InputError
from .events import INPUT_TOPICS
from .kafka import default_partition

if TYPE_CHECKING:
    from rich.console import Console

TOPIC_OF = {type_: topic for topic, types in INPUT_TOPICS.items() for type_ in types}
NUMBER_FIELDS = ("amount", "price", "score", "schema")  # CSV cells that are numbers in the contract
JSON_FIELDS = ("items", "attributes")  # CSV cells that hold JSON
ATTRIBUTE_PREFIX = "attributes."  # CSV columns attributes.<name> build the profile's attributes
SLICE = 20_000  # records per step at --speed max
MAX_PROBLEMS = 5


class Format(StrEnum):
    cdnow = "cdnow"
    csv = "csv"
    jsonl = "jsonl"


SUFFIXES = {".jsonl": Format.jsonl, ".ndjson": Format.jsonl, ".csv": Format.csv}
CDNOW_NAME = "cdnow_master.txt"  # the file in the lifetimes package (compared in lower case)


class ReplayError(InputError):
    """The file cannot be replayed (nothing was produced); the message names the lines at fault."""


class ReplayUsageError(ReplayError):
    """The command was called wrongly (a format, speed or time it does not know, no file)."""


@dataclass(frozen=True, slots=True)
class Record:
    ts: int  # event time (ms)
    topic: str
    key: bytes
    value: bytes


# -- reading (pure) ------------------------------------------------------------------------


def load(path: Path, fmt: Format | str, *, until: int | None = None) -> list[Record]:
    """The file's events as records in event-time order; with ``until``, only those at or before it."""
    fmt = Format(fmt)
    problems: list[str] = []
    records: list[Record] = []
    seen: Counter[bytes] = Counter()
    for line, event in _events(path, fmt):
        try:
            if event is None:
                raise ReplayError("not a JSON object")
            records.append(_record(event, seen))
        except ReplayError as exc:
            problems.append(f"{path.name}:{line}: {exc}")
    if problems:
        more = f"\n(and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise ReplayError("\n".join(problems[:MAX_PROBLEMS]) + more)
    records.sort(key=_ts)
    if until is not None:
        records = records[: bisect_right(records, until, key=_ts)]
    return records


def _ts(record: Record) -> int:
    return record.ts


def _events(path: Path, fmt: Format) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, contract event, or None for a line that is not a JSON object) for every event of the file."""
    if fmt is Format.cdnow:
        for purchase in read_cdnow(path):
            yield purchase.line, purchase_event(purchase)
    elif fmt is Format.jsonl:
        with open(path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    event = None
                yield line, event if isinstance(event, dict) else None
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, _from_csv(row)


def _from_csv(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row -> a contract event: empty cells left out, numbers and JSON cells decoded."""
    event: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for name, cell in row.items():
        if name is None or cell is None or cell == "":
            continue
        if name.startswith(ATTRIBUTE_PREFIX):
            attributes[name[len(ATTRIBUTE_PREFIX) :]] = _scalar(cell)
        elif name in NUMBER_FIELDS:
            event[name] = _scalar(cell)
        elif name in JSON_FIELDS:
            try:
                event[name] = orjson.loads(cell)
            except orjson.JSONDecodeError:
                event[name] = cell  # the engine dead-letters it with a reason
        elif name == "ts" and cell.isdigit():
            event[name] = int(cell)
        else:
            event[name] = cell
    if attributes:
        event["attributes"] = {**event.get("attributes", {}), **attributes}
    return event


def _scalar(cell: str) -> Any:
    for convert in (int, float):
        try:
            return convert(cell)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(cell, cell)


def _record(event: dict[str, Any], seen: Counter[bytes]) -> Record:
    type_ = event.get("type")
    topic = TOPIC_OF.get(type_) if isinstance(type_, str) else None
    if topic is None:
        raise ReplayError(f"'type' must be one of {sorted(TOPIC_OF)}")
    customer = event.get("customer_id")
    if not isinstance(customer, str) or not customer:
        raise ReplayError("'customer_id' must be a non-empty string")
    ts = event_time(event.get("ts"))
    if "event_id" not in event:
        event = {"event_id": _derived_id(event, seen), **event}
    return Record(ts, topic, customer.encode(), orjson.dumps(event))


def _derived_id(event: dict[str, Any], seen: Counter[bytes]) -> str:
    """Deterministic: the event's content, and how many identical events came before it."""
    content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    seen[content] += 1
    digest = hashlib.blake2b(content + b"\x1f%d" % seen[content], digest_size=12).hexdigest()
    return f"replay-{digest}"


def event_time(value: Any) -> int:
    """``ts`` as the contract has it (epoch ms, or RFC 3339 with an offset) -> epoch ms."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return int(parsed.timestamp() * 1000)
    raise ReplayError("'ts' must be epoch milliseconds or an RFC 3339 time with an offset")


def parse_until(text: str) -> int:
    """--until: a date (that whole UTC day included) or an RFC 3339 time (inclusive), in ms."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)
            return int((day + timedelta(days=1)).timestamp() * 1000) - 1
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayUsageError(f"--until {text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def parse_speed(text: str) -> float | None:
    """--speed: 'max' -> None (as fast as possible); 'Nx' -> N times real time."""
    text = text.strip().lower()
    if text == "max":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)x?", text)
    if match is None or float(match.group(1)) <= 0:
        raise ReplayUsageError(f"--speed {text!r}: use 'max' or a positive factor like 10x")
    return float(match.group(1))


def paced_slices(
    records: list[Record], speed: float | None, clock: Callable[[], float], started: float, tick_s: float = 0.01
) -> Iterator[tuple[float, list[Record]]]:
    """(wall time at which to send, records), in order. At max speed: fixed slices, at once.
    At N x real time: a record is due N times faster than its event time moved on from the
    first event's; each slice holds what is due within ``tick_s`` (more when behind)."""
    if speed is None:
        for i in range(0, len(records), SLICE):
            yield started, records[i : i + SLICE]
        return
    first = records[0].ts if records else 0
    i = 0
    while i < len(records):
        due = started + (records[i].ts - first) / 1000 / speed
        reached = first + (max(clock(), due) + tick_s - started) * 1000 * speed  # event time due by then
        j = i + 1
        while j < len(records) and records[j].ts <= reached and j - i < SLICE:
            j += 1
        yield due, records[i:j]
        i = j


# -- producing -------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    seconds: float = 0.0
    per_topic: Counter[str] = field(default_factory=Counter)

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def produce(
    bootstrap: str,
    records: list[Record],
    *,
    speed: float | None = None,
    on_acked: Callable[[int, int], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> ReplayStats:
    """Send ``records`` in order and return once the broker acknowledged every one.
    ``on_acked(n, event_ts)`` is called as batches are acknowledged; ``security``: the
    client's TLS/SASL arguments (segengine.kafka.kafka_security_kwargs)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=1 << 20, max_request_size=4 << 20,
        **(security or {}),
    )  # fmt: skip
    stats = ReplayStats(per_topic=Counter(r.topic for r in records))
    try:
        await producer.start()
        partitions = {topic: sorted(await producer.partitions_for(topic)) for topic in stats.per_topic}
        acks: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        for due, chunk in paced_slices(records, speed, time.perf_counter, started):
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            groups: dict[tuple[str, int], list[Record]] = {}
            for record in chunk:
                parts = partitions[record.topic]
                partition = parts[default_partition(record.key, len(parts))]
                groups.setdefault((record.topic, partition), []).append(record)
            # One sender per partition: each hands its batches over in order, side by side.
            for sent in await asyncio.gather(*(_send(producer, tp, items, on_acked) for tp, items in groups.items())):
                acks.extend(sent)  # one future per producer batch
        await asyncio.gather(*acks)
        stats.events = len(records)
        stats.seconds = time.perf_counter() - started
        return stats
    finally:
        await producer.stop()


async def _send(
    producer: AIOKafkaProducer, tp: tuple[str, int], records: list[Record], on_acked: Callable[[int, int], None] | None
) -> list[asyncio.Future[Any]]:
    topic, partition = tp
    futures: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    count, last_ts = 0, 0

    async def submit() -> None:
        future = await producer.send_batch(batch, topic, partition=partition)
        if on_acked is not None:
            n, ts = count, last_ts
            future.add_done_callback(lambda f: f.cancelled() or f.exception() or on_acked(n, ts))
        futures.append(future)

    for record in records:
        if batch.append(key=record.key, value=record.value, timestamp=None) is None:
            await submit()
            batch, count = producer.create_batch(), 0
            if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                raise ReplayError(f"an event for {topic} is larger than the producer's batch size")
        count += 1
        last_ts = record.ts
    if count:
        await submit()
    return futures


# -- the command -----------------------------------------------------------------------------


def file_format(path: Path | None, fmt: str | None) -> Format:
    """The format to read ``path`` in: ``fmt`` when given, else the one its extension (or, for
    the CDNOW file, its name) says; ReplayUsageError when neither tells."""
    if fmt is not None:
        try:
            return Format(fmt.lower())
        except ValueError:
            raise ReplayUsageError(f"--format {fmt!r}: use one of {', '.join(f.value for f in Format)}") from None
    if path is None:
        raise ReplayUsageError("give the file to replay (or --format cdnow: the CDNOW file of lifetimes)")
    if known := SUFFIXES.get(path.suffix.lower(), Format.cdnow if path.name.lower() == CDNOW_NAME else None):
        return known
    raise ReplayUsageError(
        f"{path.name}: the format cannot be told from its name; give --format "
        f"({', '.join(f.value for f in Format)}; {', '.join(SUFFIXES)} are known)"
    )


def prepare(path: Path | None, fmt: Format, speed: str, until: str | None) -> tuple[list[Record], float | None]:
    """The command's arguments -> (records to send, pace); ReplayError says what is wrong
    (ReplayUsageError: the arguments, rather than the file)."""
    if path is None:
        if fmt is not Format.cdnow:
            raise ReplayUsageError("give the file to replay")
        try:
            path = cdnow_path()
        except FileNotFoundError as exc:
            raise ReplayError(str(exc)) from None
    if not path.is_file():
        raise ReplayUsageError(f"{path}: no such file")
    pace = parse_speed(speed)
    return load(path, fmt, until=None if until is None else parse_until(until)), pace


async def replay_with_progress(
    bootstrap: str,
    records: list[Record],
    speed: float | None,
    *,
    progress_to: Console,
    report_to: Console,
    security: Mapping[str, Any] | None = None,
) -> ReplayStats:
    """``produce`` with a progress bar (events acknowledged, rate, event time reached) on one
    rich console, and the rate achieved printed on another."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("event time {task.fields[at]}"))  # fmt: skip
    with Progress(*columns, console=progress_to) as progress:
        task = progress.add_task("", total=len(records), rate="", at="")
        started = time.perf_counter()
        done = [0, 0]

        def on_acked(n: int, ts: int) -> None:
            done[0] += n
            done[1] = max(done[1], ts)
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            at = datetime.fromtimestamp(done[1] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
            progress.update(task, completed=done[0], rate=f"{rate:,.0f} events/s", at=at)

        stats = await produce(bootstrap, records, speed=speed, on_acked=on_acked, security=security)
    topics = ", ".join(f"{topic} {n:,}" for topic, n in sorted(stats.per_topic.items()))
    report_to.print(
        f"replayed {stats.events:,} events ({topics or 'none'}) in {stats.seconds:.2f} s: {stats.eps:,.0f} events/s",
        highlight=False,
        soft_wrap=True,
    )
    return stats
