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


class WallClock:
    def now_for(self, event_ts: int) -> int:
        return wall_ms()

    def now(self) -> int:
        return wall_ms()


class EventClock:
    """Event-time watermark; it only moves forward."""

    def __init__(self, lateness_ms: int = 0) -> None:
        self.lateness_ms = lateness_ms
        self.watermark: int | None = None

    def now_for(self, event_ts: int) -> int:
        candidate = event_ts - self.lateness_ms
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate
        return event_ts

    def now(self) -> int:
        return self.watermark if self.watermark is not None else wall_ms()


def make_clock(kind: str) -> Clock:
    return EventClock() if kind == "event" else WallClock()
