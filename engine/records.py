"""Small typed records that cross module boundaries (no encoding here: segengine.codec stores them)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class TopicPartition(NamedTuple):
    """An input topic-partition: the key of a customer's applied offsets and of the offsets
    committed by the worker."""

    topic: str
    partition: int


_PARTITIONS: dict[tuple[str, int], TopicPartition] = {}


def topic_partition(topic: str, partition: int) -> TopicPartition:
    """The one ``TopicPartition`` of an input partition: made once, then looked up (every event
    asks for its own several times, and a worker reads a handful of partitions)."""
    found = _PARTITIONS.get((topic, partition))
    if found is None:
        found = _PARTITIONS[(topic, partition)] = TopicPartition(topic, partition)
    return found


class Output(NamedTuple):  # a NamedTuple: made for every change, and cheap to make
    """One record to publish. ``cause`` is the input topic-partition and ``offset`` the input
    record whose processing decided it; both None for a decision with no event (a timer, a rules
    switch), whose outbox entry no input record will send again."""

    topic: str
    key: str
    value: dict[str, Any] | None
    cause: TopicPartition | None = None
    offset: int | None = None

    def caused_by(self, cause: TopicPartition, offset: int) -> Output:
        return tuple.__new__(Output, (self.topic, self.key, self.value, cause, offset))  # no Python-level frame


class OutRecord(NamedTuple):
    """A record as the sink sends it."""

    topic: str
    key: bytes | None
    value: bytes | None


class Record(Protocol):
    """An input record as the consumer hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class Sink(Protocol):
    async def publish(self, records: list[OutRecord]) -> None:
        """Send every record and return when all are acknowledged."""
