"""topics create | list | describe: the topics of topics/topics.yaml on the configured Kafka,
through aiokafka's admin client (as segengine.topics.create_topics builds it).

Only topics known to exist are described: a metadata request for a missing topic makes
brokers with automatic topic creation (tansu, a default Apache Kafka) create it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    FAILED,
    Bootstrap,
    console,
    kafka_security,
    load_settings,
    out,
    print_json,
    refuse,
    require_kafka,
    run_until_done,
)

if TYPE_CHECKING:
    from ..topics import Topic

JsonFlag = typer.Option(False, "--json", help="JSON output for scripts")


def topics_create(bootstrap: Bootstrap = None) -> None:
    """Create every topic of topics/topics.yaml that does not exist yet (idempotent)."""
    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)

    async def create() -> None:
        from ..topics import create_topics, load_topics

        created = await create_topics(kafka, load_topics(settings.topics_file), security=security)
        console.print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")

    run_until_done(create())


def topics_list(bootstrap: Bootstrap = None, as_json: bool = JsonFlag) -> None:
    """The declared topics, and whether each exists on the broker, with its partition count."""
    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)

    async def main() -> None:
        from ..topics import load_topics

        declared = load_topics(settings.topics_file)
        on_broker = await partition_counts(kafka, [t.name for t in declared], security)
        rows = [
            {
                "topic": t.name,
                "role": t.role or "",
                "declared_partitions": t.partitions,
                "exists": t.name in on_broker,
                "partitions": on_broker.get(t.name),
            }
            for t in declared
        ]
        if as_json:
            print_json({"bootstrap": kafka, "topics": rows})
            return
        from rich.table import Table

        table = Table(title=f"declared topics on {kafka}")
        for column, justify in (("topic", "left"), ("role", "left"), ("declared", "right"), ("on the broker", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(str(row["topic"]), str(row["role"]), str(row["declared_partitions"]), _on_broker(row))
        out.print(table)
        if missing := [r["topic"] for r in rows if not r["exists"]]:
            console.print(f"{len(missing)} missing: segengine topics create", highlight=False)

    run_until_done(main())


def _on_broker(row: dict[str, Any]) -> str:
    if not row["exists"]:
        return "missing"
    found = f"{row['partitions']} partitions"
    return found if row["partitions"] == row["declared_partitions"] else f"{found} (not as declared)"


def topics_describe(
    name: str = typer.Argument(..., metavar="NAME", help="the topic"),
    bootstrap: Bootstrap = None,
    as_json: bool = JsonFlag,
) -> None:
    """One topic on the broker: partitions, replication factor, configs.

    Each partition's leader, replicas and in-sync replicas. Exit 1 if the broker has no such topic."""
    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)

    async def main() -> None:
        from ..topics import load_topics

        described = await describe_topic(kafka, name, security)
        if described is None:
            refuse(f"no topic {name!r} on the broker at {kafka}", FAILED)
        declared = next((t for t in load_topics(settings.topics_file) if t.name == name), None)
        described["declared"] = None if declared is None else _declaration(declared)
        if as_json:
            print_json(described)
            return
        _print_topic(described)

    run_until_done(main())


def _declaration(topic: Topic) -> dict[str, Any]:
    return {"partitions": topic.partitions, "role": topic.role, "configs": topic.configs}


def _print_topic(described: dict[str, Any]) -> None:
    from rich.table import Table

    declared = described["declared"]
    out.print(
        f"{described['topic']}: {len(described['partitions'])} partitions, replication factor "
        f"{described['replication_factor']}"
        + ("; not declared in topics.yaml" if declared is None else f"; declared: {declared['partitions']} partitions"),
        highlight=False,
        soft_wrap=True,
    )
    partitions = Table(title="partitions")
    for column in ("partition", "leader", "replicas", "in sync"):
        partitions.add_column(column, justify="right")
    for p in described["partitions"]:
        partitions.add_row(
            str(p["partition"]), str(p["leader"]), ",".join(map(str, p["replicas"])), ",".join(map(str, p["isr"]))
        )
    out.print(partitions)
    if described["configs"] is None:
        console.print(f"configs: the broker did not say ({described['configs_error']})", highlight=False)
        return
    configs = Table(title="configs")
    configs.add_column("config")
    configs.add_column("value")
    for key, value in sorted(described["configs"].items()):
        configs.add_row(key, "***" if value is None else str(value))
    out.print(configs)


# -- the admin client ----------------------------------------------------------------------------


async def partition_counts(
    bootstrap: str, names: list[str], security: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Partitions per topic, for the topics of ``names`` that exist on the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        present = [n for n in names if n in existing]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}


async def describe_topic(bootstrap: str, name: str, security: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Partitions, replication factor and configs of one topic; None when it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        if name not in set(await admin.list_topics()):
            return None
        (described,) = await admin.describe_topics([name])
        configs: dict[str, str | None] | None
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
            configs, problem = _configs(responses), None
        except KafkaError as exc:  # a broker without DescribeConfigs: the partitions are still worth showing
            configs, problem = None, type(exc).__name__
    finally:
        await admin.close()
    partitions = sorted(
        (
            {"partition": p["partition"], "leader": p["leader"], "replicas": p["replicas"], "isr": p["isr"]}
            for p in described["partitions"]
        ),
        key=lambda p: int(p["partition"]),
    )
    return {
        "topic": name,
        "partitions": partitions,
        "replication_factor": max((len(p["replicas"]) for p in partitions), default=0),
        "configs": configs,
        "configs_error": problem,
    }


def _configs(responses: list[Any]) -> dict[str, str | None]:
    """name -> value from DescribeConfigs responses (None for a sensitive value)."""
    configs: dict[str, str | None] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                raise _config_error(resource)
            for entry in resource["config_entries"]:
                key = entry.get("config_names", entry.get("config_name"))
                configs[str(key)] = None if entry.get("is_sensitive") else entry.get("config_value")
    return configs


def _config_error(resource: dict[str, Any]) -> Exception:
    from aiokafka.errors import for_code

    error: Exception = for_code(resource["error_code"])(resource.get("error_message") or "")
    return error
