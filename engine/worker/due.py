"""The due loop: time alone moves customers. It takes the due customers of the partitions
this worker owns, re-evaluates each at its due time, and reschedules it (see segengine.timers)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from ..clock import wall_ms
from ..pipeline import BatchStats
from .outage import reason
from .parts import Parts
from .tasks import pause

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0  # the longest pause between failed timer steps
BACKLOG_EVERY_S = 1.0  # how often the timer backlog gauge is counted


class DueTimers:
    def __init__(self, parts: Parts) -> None:
        self.settings, self.processor, self.store = parts.settings, parts.processor, parts.store
        self.decisions, self.ownership, self.metrics = parts.decisions, parts.ownership, parts.metrics
        self.on_timers: Callable[[BatchStats], None] | None = None
        self._backlog_due = 0.0  # when the backlog gauge is next counted (monotonic s)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.timer_interval_ms / 1000
        live = self.settings.clock == "wall"
        failures = 0  # in a row: the retries back off (an outage is watched by segengine.worker.outage)
        while not stop.is_set():
            try:
                fired = await self.fire_due()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried later; the timers stay in the store
                failures += 1
                wait = min(interval * 2**failures, MAX_BACKOFF_S)
                log.warning("timer step failed (%s); retrying in %.1f s", reason(exc), wait)
                log.debug("timer step failed", exc_info=True)
                await pause(stop, wait)
                continue
            if not fired:
                await pause(stop, interval)
            elif not live:
                await asyncio.sleep(0)

    async def fire_due(self) -> int:
        fired = 0
        partitions = self.ownership.partitions()
        backlog_until = self.processor.clock.now()
        for partition in partitions:
            until = self.ownership.decision_limit(partition)
            if until is None:
                continue
            due = await self.store.due(partition, until, self.settings.timer_batch)
            if not due:
                continue
            step = functools.partial(self.processor.fire_timers, partition=partition, through=until)
            turns = await self.decisions.decide_in_turns(step, due, stage="timers")
            fired += len(due)
            self.metrics.timers_fired.inc(len(due))
            if self.settings.clock == "wall":
                wall = wall_ms()
                for entry in due:
                    self.metrics.timer_lag.observe(max(0, wall - entry.due) / 1000)
            if self.on_timers is not None:
                for prepared in turns:
                    self.on_timers(prepared.stats)
        if time.monotonic() >= self._backlog_due:  # a gauge: once a second is enough (on a cluster, a count per bucket)
            self._backlog_due = time.monotonic() + BACKLOG_EVERY_S
            self.metrics.timer_backlog.set(
                await self.store.timer_backlog(partitions, backlog_until) if partitions else 0
            )
        return fired
