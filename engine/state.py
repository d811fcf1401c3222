"""Per-customer rolling behaviour state, and the pure functions that change and read it.

``apply(state, event)`` folds one event into the state; ``Features(state, now)`` reads
the rolling aggregates the rules ask for at a given time. Nothing here does I/O: the
state is stored and loaded as one JSON document per customer by ``engine.store_redis``.

Windows use event time. Purchases of the last 365 days are kept one by one (exact
windows); browses are kept as hourly buckets for 30 days; older detail is dropped once
it can no longer fall into any window, lifetime totals are kept as counters.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from operator import itemgetter
from typing import Any, Callable, Mapping

import orjson

from engine.events import BROWSE_ACTIONS, Event

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PURCHASE_WINDOWS_DAYS = (7, 30, 90, 365)
BROWSE_WINDOWS_DAYS = (7, 30)
COMPLAINT_WINDOW_DAYS = 90
ACTIONS = tuple(sorted(BROWSE_ACTIONS))
_ACTION_INDEX = {a: i for i, a in enumerate(ACTIONS)}


def event_fingerprint(event_id: str) -> str:
    """A short, fixed-size stand-in for an event_id in the dedupe record (saves memory)."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


class CustomerState:
    """One customer's rolling state. Plain data; see the module docstring for the layout.

    The attributes are the JSON document itself (``__dict__``), so that loading and
    storing a state costs one orjson call and nothing per field."""

    def __init__(self) -> None:
        self.purchases: list[list[float]] = []  # [ts_ms, amount], last 365 days, sorted by ts
        self.orders = 0
        self.spend = 0.0
        self.first_purchase: int | None = None
        self.last_purchase: int | None = None
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
        self.seen: dict[str, int] = {}  # event fingerprint -> event ts, within the dedupe horizon
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
    windows (``keep_*``); lifetime counters are always kept."""
    state.offsets[f"{event.source.topic}:{event.source.partition}"] = event.source.offset
    fingerprint = event_fingerprint(event.event_id)
    if fingerprint in state.seen:
        return False
    ts = event.ts
    state.seen[fingerprint] = ts
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


def _apply_purchase(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    amount = float(body["amount"])
    state.orders += 1
    state.spend += amount
    _insort(state.purchases, [ts, amount])
    state.first_purchase = ts if state.first_purchase is None else min(state.first_purchase, ts)
    state.last_purchase = ts if state.last_purchase is None else max(state.last_purchase, ts)
    day = ts // DAY_MS
    days = state.purchase_days
    if not days or day > days[-1]:
        days.append(day)
    elif day not in days:
        _insort(days, day)


def _apply_refund(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    state.refunds += 1
    state.refund_amount += float(body["amount"])


def _apply_browse(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    bucket = str(ts // HOUR_MS)
    counts = state.browse.get(bucket)
    if counts is None:
        counts = state.browse[bucket] = [0] * len(ACTIONS)
    counts[_ACTION_INDEX[body["action"]]] += 1
    state.browse_total += 1
    state.last_browse = ts if state.last_browse is None else max(state.last_browse, ts)


def _apply_feedback(state: CustomerState, body: Mapping[str, Any], ts: int) -> None:
    kind = body["kind"]
    if kind == "complaint":
        _insort(state.complaints, ts)
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


def _insort(items: list[Any], item: Any) -> None:
    """Insert keeping order; events mostly arrive in time order, so scan from the end."""
    i = len(items)
    while i and items[i - 1] > item:
        i -= 1
    items.insert(i, item)


def _prune(state: CustomerState, dedupe_horizon_ms: int) -> None:
    """Drop detail that can no longer fall into any window (relative to the latest event)."""
    latest = state.max_ts or 0
    horizon = latest - PURCHASE_WINDOWS_DAYS[-1] * DAY_MS
    purchases = state.purchases
    if purchases and purchases[0][0] <= horizon:
        state.purchases = [p for p in purchases if p[0] > horizon]
    oldest_bucket = (latest - BROWSE_WINDOWS_DAYS[-1] * DAY_MS) // HOUR_MS
    if state.browse and min(map(int, state.browse)) < oldest_bucket:
        state.browse = {b: c for b, c in state.browse.items() if int(b) >= oldest_bucket}
    complaints_horizon = latest - COMPLAINT_WINDOW_DAYS * DAY_MS
    if state.complaints and state.complaints[0] <= complaints_horizon:
        state.complaints = [t for t in state.complaints if t > complaints_horizon]
    seen_horizon = latest - dedupe_horizon_ms
    if len(state.seen) > 8 and min(state.seen.values()) < seen_horizon:
        state.seen = {f: t for f, t in state.seen.items() if t >= seen_horizon}


# -- reading features ---------------------------------------------------------------------


def _days_since(ts: int | None, now: int) -> float | None:
    return None if ts is None else (now - ts) / DAY_MS


_first = itemgetter(0)
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
    for orders_key, spend_key, span in _PURCHASE_KEYS:
        oldest = now - span
        while i >= 0 and purchases[i][0] > oldest:
            spend += purchases[i][1]
            i -= 1
        out[orders_key] = end - 1 - i
        out[spend_key] = round(spend, 2)
    return out


BROWSE_WINDOWS_HOURS = {"24h": 24, **{f"{d}d": d * 24 for d in BROWSE_WINDOWS_DAYS}}


_BROWSE_KEYS = [([f"{a}_{w}" for a in ACTIONS], hours) for w, hours in BROWSE_WINDOWS_HOURS.items()]
_NO_BROWSE = {key: 0 for keys, _ in _BROWSE_KEYS for key in keys}


def _browse_windows(state: CustomerState, now: int) -> dict[str, Any]:
    """<action>_<window> for every action and window, in one pass over the hour buckets."""
    out = dict(_NO_BROWSE)
    if not state.browse:
        return out
    last = now // HOUR_MS
    for bucket, counts in state.browse.items():
        age = last - int(bucket)
        if age < 0:
            continue
        for keys, hours in _BROWSE_KEYS:  # a bucket in a window is in every longer one too
            if age < hours:
                for key, c in zip(keys, counts):
                    if c:
                        out[key] += c
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

    __slots__ = ("state", "now", "derived", "table")

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
