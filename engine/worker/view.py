"""What the HTTP API may see of a worker: read-only, and nothing of its Kafka clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..metrics import Metrics
from ..rules import RuleSet
from ..settings import Settings
from ..store import Store


@dataclass(frozen=True, slots=True)
class Health:
    redis: bool  # answered a PING
    kafka: bool  # the broker answered a metadata request
    partitions: int  # input partitions the group gave this worker

    @property
    def ready(self) -> bool:
        return self.redis and self.kafka and self.partitions > 0


class WorkerView(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def store(self) -> Store: ...

    @property
    def rules(self) -> RuleSet:
        """The rules in force."""
        ...

    def now(self) -> int:
        """The worker's clock (event time in a replay)."""
        ...

    async def health(self) -> Health: ...
