"""A worker that cannot reach Redis or the broker stops, rather than waiting forever.

Every few seconds the watch asks Redis for a PING and the broker for metadata, as the
readiness probe does. A dependency out of reach is logged once per backoff step (after 0,
1, 2, 4, 8 ... s), naming it and the cause; past ``SEGENGINE_DEPENDENCY_TIMEOUT_S`` the
worker stops with ``DependencyUnavailable`` (exit code 1), so that an orchestrator restarts
it. Nothing is lost by stopping: what was not committed is delivered again. ``/readyz``
answers 503 from the first failed probe, as it probes on every request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from ..errors import DependencyUnavailable, SegengineError
from ..ledger import Ledger
from ..records import TopicPartition
from ..settings import Settings
from ..store_redis import Client
from .tasks import pause

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0  # a probe's longest wait for Redis or the broker
Probe = Callable[[], Awaitable[str | None]]  # None: reachable; else why not, in one line


def reason(exc: BaseException) -> str:
    """An error in one line: its type, and for connection errors (and segengine's own) the
    first line of its message, which names a host and a port, never a customer."""
    if not isinstance(exc, (RedisError, KafkaError, OSError, SegengineError)):
        return type(exc).__name__
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redis_probe(redis: Client) -> Probe:
    async def probe() -> str | None:
        try:
            await asyncio.wait_for(redis.ping(), PROBE_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:g} s"
        except Exception as exc:  # refused, reset, auth: all mean out of reach
            return reason(exc)
        return None

    return probe


def kafka_probe(producer: AIOKafkaProducer) -> Probe:
    async def probe() -> str | None:
        try:
            answered = await asyncio.wait_for(producer.client.force_metadata_update(), PROBE_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:g} s"
        except Exception as exc:  # not started, closed, unreachable
            return reason(exc)
        return None if answered else "no metadata answer"

    return probe


def redis_address(url: str) -> str:
    """host:port of a Redis URL, without its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class LedgerWatch:
    """Redis flushed or rolled back under a running worker: its commit ledger falls behind
    the offsets this worker committed (segengine.ledger). Checked every few seconds."""

    def __init__(
        self, ledger: Ledger, committed: Mapping[TopicPartition, int], on_lost: Callable[[BaseException], None]
    ) -> None:
        self.ledger, self.committed, self.on_lost = ledger, committed, on_lost

    async def run(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        while not stop.is_set():
            try:
                lost = (await self.ledger.check(dict(self.committed), adopt=False)).lost  # it wrote the ledger
            except Exception as exc:  # out of reach: DependencyWatch's business
                log.debug("ledger check failed: %r", exc)
                lost = None
            if lost is not None:
                self.on_lost(lost)
                return
            await pause(stop, interval)


class DependencyWatch:
    def __init__(
        self,
        settings: Settings,
        probes: dict[str, Probe],
        on_lost: Callable[[BaseException], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``probes``: a name ("Redis at host:port") -> its probe; ``on_lost`` is told the error
        that stops the worker."""
        self.clock = clock
        self.timeout = settings.dependency_timeout_s
        self.probes = probes
        self.on_lost = on_lost
        self.interval = min(2.0, max(0.2, self.timeout / 10)) if self.timeout else 2.0
        self._down_since: dict[str, float] = {}
        self._next_log: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if lost := await self.check():
                self.on_lost(lost)
                return
            await pause(stop, self.interval)

    async def check(self) -> DependencyUnavailable | None:
        """One round of probes; the error to stop with once one is out of reach too long."""
        names = list(self.probes)
        answers = await asyncio.gather(*(self.probes[name]() for name in names))
        now = self.clock()
        for name, why in zip(names, answers):
            if why is None:
                if (since := self._down_since.pop(name, None)) is not None:
                    self._next_log.pop(name, None)
                    log.warning("%s reachable again after %.0f s", name, now - since)
                continue
            since = self._down_since.setdefault(name, now)
            out = now - since
            if self.timeout and out >= self.timeout:
                return DependencyUnavailable(
                    f"{name} out of reach for {out:.0f} s ({why}); "
                    f"stopping (SEGENGINE_DEPENDENCY_TIMEOUT_S={self.timeout:g})"
                )
            if now >= self._next_log.get(name, since):
                limit = f"; stopping after {self.timeout:g} s" if self.timeout else ""
                log.warning("%s out of reach for %.0f s (%s)%s", name, out, why, limit)
                self._next_log[name] = since + max(1.0, 2 * out)  # 0, 1, 2, 4, 8 ... s
        return None
