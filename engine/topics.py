"""Every topic segengine reads or writes, declared once in ``topics/topics.yaml``.

The engine reads that file and creates what is missing; it never writes it. Input
topics must share one partition count (co-partitioning): a customer's events on every
input topic then land on the same partition number, which one worker owns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .events import INPUT_TOPICS
from .paths import SHIPPED_TOPICS

log = logging.getLogger(__name__)

DEFAULT_FILE = SHIPPED_TOPICS
INPUT_TOPIC_NAMES: frozenset[str] = frozenset(INPUT_TOPICS)
CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete", "delete,compact"})
_FIELDS = frozenset({"name", "partitions", "cleanup_policy", "retention_ms", "key", "value_schema", "role"})
ROLES = frozenset({"input", "dead_letters", "changes", "members", "actions"})
WRITTEN_ONCE = ("dead_letters", "changes", "members")  # one topic each: the engine writes these
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicsError(ConfigError):
    """The topics file, or the topics on the broker, break the declaration."""


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: int | None
    key: str
    value_schema: str
    role: str | None = None

    @property
    def configs(self) -> dict[str, str]:
        """The topic configs the broker gets at creation."""
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def load_topics(path: Path | None = None) -> list[Topic]:
    """The topics of ``path`` (default: ``topics/topics.yaml``), validated; ``TopicsError`` says what is wrong where."""
    path = path or DEFAULT_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopicsError(f"{path}: cannot read the topics file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TopicsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), list) or not doc["topics"]:
        raise TopicsError(f"{path}: expected a mapping with a non-empty 'topics' list")
    topics = [_parse(path, i, spec) for i, spec in enumerate(doc["topics"], start=1)]
    names = [t.name for t in topics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TopicsError(f"{path}: topics declared more than once: {', '.join(duplicates)}")
    missing = sorted(INPUT_TOPIC_NAMES - set(names))
    if missing:
        raise TopicsError(f"{path}: every input topic must be declared; missing: {', '.join(missing)}")
    for role in WRITTEN_ONCE:
        if len([t for t in topics if t.role == role]) > 1:
            raise TopicsError(f"{path}: more than one topic has role {role!r}")
    try:
        check_copartitioned({t.name: t.partitions for t in topics})
    except TopicsError as exc:
        raise TopicsError(f"{path}: {exc}") from None
    return topics


def _parse(path: Path, index: int, spec: Any) -> Topic:
    where = f"{path}: topic #{index}"
    if not isinstance(spec, dict):
        raise TopicsError(f"{where}: expected a mapping, got {type(spec).__name__}")
    if isinstance(spec.get("name"), str) and spec["name"]:
        where = f"{path}: topic {spec['name']!r}"
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise TopicsError(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(_FIELDS))}"
        )
    for field in ("name", "partitions", "key", "value_schema"):
        if spec.get(field) is None:
            raise TopicsError(f"{where}: missing field {field!r}")
    name, partitions, retention = spec["name"], spec["partitions"], spec.get("retention_ms")
    policy = spec.get("cleanup_policy", "delete")
    if not isinstance(name, str) or not name:
        raise TopicsError(f"{where}: 'name' must be a non-empty string")
    if not _is_int(partitions) or partitions < 1:
        raise TopicsError(f"{where}: 'partitions' must be an integer >= 1, got {partitions!r}")
    if policy not in CLEANUP_POLICIES:
        raise TopicsError(
            f"{where}: 'cleanup_policy' must be one of {', '.join(sorted(CLEANUP_POLICIES))}, got {policy!r}"
        )
    if retention is not None and (not _is_int(retention) or retention < -1 or retention == 0):
        raise TopicsError(f"{where}: 'retention_ms' must be a positive integer (or -1 = forever), got {retention!r}")
    role = spec.get("role")
    if role is not None and role not in ROLES:
        raise TopicsError(f"{where}: 'role' must be one of {', '.join(sorted(ROLES))}, got {role!r}")
    return Topic(name, partitions, policy, retention, str(spec["key"]), str(spec["value_schema"]), role)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_copartitioned(partitions: Mapping[str, int]) -> None:
    """Raise ``TopicsError`` (a ``ValueError``) unless the input topics among ``partitions`` share one count."""
    inputs = {name: n for name, n in sorted(partitions.items()) if name in INPUT_TOPIC_NAMES}
    if len(set(inputs.values())) > 1:
        counts = ", ".join(f"{name}={n}" for name, n in inputs.items())
        raise TopicsError(
            f"the input topics must all have the same partition count (co-partitioning: a customer's events "
            f"must land on the same partition number of every input topic), got {counts}"
        )


async def create_topics(
    bootstrap: str, topics: Iterable[Topic], *, replication: int = 1, security: Mapping[str, Any] | None = None
) -> list[str]:
    """Create the topics that do not exist yet (idempotent); returns the names created.

    Raises ``TopicsError`` when the declared or the existing input topics are not
    co-partitioned, and when the broker refuses a topic for another reason than
    "already exists" (a race with another worker creating it is fine).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # here: the declarations alone need no Kafka client

    topics = list(topics)
    check_copartitioned({t.name: t.partitions for t in topics})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [NewTopic(t.name, t.partitions, replication, topic_configs=t.configs) for t in missing]
            )
            failed = []
            # aiokafka returns per-topic errors in the response instead of raising them.
            for error in response.topic_errors:
                name, code, message = error[0], error[1], error[2] if len(error) > 2 else None
                if code == 0:
                    created.append(name)
                elif code != _TOPIC_ALREADY_EXISTS:
                    failed.append(f"{name}: error {code} {message or ''}".rstrip())
            if failed:
                raise TopicsError(f"the broker at {bootstrap} refused to create topics: {'; '.join(failed)}")
        for t in missing:
            if t.name in created:
                log.info(
                    "created topic %s (%d partitions, %s)",
                    t.name,
                    t.partitions,
                    ", ".join(f"{k}={v}" for k, v in t.configs.items()),
                )
        declared_inputs = [t.name for t in topics if t.name in INPUT_TOPIC_NAMES]
        if declared_inputs:
            described = await admin.describe_topics(declared_inputs)
            actual = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
            try:
                check_copartitioned(actual)
            except TopicsError as exc:
                raise TopicsError(f"on the broker at {bootstrap}: {exc}") from None
        return created
    finally:
        await admin.close()


def written_topics(topics: Iterable[Topic]) -> dict[str, str]:
    """The names of the topics the engine writes, by role: dead_letters, changes, members."""
    return {t.role: t.name for t in topics if t.role in WRITTEN_ONCE}
