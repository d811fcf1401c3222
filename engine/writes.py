"""Pure helpers of the batch pipeline (segengine.pipeline): what a folded customer writes, and
how its outputs and rejects become records. No I/O."""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Any

import orjson
import ormsgpack

from .codec import dump_offsets, load_offsets, pack_state
from .compress import compress, compress_entry, expand_entry, raw_size
from .evaluate import FoldResult, catch_up, deciding_moment, quiet_moves, reevaluate_customer, rfc3339, rfc3339_ms
from .events import Event, Rejected
from .records import Output, OutRecord
from .rules import RuleSet
from .state import CustomerState, check_size
from .store import HISTORY, Loaded, Published, Write
from .timers import Moment, next_moment
from .topic_names import CHANGES_TOPIC, MEMBERS_TOPIC

# What the recent-changes list keeps of a change (the full record is on segments.changes),
# in this order: each entry is a MessagePack array of these fields, the change id as its 16
# bytes, the time as epoch milliseconds where they round-trip, and the reason without the
# dimension and segment the entry already names, a registered rule text as its code
# (segengine.reasons; recent_record reads one back); compressed (segengine.compress).
RECENT_FIELDS = ("change_id", "dimension", "from", "to", "at", "reason")

Folded = tuple[CustomerState, FoldResult, bytes]  # the state, what folding did, the encoded state
NO_CODES: Mapping[str, int] = MappingProxyType({})
NO_TEXTS: Mapping[int, str] = MappingProxyType({})
NO_STAMPS: Mapping[str, int] = MappingProxyType({})


class Signature:
    """The name that signs the outboxes one processor writes (segengine.evaluate: an outbox
    signed by another name is not known published, and is sent again). A new name once some
    of its writes may never be published: a write or publish failed, or was cancelled."""

    def __init__(self) -> None:
        self.name = secrets.token_hex(8)

    def distrust(self) -> None:
        self.name = secrets.token_hex(8)

    @contextmanager
    def held(self) -> Iterator[str]:
        """The name for one step; a new one if the step fails."""
        try:
            yield self.name
        except BaseException:
            self.distrust()
            raise


class Moments:
    """The next moment of each customer this processor wrote last (``customer_write``), so that
    the next decision on it (an event, a timer) takes it instead of working it out again from
    the state just read (segengine.evaluate.catch_up). An entry holds while the stored version
    and the last decision's time are those written, under the same rules and population
    sample: any other writer's write makes it stale, and a rules switch or a new sample drops
    them all. At most ``limit`` customers are held (past it, the oldest are dropped down to
    half of it).

    Entries hold numbers only (what moves is one of a few sets, named by its index), so the
    garbage collector leaves them alone: held objects it had to walk made its full collections
    more frequent than the work they saved."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._held: dict[str, tuple[int, int, int | None, int]] = {}  # version, checked_at, due, moving
        self._rules: RuleSet | None = None
        self._sample: object = None
        self._moving: list[frozenset[str]] = []
        self._moving_index: dict[frozenset[str], int] = {}

    def _under(self, rules: RuleSet) -> None:
        """Drop every entry when the rules or their population sample changed."""
        if rules is not self._rules or rules.population.samples is not self._sample:
            self._held.clear()
            self._rules, self._sample = rules, rules.population.samples

    def get(self, cid: str, version: int, rules: RuleSet, state: CustomerState) -> Moment | None:
        self._under(rules)
        held = self._held.get(cid)
        if held is None or held[0] != version or held[1] != state.checked_at:
            return None
        return held[2], self._moving[held[3]]

    def put(self, cid: str, version: int, rules: RuleSet, checked_at: int | None, moment: Moment | None) -> None:
        """Customer ``cid`` written at ``version``, its last decision at ``checked_at``."""
        self._under(rules)
        held = self._held
        held.pop(cid, None)  # re-inserted last: the oldest come first
        if moment is None or checked_at is None:
            return
        due, moving = moment
        index = self._moving_index.get(moving)
        if index is None:
            index = self._moving_index[moving] = len(self._moving)
            self._moving.append(moving)
        held[cid] = (version, checked_at, due, index)
        if len(held) > self.limit:
            for old in list(itertools.islice(held, len(held) - self.limit // 2)):
                del held[old]


def home_of(state: CustomerState) -> int | None:
    """The input partition whose owner fires the customer's timers and re-evaluates it: the
    partition of its first record (recorded in the state); for a state written before that
    was recorded, the lowest partition it has records from."""
    if state.home is not None:
        return state.home
    return min((tp.partition for tp in state.offsets), default=None)


def encode(state: CustomerState, loaded: Loaded) -> bytes:
    """The state document as stored; raises when it cannot be (a number it cannot hold) or
    when it would grow past the size limit before compression (``LimitExceeded``; ``loaded``:
    what is stored now)."""
    raw = pack_state(state)
    check_size(raw, raw_size(loaded.blob or b""))
    return compress(raw)


def loaded_state(loaded: Loaded) -> CustomerState:
    state = CustomerState.loads(loaded.blob, loaded.outbox)
    if loaded.offsets:  # erased, the erase not committed yet: its records must still be recognised
        state.offsets = load_offsets(loaded.offsets)
    return state


def reevaluate(
    rules: RuleSet,
    cid: str,
    state: CustomerState,
    at: int,
    cause: dict[str, Any],
    key: str,
    writer: str,
    moment: Moment | None = None,
    through: int | None = None,
    moving: frozenset[str] | None = None,
) -> FoldResult:
    """A decision with no event: a timer at its due time, or a rules switch or re-score at ``at``
    (``moment``: the state's next moment, when known: segengine.evaluate.catch_up). A timer with
    ``through`` goes on to the customer's later moments up to that time, each decided at its
    own time with its own ``timer:<due>`` id, as if each had fired alone. ``moving``: what
    moved, when only the dimensions reading it are to be decided again (a re-score)."""
    result = FoldResult()
    if key != "timer":  # never decide before what the customer did, nor before its last decision
        at = max(
            at, state.max_ts or 0, state.checked_at or 0
        )  # (a timer keeps its due time: stale, it decides nothing)
    result.decided_at = at
    reevaluate_customer(
        rules, state, cid, at, result, dict(cause), f"{key}:{at}" if key == "timer" else key, writer, moment, moving
    )
    if through is not None and key == "timer":
        later, _ = catch_up(rules, state, cid, through, result)
        state.pending += later
        result.outputs += later
    return result


def write_for(
    cid: str,
    loaded: Loaded,
    state: CustomerState,
    blob: bytes,
    result: FoldResult,
    home: int | None,
    due: int | None,
    writer: str,
    codes: Mapping[str, int] = NO_CODES,
    records: list[OutRecord] | None = None,
) -> Write:
    """What to write for one customer (its outbox signed by ``writer``; ``codes``: the rule
    texts its recent changes may name by code; ``records``: those of ``result.outputs``, in
    order, whose values the outbox takes as they are). Erased with nothing new since: no state
    document, only the applied offsets and the outbox, until the erase is committed (then the
    key goes)."""
    recent = recent_changes(result.outputs[result.resent :], codes, result.stamps)
    encoded = (
        None if records is None else {id(o): r.value for o, r in zip(result.outputs, records) if r.value is not None}
    )
    outbox = state.dumps_outbox(writer, encoded)
    if result.erased and state.is_empty:
        offsets = dump_offsets(state.offsets)
        return Write(cid, loaded.version, b"", outbox, result.population, home, None, recent, True, offsets)
    return Write(cid, loaded.version, blob, outbox, result.population, home, due, recent, forget=result.erased)


def customer_write(
    cid: str,
    loaded: Loaded,
    state: CustomerState,
    blob: bytes,
    result: FoldResult,
    rules: RuleSet,
    writer: str,
    now: Callable[[], int],
    codes: Mapping[str, int] = NO_CODES,
) -> tuple[Write, Published, Moment | None, list[OutRecord]]:
    """The write, what the store is told once its outbox is published, the state's next
    moment (None: the rules have no timers) and the records of ``result.outputs`` (each value
    serialised once, for the outbox and the record). A decision no input record would send
    again (a timer or rules decision: its outbox entries have no cause) keeps the customer
    due at once until it is published; then it gets its real next check."""
    decided = state.checked_at if state.checked_at is not None else now()
    if rules.time_plan.empty:
        moment = None
    else:  # the first moment that decides anything: a timer before it would write the decision's time alone
        quiet = quiet_moves(rules, state, decided, result.features, result.selected)
        moment = deciding_moment(rules, state, cid, next_moment(rules.time_plan, state, decided, quiet), quiet)
    due = None if moment is None else moment[0]
    home = home_of(state)
    records = list(map(out_record, result.outputs))
    if any(p.cause is None for p in state.pending):
        write = write_for(cid, loaded, state, blob, result, home, decided, writer, codes, records)
        return write, Published(cid, loaded.version + 1, home, due, reschedule=True), moment, records
    write = write_for(cid, loaded, state, blob, result, home, due, writer, codes, records)
    return write, Published(cid, loaded.version + 1), moment, records


def recent_changes(
    outputs: list[Output], codes: Mapping[str, int] = NO_CODES, stamps: Mapping[str, int] = NO_STAMPS
) -> tuple[bytes, ...]:
    """The change records a write adds to the customer's recent changes, oldest first (the
    new ones: re-sends were added when first written), nothing before an erase; the rule
    texts in ``codes`` (registered: segengine.reasons) as their codes; ``stamps``: the epoch
    milliseconds of the times the decisions stamped them with (``FoldResult.stamps``), where
    known, not read back from the text."""
    recent: list[dict[str, Any]] = []
    for out in outputs:
        if out.topic == CHANGES_TOPIC and out.value is not None:
            recent.append(out.value)
        elif out.topic == MEMBERS_TOPIC and out.value is None:  # the tombstone of an erase
            recent.clear()
    entries: list[bytes] = []
    at: Any = None
    ms: int | str = 0
    for change in recent[-HISTORY:]:
        if change["at"] != at:  # the changes of one decision share their time: read once
            at = change["at"]
            known = stamps.get(at) if type(at) is str else None
            ms = _at_ms(at) if known is None else known
        entries.append(_recent_entry(change, codes, ms))
    return tuple(entries)


MAX_RECENT_ENTRY = 0xFFFF  # bytes: save.lua keeps each entry after a 2-byte length


def _recent_entry(change: dict[str, Any], codes: Mapping[str, int] = NO_CODES, at: int | str | None = None) -> bytes:
    """``at``: ``_at_ms`` of the change's time, when the caller has it."""
    dimension, new, reason = change["dimension"], change["to"], change["reason"]
    head = [_id_bytes(change["change_id"]), dimension, change["from"], new, _at_ms(change["at"]) if at is None else at]
    entry = ormsgpack.packb([*head, _short_reason(dimension, new, reason, codes)])
    if len(entry) > MAX_RECENT_ENTRY:  # a rule's text longer than 64 KiB: kept cut short
        reason = reason[: max(0, len(reason.encode()) - (len(entry) - MAX_RECENT_ENTRY) - 8)] + "…"
        entry = ormsgpack.packb([*head, reason])
    return compress_entry(entry)  # never larger than the entry


def _short_reason(dimension: str, new: str | None, reason: str, codes: Mapping[str, int]) -> str | list[str] | int:
    """A change's reason without what the entry already says: for "<dimension>.<to>: <text>",
    the code of the segment's rule text where it is registered (``codes``), else [its text];
    0 for "<dimension>: default"; else the reason as it is."""
    prefix = f"{dimension}.{new}: "
    if reason.startswith(prefix):
        text = reason[len(prefix) :]
        code = codes.get(text)
        return [text] if code is None else code
    if reason == f"{dimension}: default":
        return 0
    return reason


def _full_reason(dimension: str, new: str | None, short: str | list[str] | int, texts: Mapping[int, str]) -> str:
    if isinstance(short, list):
        return f"{dimension}.{new}: {short[0]}"
    if short == 0:
        return f"{dimension}: default"
    if isinstance(short, int):
        text = texts.get(short)
        return f"{dimension}.{new}: {text if text is not None else f'(rule text {short} is not in the registry)'}"
    return str(short)


def reason_code_of(raw: bytes) -> int | None:
    """The rule-text code an entry of the recent-changes list names, if it names one (for
    segengine.inspect to look the texts up before ``recent_record``)."""
    raw = expand_entry(raw)
    if raw[:1] in (b"[", b"{"):
        return None
    reason = ormsgpack.unpackb(raw)[-1]
    return reason if type(reason) is int and reason != 0 else None


def _id_bytes(change_id: str) -> bytes | str:
    """A change id (32 hex digits) as its 16 bytes; anything else as it is."""
    if len(change_id) == 32:
        try:
            raw = bytes.fromhex(change_id)
        except ValueError:
            return change_id
        if raw.hex() == change_id:
            return raw
    return change_id


def _at_ms(at: str) -> int | str:
    """An RFC 3339 time as epoch milliseconds when ``rfc3339`` gives it back exactly, else as it is."""
    ms = rfc3339_ms(at) if type(at) is str else None  # the form rfc3339 writes (1970-2242): whole numbers
    if ms is not None:
        return ms
    try:
        ms = round(datetime.fromisoformat(at).timestamp() * 1000)
    except (TypeError, ValueError):
        return at
    return ms if rfc3339(ms) == at else at


def recent_record(raw: bytes, texts: Mapping[int, str] = NO_TEXTS) -> dict[str, Any]:
    """One entry of the recent-changes list as a record of RECENT_FIELDS: stored as a
    MessagePack array in that order (the field names once here, not in every entry), or by
    versions before that as a JSON array or a JSON object. ``texts``: the registry's rule
    texts of the codes the entries name (``reason_code_of``). An entry is compressed
    (segengine.compress) where that makes it smaller."""
    raw = expand_entry(raw)
    if raw[:1] in (b"[", b"{"):
        doc = orjson.loads(raw)
        return dict(zip(RECENT_FIELDS, doc, strict=True)) if isinstance(doc, list) else doc
    cid, dimension, old, new, at, reason = ormsgpack.unpackb(raw)
    return {
        "change_id": cid.hex() if isinstance(cid, bytes) else cid,
        "dimension": dimension,
        "from": old,
        "to": new,
        "at": rfc3339(at) if isinstance(at, int) else at,
        "reason": _full_reason(dimension, new, reason, texts),
    }


def out_record(out: Output) -> OutRecord:
    value = None if out.value is None else orjson.dumps(out.value)
    return tuple.__new__(OutRecord, (out.topic, out.key.encode(), value))  # no Python-level frame: one per record


def produced_at(outputs: list[Output], produced: dict[tuple[str, int, int], int], sample: int = 256) -> list[int]:
    """When the events behind (a sample of) the batch's segment changes were produced, for
    the produce -> change latency. Outbox entries caused by records outside this batch are left out."""
    changes = [o for o in outputs if o.topic == CHANGES_TOPIC and o.cause is not None and o.offset is not None]
    stamps: list[int] = []
    for out in changes[:: max(1, len(changes) // sample)]:
        assert out.cause is not None and out.offset is not None
        ts = produced.get((out.cause.topic, out.cause.partition, out.offset))
        if ts is not None and ts > 0:
            stamps.append(ts)
    return stamps


def merge_by_time(events: list[Event]) -> list[Event]:
    """One customer's events from several topics, merged by event time; each
    topic-partition's own records keep their offset order (the applied-offset check needs it)."""
    per_tp: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        per_tp[(e.source.topic, e.source.partition)].append(e)
    return list(heapq.merge(*per_tp.values(), key=lambda e: e.ts))


def rejected(event: Event, code: str, message: str) -> Rejected:
    return Rejected(code, message, event.source, event.customer_id.encode(), orjson.dumps(event.body), event.type)


def home_if_known(loaded: Loaded) -> int | None:
    """The home partition of a customer whose state may not even decode (None if unknown)."""
    try:
        return home_of(CustomerState.loads(loaded.blob))
    except Exception:  # a state that does not decode has no known home
        return None
