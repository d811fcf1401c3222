"""What this worker owns, and how far in time it may decide its customers with no event at hand."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from ..clock import EventClock
from ..events import INPUT_TOPICS
from ..pipeline import BatchProcessor
from ..records import TopicPartition


class Ownership:
    def __init__(self, consumer: AIOKafkaConsumer, processor: BatchProcessor) -> None:
        self.consumer = consumer
        self.processor = processor

    def partitions(self) -> list[int]:
        """The input partitions (numbers: the input topics are co-partitioned) assigned to us."""
        topic = next(iter(INPUT_TOPICS))
        return sorted(tp.partition for tp in self.consumer.assignment() if tp.topic == topic)

    @property
    def time_known(self) -> bool:
        """False in event time until a record was read: "now" is unknown (never the wall clock)."""
        clock = self.processor.clock
        return not isinstance(clock, EventClock) or clock.watermark is not None

    def decision_limit(self, partition: int) -> int | None:
        """The latest time at which a customer of this input partition may be decided with no
        event at hand (its due timers, a re-evaluation); None: not yet.

        Live, that is now. In event time it is the watermark, but no further than what this
        partition has reached on every input topic where records remain to be read: a
        customer is never decided ahead of its own records still waiting in a lagging
        partition (a replay stays equal to a fold of each customer's events in order)."""
        clock = self.processor.clock
        if not isinstance(clock, EventClock):
            return clock.now()
        if clock.watermark is None:
            return None  # event time with no event seen yet (say, just restarted): nothing is known to be due
        limit = clock.watermark
        assignment = self.consumer.assignment()
        for topic in INPUT_TOPICS:
            tp = TopicPartition(topic, partition)
            if tp not in assignment:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                return None  # not fetched yet: how far it lags is unknown
            read = self.processor.read.get(tp, self.processor.committed.get(tp, 0))
            if read < highwater:  # records remain: not past what this partition has reached
                reached = clock.partitions.get((topic, partition))
                if reached is None:
                    return None
                limit = min(limit, reached)
        return limit
