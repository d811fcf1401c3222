"""The stored encoding (segengine.codec, segengine.writes' recent entries), pure: what is
written reads back as the same state, and what versions before wrote still reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import ormsgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import segengine.state as state_module
from segengine.codec import _STORED, FIELD_CODES, _stored_values, pack_state
from segengine.compress import (
    CURRENT_ID,
    ENTRY_MARKER,
    ENTRY_MARKERS,
    MAGIC,
    RECENT_ID,
    UnknownDictionary,
    compress_entry,
    decompress,
    dictionary_path,
    expand_entry,
)
from segengine.evaluate import rfc3339
from segengine.events import Event, Source
from segengine.folding import already_applied, apply
from segengine.reasons import Reasons, reason_code, rule_texts
from segengine.records import Output, TopicPartition
from segengine.rules import load_rules
from segengine.state import DAY_MS, CustomerState, Features, LimitExceeded
from segengine.store import Loaded
from segengine.store_memory import MemoryStore
from segengine.writes import (
    MAX_RECENT_ENTRY,
    RECENT_FIELDS,
    _recent_entry,
    encode,
    out_record,
    reason_code_of,
    recent_record,
)

ROOT = Path(__file__).resolve().parents[2]

T0 = 1_700_000_000_000
HORIZON = 7 * DAY_MS

_event = st.one_of(
    st.builds(lambda amount: ("purchase", {"amount": amount}), st.floats(0, 10_000, allow_nan=False)),
    st.builds(lambda amount: ("refund", {"amount": amount}), st.floats(0, 100, allow_nan=False)),
    st.builds(lambda action: ("browse", {"action": action}), st.sampled_from(["view", "search", "add_to_cart"])),
    st.builds(lambda score: ("feedback", {"kind": "nps", "score": score}), st.integers(0, 10)),
    st.just(("feedback", {"kind": "complaint"})),
    st.builds(
        lambda city, age: ("profile", {"attributes": {"city": city, "age": age}}),
        st.text(max_size=12),
        st.integers(0, 120),
    ),
)


def _fold(events: list[tuple[int, tuple[str, dict[str, Any]]]]) -> CustomerState:
    state = CustomerState()
    for i, (ts, (type_, body)) in enumerate(events):
        body = {**body, "order_id": f"o{i}"} if type_ in ("purchase", "refund") else body
        event = Event(f"e{i}", "c", type_, T0 + ts, body, Source(f"events.{type_}", i % 3, i))
        if not already_applied(state, event):
            apply(state, event, dedupe_horizon_ms=HORIZON)
    state.members = {"value_tier": "A", "lifecycle": "active"}
    state.member_since = {"value_tier": T0, "lifecycle": T0 + 1}
    return state


@settings(max_examples=200, deadline=None)
@given(
    members=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5),
    since=st.dictionaries(st.text(max_size=8), st.integers(0, 2**62), max_size=5),
)
def test_memberships_and_their_entry_times_read_back_whatever_their_keys(
    members: dict[str, str], since: dict[str, int]
) -> None:
    state = CustomerState()
    state.members, state.member_since = members, since
    again = CustomerState.loads(state.dumps())
    assert (again.members, again.member_since) == (members, since)


def _fields(state: CustomerState) -> dict[str, Any]:
    return {k: v for k, v in state.__dict__.items() if k not in ("pending", "outbox_writer")}


def _as_json_before(state: CustomerState) -> bytes:
    """The state as versions before stored it: a JSON object under the full names."""
    doc = _fields(state)
    doc["offsets"] = {f"{tp.topic}:{tp.partition}": offset for tp, offset in state.offsets.items()}
    return orjson.dumps(doc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400 * DAY_MS), _event), max_size=40))
def test_a_state_reads_back_field_for_field_and_feature_for_feature(
    events: list[tuple[int, tuple[str, dict[str, Any]]]],
) -> None:
    state = _fold(events)
    again = CustomerState.loads(state.dumps())
    assert _fields(again) == _fields(state)
    assert {k: type(v) for k, v in _fields(again).items()} == {k: type(v) for k, v in _fields(state).items()}
    now = T0 + 401 * DAY_MS
    assert Features(again, now).all() == Features(state, now).all()
    # and a document written by a version before reads as the same state
    assert _fields(CustomerState.loads(_as_json_before(state))) == _fields(state)


def test_fields_at_their_default_are_left_out_and_names_are_short() -> None:
    assert len(CustomerState().dumps()) <= 2  # an empty map, stored as it is (a frame would be larger)
    state = _fold([(0, ("purchase", {"amount": 60.62})), (DAY_MS, ("browse", {"action": "view"}))])
    blob = pack_state(state)
    assert set(ormsgpack.unpackb(blob)) <= set(FIELD_CODES.values())
    assert len(blob) < len(_as_json_before(state)) / 2


def _customer_of_the_shipped_packs() -> CustomerState:
    """A customer as the shipped packs leave one: purchases, browses, sixteen memberships."""
    rules = load_rules(ROOT / "rules")
    state = _fold([(i * DAY_MS, ("purchase" if i % 3 else "browse", {"amount": 20.0 + i, "action": "view"}))
                   for i in range(12)])  # fmt: skip
    state.members = {dim.name: dim.segments[0].name for dim in rules.dimensions}
    state.member_since = {dim.name: T0 + 11 * DAY_MS + i for i, dim in enumerate(rules.dimensions)}
    return state


def test_a_stored_document_is_compressed_with_the_shipped_dictionary_and_reads_back() -> None:
    state = _customer_of_the_shipped_packs()
    raw, blob = pack_state(state), state.dumps()
    assert blob[:4] == MAGIC and zstandard.get_frame_parameters(blob).dict_id == CURRENT_ID
    assert len(blob) < len(raw) / 2
    assert _fields(CustomerState.loads(blob)) == _fields(state)
    assert _fields(CustomerState.loads(raw)) == _fields(state)  # a document stored before compression


def test_a_document_compressed_with_a_dictionary_not_shipped_is_refused_by_name() -> None:
    other = zstandard.train_dictionary(1024, [pack_state(_fold([(i, ("browse", {"action": "view"}))])) * 3
                                              for i in range(200)], dict_id=0x5E6EFFFF)  # fmt: skip
    blob = zstandard.ZstdCompressor(dict_data=other).compress(pack_state(_customer_of_the_shipped_packs()))
    with pytest.raises(UnknownDictionary, match="0x5e6effff"):
        CustomerState.loads(blob)


def test_the_size_limit_reads_the_document_before_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    state = _customer_of_the_shipped_packs()
    raw, blob = pack_state(state), state.dumps()
    monkeypatch.setattr(state_module, "MAX_STATE_BYTES", (len(raw) + len(blob)) // 2)
    with pytest.raises(LimitExceeded):
        encode(state, Loaded(1, None, None))
    # a document stored over the limit before may still be written at no larger a size
    assert decompress(encode(state, Loaded(1, blob, None))) == raw


def test_every_field_has_its_own_code() -> None:
    assert set(FIELD_CODES) == set(_fields(CustomerState()))
    assert len(set(FIELD_CODES.values())) == len(FIELD_CODES)


CHANGE = {
    "change_id": "3bc831447e72fcce535d838db19fdd5a",
    "dimension": "value_tier",
    "from": "B",
    "to": "A",
    "at": "2026-11-16T19:55:23.547Z",
    "reason": "value_tier.A: spend_365d >= 250 or orders_365d >= 6",
}


@settings(max_examples=300, deadline=None)
@given(
    ms=st.integers(-(10**12), 4 * 10**12),
    change_id=st.one_of(st.just(CHANGE["change_id"]), st.text(max_size=40)),
    old=st.one_of(st.none(), st.text(max_size=10)),
    new=st.one_of(st.none(), st.text(max_size=10)),
    reason=st.sampled_from(["{d}.{t}: {x}", "{d}: default", "{d}.{t}: held by min_dwell", "{x}", "{d}.{t}:{x}"]),
    text=st.text(max_size=30),
)
def test_a_recent_change_reads_back_as_it_was(
    ms: int, change_id: str, old: str | None, new: str | None, reason: str, text: str
) -> None:
    change = {**CHANGE, "at": rfc3339(ms), "change_id": change_id, "from": old, "to": new}
    change["reason"] = reason.format(d=change["dimension"], t=new, x=text)
    assert recent_record(_recent_entry(change)) == change


def test_a_recent_change_with_a_reason_over_64_kib_is_kept_cut_short() -> None:
    change = {**CHANGE, "reason": "x" * 100_000}
    entry = _recent_entry(change)
    assert len(entry) <= MAX_RECENT_ENTRY
    back = recent_record(entry)
    assert back["reason"].startswith("x" * 60_000) and back["reason"].endswith("…")
    assert {k: v for k, v in back.items() if k != "reason"} == {k: v for k, v in CHANGE.items() if k != "reason"}


def test_a_recent_change_in_its_own_format_is_smaller_and_the_formats_before_still_read() -> None:
    entry = _recent_entry(CHANGE)
    assert len(entry) < len(orjson.dumps([CHANGE[k] for k in RECENT_FIELDS])) - 40
    assert recent_record(orjson.dumps([CHANGE[k] for k in RECENT_FIELDS])) == CHANGE  # a JSON array
    assert recent_record(orjson.dumps(CHANGE)) == CHANGE  # a JSON object
    odd = {**CHANGE, "at": "2026-11-16T19:55:23Z", "change_id": "not-hex"}
    assert recent_record(_recent_entry(odd)) == odd  # kept as they are when they would not round-trip


def test_a_recent_change_is_compressed_with_its_own_dictionary_and_one_stored_before_still_reads() -> None:
    entry = _recent_entry(CHANGE)
    raw = expand_entry(entry)
    assert entry[:1] == ENTRY_MARKER and ENTRY_MARKERS[ENTRY_MARKER] == RECENT_ID
    assert len(entry) < len(raw) - 12  # a lean frame: no magic number, dictionary id or content size
    assert recent_record(raw) == CHANGE and reason_code_of(raw) is None  # MessagePack, as stored before
    with pytest.raises(UnknownDictionary, match="marker 2"):  # a dictionary of a later version
        recent_record(b"\x02" + entry[1:])


@settings(max_examples=100, deadline=None)
@given(reason=st.text(max_size=3000), repeat=st.integers(1, 4))
def test_an_entry_of_any_length_reads_back_and_one_compressed_at_a_level_reads_too(reason: str, repeat: int) -> None:
    raw = ormsgpack.packb([bytes(16), "rfm_segment", "loyal", "champions", 1_796_000_000_000, reason * repeat])
    entry = compress_entry(raw)
    assert len(entry) <= len(raw) and expand_entry(entry) == raw
    # a frame written at a level (as entries were before their own parameters) reads the same
    dictionary = zstandard.ZstdCompressionDict(dictionary_path(RECENT_ID).read_bytes())
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_dict_id=False
    )
    before = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(raw)
    assert expand_entry(ENTRY_MARKER + before) == raw


@settings(max_examples=200, deadline=None)
@given(
    new=st.one_of(st.none(), st.text(max_size=10)),
    text=st.text(max_size=80),
    registered=st.booleans(),
)
def test_a_registered_rule_text_is_kept_as_its_code_and_reads_back_from_the_registry(
    new: str | None, text: str, registered: bool
) -> None:
    change = {**CHANGE, "to": new, "reason": f"value_tier.{new}: {text}"}
    codes = {text: reason_code(text)} if registered else {}
    entry = _recent_entry(change, codes)
    assert reason_code_of(entry) == (reason_code(text) if registered else None)
    assert recent_record(entry, {reason_code(text): text}) == change
    if registered:
        # the text is not in the entry (sizes before compression)
        assert len(expand_entry(entry)) <= len(expand_entry(_recent_entry(change))) - len(text.encode()) + 5
        assert (
            recent_record(entry)["reason"]
            == f"value_tier.{new}: (rule text {reason_code(text)} is not in the registry)"
        )


async def test_a_rule_text_is_coded_only_once_the_registry_holds_it_for_that_text() -> None:
    rules = load_rules(ROOT / "rules" / "value_tier.yaml")
    texts = rule_texts(rules)
    clash, taken = next(iter(texts.items()))
    store = MemoryStore()
    store.reasons_held[clash] = "another text with the same code"  # a CRC-32 collision
    reasons = Reasons()
    await reasons.register(store, rules)
    assert reasons.codes == {text: code for code, text in texts.items() if code != clash}
    assert taken not in reasons.codes  # its entries keep it in full
    assert store.reasons_held == {**texts, clash: "another text with the same code"}
    assert await store.reasons([*texts, 12345]) == {**texts, clash: "another text with the same code"}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.dictionaries(st.text(max_size=6), _json, max_size=4) | st.none(), st.booleans()), max_size=6)
)
def test_an_outbox_with_values_serialised_already_is_the_same_bytes(values: list[tuple[Any, bool]]) -> None:
    """The outbox takes the values a write serialised for their records as they are: the same
    bytes as when it serialises them itself, and they read back as the same entries."""
    state = CustomerState()
    state.pending = [
        Output("segments.changes", f"c{i}", value, TopicPartition("events.purchase", i) if caused else None, i)
        for i, (value, caused) in enumerate(values)
    ]
    records = [out_record(o) for o in state.pending]
    encoded = {id(o): r.value for o, r in zip(state.pending, records) if r.value is not None}
    raw = state.dumps_outbox("w", encoded)
    assert raw == state.dumps_outbox("w")
    assert CustomerState.loads(b"", raw).pending == state.pending


def test_the_stored_fields_are_read_in_the_order_they_are_coded() -> None:
    state = CustomerState()
    for i, (name, _, kind) in enumerate(_STORED):  # a value of each field's type, each its own
        setattr(state, name, {float: i + 0.5, list: [i], dict: {f"k{i}": i}}.get(kind, i + 1))
    assert _stored_values(state) == tuple(getattr(state, name) for name, _, _ in _STORED)
    assert len({repr(value) for value in _stored_values(state)}) == len(_STORED)
