"""The stored encoding of a customer, and nothing else: the state document, its outbox and its
applied offsets as bytes, and back. The store (segengine.store_redis, segengine.store_memory) keeps
these bytes; the pure core works on ``CustomerState`` and ``Output`` records only.

    state document   a Zstandard frame (segengine.compress: a shipped dictionary, named by
                     id in the frame) holding a MessagePack map of ``CustomerState``'s
                     fields under short names
                     (``FIELD_CODES``), each field left out while it holds its default, the
                     outbox left out, the applied offsets keyed "topic:partition", and the
                     memberships with their entry times as one map {dimension: [segment,
                     since]} (each dimension's name once; "ms" only for an entry time
                     without a membership). A
                     document written before (a JSON object under the full names: its first
                     byte is "{", never a MessagePack map's) loads as well
    outbox           a JSON object {"w": the writer, "e": entries}, each entry {"t": topic,
                     "k": key, "v": value, "c": "topic:partition" or null, "o": input offset
                     or null}; b"" when empty. The writer is the processor that wrote it (see
                     segengine.evaluate: another writer's entries are not known published)
    applied offsets  a JSON object {"topic:partition": offset} (kept alone after an erase)

A state document stored before a field existed loads with the field's default, except the
lifetime purchase summary, which is worked out from what the document holds (``_summary``).

Why the short names, the left-out defaults, MessagePack and the compression: the document is
most of what Redis holds per customer. On the benchmark's workload (ten events per customer)
it went from 832 bytes as JSON under the full names to 365 with the core rules; with every
shipped pack it is 989 bytes of MessagePack, 353 compressed (about 3 µs to compress, 1.5 µs
to expand). ormsgpack packs and unpacks it as fast as orjson does JSON (both about 1 and 2
µs). A MessagePack document with no frame around it (stored before compression, or one a
frame would not make smaller) reads as well.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
import ormsgpack

from .compress import compress, decompress
from .records import Output, TopicPartition
from .state import DAY_BITS, DAY_MS, CustomerState, _amount_orders

# The stored name of each field of the document. A code is never reused for another field:
# a new field takes a new code (documents written before it load with its default).
FIELD_CODES = {
    "purchases": "p", "orders": "o", "spend": "s", "first_purchase": "fp", "last_purchase": "lp",
    "purchase_grain": "pg", "purchase_days": "pd", "day1_spend": "d1", "repeat_days": "rd",
    "day_mask": "dm", "refunds": "r", "refund_amount": "ra", "browse": "b", "last_browse": "lb",
    "browse_total": "bt", "feedback": "f", "complaints": "c", "attributes": "a", "aggs": "g",
    "max_ts": "mt", "first_seen": "fs", "offsets": "of", "seen": "sn", "seen_oldest": "so",
    "members": "m", "member_since": "ms", "grace_since": "gs", "checked_at": "ca",
    "actions_sent": "as", "delayed": "dl", "home": "h",
}  # fmt: skip
_NAMES = {code: name for name, code in FIELD_CODES.items()}
# Every field of CustomerState: read and set by name (getattr, setattr), so that the compiled
# core (segengine.native), whose classes keep no ``__dict__``, encodes the same way.
FIELDS = (*FIELD_CODES, "pending", "outbox_writer")
_FRESH = CustomerState()
_DEFAULTS = {name: getattr(_FRESH, name) for name in FIELDS}
# (name, code, the default's type): a field equal to its default, of the same type, is left out.
# Every default is falsy (0, 0.0, None, empty), so "equal to its default" is "falsy" (a test
# of truth, cheaper than a comparison); a field with a truthy default would need the comparison.
_JOINT = ("members", "member_since")  # stored together: {dimension: [segment, since]} (see dump_state)
_STORED = tuple((name, code, type(_DEFAULTS[name])) for name, code in FIELD_CODES.items() if name not in _JOINT)
assert not any(_DEFAULTS[name] for name, _, _ in _STORED), "a truthy default: compare with it in pack_state"
assert len(_NAMES) == len(FIELD_CODES), "codes are unique"


def dump_state(state: CustomerState) -> bytes:
    """The state document as stored, without the outbox (stored beside it): compressed."""
    return compress(pack_state(state))


def _stored_values(s: CustomerState) -> tuple[Any, ...]:
    """The values of the fields ``_STORED`` names, in its order, each read as an attribute (in the
    compiled core a slot's read, where ``getattr`` by name looks the name up): a test holds the
    two to the same fields."""
    return (
        s.purchases,
        s.orders,
        s.spend,
        s.first_purchase,
        s.last_purchase,
        s.purchase_grain,
        s.purchase_days,
        s.day1_spend,
        s.repeat_days,
        s.day_mask,
        s.refunds,
        s.refund_amount,
        s.browse,
        s.last_browse,
        s.browse_total,
        s.feedback,
        s.complaints,
        s.attributes,
        s.aggs,
        s.max_ts,
        s.first_seen,
        s.offsets,
        s.seen,
        s.seen_oldest,
        s.grace_since,
        s.checked_at,
        s.actions_sent,
        s.delayed,
        s.home,
    )


def pack_state(state: CustomerState) -> bytes:
    """The state document before compression (its size is what the size limit reads)."""
    doc = {}
    for (_, code, kind), value in zip(_STORED, _stored_values(state)):
        if value or type(value) is not kind:  # not its default (every default is falsy: see _STORED)
            doc[code] = value
    if state.offsets:
        doc["of"] = _offsets_doc(state.offsets)
    members, since = state.members, state.member_since
    if members:  # each dimension's name once: {dimension: [segment, since or None]}
        doc["m"] = {dimension: (segment, since.get(dimension)) for dimension, segment in members.items()}
    if any(dimension not in members for dimension in since):  # entry times without a membership: kept as they are
        doc["ms"] = {dimension: at for dimension, at in since.items() if dimension not in members}
    return ormsgpack.packb(doc)


def load_state(blob: bytes | None, outbox: bytes | None = None) -> CustomerState:
    state = CustomerState()
    if blob:
        blob = decompress(blob)
        json = blob[:1] == b"{"  # JSON under the full names, as written before
        if json:
            doc = orjson.loads(blob)
        else:
            doc = {_NAMES.get(code, code): value for code, value in ormsgpack.unpackb(blob).items()}
            _split_members(doc)
        doc["offsets"] = _offsets(doc.get("offsets") or {})
        for name, value in doc.items():
            if name in _DEFAULTS:  # a field this version does not know is left out
                setattr(state, name, value)
        if json and "repeat_days" not in doc and state.purchase_days:
            _summary(state)
    if outbox:
        state.outbox_writer, state.pending = load_outbox(outbox)
    return state


def _split_members(doc: dict[str, Any]) -> None:
    """members and member_since from their joint form (dump_state)."""
    joint = doc.get("members")
    if not joint:
        return
    since = {dimension: at for dimension, (_, at) in joint.items() if at is not None}
    since.update(doc.get("member_since") or {})
    doc["members"] = {dimension: segment for dimension, (segment, _) in joint.items()}
    doc["member_since"] = since


def _summary(state: CustomerState) -> None:
    """The lifetime purchase summary of a document stored before it was kept: the repeat days
    and the day mask from its purchase days (exact); the first day's spend from the purchase
    detail if that still holds every purchase, else None (not known: no repeat_purchase_value,
    until a purchase on an earlier day makes the first day known again)."""
    days = state.purchase_days
    first, last = days[0], days[-1]
    state.repeat_days = len(days) - 1
    state.day_mask = sum(1 << (last - 1 - day) for day in days[-DAY_BITS - 1 : -1] if last - day <= DAY_BITS)
    held = [_amount_orders(entry) for entry in state.purchases]
    if sum(orders for _, orders in held) != state.orders:
        state.day1_spend = None
        return
    state.day1_spend = sum(
        amount for entry, (amount, _) in zip(state.purchases, held, strict=True) if entry[0] // DAY_MS == first
    )


NOTHING_ENCODED: Mapping[int, bytes] = MappingProxyType({})


def dump_outbox(pending: list[Output], writer: str | None, encoded: Mapping[int, bytes] = NOTHING_ENCODED) -> bytes:
    """``encoded``: the JSON of entries' values serialised already (for their records), by
    the entry's ``id`` (each alive in ``pending``): written as they are, not serialised again."""
    if not pending:
        return b""
    entries = [
        {
            "t": o.topic,
            "k": o.key,
            "v": o.value if (raw := encoded.get(id(o))) is None else orjson.Fragment(raw),
            "c": None if o.cause is None else _key(o.cause),
            "o": o.offset,
        }
        for o in pending
    ]
    return orjson.dumps({"w": writer, "e": entries})


def load_outbox(raw: bytes) -> tuple[str | None, list[Output]]:
    """The outbox's writer (None: unknown) and its entries."""
    doc = orjson.loads(raw)
    writer, entries = (None, doc) if isinstance(doc, list) else (doc["w"], doc["e"])  # a list: written unsigned
    make = tuple.__new__  # Output's own __new__, without its Python-level frame (a customer's every load)
    return writer, [
        make(Output, (e["t"], e["k"], e["v"], None if (c := e.get("c")) is None else _partition(c), e.get("o")))
        for e in entries
    ]


def dump_offsets(offsets: Mapping[TopicPartition, int]) -> bytes:
    return orjson.dumps(_offsets_doc(offsets))


def load_offsets(raw: bytes) -> dict[TopicPartition, int]:
    return _offsets(orjson.loads(raw))


def _offsets_doc(offsets: Mapping[TopicPartition, int]) -> dict[str, int]:
    return {_key(tp): offset for tp, offset in offsets.items()}


def _offsets(doc: Mapping[str, Any]) -> dict[TopicPartition, int]:
    return {_partition(key): int(offset) for key, offset in doc.items()}


# A worker sees a handful of input partitions: their keys are made once, not per customer.
@functools.lru_cache(maxsize=4096)
def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


@functools.lru_cache(maxsize=4096)
def _partition(key: str) -> TopicPartition:
    topic, _, partition = key.rpartition(":")
    return TopicPartition(topic, int(partition))
