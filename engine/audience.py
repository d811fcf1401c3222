"""Audience export: the members of one segment, for marketing tools that do not read Kafka.

The members are read from Redis, the source of truth: one SCAN step over the customers'
state hashes at a time, each step's states loaded in one script call (``Store.scan_states``),
so Redis is never held for long. It is a full scan, whatever the segment's size: every
customer's state is read once and decoded here. The same step answers one page of
``GET /segments/{dimension}/{segment}/members`` (the SCAN cursor is the page's cursor) and,
repeated to the end, ``segengine export``.

Who is listed: customers whose stored state puts them in the segment now. An erased customer
(no state document) never is; a quarantined one is, with the memberships last decided for
it (what ``segments.members`` holds and the population counters count).

Like SCAN, a scan returns every customer present from its start to its end at least once, and
may return one twice (Redis resized its table meanwhile); ``scan_members`` drops the repeats,
a client of the API dedupes on ``customer_id``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson

from .evaluate import rfc3339
from .rules import RuleSet
from .state import CustomerState
from .store import Loaded, Store

FORMATS = ("jsonl", "csv")
COLUMNS = ("customer_id", "dimension", "segment", "member_since")
DEFAULT_LIMIT = 100  # customers per API page, unless the client asks
MAX_LIMIT = 1000  # the most one API page examines
EXPORT_STEP = 1000  # customers per SCAN step of a full export (one SCAN and one load script call each)
MAX_CURSOR = (1 << 64) - 1  # a SCAN cursor is an unsigned 64-bit integer


@dataclass(frozen=True, slots=True)
class Member:
    """One row of an audience: who, in which segment, and since when (RFC 3339, when known)."""

    customer_id: str
    dimension: str
    segment: str
    member_since: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "customer_id": self.customer_id,
            "dimension": self.dimension,
            "segment": self.segment,
            "member_since": self.member_since,
        }


# -- what may be asked for -----------------------------------------------------------------------


def known_segments(rules: RuleSet) -> dict[str, tuple[str, ...]]:
    """Dimension -> its segments (the default last), as the rules in force define them."""
    return {d.name: tuple(s for s in d.outcomes if s is not None) for d in rules.dimensions}


def audience_problem(rules: RuleSet, dimension: str, segment: str) -> str | None:
    """One line saying why the rules in force know no such audience (naming the known ones), or None."""
    known = known_segments(rules)
    if dimension not in known:
        return f"unknown dimension {dimension!r}; the rules in force ({rules.version}) know: {', '.join(known)}"
    if segment not in known[dimension]:
        return f"unknown segment {segment!r} of {dimension}; its segments: {', '.join(known[dimension])}"
    return None


def parse_limit(text: str | None) -> int | None:
    """A page's ``limit``: DEFAULT_LIMIT when not given; None when it is not 1 to MAX_LIMIT."""
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        return None
    limit = int(text)
    return limit if 1 <= limit <= MAX_LIMIT else None


def parse_cursor(text: str | None) -> int | None:
    """A page's ``cursor``: 0 (the start) when not given; None when it is not one this API gave."""
    if text is None or text == "":
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    cursor = int(text)
    return cursor if cursor <= MAX_CURSOR else None


# -- reading the members ---------------------------------------------------------------------------


def member_of(customer_id: str, loaded: Loaded, dimension: str, segment: str) -> Member | None:
    """The customer's row if its stored state puts it in the segment; None otherwise (and when erased)."""
    if loaded.blob is None:
        return None
    state = CustomerState.loads(loaded.blob)
    if state.members.get(dimension) != segment:
        return None
    since = state.member_since.get(dimension)
    return Member(customer_id, dimension, segment, None if since is None else rfc3339(since))


def members_among(states: Mapping[str, Loaded], dimension: str, segment: str) -> list[Member]:
    """The rows of the segment's members among these customers, in customer id order."""
    rows = (member_of(cid, loaded, dimension, segment) for cid, loaded in sorted(states.items()))
    return [row for row in rows if row is not None]


async def members_page(store: Store, dimension: str, segment: str, cursor: int, limit: int) -> tuple[list[Member], int]:
    """One SCAN step of about ``limit`` customers from ``cursor``: the members among them and the
    next cursor (0: the scan is complete). A page may hold no member while more follow."""
    after, states = await store.scan_states(cursor, limit)
    return members_among(states, dimension, segment), after


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a full export: how many customers it read, and the new members among them."""

    customers: int
    members: list[Member]


async def scan_members(store: Store, dimension: str, segment: str, step: int = EXPORT_STEP) -> AsyncIterator[Step]:
    """Every member of the segment, one SCAN step at a time, each member once. Remembers the
    ids listed (about 100 bytes each) to drop the repeats a SCAN may return."""
    listed: set[str] = set()
    cursor = 0
    while True:
        cursor, states = await store.scan_states(cursor, step)
        fresh = [m for m in members_among(states, dimension, segment) if m.customer_id not in listed]
        listed.update(m.customer_id for m in fresh)
        yield Step(len(states), fresh)
        if cursor == 0:
            return


# -- writing them ----------------------------------------------------------------------------------


def infer_format(given: str | None, output: Path | None) -> str:
    """The format asked for; else the output file's: ``.csv`` is CSV; everything else JSON Lines."""
    if given is not None:
        return given
    if output is not None and output.suffix.lower() == ".csv":
        return "csv"
    return "jsonl"


def jsonl_line(member: Member) -> str:
    return orjson.dumps(member.as_dict()).decode() + "\n"


def csv_lines(members: Iterable[Member], *, header: bool = False) -> str:
    """CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, a quote or a line
    break); a membership with no known start has an empty ``member_since``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(COLUMNS)
    for m in members:
        writer.writerow((m.customer_id, m.dimension, m.segment, m.member_since or ""))
    return buffer.getvalue()


class AudienceWriter:
    """Writes rows in one format to a text stream: CSV starts with its header row even when
    the audience is empty; JSON Lines is one object per line."""

    def __init__(self, stream: TextIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: {', '.join(FORMATS)}")
        self.stream = stream
        self.fmt = fmt
        self.rows = 0
        if fmt == "csv":
            stream.write(csv_lines((), header=True))

    def write(self, members: list[Member]) -> None:
        if not members:
            return
        if self.fmt == "csv":
            self.stream.write(csv_lines(members))
        else:
            self.stream.write("".join(jsonl_line(m) for m in members))
        self.rows += len(members)
