"""Typed input events, and the value that says a record was rejected.

Validation (``segengine.validate``) turns raw Kafka records into one of these two; bad
input is data, not an exception: a ``Rejected`` goes to ``events.dlq`` with its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INPUT_TOPICS: dict[str, frozenset[str]] = {
    "events.browse": frozenset({"browse"}),
    "events.purchase": frozenset({"purchase", "refund"}),
    "events.feedback": frozenset({"feedback"}),
    "events.profile": frozenset({"profile", "erase"}),
}
EVENT_TYPES: frozenset[str] = frozenset().union(*INPUT_TOPICS.values())
BROWSE_ACTIONS = frozenset({"view", "search", "add_to_cart", "remove_from_cart", "checkout_start", "wishlist"})
FEEDBACK_KINDS = frozenset({"nps", "csat", "review", "complaint", "support_ticket"})


# Source and Event are made for every input record: not frozen, whose __init__ sets each field
# through object.__setattr__ (three times the cost). Nothing changes them once made.
@dataclass(slots=True)
class Source:
    """Where a record came from: the cause of everything it changes."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Event:
    """A valid input event. ``ts`` is event time in epoch milliseconds (UTC)."""

    event_id: str
    customer_id: str
    type: str
    ts: int
    body: dict[str, Any]  # the decoded JSON object, type-specific fields included
    source: Source


@dataclass(slots=True, frozen=True)
class Rejected:
    """A record that failed validation; ``code`` is one of ``REJECT_CODES``. ``type`` is the
    record's ``type`` when it could be read and is one of ``EVENT_TYPES``, else ``"unknown"``:
    a metric label, so a bounded set."""

    code: str
    message: str
    source: Source
    key: bytes | None
    value: bytes | None
    type: str = "unknown"


REJECT_CODES = (
    "too_large",  # value over max_event_bytes
    "not_utf8",  # value is not UTF-8
    "not_json",  # value is not JSON
    "not_object",  # JSON but not an object
    "missing_field",  # a required field is absent or null
    "empty_id",  # event_id / customer_id / order_id empty or over 128 characters
    "wrong_type",  # a field has the wrong JSON type
    "unknown_type",  # `type` not allowed on this topic
    "unknown_action",  # browse action / feedback kind not in the contract
    "bad_ts",  # ts unparseable, negative (before 1970), or an RFC 3339 string without offset
    "future_ts",  # ts further in the future than the allowed skew
    "bad_value",  # a value out of range or over a size bound: negative amount, NPS outside 0-10, over 1,000 items, ...
    "key_mismatch",  # the record has no key, or its key is not the customer_id
    "limit_exceeded",  # valid, but it would take the customer past a per-customer state limit (segengine.state)
    "processing_error",  # validating or processing it raised (a bug): kept aside, the partition goes on
)
