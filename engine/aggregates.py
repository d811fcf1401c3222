"""Declared rolling aggregations: features that a rules file defines over events.

    features:
      running_views_30d: {op: count, of: browse, where: "action == 'view' and category == 'running'", window: 30d}
      top_category_90d:
        op: most_frequent
        field: category
        of:
          browse: {where: "action in ['view', 'add_to_cart']"}
          purchase_item: {weight: 5}
        window: 90d

An aggregation keeps, in the customer's state document, only its own partial results:
one for an all-time aggregation, or one per time bucket for a windowed one (hour buckets
for windows up to 7 days, UTC-day buckets above). An event counts while its bucket's end
is less than the window before "now", so a windowed value is exact to the bucket. Nothing
is kept for aggregations that no rule declares. Pure: no I/O.

Every partial is added to in O(1). ``distinct`` and ``most_frequent`` keep a dict per
partial (value -> 1, value -> weight), bounded per aggregation: at most MAX_TRACKED
(value, bucket) entries over all its buckets, and only values of at most MAX_VALUE_CHARS
characters (a longer value is not tracked). The value is exact while the aggregation
holds fewer than MAX_TRACKED entries. Past that, a windowed one drops its oldest buckets
(its window shortens, the newest activity always counts); an all-time one, or a bucket
that alone holds MAX_TRACKED values, takes no new value (a distinct count saturates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .state import first_after

if TYPE_CHECKING:
    from .events import Event
    from .state import CustomerState, Features

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HOUR_BUCKETS_UP_TO_MS = 7 * DAY_MS
NUMBER, STRING, ANY = "number", "string", "any"
MAX_TRACKED = 1_000  # (value, bucket) entries of one distinct / most_frequent aggregation
MAX_VALUE_CHARS = 100  # longer values are not tracked by distinct / most_frequent
KEYED_OPS = frozenset({"distinct", "most_frequent"})  # partials keyed by value

# op -> (needs a field, needs a numeric field, type of the result or None: the field's type)
OPS: dict[str, tuple[bool, bool, str | None]] = {
    "count": (False, False, NUMBER),
    "sum": (True, True, NUMBER),
    "avg": (True, True, NUMBER),
    "min": (True, True, NUMBER),
    "max": (True, True, NUMBER),
    "first": (True, False, None),
    "last": (True, False, None),
    "distinct": (True, False, NUMBER),
    "most_frequent": (True, False, None),
}

_ENVELOPE = {"source": STRING}
# What an aggregation can read: event kinds and their fields (``purchase_item`` is one
# item of a purchase, with the order's fields beside the item's own).
SOURCES: dict[str, dict[str, str]] = {
    "browse": {
        **_ENVELOPE,
        "action": STRING,
        "page": STRING,
        "product_id": STRING,
        "category": STRING,
        "price": NUMBER,
        "session_id": STRING,
        "query": STRING,
    },
    "purchase": {**_ENVELOPE, "order_id": STRING, "amount": NUMBER, "currency": STRING, "channel": STRING},
    "purchase_item": {
        **_ENVELOPE,
        "order_id": STRING,
        "currency": STRING,
        "channel": STRING,
        "sku": STRING,
        "category": STRING,
        "qty": NUMBER,
        "price": NUMBER,
    },
    "refund": {**_ENVELOPE, "order_id": STRING, "amount": NUMBER},
    "feedback": {**_ENVELOPE, "kind": STRING, "score": NUMBER, "topic": STRING},
}
EVENT_TYPE = {"purchase_item": "purchase"}  # source -> the event type that carries it


class Row(dict[str, Any]):
    """An event's fields as a ``where`` condition reads them: a missing field is null."""

    def __missing__(self, name: str) -> None:
        return None


Where = Callable[[Mapping[str, Any], Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # a key of SOURCES
    where: Where | None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Aggregate:
    name: str
    op: str
    field: str | None
    sources: tuple[Source, ...]
    window_ms: int | None  # None: all time
    definition: str  # canonical text of the declaration: same text, same aggregation
    type: str
    key: str = ""  # where its partials live in the state: a changed definition starts afresh

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(
                self, "key", f"{self.name}:{hashlib.blake2b(self.definition.encode(), digest_size=3).hexdigest()}"
            )

    @property
    def bucket_ms(self) -> int:
        return HOUR_MS if self.window_ms is not None and self.window_ms <= HOUR_BUCKETS_UP_TO_MS else DAY_MS

    @property
    def triggers(self) -> frozenset[str]:
        """The event types whose arrival can change the value."""
        return frozenset(EVENT_TYPE.get(s.kind, s.kind) for s in self.sources)

    # -- folding events in ------------------------------------------------------------------

    def fold(self, state: CustomerState, event: Event) -> None:
        """Add the event's matching rows to the partials (late events too, while in the window)."""
        window = self.window_ms
        bucket = event.ts // self.bucket_ms
        if window is not None and (bucket + 1) * self.bucket_ms + window <= (state.max_ts or 0):
            return  # older than the window: it can never count
        numeric = OPS[self.op][1]
        for source in self.sources:
            if EVENT_TYPE.get(source.kind, source.kind) != event.type:
                continue
            for row in _rows(source.kind, event):
                if source.where is not None and not source.where(row, None, None):
                    continue
                value = row[self.field] if self.field is not None else None
                if self.field is not None and (
                    value is None or (numeric and not _is_number(value)) or isinstance(value, (dict, list))
                ):
                    continue
                self._add(state, bucket, value, event.ts, source.weight)

    def _add(self, state: CustomerState, bucket: int, value: Any, ts: int, weight: float) -> None:
        aggs = state.aggs
        add = _ADD[self.op]
        keyed = self.op in KEYED_OPS
        if keyed:
            value = value if type(value) is str else str(value)
            if len(value) > MAX_VALUE_CHARS:
                return
        if self.window_ms is None:
            partial = aggs.get(self.key)
            if keyed and partial is not None and len(partial) >= MAX_TRACKED and value not in _counts(partial):
                return
            aggs[self.key] = add(partial, value, ts, weight)
            return
        buckets = aggs.setdefault(self.key, [])
        i = _find(buckets, bucket)
        found = i < len(buckets) and buckets[i][0] == bucket
        if keyed and not (found and value in _counts(buckets[i][1])):
            dropped = _make_room(buckets, bucket)
            if dropped < 0:
                return
            i -= dropped
        if found:
            buckets[i][1] = add(buckets[i][1], value, ts, weight)
        else:
            buckets.insert(i, [bucket, add(None, value, ts, weight)])

    def prune(self, state: CustomerState) -> None:
        """Drop buckets that can no longer fall in the window (relative to the latest event)."""
        buckets = state.aggs.get(self.key)
        if self.window_ms is None or not buckets:
            return
        horizon = (state.max_ts or 0) - self.window_ms
        if (buckets[0][0] + 1) * self.bucket_ms <= horizon:
            kept = [b for b in buckets if (b[0] + 1) * self.bucket_ms > horizon]
            if kept:
                state.aggs[self.key] = kept
            else:
                del state.aggs[self.key]

    # -- reading ----------------------------------------------------------------------------

    def feature(self, features: Mapping[str, Any], _current: Any, now: int | None) -> Any:
        """The aggregation as a rule set's derived feature: (features, current, now) -> its
        value at ``now`` (the features' time when None)."""
        held = cast("Features", features)  # a derived feature is read from a decision's Features
        return self.value(held.state, held.now if now is None else now)

    def value(self, state: CustomerState, now: int) -> Any:
        data = state.aggs.get(self.key)
        if self.window_ms is None:
            return _FINAL[self.op](data)
        if not data:
            return _FINAL[self.op](None)
        size = self.bucket_ms
        oldest = now - self.window_ms  # a bucket counts while its end is after this
        merged = None
        merge = _MERGE[self.op]
        for bucket, partial in data:
            if (bucket + 1) * size > oldest and bucket * size <= now:
                if merged is None:  # the stored partial itself is never changed: keyed merges add into ``merged``
                    merged = dict(partial) if type(partial) is dict else partial
                else:
                    merged = merge(merged, partial)
        return _FINAL[self.op](merged)

    def next_expiry(self, state: CustomerState, now: int) -> int | None:
        """The first moment after ``now`` at which a bucket leaves the window (the value may
        change then); None if none will. Buckets are kept in order: found by bisection."""
        buckets = state.aggs.get(self.key)
        if self.window_ms is None or not buckets:
            return None
        size = self.bucket_ms
        # the first bucket whose end is after now - window: the first not before the one of now - window
        i = first_after(buckets, (now - self.window_ms) // size - 1)
        return (buckets[i][0] + 1) * size + self.window_ms if i < len(buckets) else None


def _find(buckets: list[list[Any]], bucket: int) -> int:
    """Where ``bucket`` is or would go; events mostly come in time order: scan from the end."""
    i = len(buckets)
    while i and buckets[i - 1][0] >= bucket:
        i -= 1
        if buckets[i][0] == bucket:
            break
    return i


def _make_room(buckets: list[list[Any]], bucket: int) -> int:
    """Room for one more (value, bucket) entry in a keyed aggregation: drop its oldest
    buckets (only ones older than ``bucket``) while it holds MAX_TRACKED entries. Returns
    how many were dropped, or -1 when there is no room. O(buckets), only for a new value."""
    tracked = sum(len(partial) for _, partial in buckets)
    dropped = 0
    while tracked >= MAX_TRACKED and buckets and buckets[0][0] < bucket:
        tracked -= len(buckets.pop(0)[1])
        dropped += 1
    return dropped if tracked < MAX_TRACKED else -1


def _counts(partial: Any) -> dict[str, float]:
    """A keyed partial as a dict (distinct partials were lists of values before)."""
    if type(partial) is list:
        return dict.fromkeys(partial, 1)
    counts: dict[str, float] = partial
    return counts


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _rows(kind: str, event: Event) -> Iterator[Row]:
    body = event.body
    if kind != "purchase_item":
        yield Row(body)
        return
    order = {k: body.get(k) for k in ("source", "order_id", "currency", "channel")}
    for item in body.get("items") or ():
        if isinstance(item, dict):
            yield Row({**order, **item})


def fold_all(
    aggregates: tuple[Aggregate, ...], by_type: Mapping[str, tuple[Aggregate, ...]], state: CustomerState, event: Event
) -> None:
    """Fold one event into every declared aggregation that reads its type, prune every
    windowed one, and forget partials that no declaration owns any more."""
    for agg in by_type.get(event.type, ()):
        agg.fold(state, event)
    for agg in aggregates:
        agg.prune(state)
    if state.aggs and len(state.aggs) > sum(1 for a in aggregates if a.key in state.aggs):
        keys = {a.key for a in aggregates}
        state.aggs = {k: v for k, v in state.aggs.items() if k in keys}


# -- partials: add one value, merge two, read the result -----------------------------------
# Partials are plain JSON values (they live in the state document).


def _add_count(p: Any, v: Any, ts: int, w: float) -> Any:
    return (p or 0) + 1


def _add_sum(p: Any, v: Any, ts: int, w: float) -> Any:
    return (p or 0) + v


def _add_avg(p: Any, v: Any, ts: int, w: float) -> Any:
    return [v, 1] if p is None else [p[0] + v, p[1] + 1]


def _add_min(p: Any, v: Any, ts: int, w: float) -> Any:
    return v if p is None or v < p else p


def _add_max(p: Any, v: Any, ts: int, w: float) -> Any:
    return v if p is None or v > p else p


def _add_first(p: Any, v: Any, ts: int, w: float) -> Any:
    return [ts, v] if p is None or ts < p[0] else p


def _add_last(p: Any, v: Any, ts: int, w: float) -> Any:
    return [ts, v] if p is None or ts >= p[0] else p


def _add_distinct(p: Any, v: str, ts: int, w: float) -> Any:
    p = {} if p is None else _counts(p)
    p[v] = 1
    return p


def _add_most_frequent(p: Any, v: str, ts: int, w: float) -> Any:
    p = p if p is not None else {}
    p[v] = p.get(v, 0) + w
    return p


def _merge_distinct(a: Any, b: Any) -> dict[str, float]:
    """Into ``a`` (a copy the caller owns, or a legacy list, replaced)."""
    merged = _counts(a)
    merged.update(_counts(b))
    return merged


def _merge_counts(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Into ``a`` (a copy the caller owns)."""
    for k, n in b.items():
        a[k] = a.get(k, 0) + n
    return a


def _top(p: dict[str, float] | None) -> str | None:
    """The value with the greatest weight; ties go to the smallest value (deterministic)."""
    if not p:
        return None
    best = max(p.values())
    return min(k for k, n in p.items() if n == best)


_ADD: dict[str, Callable[[Any, Any, int, float], Any]] = {
    "count": _add_count, "sum": _add_sum, "avg": _add_avg, "min": _add_min, "max": _add_max,
    "first": _add_first, "last": _add_last, "distinct": _add_distinct, "most_frequent": _add_most_frequent,
}  # fmt: skip
_MERGE: dict[str, Callable[[Any, Any], Any]] = {
    "count": lambda a, b: a + b,
    "sum": lambda a, b: a + b,
    "avg": lambda a, b: [a[0] + b[0], a[1] + b[1]],
    "min": min,
    "max": max,
    "first": lambda a, b: a if a[0] <= b[0] else b,
    "last": lambda a, b: b if b[0] >= a[0] else a,
    "distinct": _merge_distinct,
    "most_frequent": _merge_counts,
}
_FINAL: dict[str, Callable[[Any], Any]] = {
    "count": lambda p: p or 0,
    "sum": lambda p: round(p, 6) if p else 0,
    "avg": lambda p: None if not p else p[0] / p[1],
    "min": lambda p: p,
    "max": lambda p: p,
    "first": lambda p: None if p is None else p[1],
    "last": lambda p: None if p is None else p[1],
    "distinct": lambda p: len(p) if p else 0,
    "most_frequent": _top,
}
