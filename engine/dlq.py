"""Rejected records -> ``events.dlq`` records.

The value keeps the original bytes recoverable: ``value`` is the original text when it
is UTF-8 (``value_encoding: "utf-8"``), else its base64 (``value_encoding: "base64"``);
the same for ``key`` / ``key_encoding``. The record key is the original key.

A dead letter must fit where its record did: escaping and base64 can make it several
times larger than the record, and a broker refuses a record over its size limit (Apache
Kafka's default is about 1 MB), which would stop the partition. So a dead letter over
``MAX_DLQ_BYTES`` keeps only the first ``KEPT_BYTES`` of the value, in base64, with
``value_truncated: true`` and ``value_bytes`` (the original length); the whole record is
still in its input topic, at the topic, partition and offset the dead letter names.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson

from .events import Rejected

MAX_DLQ_BYTES = 900_000
KEPT_BYTES = 65_536


def _text(raw: bytes | None) -> tuple[str | None, str]:
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def dlq_record(rejected: Rejected, received_at_ms: int) -> tuple[bytes | None, bytes]:
    key, key_encoding = _text(rejected.key)
    value, value_encoding = _text(rejected.value)
    received = datetime.fromtimestamp(received_at_ms / 1000, tz=UTC)
    record = {
        "error": {"code": rejected.code, "message": rejected.message},
        "topic": rejected.source.topic,
        "partition": rejected.source.partition,
        "offset": rejected.source.offset,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "received_at": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    encoded = orjson.dumps(record)
    if len(encoded) > MAX_DLQ_BYTES and rejected.value is not None:
        record["value"] = base64.b64encode(rejected.value[:KEPT_BYTES]).decode("ascii")
        record["value_encoding"] = "base64"
        record["value_truncated"] = True
        record["value_bytes"] = len(rejected.value)
        encoded = orjson.dumps(record)
    return rejected.key, encoded


def original_value(dlq_value: dict[str, object]) -> bytes | None:
    """The original record value from a decoded DLQ value (for replaying dead letters); only
    its first bytes when ``value_truncated`` (the whole record is at its topic and offset)."""
    value = dlq_value.get("value")
    if value is None:
        return None
    assert isinstance(value, str)
    return base64.b64decode(value) if dlq_value.get("value_encoding") == "base64" else value.encode("utf-8")
