"""A purchase history file -> (customer, day, amount) per purchase, for fitting.

The formats are those of ``segengine replay``: csv and jsonl files of contract events are read
with its reader (``replay.load``: the same checks, a file with a bad line refused whole), and
their ``purchase`` events kept (refunds, and purchases without a usable amount, are counted and
left out). The CDNOW format is read here: the full file (customer, date, CDs, dollars) and
the 1/10 sample of the literature (``CDNOW_sample.txt``: the same with the sample's own
customer number after the first), which ``datasets.read_cdnow`` does not take. No numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson

from ..datasets import DAY_MS, customer_id
from ..replay import Format, ReplayError, load

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(slots=True)
class Purchases:
    customer: list[str] = field(default_factory=list)
    day: list[int] = field(default_factory=list)  # days since 1970-01-01 (UTC)
    amount: list[float] = field(default_factory=list)
    left_out: int = 0  # refunds and purchases without a usable amount

    def __len__(self) -> int:
        return len(self.day)

    def add(self, customer: str, day: int, amount: float) -> None:
        self.customer.append(customer)
        self.day.append(day)
        self.amount.append(amount)


def read_purchases(path: Path, fmt: Format) -> Purchases:
    """Every purchase in the file; ReplayError when it cannot be read (naming the lines)."""
    if fmt is Format.cdnow:
        return _read_cdnow(path)
    purchases = Purchases()
    for record in load(path, fmt):
        if record.topic != "events.purchase":
            continue
        event = orjson.loads(record.value)
        amount = event.get("amount")
        usable = isinstance(amount, int | float) and not isinstance(amount, bool) and math.isfinite(amount)
        if event.get("type") != "purchase" or not usable or amount < 0:
            purchases.left_out += 1
            continue
        purchases.add(record.key.decode(), record.ts // DAY_MS, float(amount))
    return purchases


def _read_cdnow(path: Path) -> Purchases:
    purchases = Purchases()
    problems: list[str] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue  # a header, or an empty line
            if len(parts) not in (4, 5):
                problems.append(f"{path.name}:{line_no}: expected 4 or 5 columns (customer, date, CDs, dollars)")
                continue
            yyyymmdd, dollars = parts[-3], parts[-1]
            try:
                day = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8])).toordinal() - EPOCH_ORDINAL
                amount = float(dollars)
            except ValueError:
                problems.append(f"{path.name}:{line_no}: not a date (yyyymmdd) and an amount")
                continue
            if len(yyyymmdd) != 8 or not math.isfinite(amount) or amount < 0:
                problems.append(f"{path.name}:{line_no}: not a date (yyyymmdd) and an amount")
                continue
            purchases.add(customer_id(parts[0]), day, amount)
    if problems:
        more = f"\n(and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ReplayError("\n".join(problems[:5]) + more)
    return purchases
