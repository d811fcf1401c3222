"""Folding one event into a customer's state (pure): the applied offsets, the dedupe record,
the lifetime counters and the window detail the rules read, within the per-customer caps."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from .events import Event
from .records import topic_partition
from .state import (
    _ACTION_INDEX,
    ACTIONS,
    BROWSE_WINDOWS_DAYS,
    COMPLAINT_WINDOW_DAYS,
    DAY_BITS,
    DAY_MS,
    DEDUPE_SLACK_DIVISOR,
    HOUR_MS,
    LIMIT_EXCEEDED,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    MAX_COMPLAINTS,
    MAX_FINGERPRINTS,
    MAX_PURCHASE_ENTRIES,
    PURCHASE_WINDOWS_DAYS,
    CustomerState,
    LimitExceeded,
    _amount_orders,
    _first,
    event_fingerprint,
    first_after,
)

# -- folding events in --------------------------------------------------------------------


def already_applied(state: CustomerState, event: Event) -> bool:
    """True when this exact record (topic, partition, offset) was applied before."""
    last = state.offsets.get(topic_partition(event.source.topic, event.source.partition))
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
    tp = topic_partition(event.source.topic, event.source.partition)
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
    count_purchase_day(state, ts // DAY_MS, amount)  # before the first and last purchase move
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


_ALL_DAYS = (1 << DAY_BITS) - 1


def count_purchase_day(state: CustomerState, day: int, amount: float) -> None:
    """Fold a purchase on UTC ``day`` into the lifetime summary, given the first and last
    purchase times before it: ``day1_spend`` (the first day's spend), ``repeat_days``
    (lifetimes' frequency) and ``day_mask`` (the purchase days among the DAY_BITS days before
    the last one). ``spend`` holds every amount, so the repeat days' total is
    ``spend - day1_spend``. O(1) time and memory, whatever the customer's history.

    Exact in any arrival order: a purchase on a day before the first makes it the first day
    and the old first day a repeat day; one on the first day adds to it; one after the last,
    or within DAY_BITS days before it, is placed by the mask; an older late one by a look-up
    in ``purchase_days`` (the one step that is not O(1), and only for purchases arriving more
    than DAY_BITS days late).

    Refunds do not change the summary: a refund names an order, not the day it was bought on,
    and lifetimes' summary is of transactions (net_spend_total has the refunds)."""
    if state.first_purchase is None or state.last_purchase is None:  # the customer's first purchase
        state.day1_spend, state.repeat_days, state.day_mask = amount, 0, 0
        return
    first, last = state.first_purchase // DAY_MS, state.last_purchase // DAY_MS
    if day > last:
        state.repeat_days += 1
        gap = day - last
        state.day_mask = ((state.day_mask << gap) | 1 << (gap - 1)) & _ALL_DAYS if gap <= DAY_BITS else 0
    elif day == first:
        if state.day1_spend is not None:
            state.day1_spend += amount
    elif day < first:  # a late purchase before the first: the old first day becomes a repeat day
        state.repeat_days += 1
        state.day1_spend = amount
        if last - day <= DAY_BITS:
            state.day_mask |= 1 << (last - 1 - day)
    elif day < last:
        bit = last - 1 - day
        if bit < DAY_BITS:
            if not state.day_mask >> bit & 1:
                state.repeat_days += 1
                state.day_mask |= 1 << bit
        else:  # older than the mask: the customer's purchase days say whether it is a new one
            days = state.purchase_days
            i = bisect_left(days, day)
            if i == len(days) or days[i] != day:
                state.repeat_days += 1
    # day == last (after the first): a repeat day already counted


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
    erase is committed and the store deletes the customer's keys; segengine.evaluate emits the
    exits from the memberships it reads before this runs."""
    kept = (state.offsets, state.pending, state.outbox_writer)
    state.__init__()  # type: ignore[misc]
    state.offsets, state.pending, state.outbox_writer = kept


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
        purchases = state.purchases = purchases[first_after(purchases, horizon) :]
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
