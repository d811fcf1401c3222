"""The exceptions segengine raises, in one tree.

Every error of segengine's own derives from ``SegengineError``; its class says whether doing
the same again may succeed (``retriable``), which is what the worker's retry policy reads
(segengine.worker.retry). Errors of the libraries underneath (Kafka, Redis) keep their own classes; the
retry policy knows which of those are worth a retry.

    SegengineError
    ├── ConfigError            settings, rules, topic declarations that cannot be used
    │   ├── RulesError         (segengine.rules)
    │   └── TopicsError        (segengine.topics)
    ├── InputError             input a command was given that it cannot read (ReplayError)
    ├── ProcessingError        one customer's events cannot be decided
    │   ├── FoldError          (segengine.evaluate: which event failed, and why)
    │   └── LimitExceeded      (segengine.state: a state past its documented caps)
    ├── ConcurrentWriteError   a customer kept changing under us: retriable
    ├── PublishError           a record the producer cannot take as it is
    │   └── PublishRefused     (segengine.worker.order: an earlier write's output was not published)
    ├── DependencyUnavailable  Redis or the broker out of reach past the dependency timeout
    ├── RedisLost              Redis lost what committed records did (segengine.ledger)
    └── DevStackError          the embedded development stack could not start
"""

from __future__ import annotations

from typing import ClassVar


class SegengineError(Exception):
    """The root of segengine's own errors."""

    retriable: ClassVar[bool] = False  # may the same step succeed if done again?


class ConfigError(SegengineError, ValueError):
    """Settings, rules or topic declarations that cannot be used as they are."""


class InputError(SegengineError, ValueError):
    """Input handed to a command (a file to replay, an event to produce) that it cannot read."""


class ProcessingError(SegengineError):
    """A customer's events cannot be decided: contained to that customer (dead-lettered or
    quarantined), never retried as they are."""


class ConcurrentWriteError(SegengineError):
    """A customer kept changing under us (another worker owns its partition too): the batch is
    idempotent, so it is retried whole."""

    retriable = True


class PublishError(SegengineError):
    """A record that cannot be published as it is (larger than the producer's batch)."""


class PublishRefused(PublishError):
    """An earlier write's output was not published, and this write's outboxes may hold it: this
    write is not published either (nor committed). The next decision of its customers, by a
    processor that knows it, sends their outboxes again (segengine.evaluate)."""


class DependencyUnavailable(SegengineError, ConnectionError):
    """Redis or the broker stayed out of reach past ``SEGENGINE_DEPENDENCY_TIMEOUT_S``: the
    worker stops (exit 1) so that an orchestrator restarts it (segengine.worker.outage)."""


class RedisLost(SegengineError):
    """Redis no longer holds what the committed input records did (flushed, restored from an
    older snapshot, keys evicted): the worker stops; ``segengine rebuild`` recovers."""


class DevStackError(SegengineError, RuntimeError):
    """The embedded broker or Redis could not be started."""
