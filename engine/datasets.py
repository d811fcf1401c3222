"""Real and synthetic event streams: the CDNOW purchase history plus deterministic
browse, feedback and profile events for the same customers.

CDNOW (69,659 purchases by 23,570 customers, Jan 1997 - Jun 1998) ships inside the
PyPI package ``lifetimes`` as ``lifetimes/datasets/CDNOW_master.txt``; it is read
from there without importing ``lifetimes``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CDNOW_PURCHASES = 69_659
CDNOW_CUSTOMERS = 23_570
CITIES = (
    "Shanghai",
    "Beijing",
    "Guangzhou",
    "Shenzhen",
    "Chengdu",
    "Hangzhou",
    "New York",
    "London",
    "Berlin",
    "Paris",
)
CATEGORIES = ("rock", "pop", "jazz", "classical", "soundtrack", "hiphop")


@dataclass(frozen=True, slots=True)
class Purchase:
    line: int
    customer: str  # the CDNOW id, e.g. "00001"
    date: str  # yyyymmdd
    cds: int
    amount: float


def cdnow_path() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the CDNOW data ships in the PyPI package 'lifetimes': pip install lifetimes")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"
    if not path.is_file():
        raise FileNotFoundError(f"CDNOW_master.txt not found in the installed 'lifetimes' package ({path.name})")
    return path


def read_cdnow(path: Path | None = None) -> list[Purchase]:
    rows = []
    with open(path or cdnow_path(), encoding="ascii") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue  # the header
            rows.append(Purchase(line_no, parts[0], parts[1], int(parts[2]), float(parts[3])))
    return rows


def customer_id(cdnow_id: str) -> str:
    return f"cdnow-{cdnow_id}"


def date_ms(yyyymmdd: str, hour: int = 12) -> int:
    day = datetime.strptime(yyyymmdd, "%Y%m%d").replace(hour=hour, tzinfo=UTC)
    return int(day.timestamp() * 1000)


def purchase_event(p: Purchase) -> dict[str, Any]:
    return {
        "event_id": f"cdnow-{p.line}",
        "customer_id": customer_id(p.customer),
        "type": "purchase",
        "ts": date_ms(p.date),
        "source": "pos",
        "order_id": f"cdnow-order-{p.line}",
        "amount": p.amount,
        "currency": "USD",
        "channel": "web",
        "items": [
            {
                "sku": "cd",
                "category": favourite_genre(customer_id(p.customer)),
                "qty": p.cds,
                "price": round(p.amount / max(p.cds, 1), 2),
            }
        ],
    }


def favourite_genre(cid: str) -> str:
    """CDNOW does not say what was bought: each customer gets a deterministic favourite
    genre, used for the genre of their CDs and most of their product views."""
    return CATEGORIES[int.from_bytes(hashlib.blake2b(cid.encode(), digest_size=2).digest(), "big") % len(CATEGORIES)]


def demo_events(purchases: list[Purchase], seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """(topic, event) pairs in event-time order: every CDNOW purchase, browses before
    purchases, some feedback after them, one profile per customer, and browse-only prospects."""
    rng = random.Random(seed)
    events: list[tuple[str, dict[str, Any]]] = []
    first_seen: dict[str, int] = {}
    n = 0
    for p in purchases:
        cid = customer_id(p.customer)
        ts = date_ms(p.date)
        events.append(("events.purchase", purchase_event(p)))
        first_seen[cid] = min(first_seen.get(cid, ts), ts)
        for action in _browse_path(rng):
            n += 1
            before = ts - rng.randint(1, 72) * HOUR_MS
            events.append(("events.browse", _browse(n, cid, before, action, rng)))
        if rng.random() < 0.12:
            n += 1
            events.append(("events.feedback", _feedback(n, cid, ts + rng.randint(1, 96) * HOUR_MS, rng)))
    start = min(first_seen.values())
    for i in range(len(first_seen) // 5):  # prospects: browsed, never bought
        cid = f"prospect-{i:05d}"
        ts = start + rng.randint(0, 540) * DAY_MS + rng.randint(0, 23) * HOUR_MS
        first_seen[cid] = ts
        for _ in range(rng.randint(1, 4)):
            n += 1
            events.append(
                (
                    "events.browse",
                    _browse(
                        n, cid, ts + rng.randint(0, 48) * HOUR_MS, rng.choice(("view", "search", "add_to_cart")), rng
                    ),
                )
            )
    for cid, ts in first_seen.items():
        n += 1
        events.append(("events.profile", _profile(n, cid, ts - HOUR_MS, rng)))
    events.sort(key=lambda te: te[1]["ts"])
    return events


def _browse_path(rng: random.Random) -> list[str]:
    r = rng.random()
    if r < 0.3:
        return []
    if r < 0.7:
        return ["view"]
    if r < 0.9:
        return ["search", "view", "add_to_cart"]
    return ["view", "view", "add_to_cart", "checkout_start"]


def _browse(n: int, cid: str, ts: int, action: str, rng: random.Random) -> dict[str, Any]:
    return {
        "event_id": f"syn-{n}", "customer_id": cid, "type": "browse", "ts": ts, "source": "web",
        "action": action, "category": favourite_genre(cid) if rng.random() < 0.6 else rng.choice(CATEGORIES),
        "product_id": f"p{rng.randint(1, 5000)}",
    }  # fmt: skip


def _feedback(n: int, cid: str, ts: int, rng: random.Random) -> dict[str, Any]:
    kind = rng.choices(("nps", "csat", "complaint"), weights=(6, 3, 1))[0]
    event: dict[str, Any] = {
        "event_id": f"syn-{n}",
        "customer_id": cid,
        "type": "feedback",
        "ts": ts,
        "source": "survey",
        "kind": kind,
    }
    if kind == "nps":
        event["score"] = rng.choices(range(11), weights=(1, 1, 1, 1, 2, 3, 4, 6, 10, 10, 8))[0]
    elif kind == "csat":
        event["score"] = rng.randint(1, 5)
    return event


def _profile(n: int, cid: str, ts: int, rng: random.Random) -> dict[str, Any]:
    return {
        "event_id": f"syn-{n}", "customer_id": cid, "type": "profile", "ts": ts, "source": "crm",
        "attributes": {"age": rng.randint(18, 75), "gender": rng.choice(("f", "m", "x")), "city": rng.choice(CITIES),
                       "income_band": rng.choice(("low", "middle", "middle", "high"))},
    }  # fmt: skip


def iter_purchase_events(purchases: list[Purchase]) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in purchases:
        yield "events.purchase", purchase_event(p)
