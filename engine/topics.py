"""Every topic segengine reads or writes, declared once in ``topics/topics.yaml``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.events import INPUT_TOPICS
from engine.settings import REPO_ROOT

log = logging.getLogger(__name__)
DEFAULT_FILE = REPO_ROOT / "topics" / "topics.yaml"


class TopicsError(ValueError):
    """The topics file is invalid."""


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: int | None
    key: str
    value_schema: str

    @property
    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def load_topics(path: Path | None = None) -> list[Topic]:
    path = path or DEFAULT_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TopicsError(f"{path}: cannot read topics file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), list):
        raise TopicsError(f"{path}: expected a mapping with a 'topics' list")
    topics = []
    for i, spec in enumerate(doc["topics"]):
        try:
            topic = Topic(
                name=str(spec["name"]),
                partitions=int(spec["partitions"]),
                cleanup_policy=str(spec.get("cleanup_policy", "delete")),
                retention_ms=int(spec["retention_ms"]) if spec.get("retention_ms") is not None else None,
                key=str(spec.get("key", "")),
                value_schema=str(spec.get("value_schema", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TopicsError(f"{path}: topic #{i + 1}: missing or invalid field ({exc})") from None
        if topic.partitions < 1 or topic.cleanup_policy not in ("delete", "compact", "compact,delete"):
            raise TopicsError(f"{path}: topic {topic.name!r}: partitions must be >= 1, cleanup_policy delete or compact")
        topics.append(topic)
    inputs = {t.name: t.partitions for t in topics if t.name in INPUT_TOPICS}
    if set(inputs) != set(INPUT_TOPICS):
        raise TopicsError(f"{path}: every input topic must be declared: missing {sorted(set(INPUT_TOPICS) - set(inputs))}")
    if len(set(inputs.values())) != 1:
        raise TopicsError(f"{path}: the input topics must share one partition count (co-partitioning), got {inputs}")
    return topics


async def create_topics(bootstrap: str, topics: list[Topic], *, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, replication, topic_configs=t.configs) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another worker created them meanwhile
        for t in missing:
            log.info("created topic %s (%d partitions, %s)", t.name, t.partitions, t.cleanup_policy)
        return [t.name for t in missing]
    finally:
        await admin.close()
