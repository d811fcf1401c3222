"""One injected clock: "now" for every decision.

Live, now is the wall clock. During a replay of history, an event is decided at its own
event time (as live processing would have decided it on arrival), and time with no event
at hand is the event-time watermark (the greatest event time seen, minus an allowed
lateness), so that replaying history gives the segments live processing would have
given, whatever order the partitions of a batch are interleaved in.
"""

from __future__ import annotations

import time
from typing import Protocol


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Clock(Protocol):
    def now_for(self, event_ts: int) -> int:
        """The decision time for an event with this event time (ms)."""

    def now(self) -> int:
        """The current time (ms), with no event at hand."""

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        """An event of this topic-partition was read (event time: per-partition watermarks)."""


class WallClock:
    def now_for(self, event_ts: int) -> int:
        return wall_ms()

    def now(self) -> int:
        return wall_ms()

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        return None


class EventClock:
    """Event-time watermark; it only moves forward.

    Beside the global watermark it keeps one per input topic-partition: a customer's
    records all arrive on its partitions, so time with no event at hand for a customer is
    at most what its partitions have reached (a lagging partition's customers must not be
    decided ahead of their own records still to be read: see ``Worker.decision_limit``)."""

    def __init__(self, lateness_ms: int = 0) -> None:
        self.lateness_ms = lateness_ms
        self.watermark: int | None = None
        self.partitions: dict[tuple[str, int], int] = {}

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        tp = (topic, partition)
        candidate = event_ts - self.lateness_ms
        if candidate > self.partitions.get(tp, -1):
            self.partitions[tp] = candidate

    def now_for(self, event_ts: int) -> int:
        candidate = event_ts - self.lateness_ms
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate
        return event_ts

    def now(self) -> int:
        return self.watermark if self.watermark is not None else wall_ms()


def make_clock(kind: str) -> Clock:
    return EventClock() if kind == "event" else WallClock()
