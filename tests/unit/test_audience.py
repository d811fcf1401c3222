"""Audience export without I/O: rows, CSV quoting, format inference, the API's parameters, the
refusal of an unknown audience, and the scan over a ``MemoryStore`` (erased customers never
listed, quarantined ones listed, a customer a scan returns twice listed once)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from segengine.audience import (
    COLUMNS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    AudienceWriter,
    Member,
    audience_problem,
    csv_lines,
    infer_format,
    jsonl_line,
    known_segments,
    member_of,
    members_page,
    parse_cursor,
    parse_limit,
    scan_members,
)
from segengine.evaluate import rfc3339
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store import Loaded, Quarantine, Write
from segengine.store_memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules")
SINCE = 1_717_200_000_000  # 2024-06-01T00:00:00Z


def state_blob(members: dict[str, str], since: dict[str, int] | None = None) -> bytes:
    state = CustomerState()
    state.members = dict(members)
    state.member_since = dict(since if since is not None else {d: SINCE for d in members})
    return state.dumps()


async def stored(customers: dict[str, dict[str, str]]) -> MemoryStore:
    store = MemoryStore()
    assert await store.save([Write(cid, 0, state_blob(m), b"", {}) for cid, m in customers.items()]) == [True] * len(
        customers
    )
    return store


# -- rows and formats ------------------------------------------------------------------------------


def test_the_format_is_the_one_asked_for_else_the_files_else_jsonl() -> None:
    assert infer_format("csv", Path("out.jsonl")) == "csv"
    assert infer_format("jsonl", Path("out.csv")) == "jsonl"
    assert infer_format(None, Path("out.csv")) == "csv"
    assert infer_format(None, Path("dir.d/OUT.CSV")) == "csv"
    assert infer_format(None, Path("out.jsonl")) == "jsonl"
    assert infer_format(None, Path("out.txt")) == "jsonl"
    assert infer_format(None, Path("csv")) == "jsonl"  # a name, not an extension
    assert infer_format(None, None) == "jsonl"  # stdout


def test_csv_quotes_what_needs_it_and_reads_back_exactly() -> None:
    tricky = [
        Member('a,b "c"', "value_tier", "A", "2024-06-01T00:00:00.000Z"),
        Member("line\nbreak", "value_tier", "A", None),
        Member("plain", "value_tier", "A", "2024-06-02T10:00:00.000Z"),
        Member("  spaced ", "rfm", "cant_lose_them", None),
        Member("ünï中", "value_tier", "A", None),
    ]
    text = csv_lines(tricky, header=True)
    assert text.startswith("customer_id,dimension,segment,member_since\r\n")
    assert '"a,b ""c"""' in text and '"line\nbreak"' in text and "\r\nplain," in text
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(COLUMNS)
    assert rows[1:] == [[m.customer_id, m.dimension, m.segment, m.member_since or ""] for m in tricky]


def test_a_jsonl_line_is_one_object_with_every_column() -> None:
    member = Member('q"uote\nnl', "value_tier", "B", None)
    line = jsonl_line(member)
    assert line.endswith("\n") and line.count("\n") == 1
    assert orjson.loads(line) == {"customer_id": 'q"uote\nnl', "dimension": "value_tier", "segment": "B",
                                  "member_since": None}  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_writer_counts_rows_and_an_empty_csv_still_has_its_header(fmt: str) -> None:
    stream = io.StringIO()
    writer = AudienceWriter(stream, fmt)
    writer.write([])
    assert writer.rows == 0
    assert stream.getvalue() == ("customer_id,dimension,segment,member_since\r\n" if fmt == "csv" else "")
    writer.write([Member("a", "value_tier", "A", None), Member("b", "value_tier", "A", None)])
    writer.write([Member("c", "value_tier", "A", None)])
    assert writer.rows == 3
    lines = stream.getvalue().splitlines()
    assert len(lines) == (4 if fmt == "csv" else 3)


def test_the_writer_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="xml"):
        AudienceWriter(io.StringIO(), "xml")


# -- what may be asked for -----------------------------------------------------------------------


def test_the_api_limit_is_1_to_1000_and_defaults_to_100() -> None:
    assert parse_limit(None) == DEFAULT_LIMIT == 100
    assert parse_limit("1") == 1 and parse_limit("1000") == MAX_LIMIT == 1000 and parse_limit("0042") == 42
    for bad in ("0", "1001", "-5", "abc", "", "10.5", " 10", "١٠", "99999999999"):
        assert parse_limit(bad) is None, bad


def test_a_cursor_is_a_scan_cursor_or_nothing() -> None:
    assert parse_cursor(None) == 0 and parse_cursor("") == 0 and parse_cursor("0") == 0
    assert parse_cursor("17") == 17 and parse_cursor(str(2**64 - 1)) == 2**64 - 1
    for bad in (str(2**64), "-1", "abc", "1e3", "٣", "1" * 21):
        assert parse_cursor(bad) is None, bad


def test_an_unknown_audience_is_refused_naming_the_known_ones() -> None:
    known = known_segments(RULES)
    assert known["value_tier"] == ("A", "B", "C")  # the default last
    assert audience_problem(RULES, "value_tier", "A") is None
    assert audience_problem(RULES, "value_tier", "C") is None  # the default is a segment too
    problem = audience_problem(RULES, "valu_tier", "A")
    assert problem is not None and "'valu_tier'" in problem and "\n" not in problem
    assert all(d in problem for d in known)
    problem = audience_problem(RULES, "value_tier", "Z")
    assert problem is not None and "'Z'" in problem and "A, B, C" in problem and "\n" not in problem


# -- reading the members ---------------------------------------------------------------------------


def test_a_row_says_since_when_and_only_for_the_segment_asked() -> None:
    blob = state_blob({"value_tier": "A", "lifecycle": "new"}, {"value_tier": SINCE})
    loaded = Loaded(3, blob, None)
    assert member_of("c1", loaded, "value_tier", "A") == Member("c1", "value_tier", "A", rfc3339(SINCE))
    assert rfc3339(SINCE) == "2024-06-01T00:00:00.000Z"
    assert member_of("c1", loaded, "lifecycle", "new") == Member("c1", "lifecycle", "new", None)  # start unknown
    assert member_of("c1", loaded, "value_tier", "B") is None
    assert member_of("c1", loaded, "intent", "hot") is None  # no membership in that dimension
    assert member_of("c1", Loaded(4, None, b"outbox", b"{}"), "value_tier", "A") is None  # erased


async def test_an_export_lists_every_member_once_never_the_erased_and_the_quarantined_too() -> None:
    tiers = {f"c{i:02d}": "ABC"[i % 3] for i in range(25)}
    store = await stored({cid: {"value_tier": tier, "lifecycle": "active"} for cid, tier in tiers.items()})
    # c00 is erased (its erase not committed yet: a hash with no state document), c03 gone for good.
    assert await store.save([Write("c00", 1, b"", b"", {}, offsets=b"{}")]) == [True]
    del store.hashes["c03"]
    await store.quarantine([Quarantine("c06", "fold")])  # set aside: its memberships stand

    steps = [step async for step in scan_members(store, "value_tier", "A", step=4)]
    assert len(steps) > 1 and sum(s.customers for s in steps) == len(store.hashes)
    listed = [m.customer_id for s in steps for m in s.members]
    expected = {cid for cid, tier in tiers.items() if tier == "A"} - {"c00", "c03"}
    assert "c06" in expected
    assert sorted(listed) == sorted(expected)
    assert all(m.member_since == rfc3339(SINCE) for s in steps for m in s.members)


async def test_a_customer_a_scan_returns_twice_is_exported_once() -> None:
    class RepeatingStore(MemoryStore):
        """Every step also returns the previous step's last customer, as SCAN may during a resize."""

        async def scan_states(self, cursor: int, count: int) -> tuple[int, dict[str, Loaded]]:
            after, states = await super().scan_states(cursor, count)
            if cursor:
                previous = sorted(self.hashes)[cursor - 1]
                states[previous] = await self.load_state(previous)
            return after, states

    store = RepeatingStore()
    await store.save([Write(f"c{i}", 0, state_blob({"value_tier": "A"}), b"", {}) for i in range(7)])
    listed = [m.customer_id async for s in scan_members(store, "value_tier", "A", step=2) for m in s.members]
    assert sorted(listed) == [f"c{i}" for i in range(7)]


async def test_following_the_cursor_page_after_page_gives_the_whole_segment() -> None:
    store = await stored({f"p{i:02d}": {"value_tier": "B" if i % 4 else "A"} for i in range(30)})
    cursor, pages, listed = 0, 0, []
    while True:
        members, cursor = await members_page(store, "value_tier", "B", cursor, 7)
        pages += 1
        listed += [m.customer_id for m in members]
        if cursor == 0:
            break
    assert pages == 5  # 30 customers, 7 a page
    assert listed == [f"p{i:02d}" for i in range(30) if i % 4]
    empty = await stored({"x": {"value_tier": "C"}})
    assert await members_page(empty, "value_tier", "A", 0, 100) == ([], 0)
