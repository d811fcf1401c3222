"""Raw Kafka record -> ``Event``, or ``Rejected(code, message)`` for the dead-letter topic.

Pure and on the hot path: one ``orjson.loads`` and hand-written checks (the JSON Schemas
in ``topics/schemas/`` document the same rules; a test keeps the two in agreement).
Messages name the field at fault, never its value (values may be personal data).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson

from engine.events import BROWSE_ACTIONS, FEEDBACK_KINDS, INPUT_TOPICS, Event, Rejected, Source

MAX_ID = 128
SCORE_RANGE = {"nps": (0, 10), "csat": (1, 5), "review": (1, 5)}
_BROWSE_STRINGS = ("page", "product_id", "category", "session_id", "query")
_FEEDBACK_STRINGS = ("topic", "text")


class _Reject(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def validate(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    now_ms: int,
    max_bytes: int = 1 << 20,
    future_skew_ms: int = 300_000,
) -> Event | Rejected:
    source = Source(topic, partition, offset)
    try:
        body = _decode(value, max_bytes)
        event = _check(topic, key, body, now_ms, future_skew_ms)
    except _Reject as rej:
        return Rejected(rej.code, rej.message, source, key, value)
    return Event(event[0], event[1], event[2], event[3], body, source)


def _decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    if value is None or len(value) == 0:
        raise _Reject("not_json", "empty record value")
    if len(value) > max_bytes:
        raise _Reject("too_large", f"record value is {len(value)} bytes, the limit is {max_bytes}")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("not_utf8", "record value is not UTF-8") from None
        raise _Reject("not_json", "record value is not JSON") from None
    if not isinstance(body, dict):
        raise _Reject("not_object", f"record value is a JSON {type(body).__name__}, not an object")
    return body


def _string_id(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise _Reject("missing_field", f"'{name}' is required")
    if type(value) is not str:
        raise _Reject("wrong_type", f"'{name}' must be a string")
    if not value or len(value) > MAX_ID:
        raise _Reject("empty_id", f"'{name}' must be 1 to {MAX_ID} characters")
    return value


def _timestamp(value: Any) -> int:
    if type(value) is int:
        if value < 0:
            raise _Reject("bad_ts", "'ts' must not be negative")
        return value
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Reject("bad_ts", "'ts' is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None or "T" not in value.upper() and " " not in value:
            raise _Reject("bad_ts", "'ts' needs a date, a time and a UTC offset (RFC 3339)")
        return int(parsed.timestamp() * 1000)
    raise _Reject("bad_ts", "'ts' must be an RFC 3339 string or integer epoch milliseconds")


def _number(body: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Reject("missing_field", f"'{name}' is required")
        return None
    if type(value) not in (int, float):
        raise _Reject("wrong_type", f"'{name}' must be a number")
    if not math.isfinite(value):
        raise _Reject("bad_value", f"'{name}' must be finite")
    return float(value)


def _optional_strings(body: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        value = body.get(name)
        if value is not None and type(value) is not str:
            raise _Reject("wrong_type", f"'{name}' must be a string")


def _check(topic: str, key: bytes | None, body: dict[str, Any], now_ms: int, skew_ms: int) -> tuple[str, str, str, int]:
    event_id = _string_id(body, "event_id")
    customer_id = _string_id(body, "customer_id")
    type_ = body.get("type")
    if type_ is None or "ts" not in body or body["ts"] is None:
        raise _Reject("missing_field", "'type' and 'ts' are required")
    allowed = INPUT_TOPICS.get(topic)
    if allowed is None:
        raise _Reject("unknown_type", f"topic {topic!r} is not an input topic")
    if type(type_) is not str or type_ not in allowed:
        raise _Reject("unknown_type", f"'type' must be one of {sorted(allowed)} on {topic}")
    ts = _timestamp(body["ts"])
    if ts > now_ms + skew_ms:
        raise _Reject("future_ts", f"'ts' is more than {skew_ms // 1000} s in the future")
    if key is not None and key != customer_id.encode():
        raise _Reject("key_mismatch", "the record key is not the customer_id")
    source = body.get("source")
    if source is not None and type(source) is not str:
        raise _Reject("wrong_type", "'source' must be a string")
    schema = body.get("schema", 1)
    if schema != 1 or type(schema) is not int:
        raise _Reject("bad_value", "'schema' must be 1")
    _TYPE_CHECKS[type_](body)
    return event_id, customer_id, type_, ts


def _check_browse(body: dict[str, Any]) -> None:
    action = body.get("action")
    if action is None:
        raise _Reject("missing_field", "'action' is required")
    if action not in BROWSE_ACTIONS:
        raise _Reject("unknown_action", f"'action' must be one of {sorted(BROWSE_ACTIONS)}")
    _optional_strings(body, _BROWSE_STRINGS)
    price = _number(body, "price", required=False)
    if price is not None and price < 0:
        raise _Reject("bad_value", "'price' must be >= 0")


def _check_order(body: dict[str, Any], *, refund: bool) -> None:
    _string_id(body, "order_id")
    amount = _number(body, "amount", required=True)
    assert amount is not None
    if amount < 0 or (refund and amount == 0):
        raise _Reject("bad_value", "'amount' must be > 0" if refund else "'amount' must be >= 0")


def _check_purchase(body: dict[str, Any]) -> None:
    _check_order(body, refund=False)
    currency = body.get("currency")
    if currency is not None and (type(currency) is not str or len(currency) != 3 or not currency.isupper()):
        raise _Reject("bad_value", "'currency' must be an ISO 4217 code like 'EUR'")
    _optional_strings(body, ("channel",))
    items = body.get("items")
    if items is None:
        return
    if type(items) is not list:
        raise _Reject("wrong_type", "'items' must be a list")
    for item in items:
        if type(item) is not dict:
            raise _Reject("wrong_type", "'items' must hold objects")
        _optional_strings(item, ("sku", "category"))
        qty = item.get("qty")
        if qty is not None and (type(qty) is not int or qty < 0):
            raise _Reject("bad_value", "'items[].qty' must be an integer >= 0")
        price = _number(item, "price", required=False)
        if price is not None and price < 0:
            raise _Reject("bad_value", "'items[].price' must be >= 0")


def _check_refund(body: dict[str, Any]) -> None:
    _check_order(body, refund=True)


def _check_feedback(body: dict[str, Any]) -> None:
    kind = body.get("kind")
    if kind is None:
        raise _Reject("missing_field", "'kind' is required")
    if kind not in FEEDBACK_KINDS:
        raise _Reject("unknown_action", f"'kind' must be one of {sorted(FEEDBACK_KINDS)}")
    _optional_strings(body, _FEEDBACK_STRINGS)
    bounds = SCORE_RANGE.get(kind)
    if bounds is None:
        return
    score = body.get("score")
    if score is None:
        raise _Reject("missing_field", f"'score' is required for {kind}")
    if type(score) is not int:
        raise _Reject("wrong_type", "'score' must be an integer")
    if not bounds[0] <= score <= bounds[1]:
        raise _Reject("bad_value", f"'score' for {kind} must be {bounds[0]} to {bounds[1]}")


def _check_profile(body: dict[str, Any]) -> None:
    attributes = body.get("attributes")
    if attributes is None:
        raise _Reject("missing_field", "'attributes' is required")
    if type(attributes) is not dict:
        raise _Reject("wrong_type", "'attributes' must be an object")
    for value in attributes.values():
        if value is not None and type(value) not in (str, int, float, bool):
            raise _Reject("wrong_type", "'attributes' values must be strings, numbers, booleans or null")


def _check_erase(body: dict[str, Any]) -> None:
    return None


_TYPE_CHECKS = {
    "browse": _check_browse,
    "purchase": _check_purchase,
    "refund": _check_refund,
    "feedback": _check_feedback,
    "profile": _check_profile,
    "erase": _check_erase,
}
