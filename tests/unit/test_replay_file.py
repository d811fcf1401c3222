"""The pure half of `segengine replay`: reading, ordering, ids, --until and --speed (no I/O
beyond a temporary file)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segengine.replay import SLICE, Record, ReplayError, load, paced_slices, parse_speed, parse_until

T0 = 1_700_000_000_000


def write_jsonl(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


def test_events_are_sorted_by_event_time_stably_with_ids_derived_from_content(tmp_path: Path) -> None:
    same = {"customer_id": "a", "type": "browse", "ts": T0 + 5, "action": "view"}
    path = write_jsonl(tmp_path / "e.jsonl", [
        {"event_id": "late", "customer_id": "b", "type": "purchase", "ts": "2023-11-14T23:00:00+00:00", "order_id": "o", "amount": 1},
        same, same,
        {"event_id": "early", "customer_id": "c", "type": "feedback", "ts": T0, "kind": "complaint"},
    ])  # fmt: skip
    records = load(path, "jsonl")
    events = [orjson.loads(r.value) for r in records]
    assert [r.topic for r in records] == ["events.feedback", "events.browse", "events.browse", "events.purchase"]
    assert [e["customer_id"] for e in events] == ["c", "a", "a", "b"] and [r.key for r in records] == [
        b"c",
        b"a",
        b"a",
        b"b",
    ]
    ids = [e["event_id"] for e in events]
    assert ids[0] == "early" and ids[3] == "late" and ids[1] != ids[2]
    assert ids == [orjson.loads(r.value)["event_id"] for r in load(path, "jsonl")], "the same file, the same ids"


def test_until_a_date_takes_that_whole_utc_day_and_a_time_is_inclusive(tmp_path: Path) -> None:
    day = parse_until("2023-11-14")
    assert day == parse_until("2023-11-15T00:00:00Z") - 1
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [{"customer_id": "a", "type": "browse", "ts": t, "action": "view"} for t in (day - 1, day, day + 1)],
    )
    assert [r.ts for r in load(path, "jsonl", until=day)] == [day - 1, day]
    with pytest.raises(ReplayError):
        parse_until("yesterday")


def test_csv_cells_become_contract_values(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text('customer_id,type,ts,kind,score,attributes.age,attributes.vip,items\n'
                    'a,feedback,1700000000000,nps,9,,,\n'
                    'a,profile,1700000000001,,,41,true,\n'
                    'a,purchase,1700000000002,,,,,"[{""sku"": ""x"", ""qty"": 2}]"\n')  # fmt: skip
    events = [orjson.loads(r.value) for r in load(path, "csv")]
    assert events[0]["score"] == 9 and events[0]["ts"] == T0 and "attributes" not in events[0]
    assert events[1]["attributes"] == {"age": 41, "vip": True}
    assert events[2]["items"] == [{"sku": "x", "qty": 2}]


def test_rows_that_cannot_be_routed_refuse_the_file_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"customer_id": "a", "type": "browse", "ts": 1, "action": "view"}\n{"customer_id": "a", "type": "browse", "ts": "noon"}\n[1]\n'
    )
    with pytest.raises(ReplayError, match=r"e.jsonl:2: 'ts'.*\n.*e.jsonl:3: not a JSON object"):
        load(path, "jsonl")
    path.write_text(
        '{"customer_id": "a", "type": "browse", "ts": "noon"}\n{"customer_id": 7, "type": "browse", "ts": 1}\n'
    )
    with pytest.raises(ReplayError, match=r"(?s)e.jsonl:1: 'ts'.*e.jsonl:2: 'customer_id'"):
        load(path, "jsonl")


def test_speed() -> None:
    assert parse_speed("max") is None and parse_speed("10x") == 10 and parse_speed("0.5x") == 0.5
    for bad in ("fast", "0x", "-2x"):
        with pytest.raises(ReplayError):
            parse_speed(bad)


def records_at(times: list[int]) -> list[Record]:
    return [Record(T0 + t, "events.browse", b"k", b"{}") for t in sorted(times)]


@given(st.lists(st.integers(0, 600_000), max_size=300), st.sampled_from([1.0, 10.0, 60.0]))
def test_paced_slices_send_each_record_when_its_scaled_event_time_has_come(times: list[int], speed: float) -> None:
    records = records_at(times)
    now = [0.0]
    sent: list[Record] = []
    for due, chunk in paced_slices(records, speed, lambda: now[0], 0.0, tick_s=0.01):
        now[0] = max(now[0], due)  # the producer sleeps until the slice is due
        assert chunk and all((r.ts - records[0].ts) / 1000 / speed <= now[0] + 0.01 + 1e-9 for r in chunk), (
            "nothing goes out early"
        )
        assert abs(due - (chunk[0].ts - records[0].ts) / 1000 / speed) < 1e-9
        sent += chunk
    assert sent == records, "every record once, in order"


def test_at_max_speed_records_go_in_fixed_slices_at_once() -> None:
    records = records_at(list(range(2 * SLICE + 5)))
    slices = list(paced_slices(records, None, lambda: 0.0, 0.0))
    assert [len(c) for _, c in slices] == [SLICE, SLICE, 5] and {d for d, _ in slices} == {0.0}
