"""Which errors are worth doing a step again for, and how often.

segengine's own errors say so themselves (``SegengineError.retriable``, segengine.errors); Kafka's
errors carry aiokafka's ``retriable`` flag; of Redis's, a lost connection or a timeout is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import SegengineError
from ..metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RETRIABLE_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, TimeoutError)


def retriable(exc: BaseException) -> bool:
    if isinstance(exc, SegengineError):
        return exc.retriable
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, RETRIABLE_LIBRARY_ERRORS)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a whole step (a batch is idempotent) after a retriable error, backing off."""

    attempts: int = 8
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2.0**attempt)

    async def run(self, step: Callable[[T], Awaitable[R]], arg: T, metrics: Metrics) -> R:
        for attempt in range(self.attempts):
            try:
                return await step(arg)
            except Exception as exc:
                if not retriable(exc) or attempt == self.attempts - 1:
                    raise
                metrics.batch_retries.inc()  # Redis errors are counted by the store, per call
                delay = self.delay(attempt)
                log.warning("batch step failed (%s), retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
