"""Re-evaluating every customer this worker owns, in throttled steps beside live traffic:
after a rules switch (segengine.worker.reload), or a population re-score (segengine.worker.population)."""

from __future__ import annotations

import asyncio
import functools
import logging

from ..rules import RuleSet
from .parts import Parts
from .tasks import pause

log = logging.getLogger(__name__)


class Reevaluation:
    def __init__(self, parts: Parts, stop: asyncio.Event) -> None:
        self.settings, self.processor, self.store = parts.settings, parts.processor, parts.store
        self.decisions, self.ownership, self.metrics = parts.decisions, parts.ownership, parts.metrics
        self.stop = stop
        self.tasks: list[asyncio.Task[int]] = []  # started in the background, stopped with the worker

    def start(self, rules: RuleSet, *, rescore: bool = False, decided_after: int | None = None) -> asyncio.Task[int]:
        task = asyncio.create_task(self.run(rules, rescore=rescore, decided_after=decided_after))
        self.tasks = [t for t in self.tasks if not t.done()] + [task]
        return task

    async def run(self, rules: RuleSet, *, rescore: bool = False, decided_after: int | None = None) -> int:
        """Every customer this worker owns under ``rules``; the number decided.
        ``rescore``: after the population sample moved (the time-dependent dimensions only).
        ``decided_after`` (a re-score): customers placed since then in every dimension that
        reads the population are left alone (segengine.pipeline, BatchProcessor.reevaluate)."""
        done = 0
        while not self.ownership.time_known and not self.stop.is_set():
            await pause(self.stop, 0.5)  # event time: nothing is decided before the first record says what time it is
        try:
            async for ids in self.store.scan_customers(count=self.settings.reevaluate_batch):
                if self.processor.rules is not rules or self.stop.is_set():
                    return done  # superseded by a newer switch, or stopping
                owned = frozenset(self.ownership.partitions())
                if owned:  # the customers whose home partition this worker owns (the others are skipped)
                    step = functools.partial(
                        self.processor.reevaluate,
                        rules=rules,
                        rescore=rescore,
                        owned=owned,
                        decided_after=decided_after,
                    )
                    stage = "rescore" if rescore else "rules"
                    turns = await self.decisions.decide_in_turns(step, ids, stage=stage)
                    evaluated = sum(turn.stats.evaluated for turn in turns)
                    done += evaluated
                    self.metrics.reevaluated.inc(evaluated)
                await asyncio.sleep(self.settings.reevaluate_pause_ms / 1000)
            log.info(
                "re-evaluated %d customers under %s%s", done, rules.version, " (population re-score)" if rescore else ""
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("re-evaluation under %s stopped after %d customers: %s", rules.version, done, type(exc).__name__)
            log.debug("re-evaluation stopped", exc_info=True)
        return done
