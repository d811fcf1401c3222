"""topics/topics.yaml: the shipped file is valid, and a broken file says what is wrong where."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segengine.events import INPUT_TOPICS
from segengine.topics import INPUT_TOPIC_NAMES, Topic, TopicsError, check_copartitioned, load_topics

GOOD = {
    "topics": [
        *(
            {
                "name": n,
                "partitions": 4,
                "cleanup_policy": "delete",
                "retention_ms": 1000,
                "key": "customer_id",
                "value_schema": f"schemas/{n}.json",
            }
            for n in sorted(INPUT_TOPICS)
        ),
        {
            "name": "segments.members",
            "partitions": 2,
            "cleanup_policy": "compact",
            "key": "customer_id",
            "value_schema": "schemas/m.json",
        },
    ]
}


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def with_topic(topic: str, /, **changes: object) -> dict[str, list[dict[str, object]]]:
    topics = [dict(t) for t in GOOD["topics"]]
    for t in topics:
        if t["name"] == topic:
            t.update(changes)
            for k in [k for k, v in changes.items() if v is None]:
                del t[k]
    return {"topics": topics}


def test_the_shipped_file_declares_every_input_topic_co_partitioned() -> None:
    topics = {t.name: t for t in load_topics()}
    assert set(topics) >= INPUT_TOPIC_NAMES
    assert len({topics[n].partitions for n in INPUT_TOPIC_NAMES}) == 1
    assert topics["segments.members"].cleanup_policy == "compact"
    assert topics["segments.members"].retention_ms is None
    assert topics["events.purchase"].configs == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert topics["events.dlq"].name not in INPUT_TOPIC_NAMES


def test_a_good_file_loads_in_order_with_defaults(tmp_path: Path) -> None:
    topics = load_topics(write(tmp_path, GOOD))
    assert [t.name for t in topics] == [*sorted(INPUT_TOPICS), "segments.members"]
    assert topics[-1] == Topic("segments.members", 2, "compact", None, "customer_id", "schemas/m.json")
    assert topics[-1].configs == {"cleanup.policy": "compact"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("topics: [", r"not valid YAML"),
        ("- just a list", r"expected a mapping with a non-empty 'topics' list"),
        ({"topics": []}, r"non-empty 'topics' list"),
        ({"topics": ["events.browse"]}, r"topic #1: expected a mapping, got str"),
        (with_topic("events.browse", partitions=None), r"topic 'events.browse': missing field 'partitions'"),
        (
            with_topic("events.browse", partitions=0),
            r"topic 'events.browse': 'partitions' must be an integer >= 1, got 0",
        ),
        (with_topic("events.browse", partitions="six"), r"'partitions' must be an integer >= 1, got 'six'"),
        (with_topic("events.browse", partitions=True), r"'partitions' must be an integer >= 1, got True"),
        (
            with_topic("segments.members", cleanup_policy="forever"),
            r"topic 'segments.members': 'cleanup_policy' must be one of .*got 'forever'",
        ),
        (with_topic("events.browse", retention_ms="1 week"), r"'retention_ms' must be a positive integer"),
        (with_topic("events.browse", partitons=6), r"topic 'events.browse': unknown field\(s\) partitons"),
        (with_topic("events.browse", name="events.purchase"), r"declared more than once: events.purchase"),
        (
            with_topic("events.profile", name="events.profiles"),
            r"every input topic must be declared; missing: events.profile",
        ),
    ],
)
def test_a_bad_file_says_what_is_wrong_and_where(tmp_path: Path, doc: object, message: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(TopicsError, match=message) as info:
        load_topics(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TopicsError, match=r"nope\.yaml: cannot read the topics file"):
        load_topics(tmp_path / "nope.yaml")


def test_input_topics_must_share_a_partition_count(tmp_path: Path) -> None:
    path = write(tmp_path, with_topic("events.feedback", partitions=3))
    with pytest.raises(ValueError, match=r"co-partitioning.*events\.browse=4, events\.feedback=3, events\.profile=4, events\.purchase=4"):  # fmt: skip
        load_topics(path)


def test_only_input_topics_are_held_to_one_partition_count() -> None:
    check_copartitioned({"events.browse": 6, "events.purchase": 6, "events.dlq": 3, "segments.members": 1})
    with pytest.raises(TopicsError, match="same partition count"):
        check_copartitioned({"events.browse": 6, "events.purchase": 12})


def test_the_names_of_the_topics_the_engine_writes_come_from_the_shipped_declarations() -> None:
    from segengine import topic_names
    from segengine.topics import written_topics

    assert written_topics(load_topics()) == {
        "dead_letters": topic_names.DLQ_TOPIC,
        "changes": topic_names.CHANGES_TOPIC,
        "members": topic_names.MEMBERS_TOPIC,
    }
    assert (topic_names.DLQ_TOPIC, topic_names.CHANGES_TOPIC) == ("events.dlq", "segments.changes")  # the contract


def test_a_role_is_checked_and_a_written_role_is_declared_once_at_most(tmp_path: Path) -> None:
    with pytest.raises(TopicsError, match=r"'role' must be one of"):
        load_topics(write(tmp_path, with_topic("segments.members", role="output")))
    twice = with_topic("segments.members", role="members")
    twice["topics"].append({**twice["topics"][-1], "name": "segments.members2"})
    with pytest.raises(TopicsError, match=r"more than one topic has role 'members'"):
        load_topics(write(tmp_path, twice))
