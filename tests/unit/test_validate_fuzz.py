"""Validation against hostile input (property test): records that are wrong in every way a
producer can get them wrong go through ``validate`` and it never raises; what it accepts is
an event whose numbers are finite and within the documented bounds, and that the rest of
the engine can encode again; what it refuses carries a documented reason code, never
``processing_error`` (that code means a bug in the checks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segengine.events import INPUT_TOPICS, REJECT_CODES, Event, Rejected
from segengine.validate import (
    MAX_AMOUNT,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_NUMBER,
    MAX_ATTRIBUTE_STRING,
    MAX_ATTRIBUTES,
    MAX_ID,
    MAX_ITEMS,
    MAX_PRICE,
    MAX_QTY,
    MAX_STRING,
    validate,
)

NOW = 1_800_000_000_000
SKEW = 300_000
MAX_BYTES = 1 << 20
TOPICS = (*sorted(INPUT_TOPICS), "events.elsewhere")
BOUNDED_STRINGS = {
    "browse": ("page", "product_id", "category", "session_id", "query"),
    "purchase": ("channel",),
    "feedback": ("topic",),
}


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: what orjson cannot write (NaN, 1e400, 2**70, 300 levels deep)."""

    text: str


def deep(levels: int, inner: str = "1") -> Raw:
    opener, closer = ("[", "]") if levels % 2 else ('{"k":', "}")
    return Raw(opener * levels + inner + closer * levels)


def encode(value: Any) -> str:
    """A JSON encoder with no limits (any int, raw tokens); nesting comes from ``deep``."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value) if math.isfinite(value) else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
        )
    return orjson.dumps(value).decode()  # str


# -- hostile values ------------------------------------------------------------------------

unicode_ids = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24),
    st.sampled_from(["{c}", "}{", "{{}}", "客户{1}", "😀{", "a\x00b", "\u202e}", "{" * MAX_ID, "é" * (MAX_ID + 1)]),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from(
        [
            0,
            -0.0,
            1e308,
            -1e308,
            2**63 - 1,
            2**63,
            2**64 - 1,
            2**64,
            -(2**63) - 1,
            10**30,
            5e-324,
            MAX_AMOUNT,
            MAX_AMOUNT + 1,
            MAX_QTY + 1,
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            Raw("NaN"),
            Raw("Infinity"),
            Raw("-Infinity"),
            Raw("1e400"),
            Raw("-1e400"),
            Raw("1" + "0" * 400),
            Raw("-0"),
            Raw("1.0e+308"),
        ]
    ),
)
strings = st.one_of(
    unicode_ids,
    st.sampled_from(
        ["", "view", "nps", "purchase", "EUR", "ÄÖÜ", "2024-01-01T00:00:00+00:00", "0001-01-01T00:00:00+14:00", "NaN"]
    ),
    st.sampled_from([MAX_ATTRIBUTE_STRING, MAX_ATTRIBUTE_STRING + 1, MAX_STRING, MAX_STRING + 1]).map(
        lambda n: "x" * n
    ),
    st.sampled_from([100_000, 600_000]).map(lambda n: "y" * n),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
nesting = st.sampled_from([30, 31, 32, 33, 254, 255, 300, 1023, 1024, 1025, 1100]).map(deep)
hostile = st.one_of(
    scalars,
    nesting,
    st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)),
        max_leaves=12,
    ),
)

FIELDS = {  # every field the contract names, per type (the envelope's too)
    "browse": ("action", "page", "product_id", "category", "price", "session_id", "query"),
    "purchase": ("order_id", "amount", "currency", "channel", "items"),
    "refund": ("order_id", "amount"),
    "feedback": ("kind", "score", "topic", "text"),
    "profile": ("attributes",),
    "erase": (),
}
ENVELOPE = ("event_id", "customer_id", "type", "ts", "source", "schema")
BASE = {
    "browse": {"action": "view", "category": "running", "price": 80},
    "purchase": {
        "order_id": "o1",
        "amount": 99.5,
        "currency": "EUR",
        "items": [{"sku": "s", "category": "c", "qty": 1, "price": 99.5}],
    },
    "refund": {"order_id": "o1", "amount": 10},
    "feedback": {"kind": "nps", "score": 9},
    "profile": {"attributes": {"age": 31, "city": "Chengdu"}},
    "erase": {},
}
TOPIC_OF = {"browse": "events.browse", "purchase": "events.purchase", "refund": "events.purchase",
            "feedback": "events.feedback", "profile": "events.profile", "erase": "events.profile"}  # fmt: skip


@st.composite
def hostile_events(draw: st.DrawFn) -> tuple[str, bytes | None, bytes]:
    """A valid event of some type, then: fields replaced by hostile values, removed, or added;
    items and attributes attacked inside; sent on its topic or another, keyed or not."""
    type_ = draw(st.sampled_from(sorted(BASE)))
    customer = draw(unicode_ids)
    body: dict[str, Any] = {
        "event_id": draw(unicode_ids),
        "customer_id": customer,
        "type": type_,
        "ts": NOW - 1000,
        **BASE[type_],
    }
    body = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    own = st.sampled_from(FIELDS[type_]) if FIELDS[type_] else st.sampled_from(ENVELOPE)
    names = st.one_of(own, own, own, st.sampled_from(ENVELOPE), st.sampled_from(sorted(set().union(*FIELDS.values()))))
    for name in draw(st.lists(names, max_size=3)):
        body[name] = draw(hostile)
    if draw(st.integers(0, 5)) == 0:
        body.pop(draw(st.sampled_from(sorted(body))))
    for name in draw(st.lists(strings, max_size=2)):
        body[name] = draw(hostile)  # extra fields
    if type_ == "purchase" and draw(st.booleans()):
        item = {
            k: draw(hostile)
            for k in draw(st.lists(st.sampled_from(["sku", "category", "qty", "price", "extra"]), max_size=3))
        }
        count = draw(st.sampled_from([1, 2, MAX_ITEMS, MAX_ITEMS + 1]))
        # the long lists repeat a plain item: a hostile one may hold a 600 kB string (a 600 MB event, slow to build)
        body["items"] = [{"qty": 1, "price": 1.0, **item}] * count if count <= 2 else [{"qty": 1, "price": 1.0}] * count
    if type_ == "profile" and draw(st.booleans()):
        attrs = draw(
            st.dictionaries(
                st.one_of(unicode_ids, st.sampled_from(["", "n" * MAX_ATTRIBUTE_NAME, "n" * (MAX_ATTRIBUTE_NAME + 1)])),
                hostile,
                max_size=4,
            )
        )
        if draw(st.booleans()):
            attrs.update({f"a{i}": i for i in range(draw(st.sampled_from([MAX_ATTRIBUTES - 2, MAX_ATTRIBUTES + 1])))})
        body["attributes"] = attrs
    topic = draw(st.sampled_from([TOPIC_OF[type_]] * 15 + list(TOPICS)))
    key = draw(st.sampled_from(["match"] * 6 + ["none", "other"]))
    raw_key = {
        "match": customer.encode() if isinstance(customer, str) else b"c",
        "none": None,
        "other": b"\xff" + b"k",
    }[key]
    return topic, raw_key, encode(body).encode()


raw_values = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"1",
            b'"s"',
            b"NaN",
            b"Infinity",
            b"{",
            b"\xff\xfe{}",
            b'{"a": "\xed\xa0\x80"}',
            b'{"a": "\\ud800"}',
        ]
    ),
    st.sampled_from([1024, 1025, 5000]).map(lambda n: encode(deep(n)).encode()),
    st.binary(min_size=1, max_size=32).map(
        lambda b: b'{"event_id": "e", "customer_id": "c", "x": "' + b + b'"}'
    ),  # invalid UTF-8 inside a string
    st.just(b'{"x": "' + b"z" * MAX_BYTES + b'"}'),
)


def check_outcome(topic: str, key: bytes | None, value: bytes | None, result: Event | Rejected) -> None:
    if isinstance(result, Rejected):
        assert result.code in REJECT_CODES and result.code != "processing_error", result.message
        assert (result.key, result.value, result.source.topic) == (
            key,
            value,
            topic,
        )  # the DLQ keeps the original bytes
        return
    assert isinstance(result, Event), result
    body = result.body
    assert result.type in INPUT_TOPICS[topic] and 0 <= result.ts <= NOW + SKEW
    assert (
        key == result.customer_id.encode()
        and 1 <= len(result.customer_id) <= MAX_ID
        and 1 <= len(result.event_id) <= MAX_ID
    )
    orjson.dumps(body)  # what the engine stores or dead-letters later can be written again
    strings = [body.get(n) for n in ("source", *BOUNDED_STRINGS.get(result.type, ()))]
    if result.type == "purchase":
        strings += [item.get(n) for item in body.get("items") or () for n in ("sku", "category")]
    assert all(v is None or (type(v) is str and len(v) <= MAX_STRING) for v in strings)
    if result.type in ("purchase", "refund"):
        assert (
            type(body["amount"]) in (int, float) and math.isfinite(body["amount"]) and 0 <= body["amount"] <= MAX_AMOUNT
        )
        assert result.type == "purchase" or body["amount"] > 0
        items = body.get("items") if result.type == "purchase" else None  # a refund's extra fields are not read
        items = items or []
        assert len(items) <= MAX_ITEMS
        for item in items:
            price, qty = item.get("price"), item.get("qty")
            assert price is None or (type(price) in (int, float) and math.isfinite(price) and 0 <= price <= MAX_PRICE)
            assert qty is None or (type(qty) is int and 0 <= qty <= MAX_QTY)
    elif result.type == "browse":
        price = body.get("price")
        assert type(body["action"]) is str
        assert price is None or (type(price) in (int, float) and math.isfinite(price) and 0 <= price <= MAX_PRICE)
    elif result.type == "feedback":
        assert type(body["kind"]) is str
        score = body.get("score")
        assert score is None or (type(score) is int and 0 <= score <= 10)
    elif result.type == "profile":
        attrs = body["attributes"]
        assert type(attrs) is dict and len(attrs) <= MAX_ATTRIBUTES
        for name, v in attrs.items():
            assert 1 <= len(name) <= MAX_ATTRIBUTE_NAME
            assert (
                v is None
                or type(v) in (str, bool)
                or (type(v) in (int, float) and math.isfinite(v) and abs(v) <= MAX_ATTRIBUTE_NUMBER)
            )
            assert type(v) is not str or len(v) <= MAX_ATTRIBUTE_STRING


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_events())
def test_hostile_events_never_raise_and_what_passes_is_bounded(record: tuple[str, bytes | None, bytes]) -> None:
    topic, key, value = record
    result = validate(topic, 3, 11, key, value, now_ms=NOW, max_bytes=MAX_BYTES, future_skew_ms=SKEW)
    check_outcome(topic, key, value, result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), st.one_of(st.none(), st.binary(max_size=8)), raw_values)
def test_raw_bytes_never_raise(topic: str, key: bytes | None, value: bytes) -> None:
    result = validate(topic, 0, 0, key, value, now_ms=NOW, max_bytes=MAX_BYTES, future_skew_ms=SKEW)
    check_outcome(topic, key, value, result)
    assert isinstance(result, Rejected)  # none of these is an event
