"""Per-customer rolling behaviour state, and the pure functions that read it.

``segengine.folding.apply(state, event)`` folds one event into the state; ``Features(state,
now)`` reads the rolling aggregates the rules ask for at a given time. Nothing here does
I/O: the state's stored encoding is ``segengine.codec``'s.

Windows use event time. Purchases of the last 365 days are kept one by one (exact
windows); browses are kept as hourly buckets for 30 days; older detail is dropped once
it can no longer fall into any window, lifetime totals are kept as counters.

The lifetime purchase summary the CLV models read (lifetimes' frequency, recency, T and
monetary value, with daily periods) is kept in O(1) fields: the first and last purchase
times, the first day's spend, the number of repeat purchase days and a 63-day bitmask of
the purchase days before the last one (see ``segengine.folding.count_purchase_day``: exact
in any arrival order).

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
Declared aggregations have their own caps (``segengine.aggregates``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Final

from .errors import ProcessingError
from .events import BROWSE_ACTIONS
from .records import Output, TopicPartition

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
DAY_BITS = 63  # purchase days remembered before the last one (a JSON integer any reader holds in 64 bits)
LIMIT_EXCEEDED = "limit_exceeded"


class LimitExceeded(ProcessingError):
    """An event would take a customer past a per-customer limit. The event is dead-lettered
    with ``code``; the state stays as it was. The message names the limit, never customer data."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_FINGERPRINT: Final = hashlib.blake2b(digest_size=8)  # copied for each event: cheaper than a new one


def event_fingerprint(event_id: str) -> str:
    """A short, fixed-size stand-in for an event_id in the dedupe record (saves memory)."""
    digest = _FINGERPRINT.copy()
    digest.update(event_id.encode())
    return digest.hexdigest()


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
        # The lifetime purchase summary, by UTC day (first and last day: first_purchase and
        # last_purchase). Refunds are not in it: see segengine.folding.count_purchase_day.
        self.day1_spend: float | None = 0.0  # spend on the first purchase day (None: not known, a state from before)
        self.repeat_days = 0  # distinct purchase days after the first: lifetimes' frequency
        self.day_mask = 0  # bit i: a purchase on the day i + 1 days before the last purchase day (i < DAY_BITS)
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
        self.offsets: dict[TopicPartition, int] = {}  # input topic-partition -> last applied offset
        self.seen: dict[str, int] = {}  # event fingerprint -> event ts, within the dedupe horizon (+ slack)
        self.seen_oldest: int | None = None  # at most the oldest ts in ``seen`` (None: empty, or not known yet)
        self.members: dict[str, str] = {}  # dimension -> segment
        self.member_since: dict[str, int] = {}  # dimension -> when the customer entered its segment
        self.grace_since: dict[str, int] = {}  # dimension -> when its stay condition first failed (exit_grace)
        self.checked_at: int | None = None  # the last decision's time (event or timer): timers due after it
        self.actions_sent: dict[str, int] = {}  # action name -> when it was last sent (cooldowns)
        self.delayed: list[dict[str, Any]] = []  # actions waiting for their delay (segengine.actions)
        self.pending: list[Output] = []  # outbox: output records not yet known committed
        self.outbox_writer: str | None = None  # who wrote the outbox as loaded (None: unknown)
        self.home: int | None = None  # the input partition of the customer's first record: its timers and owner

    # -- persistence -------------------------------------------------------------------------

    # The encoding is segengine.codec's: these are shorthands for it.

    def dumps(self) -> bytes:
        """The state document, without the outbox (stored beside it)."""
        return _codec.dump_state(self)

    def dumps_outbox(self, writer: str | None = None, encoded: Mapping[int, bytes] | None = None) -> bytes:
        """The outbox, signed by ``writer`` (None: unknown, so that any reader sends it again);
        ``encoded``: its entries' values serialised already (segengine.codec.dump_outbox)."""
        return _codec.dump_outbox(self.pending, writer, _codec.NOTHING_ENCODED if encoded is None else encoded)

    @classmethod
    def loads(cls, blob: bytes | None, outbox: bytes | None = None) -> CustomerState:
        return _codec.load_state(blob, outbox)

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


_first = itemgetter(0)  # a purchase entry's time


def first_after(entries: list[list[Any]], at: int) -> int:
    """``bisect_right`` on the entries' first items (times or buckets, in order): the index of
    the first entry whose first item is after ``at`` (written out: no key function to call)."""
    low, high = 0, len(entries)
    while low < high:
        middle = (low + high) // 2
        if at < entries[middle][0]:
            high = middle
        else:
            low = middle + 1
    return low


def _amount_orders(entry: list[Any]) -> tuple[float, int]:
    """(amount, orders) of a purchase entry: one purchase, or merged ones."""
    value = entry[1]
    return (value[0], value[1]) if type(value) is list else (value, 1)


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
        end = first_after(purchases, now)
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
# [window][action] -> the features a count of that action in a bucket of that window adds to:
# its own window's and every longer one's
_ADDS_TO = [
    [tuple(keys[j] for keys, _ in _BROWSE_KEYS[w:]) for j in range(len(ACTIONS))] for w in range(len(_BROWSE_KEYS))
]


def _browse_windows(state: CustomerState, now: int) -> dict[str, Any]:
    """<action>_<window> for every action and window, in one pass over the hour buckets: each
    bucket's counts are added to the shortest window it is in and every longer one."""
    out = dict(_NO_BROWSE)
    if not state.browse:
        return out
    last = now // HOUR_MS
    longest = _BROWSE_HOURS[-1]
    for bucket, counts in state.browse.items():
        age = last - int(bucket)
        if age < 0 or age >= longest:
            continue
        w = 0
        while age >= _BROWSE_HOURS[w]:
            w += 1
        adds = _ADDS_TO[w]
        for j, c in enumerate(counts):
            if c:
                for key in adds[j]:
                    out[key] += c
    return out


def _recency_days(state: CustomerState) -> int | None:
    """Last purchase day - first purchase day (lifetimes' recency, daily periods)."""
    first, last = state.first_purchase, state.last_purchase
    return None if first is None or last is None else last // DAY_MS - first // DAY_MS


def _age_days(state: CustomerState, now: int) -> int | None:
    """The day of ``now`` - the first purchase day (lifetimes' T, daily periods)."""
    first = state.first_purchase
    return None if first is None else now // DAY_MS - first // DAY_MS


def repeat_value(state: CustomerState) -> float | None:
    """The mean spend of the repeat purchase days (lifetimes' monetary value): 0 without one.
    Every purchase's amount is in ``spend``, so the repeat days' total is what the first day
    did not take; it is rounded to the cent (as spend_total) before the mean is taken."""
    if state.first_purchase is None or state.day1_spend is None:
        return None
    if not state.repeat_days:
        return 0.0
    return round(state.spend - state.day1_spend, 2) / state.repeat_days


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
    "repeat_purchase_days": lambda s, now: None if s.first_purchase is None else s.repeat_days,
    "purchase_recency_days": lambda s, now: _recency_days(s),
    "customer_age_days": _age_days,
    "repeat_purchase_value": lambda s, now: repeat_value(s),
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


def _grouped(name: str) -> FeatureFn:
    return lambda s, now: GROUPS[name](s, now)[name]


def _last_score(kind: str) -> FeatureFn:
    return lambda s, now: (s.feedback.get(kind) or [None])[0]


for _name in GROUPS:
    FEATURES[_name] = _grouped(_name)
TIME_DEPENDENT = frozenset(
    {*GROUPS, "complaints_90d", "customer_age_days", *(n for n in FEATURES if n.startswith("days_since_"))}
)
for _kind in ("nps", "csat", "review"):
    FEATURES[f"last_{_kind}"] = _last_score(_kind)
PROFILE_PREFIX = "profile_"
EVENT_TYPES = frozenset({"purchase", "refund", "browse", "feedback", "profile", "erase"})


_BY_PURCHASES = ("last_gap_days", "customer_age_days")  # changed by purchases, though their names do not say it


def changed_by(feature: str) -> frozenset[str]:
    """The event types whose arrival can change this feature's value (erase changes all).
    Time alone changes windowed and days_since features too: that is the timers' part."""
    if feature.startswith(PROFILE_PREFIX):
        kinds = {"profile"}
    elif feature in ("refunds_total", "refund_amount_total"):
        kinds = {"refund"}
    elif feature == "net_spend_total":
        kinds = {"purchase", "refund"}
    elif feature.startswith(("orders_", "spend_")) or "purchase" in feature or feature in _BY_PURCHASES:
        kinds = {"purchase"}
    elif feature.startswith(ACTIONS) or "browse" in feature:
        kinds = {"browse"}
    elif feature.startswith("last_") or feature.startswith("complaints_"):
        kinds = {"feedback"}
    else:
        kinds = set(EVENT_TYPES)
    return frozenset(kinds | {"erase"})


class Context:
    """What the resolvers of one ``Features`` read: its customer's state, its time and the
    rule set's table. A compiled class, so that in the compiled core each is a field's read
    (``Features`` is a dict, whose own attributes are looked up by name)."""

    def __init__(self, state: CustomerState, now: int, table: dict[str, Resolver]) -> None:
        self.state: Final = state
        self.now: Final = now
        self.table: Final = table


Resolver = Callable[["Features", Context], Any]  # (features, their context) -> the feature's value
FeaturesResolver = Callable[["Features"], Any]  # one that reads the features alone (segengine.clv.features)


def _group_resolver(group: Callable[[CustomerState, int], dict[str, Any]], name: str) -> Resolver:
    def resolve(features: Features, ctx: Context) -> Any:
        values = group(ctx.state, ctx.now)
        features.update(values)  # one pass fills every window of the group
        return values[name]

    return resolve


def _base_resolver(fn: FeatureFn) -> Resolver:
    return lambda _features, ctx: fn(ctx.state, ctx.now)


BASE_RESOLVERS: dict[str, Resolver] = {name: _base_resolver(fn) for name, fn in FEATURES.items()}
BASE_RESOLVERS.update({name: _group_resolver(group, name) for name, group in GROUPS.items()})


class Derived(dict[str, Callable[..., Any]]):
    """A rule set's derived features (name -> fn(features, current, now)), with the one
    table that resolves every feature name, built once per rule set: the built-in ones, the
    rule set's own ``extra`` ones (the predictions of its model: segengine.clv.features) and
    the derived ones."""

    def __init__(
        self,
        derived: Mapping[str, Callable[..., Any]] | None = None,
        extra: Mapping[str, FeaturesResolver] | None = None,
    ) -> None:
        super().__init__(derived or {})
        self.extra = tuple(extra or ())
        self.table: dict[str, Resolver] = {
            **BASE_RESOLVERS,
            **{n: _features_resolver(fn) for n, fn in (extra or {}).items()},
            **{n: _derived_resolver(fn) for n, fn in self.items()},
        }


def _derived_resolver(fn: Callable[..., Any]) -> Resolver:
    return lambda features, ctx: fn(features, None, ctx.now)


def _features_resolver(fn: FeaturesResolver) -> Resolver:
    return lambda features, _ctx: fn(features)


_NO_DERIVED = Derived()


class Features(dict[str, Any]):
    """The named features of one customer at time ``now``, computed on first read and
    cached (a dict, so that a cached read costs what a dict lookup costs).

    ``profile_<name>`` reads profile attribute ``<name>``. Unknown names raise KeyError,
    missing values are None.
    """

    __slots__ = ("ctx", "derived", "now", "state")

    def __init__(self, state: CustomerState, now: int, derived: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.state = state  # (dict's own __init__ has nothing to do: the dict is made empty)
        self.now = now
        if not isinstance(derived, Derived):
            derived = Derived(derived) if derived else _NO_DERIVED
        self.derived = derived
        self.ctx = Context(state, now, derived.table)  # what its resolvers read

    def __missing__(self, name: str) -> Any:
        ctx = self.ctx
        resolve = ctx.table.get(name)
        if resolve is not None:
            value = resolve(self, ctx)
        elif name.startswith(PROFILE_PREFIX):
            value = ctx.state.attributes.get(name[len(PROFILE_PREFIX) :])
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def all(self) -> dict[str, Any]:
        """Every feature, profile attributes included (for explanations)."""
        names = [*FEATURES, *self.derived.extra, *self.derived, *(PROFILE_PREFIX + a for a in self.state.attributes)]
        return {name: self[name] for name in names}


def is_known_feature(name: str) -> bool:
    return name in FEATURES or (name.startswith(PROFILE_PREFIX) and len(name) > len(PROFILE_PREFIX))


# segengine.codec encodes CustomerState (and imports this module): bound here, once both exist.
from . import codec as _codec  # noqa: E402
