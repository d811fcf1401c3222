"""A dead letter always fits where its record did: escaping (control characters become
six bytes each) or base64 (4/3) must never make it larger than a broker accepts."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import orjson

from segengine.dlq import KEPT_BYTES, MAX_DLQ_BYTES, dlq_record, original_value
from segengine.events import Rejected, Source

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "topics" / "schemas" / "events.dlq.json").read_text())


def letter(value: bytes) -> dict[str, object]:
    rejected = Rejected("not_json", "record value is not JSON", Source("events.browse", 2, 41), b"c1", value)
    key, encoded = dlq_record(rejected, 1_700_000_000_000)
    assert key == b"c1" and len(encoded) <= MAX_DLQ_BYTES
    doc = orjson.loads(encoded)
    jsonschema.validate(doc, SCHEMA)
    return doc  # type: ignore[no-any-return]


def test_a_record_of_control_characters_is_cut_to_fit_and_says_so() -> None:
    value = b"\x01" * 1_000_000  # valid UTF-8 that JSON escapes to 6 MB
    doc = letter(value)
    assert doc["value_truncated"] is True and doc["value_bytes"] == len(value)
    assert original_value(doc) == value[:KEPT_BYTES]
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("events.browse", 2, 41)  # where the whole record is


def test_a_large_binary_record_is_cut_to_fit() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB, not UTF-8: base64 would make 1.4 MB
    doc = letter(value)
    assert doc["value_truncated"] is True and base64.b64decode(doc["value"]) == value[:KEPT_BYTES]


def test_an_ordinary_dead_letter_keeps_the_whole_value() -> None:
    value = b'{"event_id": 5}' + b" " * 500_000
    doc = letter(value)
    assert "value_truncated" not in doc and original_value(doc) == value
