"""Per-customer rolling behaviour state, and the pure functions that change and read it.

``apply(state, event)`` folds one event into the state; ``Features(state, now)`` reads
the rolling aggregates the rules ask for at a given time. Nothing here does I/O: the
state is stored and loaded as one JSON document per customer by ``engine.store_redis``.

Windows use event time. Purchases of the last 365 days are kept one by one (exact
windows); browses are kept as hourly buckets for 30 days; older detail is dropped once
it can no longer fall into any window, lifetime totals are kept as counters.

Per-customer cost and size are bounded, whatever one customer sends. Folding an event
costs O(1) amortised in the customer's history (no scan of it per event), and every
growing part of the state has a cap (the ``MAX_*`` constants below):

  - dedupe fingerprints: kept for the dedupe horizon, pruned in one rebuild once the
    oldest is more than horizon/16 past it (so an entry may live up to horizon + 1/16;
    a repeat within the horizon always counts once); at most MAX_FINGERPRINTS, past
    which the oldest quarter is forgotten;
  - purchases of the last 365 days: one entry each up to MAX_PURCHASE_ENTRIES; past it,
    purchases are kept per hour, one entry ``[ts, [amount, orders]]`` at the hour's
    latest purchase (windows exact to the hour), or per UTC day if hours are still too
    many, until the list falls under a quarter of the cap; order counts stay exact;
  - complaints of the last 90 days: the latest MAX_COMPLAINTS (complaints_90d saturates);
  - profile attributes: at most MAX_ATTRIBUTES names of at most MAX_ATTRIBUTE_NAME
    characters, string values of at most MAX_ATTRIBUTE_CHARS; a profile event that would
    break one of these raises ``LimitExceeded`` (it goes to the DLQ, the state unchanged);
  - the encoded document: ``check_size`` refuses one over MAX_STATE_BYTES.
Declared aggregations have their own caps (``engine.aggregates``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

import orjson

from .errors import ProcessingError
from .events import BROWSE_ACTIONS, Event

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PURCHASE_WINDOWS_DAYS = (7, 30, 90, 365)
BROWSE_WINDOWS_DAYS = (7, 30)
COMPLAINT_WINDOW_DAYS = 90
ACTIONS = tuple(sorted(BROWSE_ACTIONS))
_ACTION_INDEX = {a: i for i, a in enumerate(ACTIONS)}

# Per-customer limits (see the module docstring for what happens at each).
DEDUPE_SLACK_DIVISOR = 16  # fingerprints may outlive the dedupe horizon by horizon / 16
MAX_FINGERPRINTS = 10_000  # ~33 bytes each encoded: ~330 KB at the cap
MAX_PURCHASE_ENTRIES = 1_000  # purchase entries in the 365-day window before same-hour ones merge
MAX_COMPLAINTS = 1_000  # complaints kept for complaints_90d
MAX_ATTRIBUTES = 100  # profile attribute names per customer
MAX_ATTRIBUTE_NAME = 64  # characters in a profile attribute name
MAX_ATTRIBUTE_CHARS = 256  # characters in a profile attribute's string value
MAX_STATE_BYTES = 1 << 20  # the encoded state document (the same bound as one input record)
LIMIT_EXCEEDED = "limit_exceeded"


class LimitExceeded(ProcessingError):
    """An event would take a customer past a per-customer limit. The event is dead-lettered
    with ``code``; the state stays as it was. The message names the limit, never customer data."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def event_fingerprint(event_id: str) -> str:
    """A short, fixed-size stand-in for an event_id in the dedupe record (saves memory)."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


class CustomerState:
    """One customer's rolling state. Plain data; see the module docstring for the layout.

    The attributes are the JSON document itself (``__dict__``), so that loading and
    storing a state costs one orjson call and nothing per field."""

    def __init__(self) -> None:
        self.purchases: list[
            list[Any]
        ] = []  # [ts_ms, amount] or merged [ts_ms, [amount, orders]], last 365 days, by ts
        self.orders = 0
        self.spend = 0.0
        self.first_purchase: int | None = None
        self.last_purchase: int | None = None
        self.purchase_grain = 0  # 0: one purchase entry each; HOUR_MS or DAY_MS: one per hour or day (past the cap)
        self.purchase_days: list[int] = []  # sorted distinct UTC epoch days with a purchase
        self.refunds = 0
        self.refund_amount = 0.0
        self.browse: dict[str, list[int]] = {}  # hour bucket -> counts per ACTIONS
        self.last_browse: int | None = None
        self.browse_total = 0
        self.feedback: dict[str, list[Any]] = {}  # kind -> [score, ts]
        self.complaints: list[int] = []  # complaint ts, last 90 days
        self.attributes: dict[str, Any] = {}
        self.aggs: dict[str, Any] = {}  # declared aggregations: key -> partial, or [[bucket, partial], ...]
        self.max_ts: int | None = None
        self.first_seen: int | None = None
        self.offsets: dict[str, int] = {}  # "topic:partition" -> last applied offset
        self.seen: dict[str, int] = {}  # event fingerprint -> event ts, within the dedupe horizon (+ slack)
        self.seen_oldest: int | None = None  # at most the oldest ts in ``seen`` (None: empty, or not known yet)
        self.members: dict[str, str] = {}  # dimension -> segment
        self.member_since: dict[str, int] = {}  # dimension -> when the customer entered its segment
        self.grace_since: dict[str, int] = {}  # dimension -> when its stay condition first failed (exit_grace)
        self.checked_at: int | None = None  # the last decision's time (event or timer): timers due after it
        self.actions_sent: dict[str, int] = {}  # action name -> when it was last sent (cooldowns)
        self.delayed: list[dict[str, Any]] = []  # actions waiting for their delay (engine.actions)
        self.pending: list[dict[str, Any]] = []  # outbox: output records not yet known committed
        self.home: int | None = None  # the input partition of the customer's first record: its timers and owner

    # -- persistence -------------------------------------------------------------------------

    def dumps(self) -> bytes:
        """The state document, without the outbox (stored beside it)."""
        pending = self.__dict__.pop("pending")
        try:
            return orjson.dumps(self.__dict__)
        finally:
            self.pending = pending

    def dumps_outbox(self) -> bytes:
        return orjson.dumps(self.pending) if self.pending else b""

    @classmethod
    def loads(cls, blob: bytes | None, outbox: bytes | None = None) -> CustomerState:
        state = cls()
        if blob:
            state.__dict__.update(orjson.loads(blob))
        if outbox:
            state.pending = orjson.loads(outbox)
        return state

    @property
    def is_empty(self) -> bool:
        return self.max_ts is None and not self.attributes


def check_size(blob: bytes, previous: int = 0) -> None:
    """Refuse an encoded state document over MAX_STATE_BYTES, unless it is no larger than
    ``previous`` (the stored document's size): a document written over the limit before the
    limit existed can still take events that do not grow it."""
    if len(blob) > MAX_STATE_BYTES and len(blob) > previous:
        raise LimitExceeded(
            LIMIT_EXCEEDED, f"the customer's state would be {len(blob)} bytes, the limit is {MAX_STATE_BYTES}"
        )


# -- folding events in --------------------------------------------------------------------


def already_applied(state: CustomerState, event: Event) -> bool:
    """True when this exact record (topic, partition, offset) was applied before."""
    last = state.offsets.get(f"{event.source.topic}:{event.source.partition}")
    return last is not None and event.source.offset <= last


def apply(
    state: CustomerState, event: Event, *, dedupe_horizon_ms: int,
    keep_purchases: bool = True, keep_browse: bool = True, keep_complaints: bool = True,
) -> bool:  # fmt: skip
    """Fold ``event`` into ``state``. Returns False (and changes only the offset) for a
    repeated ``event_id`` within the dedupe horizon. The caller checks ``already_applied``.

    The per-event detail behind the windowed built-in features (purchases of the last
    year, hourly browse counts, recent complaints) is kept only when the rules read those
    windows (``keep_*``); lifetime counters are always kept. Raises ``LimitExceeded``, the
    state untouched, for an event that would break a per-customer limit."""
    tp = f"{event.source.topic}:{event.source.partition}"
    fingerprint = event_fingerprint(event.event_id)
    if fingerprint in state.seen:
        state.offsets[tp] = event.source.offset
        return False
    if event.type == "profile":
        _check_attributes(state.attributes, event.body["attributes"])
    state.offsets[tp] = event.source.offset
    ts = event.ts
    if state.max_ts is None or ts >= state.max_ts - dedupe_horizon_ms:  # an older one would be forgotten at once
        state.seen[fingerprint] = ts
        if state.seen_oldest is not None and ts < state.seen_oldest:  # unknown (None): _prune_seen learns it
            state.seen_oldest = ts
    state.max_ts = ts if state.max_ts is None else max(state.max_ts, ts)
    state.first_seen = ts if state.first_seen is None else min(state.first_seen, ts)
    _APPLY[event.type](state, event.body, ts)
    if not keep_purchases and state.purchases:
        state.purchases = []
    if not keep_browse and state.browse:
        state.browse = {}
    if not keep_complaints and state.complaints:
        state.complaints = []
    _prune(state, dedupe_horizon_ms)
    return True


def _check_attributes(attributes: Mapping[str, Any], update: Mapping[str, Any]) -> None:
    added = removed = 0
    for name, value in update.items():
        if len(name) > MAX_ATTRIBUTE_NAME:
            raise LimitExceeded(LIMIT_EXCEEDED, f"a profile attribute name is over {MAX_ATTRIBUTE_NAME} characters")
        if type(value) is str and len(value) > MAX_ATTRIBUTE_CHARS:
            raise LimitExceeded(LIMIT_EXCEEDED, f"a profile attribute value is over {MAX_ATTRIBUTE_CHARS} characters")
        if value is None:
            removed += name in attributes
        else:
            added += name not in attributes
    if added and len(attributes) + added - removed > MAX_ATTRIBUTES:
        raise LimitExceeded(
            LIMIT_EXCEEDED,
            f"the profile would have {len(attributes) + added - removed} attributes, the limit is {MAX_ATTRIBUTES}",
        )


_first = itemgetter(0)


def _apply_purchase(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    amount = float(body["amount"])
    state.orders += 1
    state.spend += amount
    purchases = state.purchases
    grain = state.purchase_grain
    if purchases and grain and ts >= purchases[-1][0] and ts // grain == purchases[-1][0] // grain:
        total, orders = _amount_orders(purchases[-1])
        purchases[-1] = [ts, [total + amount, orders + 1]]
    elif not purchases or ts >= purchases[-1][0]:
        purchases.append([ts, amount])
    elif ts > (state.max_ts or ts) - PURCHASE_WINDOWS_DAYS[-1] * DAY_MS:  # older ones count in no window
        insort(purchases, [ts, amount], key=_first)
    if len(purchases) > MAX_PURCHASE_ENTRIES:
        state.purchases, state.purchase_grain = _merge_purchases(purchases)
    state.first_purchase = ts if state.first_purchase is None else min(state.first_purchase, ts)
    state.last_purchase = ts if state.last_purchase is None else max(state.last_purchase, ts)
    day = ts // DAY_MS
    days = state.purchase_days
    if not days or day > days[-1]:
        days.append(day)
    elif day != days[-1]:
        i = bisect_left(days, day)
        if days[i] != day:
            days.insert(i, day)


def _merge_purchases(purchases: list[list[Any]]) -> tuple[list[list[Any]], int]:
    """Past the cap: the purchases of one hour become one entry at the hour's latest ts,
    ``[ts, [amount, orders]]``; if that leaves more than 3/4 of the cap, of one UTC day
    (at most 366 entries). Returns the entries and the grain that new purchases keep.
    Runs once per cap/4 new entries at most: amortised O(1)."""
    for span in (HOUR_MS, DAY_MS):
        merged: list[list[Any]] = []
        for entry in purchases:
            if merged and merged[-1][0] // span == entry[0] // span:
                amount, orders = _amount_orders(merged[-1])
                more, more_orders = _amount_orders(entry)
                merged[-1] = [entry[0], [amount + more, orders + more_orders]]
            else:
                merged.append(entry)
        purchases = merged
        if len(purchases) <= MAX_PURCHASE_ENTRIES * 3 // 4:
            break
    return purchases, span


def _amount_orders(entry: list[Any]) -> tuple[float, int]:
    """(amount, orders) of a purchase entry: one purchase, or merged ones."""
    value = entry[1]
    return (value[0], value[1]) if type(value) is list else (value, 1)


def _apply_refund(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    state.refunds += 1
    state.refund_amount += float(body["amount"])


def _apply_browse(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    state.browse_total += 1
    state.last_browse = ts if state.last_browse is None else max(state.last_browse, ts)
    hour = ts // HOUR_MS
    if hour < _oldest_browse_hour(state.max_ts or ts):
        return  # counts in no window
    bucket = str(hour)
    counts = state.browse.get(bucket)
    if counts is None:
        counts = state.browse[bucket] = [0] * len(ACTIONS)
    counts[_ACTION_INDEX[body["action"]]] += 1


def _apply_feedback(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    kind = body["kind"]
    complaints = state.complaints
    if kind == "complaint" and ts > (state.max_ts or ts) - COMPLAINT_WINDOW_DAYS * DAY_MS:
        if not complaints or ts >= complaints[-1]:
            complaints.append(ts)
        else:
            insort(complaints, ts)
        if len(complaints) > MAX_COMPLAINTS:
            del complaints[0]  # the oldest: complaints_90d saturates at the cap
    previous = state.feedback.get(kind)
    if previous is None or ts >= previous[1]:
        state.feedback[kind] = [body.get("score"), ts]


def _apply_profile(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    for name, value in body["attributes"].items():
        if value is None:
            state.attributes.pop(name, None)
        else:
            state.attributes[name] = value


def _apply_erase(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    """Forget everything about the customer. Only the applied offsets (so that a redelivered
    record is still recognised) and the outbox (the exits the erase causes) stay, until the
    erase is committed and the store deletes the customer's keys; engine.evaluate emits the
    exits from the memberships it reads before this runs."""
    kept = (state.offsets, state.pending)
    state.__init__()  # type: ignore[misc]
    state.offsets, state.pending = kept


_APPLY: dict[str, Callable[[CustomerState, Mapping[str, Any], int], None]] = {
    "purchase": _apply_purchase,
    "refund": _apply_refund,
    "browse": _apply_browse,
    "feedback": _apply_feedback,
    "profile": _apply_profile,
    "erase": _apply_erase,
}


def _oldest_browse_hour(latest: int) -> int:
    return (latest - BROWSE_WINDOWS_DAYS[-1] * DAY_MS) // HOUR_MS


BROWSE_SLACK_HOURS = 24  # expired browse buckets go in one rebuild at most once a day of event time


def _prune(state: CustomerState, dedupe_horizon_ms: int) -> None:
    """Drop detail that can no longer fall into any window (relative to the latest event).
    Each check is O(1); a rebuild is O(n) but comes once per many events (amortised O(1))."""
    latest = state.max_ts or 0
    horizon = latest - PURCHASE_WINDOWS_DAYS[-1] * DAY_MS
    purchases = state.purchases
    if purchases and purchases[0][0] <= horizon:
        purchases = state.purchases = purchases[bisect_right(purchases, horizon, key=_first) :]
        if len(purchases) < MAX_PURCHASE_ENTRIES // 4:
            state.purchase_grain = 0  # quiet again: one entry per purchase from now on
    oldest_hour = _oldest_browse_hour(latest)
    # Buckets are mostly created in time order, so the first is the oldest but for late
    # events. A rebuild comes once the first is a day past the window, so rebuilds are a
    # day of event time apart at least and 31 days at most: a late bucket outlives its
    # window by 31 days at most (at most ~62 days of hourly buckets are held).
    if state.browse and int(next(iter(state.browse))) < oldest_hour - BROWSE_SLACK_HOURS:
        state.browse = {b: c for b, c in state.browse.items() if int(b) >= oldest_hour}
    complaints_horizon = latest - COMPLAINT_WINDOW_DAYS * DAY_MS
    complaints = state.complaints
    if complaints and complaints[0] <= complaints_horizon:
        state.complaints = complaints[bisect_right(complaints, complaints_horizon) :]
    _prune_seen(state, latest - dedupe_horizon_ms, dedupe_horizon_ms // DEDUPE_SLACK_DIVISOR)


def _prune_seen(state: CustomerState, horizon: int, slack: int) -> None:
    """Fingerprints older than ``horizon`` go in one rebuild, once the oldest is ``slack``
    past it; rebuilds are ``slack`` of event time apart at least, so each entry takes part
    in at most horizon/slack + 2 of them. Past MAX_FINGERPRINTS, the newest 3/4 stay."""
    seen = state.seen
    if not seen:
        return
    oldest = state.seen_oldest
    if oldest is None:  # a document from before the bound was kept
        oldest = state.seen_oldest = min(seen.values())
    if oldest < horizon - slack:
        seen = state.seen = {f: t for f, t in seen.items() if t >= horizon}
        state.seen_oldest = min(seen.values(), default=None)
    if len(seen) > MAX_FINGERPRINTS:
        kept = sorted(seen.items(), key=itemgetter(1))[-(MAX_FINGERPRINTS * 3 // 4) :]
        state.seen = dict(kept)
        state.seen_oldest = kept[0][1]


# -- reading features ---------------------------------------------------------------------


def _days_since(ts: int | None, now: int) -> float | None:
    return None if ts is None else (now - ts) / DAY_MS


_PURCHASE_KEYS = [(f"orders_{d}d", f"spend_{d}d", d * DAY_MS) for d in PURCHASE_WINDOWS_DAYS]


def _purchase_windows(state: CustomerState, now: int) -> dict[str, Any]:
    """orders_<d>d and spend_<d>d for every window, in one pass from the newest purchase
    back (purchases are sorted by time; windows are nested)."""
    purchases = state.purchases
    end = len(purchases)
    if end and purchases[-1][0] > now:  # decided before the latest purchase (a late event)
        end = bisect_right(purchases, now, key=_first)
    out: dict[str, Any] = {}
    i = end - 1
    spend = 0.0
    orders = 0
    for orders_key, spend_key, span in _PURCHASE_KEYS:
        oldest = now - span
        while i >= 0 and purchases[i][0] > oldest:
            amount, count = _amount_orders(purchases[i])
            spend += amount
            orders += count
            i -= 1
        out[orders_key] = orders
        out[spend_key] = round(spend, 2)
    return out


BROWSE_WINDOWS_HOURS = {"24h": 24, **{f"{d}d": d * 24 for d in BROWSE_WINDOWS_DAYS}}


_BROWSE_KEYS = [([f"{a}_{w}" for a in ACTIONS], hours) for w, hours in BROWSE_WINDOWS_HOURS.items()]
_NO_BROWSE = {key: 0 for keys, _ in _BROWSE_KEYS for key in keys}
_BROWSE_HOURS = [hours for _, hours in _BROWSE_KEYS]  # ascending: each window holds the shorter ones


def _browse_windows(state: CustomerState, now: int) -> dict[str, Any]:
    """<action>_<window> for every action and window, in one pass over the hour buckets: each
    bucket is added to the shortest window it is in, then the windows are summed up (nested)."""
    out = dict(_NO_BROWSE)
    if not state.browse:
        return out
    last = now // HOUR_MS
    longest = _BROWSE_HOURS[-1]
    parts: list[list[int]] | None = None
    for bucket, counts in state.browse.items():
        age = last - int(bucket)
        if age < 0 or age >= longest:
            continue
        if parts is None:
            parts = [[0] * len(ACTIONS) for _ in _BROWSE_HOURS]
        w = 0
        while age >= _BROWSE_HOURS[w]:
            w += 1
        part = parts[w]
        for j, c in enumerate(counts):
            if c:
                part[j] += c
    if parts is None:  # nothing within the windows (a customer who browsed long ago)
        return out
    running = [0] * len(ACTIONS)
    for (keys, _), part in zip(_BROWSE_KEYS, parts):
        for j, key in enumerate(keys):
            if part[j]:
                running[j] += part[j]
            if running[j]:
                out[key] = running[j]
    return out


def _last_gap_days(state: CustomerState) -> int | None:
    """Days between the two latest distinct purchase days (how long the customer was away)."""
    days = state.purchase_days
    return days[-1] - days[-2] if len(days) >= 2 else None


FeatureFn = Callable[[CustomerState, int], Any]

FEATURES: dict[str, FeatureFn] = {
    "orders_total": lambda s, now: s.orders,
    "spend_total": lambda s, now: round(s.spend, 2),
    "refunds_total": lambda s, now: s.refunds,
    "refund_amount_total": lambda s, now: round(s.refund_amount, 2),
    "net_spend_total": lambda s, now: round(s.spend - s.refund_amount, 2),
    "purchase_days": lambda s, now: len(s.purchase_days),
    "first_purchase_ts": lambda s, now: s.first_purchase,
    "last_purchase_ts": lambda s, now: s.last_purchase,
    "days_since_first_purchase": lambda s, now: _days_since(s.first_purchase, now),
    "days_since_last_purchase": lambda s, now: _days_since(s.last_purchase, now),
    "last_gap_days": lambda s, now: _last_gap_days(s),
    "browse_total": lambda s, now: s.browse_total,
    "last_browse_ts": lambda s, now: s.last_browse,
    "days_since_last_browse": lambda s, now: _days_since(s.last_browse, now),
    "complaints_90d": lambda s, now: sum(1 for t in s.complaints if now - COMPLAINT_WINDOW_DAYS * DAY_MS < t <= now),
    "days_since_first_seen": lambda s, now: _days_since(s.first_seen, now),
}
# Window features are computed in groups (one pass fills every window): see Features.
GROUPS: dict[str, Callable[[CustomerState, int], dict[str, Any]]] = {}
for _days in PURCHASE_WINDOWS_DAYS:
    GROUPS[f"orders_{_days}d"] = GROUPS[f"spend_{_days}d"] = _purchase_windows
for _window in BROWSE_WINDOWS_HOURS:
    for _action in ACTIONS:
        GROUPS[f"{_action}_{_window}"] = _browse_windows
for _name in GROUPS:
    FEATURES[_name] = lambda s, now, n=_name: GROUPS[n](s, now)[n]
TIME_DEPENDENT = frozenset({*GROUPS, "complaints_90d", *(n for n in FEATURES if n.startswith("days_since_"))})
for _kind in ("nps", "csat", "review"):
    FEATURES[f"last_{_kind}"] = lambda s, now, k=_kind: (s.feedback.get(k) or [None])[0]
PROFILE_PREFIX = "profile_"
EVENT_TYPES = frozenset({"purchase", "refund", "browse", "feedback", "profile", "erase"})


def changed_by(feature: str) -> frozenset[str]:
    """The event types whose arrival can change this feature's value (erase changes all).
    Time alone changes windowed and days_since features too: that is the timers' part."""
    if feature.startswith(PROFILE_PREFIX):
        kinds = {"profile"}
    elif feature in ("refunds_total", "refund_amount_total"):
        kinds = {"refund"}
    elif feature == "net_spend_total":
        kinds = {"purchase", "refund"}
    elif feature.startswith(("orders_", "spend_")) or "purchase" in feature or feature == "last_gap_days":
        kinds = {"purchase"}
    elif feature.startswith(ACTIONS) or "browse" in feature:
        kinds = {"browse"}
    elif feature.startswith("last_") or feature.startswith("complaints_"):
        kinds = {"feedback"}
    else:
        kinds = set(EVENT_TYPES)
    return frozenset(kinds | {"erase"})


Resolver = Callable[["Features"], Any]


def _group_resolver(group: Callable[[CustomerState, int], dict[str, Any]], name: str) -> Resolver:
    def resolve(features: Features) -> Any:
        values = group(features.state, features.now)
        features.update(values)  # one pass fills every window of the group
        return values[name]

    return resolve


def _base_resolver(fn: FeatureFn) -> Resolver:
    return lambda features: fn(features.state, features.now)


BASE_RESOLVERS: dict[str, Resolver] = {name: _base_resolver(fn) for name, fn in FEATURES.items()}
BASE_RESOLVERS.update({name: _group_resolver(group, name) for name, group in GROUPS.items()})


class Derived(dict[str, Callable[..., Any]]):
    """A rule set's derived features (name -> fn(features, current, now)), with the one
    table that resolves every feature name, built once per rule set."""

    def __init__(self, derived: Mapping[str, Callable[..., Any]] | None = None) -> None:
        super().__init__(derived or {})
        self.table: dict[str, Resolver] = {**BASE_RESOLVERS, **{n: _derived_resolver(fn) for n, fn in self.items()}}


def _derived_resolver(fn: Callable[..., Any]) -> Resolver:
    return lambda features: fn(features, None, features.now)


_NO_DERIVED = Derived()


class Features(dict[str, Any]):
    """The named features of one customer at time ``now``, computed on first read and
    cached (a dict, so that a cached read costs what a dict lookup costs).

    ``profile_<name>`` reads profile attribute ``<name>``. Unknown names raise KeyError,
    missing values are None.
    """

    __slots__ = ("derived", "now", "state", "table")

    def __init__(self, state: CustomerState, now: int, derived: Mapping[str, Callable[..., Any]] | None = None) -> None:
        super().__init__()
        self.state = state
        self.now = now
        if not isinstance(derived, Derived):
            derived = Derived(derived) if derived else _NO_DERIVED
        self.derived = derived
        self.table = derived.table

    def __missing__(self, name: str) -> Any:
        resolve = self.table.get(name)
        if resolve is not None:
            value = resolve(self)
        elif name.startswith(PROFILE_PREFIX):
            value = self.state.attributes.get(name[len(PROFILE_PREFIX) :])
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def all(self) -> dict[str, Any]:
        """Every feature, profile attributes included (for explanations)."""
        names = [*FEATURES, *self.derived, *(PROFILE_PREFIX + a for a in self.state.attributes)]
        return {name: self[name] for name in names}


def is_known_feature(name: str) -> bool:
    return name in FEATURES or (name.startswith(PROFILE_PREFIX) and len(name) > len(PROFILE_PREFIX))
