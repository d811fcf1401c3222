"""Kafka I/O in one place: the clients the worker uses, the sink that publishes output, and the
default partitioner's formula.

The worker reads batches straight from aiokafka (``getmany``), not through faust's per-event
stream machinery, so that validation, state updates and publishing are done a batch at a time.
Offsets are committed by hand (segengine.worker.checkpoint). The input topics are co-partitioned and
assigned with the range assignor, so one worker owns all of a customer's input partitions.

Every client the engine builds reaches the broker the same way: ``kafka_security_kwargs``
turns the ``kafka_security_*``, ``kafka_sasl_*`` and ``kafka_ssl_*`` settings into aiokafka's
keyword arguments (TLS context, SASL login), and the factories here pass them on.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from .errors import ConfigError, PublishError
from .records import OutRecord
from .settings import Settings

KEY_CACHE = 500_000  # (topic, key) -> partition entries the sink remembers


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (JVM, aiokafka) partitioner picks for a key: murmur2."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class ClientKwargs(dict[str, Any]):
    """aiokafka keyword arguments whose repr never shows the SASL password."""

    def __repr__(self) -> str:
        return repr({k: "***" if k == "sasl_plain_password" else v for k, v in self.items()})


def kafka_security_kwargs(settings: Settings) -> ClientKwargs:
    """``security_protocol``, and the TLS context and SASL login it calls for: what every aiokafka
    client (consumer, producer, admin) takes beside ``bootstrap_servers`` to reach the broker.

    The settings were checked together when they were read (segengine.settings); this raises
    ``ConfigError`` when the TLS files do not load (not PEM, a key that does not match, a key
    with a passphrase).
    """
    protocol = settings.kafka_security_protocol
    kwargs = ClientKwargs(security_protocol=protocol)
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = _ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and password):
            raise ConfigError(
                f"SEGENGINE_KAFKA_SECURITY_PROTOCOL={protocol} needs SEGENGINE_KAFKA_SASL_MECHANISM, "
                "SEGENGINE_KAFKA_SASL_USERNAME and SEGENGINE_KAFKA_SASL_PASSWORD"
            )
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = password.get_secret_value()
    return kwargs


def _no_passphrase() -> str:
    return ""  # an encrypted key then fails to load, instead of OpenSSL asking on the terminal


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name (against the system's CAs when no cafile
    is given); presents the client certificate when one is given."""
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=_no_passphrase,
        )
    except (ssl.SSLError, OSError) as exc:
        files = ", ".join(
            f"SEGENGINE_KAFKA_SSL_{name.upper()}={path}"
            for name, path in (
                ("cafile", settings.kafka_ssl_cafile),
                ("certfile", settings.kafka_ssl_certfile),
                ("keyfile", settings.kafka_ssl_keyfile),
            )
            if path is not None
        )
        reason = "the key has a passphrase (give it unencrypted)" if _encrypted(settings.kafka_ssl_keyfile) else exc
        raise ConfigError(f"the Kafka TLS files do not load ({files}): {reason}") from None
    return context


def _encrypted(keyfile: Path | None) -> bool:
    try:
        return keyfile is not None and b"ENCRYPTED" in keyfile.read_bytes()[:4096]  # PKCS#8 or the older PEM header
    except OSError:
        return False


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_security_kwargs(settings),
        acks="all",
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_security_kwargs(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        max_partition_fetch_bytes=4 << 20,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_max_bytes=64 << 20,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        rebalance_timeout_ms=settings.rebalance_timeout_ms,
        group_instance_id=settings.group_instance_id,
    )


def make_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client of the configured broker; ``options`` are passed on (``request_timeout_ms``)."""
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_security_kwargs(settings), **options)


class KafkaSink:
    """Publishes output records and returns once the broker acknowledged all of them.

    Records are grouped into one producer batch per topic-partition (the partition chosen
    from the key exactly as Kafka's default partitioner does), which costs far less per
    record than ``send()`` one by one. Order per partition is kept.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}

    def _partition(self, partitions: list[int], topic: str, key: bytes | None) -> int:
        if key is None:
            return partitions[0]
        cached = self._key_partition.get((topic, key))
        if cached is None:
            if len(self._key_partition) > KEY_CACHE:
                self._key_partition.clear()
            cached = self._key_partition[(topic, key)] = partitions[default_partition(key, len(partitions))]
        return cached

    async def publish(self, records: list[OutRecord]) -> None:
        known = self._partitions
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value in records:
            partitions = known.get(topic)
            if partitions is None:  # a topic's partitions, asked once: no await per record after
                partitions = known[topic] = sorted(await self.producer.partitions_for(topic))
            grouped.setdefault((topic, self._partition(partitions, topic, key)), []).append((key, value))
        futures: list[Any] = []
        for (topic, partition), items in grouped.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise PublishError(f"a record for {topic} is larger than the producer's max batch size")
            if batch.record_count():
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
