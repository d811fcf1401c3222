"""The stored encoding of a customer, and nothing else: the state document, its outbox and its
applied offsets as bytes, and back. The store (segengine.store_redis, segengine.store_memory) keeps
these bytes; the pure core works on ``CustomerState`` and ``Output`` records only.

    state document   the JSON object of ``CustomerState``'s fields, the outbox left out and
                     the applied offsets keyed "topic:partition"
    outbox           a JSON list of {"t": topic, "k": key, "v": value, "c": "topic:partition"
                     or null, "o": input offset or null}; b"" when empty
    applied offsets  a JSON object {"topic:partition": offset} (kept alone after an erase)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson

from .records import Output, TopicPartition
from .state import CustomerState


def dump_state(state: CustomerState) -> bytes:
    """The state document, without the outbox (stored beside it)."""
    doc = state.__dict__.copy()
    del doc["pending"]
    doc["offsets"] = _offsets_doc(state.offsets)
    return orjson.dumps(doc)


def load_state(blob: bytes | None, outbox: bytes | None = None) -> CustomerState:
    state = CustomerState()
    if blob:
        doc = orjson.loads(blob)
        doc["offsets"] = _offsets(doc.get("offsets") or {})
        state.__dict__.update(doc)
    if outbox:
        state.pending = load_outbox(outbox)
    return state


def dump_outbox(pending: list[Output]) -> bytes:
    if not pending:
        return b""
    return orjson.dumps(
        [
            {
                "t": out.topic,
                "k": out.key,
                "v": out.value,
                "c": None if out.cause is None else _key(out.cause),
                "o": out.offset,
            }
            for out in pending
        ]
    )


def load_outbox(raw: bytes) -> list[Output]:
    make = tuple.__new__  # Output's own __new__, without its Python-level frame (a customer's every load)
    return [
        make(Output, (e["t"], e["k"], e["v"], None if (c := e.get("c")) is None else _partition(c), e.get("o")))
        for e in orjson.loads(raw)
    ]


def dump_offsets(offsets: Mapping[TopicPartition, int]) -> bytes:
    return orjson.dumps(_offsets_doc(offsets))


def load_offsets(raw: bytes) -> dict[TopicPartition, int]:
    return _offsets(orjson.loads(raw))


def outbox_change_ids(raw: bytes, topic: str) -> set[str]:
    """The change_ids of the records for ``topic`` in a stored outbox (without decoding it whole)."""
    return {e["v"]["change_id"] for e in orjson.loads(raw) if e["t"] == topic and e["v"]}


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
