"""Rejected records -> ``events.dlq`` records.

The value keeps the original bytes recoverable: ``value`` is the original text when it
is UTF-8 (``value_encoding: "utf-8"``), else its base64 (``value_encoding: "base64"``);
the same for ``key`` / ``key_encoding``. The record key is the original key.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import orjson

from engine.events import Rejected


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
    received = datetime.fromtimestamp(received_at_ms / 1000, tz=timezone.utc)
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
    return rejected.key, orjson.dumps(record)


def original_value(dlq_value: dict[str, object]) -> bytes | None:
    """The original record value from a decoded DLQ value (for replaying dead letters)."""
    value = dlq_value.get("value")
    if value is None:
        return None
    assert isinstance(value, str)
    return base64.b64decode(value) if dlq_value.get("value_encoding") == "base64" else value.encode("utf-8")
