"""Raw Kafka record -> ``Event``, or ``Rejected(code, message)`` for the dead-letter topic.

Pure and on the hot path: one ``orjson.loads`` and hand-written checks (the JSON Schemas
in ``topics/schemas/`` document the same rules; a test keeps the two in agreement).
Messages name the field at fault and the limit, never its value (values may be personal data).

``validate`` never raises: every field's JSON type is checked before the field is used,
and anything unexpected that escapes the checks anyway becomes ``processing_error``, so
no record can stop a partition. An accepted event's numbers are finite and within the
bounds below, so no sum or state document built from them can overflow.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

import orjson

from .errors import SegengineError
from .events import BROWSE_ACTIONS, EVENT_TYPES, FEEDBACK_KINDS, INPUT_TOPICS, Event, Rejected, Source

log = logging.getLogger(__name__)

# -- input bounds (the README's "Input bounds" table, and topics/schemas/) -------------------
MAX_ID = 128  # event_id, customer_id, order_id: characters
MAX_AMOUNT = 1e9  # purchase / refund amount: a billion in any currency is no retail order
MAX_PRICE = 1e9  # browse price, items[].price
MAX_QTY = 1_000_000  # items[].qty
MAX_ITEMS = 1_000  # items per purchase
MAX_STRING = 1_024  # every other string field but feedback `text` (bounded by the record size)
MAX_ATTRIBUTES = 100  # attributes per profile event (and per customer: segengine.state)
MAX_ATTRIBUTE_NAME = 64  # characters (the same bound as segengine.state's)
MAX_ATTRIBUTE_STRING = 256  # characters in a string value (the same bound as segengine.state's)
MAX_ATTRIBUTE_NUMBER = 2**53 - 1  # magnitude: the integers every JSON consumer reads exactly (I-JSON)
MAX_DEPTH = 32  # nesting of objects and lists, extra fields included
SCORE_RANGE = {"nps": (0, 10), "csat": (1, 5), "review": (1, 5)}

_ENVELOPE_STRINGS = ("source",)
_BROWSE_STRINGS = ("page", "product_id", "category", "session_id", "query")
_ITEM_STRINGS = ("sku", "category")
_FEEDBACK_STRINGS = ("topic",)
_FREE_TEXT = ("text",)


class _Reject(SegengineError):
    """Raised inside validation, returned as a ``Rejected`` value: never leaves this module."""

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
    """Check one record; never raises. A record without a key is rejected: it may sit on
    any partition, and so be owned by a worker that does not own its customer."""
    source = Source(topic, partition, offset)
    body: dict[str, Any] | None = None
    try:
        body = _decode(value, max_bytes)
        event_id, customer_id, type_, ts = _check(topic, key, body, now_ms, future_skew_ms)
        return Event(event_id, customer_id, type_, ts, body, source)
    except _Reject as rej:
        return Rejected(rej.code, rej.message, source, key, value, _readable_type(body))
    except Exception as exc:  # a bug in the checks: the record is set aside, the partition goes on
        # The type only: the message of an exception raised on a record may carry its data.
        log.error("validating the record at %s:%d:%d raised %s", topic, partition, offset, type(exc).__name__)
        log.debug("validation raised on %s:%d:%d", topic, partition, offset, exc_info=exc)
        message = f"validation failed: {type(exc).__name__}"
        return Rejected("processing_error", message, source, key, value, _readable_type(body))


def _readable_type(body: dict[str, Any] | None) -> str:
    """A rejected record's ``type`` as a metric label: one of the contract's types, else "unknown"."""
    type_ = None if body is None else body.get("type")
    return type_ if type(type_) is str and type_ in EVENT_TYPES else "unknown"


def _decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    if value is None or len(value) == 0:
        raise _Reject("not_json", "empty record value")
    if len(value) > max_bytes:
        raise _Reject("too_large", f"record value is {len(value)} bytes, the limit is {max_bytes}")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:  # also nesting deeper than orjson's 1024 levels
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("not_utf8", "record value is not UTF-8") from None
        raise _Reject("not_json", "record value is not JSON") from None
    if type(body) is not dict:
        raise _Reject("not_object", f"record value is a JSON {_json_type(body)}, not an object")
    if (
        value.count(b"[") + value.count(b"{") > MAX_DEPTH
    ):  # fewer openers cannot nest deeper: the common case costs two scans
        _check_depth(body)
    return body


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null"
    )


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
        if parsed.tzinfo is None or ("T" not in value.upper() and " " not in value):
            raise _Reject("bad_ts", "'ts' needs a date, a time and a UTC offset (RFC 3339)")
        try:
            ms = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise _Reject("bad_ts", "'ts' is out of range") from None
        if ms < 0:
            raise _Reject("bad_ts", "'ts' must not be before 1970")
        return ms
    raise _Reject("bad_ts", "'ts' must be an RFC 3339 string or integer epoch milliseconds")


def _number(
    body: dict[str, Any], name: str, *, required: bool, maximum: float, label: str | None = None
) -> float | None:
    """A number in [0, maximum]; bool is not a number (``type`` excludes the int subclass)."""
    label = label or name
    value = body.get(name)
    if value is None:
        if required:
            raise _Reject("missing_field", f"'{label}' is required")
        return None
    if type(value) not in (int, float):
        raise _Reject("wrong_type", f"'{label}' must be a number")
    if not math.isfinite(value):
        raise _Reject("bad_value", f"'{label}' must be finite")
    if value < 0:
        raise _Reject("bad_value", f"'{label}' must be >= 0")
    if value > maximum:
        raise _Reject("bad_value", f"'{label}' must be at most {maximum:,.0f}")
    return float(value)


def _optional_strings(
    body: dict[str, Any], names: tuple[str, ...], *, max_len: int | None = MAX_STRING, prefix: str = ""
) -> None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not str:
            raise _Reject("wrong_type", f"'{prefix}{name}' must be a string")
        if max_len is not None and len(value) > max_len:
            raise _Reject("bad_value", f"'{prefix}{name}' must be at most {max_len:,} characters")


def _check_depth(body: dict[str, Any]) -> None:
    """Nesting of at most MAX_DEPTH levels (the body is level 1), so that any accepted
    event can be encoded again (orjson refuses to write 255 levels) and walked without recursion."""
    level = [v for v in body.values() if type(v) in (dict, list)]
    depth = 1
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise _Reject("bad_value", f"the event is nested more than {MAX_DEPTH} levels deep")
        nested: list[Any] = []
        for container in level:
            for v in container.values() if type(container) is dict else container:
                if type(v) in (dict, list):
                    nested.append(v)
        level = nested


def _check(topic: str, key: bytes | None, body: dict[str, Any], now_ms: int, skew_ms: int) -> tuple[str, str, str, int]:
    event_id = _string_id(body, "event_id")
    customer_id = _string_id(body, "customer_id")
    type_ = body.get("type")
    if type_ is None or body.get("ts") is None:
        raise _Reject("missing_field", "'type' and 'ts' are required")
    allowed = INPUT_TOPICS.get(topic)
    if allowed is None:
        raise _Reject("unknown_type", f"topic {topic!r} is not an input topic")
    if type(type_) is not str or type_ not in allowed:
        raise _Reject("unknown_type", f"'type' must be one of {sorted(allowed)} on {topic}")
    ts = _timestamp(body["ts"])
    if ts > now_ms + skew_ms:
        raise _Reject("future_ts", f"'ts' is more than {skew_ms // 1000} s in the future")
    if key is None:
        raise _Reject("key_mismatch", "the record has no key (it must be keyed by its customer_id)")
    if key != customer_id.encode():
        raise _Reject("key_mismatch", "the record key is not the customer_id")
    _optional_strings(body, _ENVELOPE_STRINGS)
    schema = body.get("schema", 1)
    if type(schema) is not int or schema != 1:
        raise _Reject("bad_value", "'schema' must be 1")
    _TYPE_CHECKS[type_](body)
    return event_id, customer_id, type_, ts


def _one_of(body: dict[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = body.get(name)
    if value is None:
        raise _Reject("missing_field", f"'{name}' is required")
    if type(value) is not str:
        raise _Reject("wrong_type", f"'{name}' must be a string")
    if value not in allowed:
        raise _Reject("unknown_action", f"'{name}' must be one of {sorted(allowed)}")
    return value


def _check_browse(body: dict[str, Any]) -> None:
    _one_of(body, "action", BROWSE_ACTIONS)
    _optional_strings(body, _BROWSE_STRINGS)
    _number(body, "price", required=False, maximum=MAX_PRICE)


def _check_order(body: dict[str, Any], *, refund: bool) -> None:
    _string_id(body, "order_id")
    amount = _number(body, "amount", required=True, maximum=MAX_AMOUNT)
    if refund and amount == 0:
        raise _Reject("bad_value", "'amount' must be > 0")


def _check_purchase(body: dict[str, Any]) -> None:
    _check_order(body, refund=False)
    currency = body.get("currency")
    if currency is not None and (
        type(currency) is not str or len(currency) != 3 or not currency.isascii() or not currency.isupper()
    ):
        raise _Reject("bad_value", "'currency' must be an ISO 4217 code like 'EUR'")
    _optional_strings(body, ("channel",))
    items = body.get("items")
    if items is None:
        return
    if type(items) is not list:
        raise _Reject("wrong_type", "'items' must be a list")
    if len(items) > MAX_ITEMS:
        raise _Reject("bad_value", f"'items' must hold at most {MAX_ITEMS:,} lines")
    for item in items:
        if type(item) is not dict:
            raise _Reject("wrong_type", "'items' must hold objects")
        _optional_strings(item, _ITEM_STRINGS, prefix="items[].")
        qty = item.get("qty")
        if qty is not None:
            if type(qty) is not int:
                raise _Reject("wrong_type", "'items[].qty' must be an integer")
            if not 0 <= qty <= MAX_QTY:
                raise _Reject("bad_value", f"'items[].qty' must be 0 to {MAX_QTY:,}")
        _number(item, "price", required=False, maximum=MAX_PRICE, label="items[].price")


def _check_refund(body: dict[str, Any]) -> None:
    _check_order(body, refund=True)


def _check_feedback(body: dict[str, Any]) -> None:
    kind = _one_of(body, "kind", FEEDBACK_KINDS)
    _optional_strings(body, _FEEDBACK_STRINGS)
    _optional_strings(body, _FREE_TEXT, max_len=None)
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
    if len(attributes) > MAX_ATTRIBUTES:
        raise _Reject("bad_value", f"'attributes' must hold at most {MAX_ATTRIBUTES} attributes")
    for name, value in attributes.items():
        if not 1 <= len(name) <= MAX_ATTRIBUTE_NAME:
            raise _Reject("bad_value", f"'attributes' names must be 1 to {MAX_ATTRIBUTE_NAME} characters")
        kind = type(value)
        if value is None or kind is bool:
            continue
        if kind is str:
            if len(value) > MAX_ATTRIBUTE_STRING:
                raise _Reject(
                    "bad_value", f"'attributes' string values must be at most {MAX_ATTRIBUTE_STRING} characters"
                )
        elif kind is int or kind is float:
            if not math.isfinite(value) or abs(value) > MAX_ATTRIBUTE_NUMBER:
                raise _Reject(
                    "bad_value", f"'attributes' numbers must be at most {MAX_ATTRIBUTE_NUMBER:,} in magnitude"
                )
        else:
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
