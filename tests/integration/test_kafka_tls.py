"""The engine's Kafka clients over TLS, against the real embedded broker.

tansu speaks plaintext, so a TLS front (Python's own ``ssl``, in this process) terminates TLS
and forwards each connection to it; the broker advertises the front's port, so every
connection a client makes (bootstrap, then the broker and coordinator it is told about) goes
through TLS. The front asks for a client certificate, so the certificate settings are used
too. A throwaway CA, server and client certificate are made with the ``openssl`` command.

SASL is not tested end to end: the embedded tansu asks for SASL only with ``--authentication``,
and then refuses to create the first user (its memory storage cannot be seeded beforehand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError

from segengine.devstack import DevStack, free_port, tansu_binary
from segengine.kafka import kafka_security_kwargs, make_admin, make_producer
from segengine.settings import Settings
from segengine.topics import load_topics
from tests.integration.pki import Pki, make_pki
from tests.integration.support import FAST_GROUP, RunningWorker, purchase, stop, wait_listening

DAY = 86_400_000
START_TIMEOUT_S = 60.0
# tansu reads these from the environment too; a stray one would change the broker under test
TANSU_ENV = ("CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


class TlsFront:
    """TLS on a free loopback port; each connection is forwarded in the clear to ``upstream_port``."""

    def __init__(self, pki: Pki) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED  # a client without a certificate of our CA is refused
        self.upstream_port = 0
        self.port = 0
        self.clients: list[str] = []  # the subject CN of each client certificate accepted
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        peer = client_writer.get_extra_info("peercert") or {}
        self.clients.append(next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), ""))
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, broker_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer))
        finally:
            self._writers -= {client_writer, broker_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()  # one side gone: the other one ends too


@contextlib.asynccontextmanager
async def tansu_behind(front: TlsFront, workdir: Path) -> AsyncIterator[None]:
    """A tansu broker on a free port that names the front as its address."""
    env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
    for _attempt in range(3):  # the free port can be taken before tansu binds it
        port = free_port()
        log = workdir / f"tansu-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                    "--advertised-listener-url", f"tcp://127.0.0.1:{front.port}", "--storage-engine", "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            if await wait_listening(port, proc, "tansu", timeout=START_TIMEOUT_S, log=log):
                front.upstream_port = port
                yield
                return
        finally:
            stop(proc)
    pytest.fail(f"tansu did not start; its last log: {log.read_text()}", pytrace=False)


@dataclass(frozen=True)
class SecuredBroker:
    pki: Pki
    front: TlsFront
    bootstrap: str

    def settings(self, **overrides: Any) -> Settings:
        """SSL with the test CA and the client certificate, unless ``overrides`` say otherwise."""
        given: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": self.pki.ca,
            "kafka_ssl_certfile": self.pki.client_cert,
            "kafka_ssl_keyfile": self.pki.client_key,
            **FAST_GROUP,
        }
        return Settings(**{**given, **overrides})


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecuredBroker]:
    folder = tmp_path_factory.mktemp("kafka-tls")
    pki = make_pki(folder)
    front = TlsFront(pki)
    await front.start()
    try:
        async with tansu_behind(front, folder):
            broker = SecuredBroker(pki, front, f"127.0.0.1:{front.port}")
            await create_topics(broker.settings())
            yield broker
    finally:
        await front.close()


async def create_topics(settings: Settings) -> None:
    """The declared topics, created through the engine's admin client (retried while tansu warms up)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        admin = make_admin(settings, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            await admin.create_topics(
                [
                    NewTopic(t.name, t.partitions, 1, topic_configs=t.configs)
                    for t in load_topics(settings.topics_file)
                    if t.name not in existing
                ]
            )
            return
        except KafkaConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its end offsets, read over the secured connection."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_security_kwargs(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, f"{topic}: the end offsets were not reached in 60 s"
            for rows in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(orjson.loads(r.value) for r in rows if r.value is not None)
        return records
    finally:
        await consumer.stop()


async def test_a_worker_processes_a_batch_over_tls_with_a_client_certificate(secured: SecuredBroker) -> None:
    now = int(time.time() * 1000)
    events = [
        ("alice", purchase("tls-p1", "alice", now - 2 * DAY, 40.0)),
        ("alice", purchase("tls-p2", "alice", now - DAY, 300.0)),
        ("bob", purchase("tls-p3", "bob", now - DAY, 10.0)),
    ]
    async with DevStack(kafka=False) as redis_only:
        settings = secured.settings(redis_url=redis_only.redis_url, group_id="tls-worker")
        producer = make_producer(settings)
        await producer.start()
        try:
            acks = [await producer.send("events.purchase", orjson.dumps(e), key=k.encode()) for k, e in events]
            await asyncio.gather(*acks)
        finally:
            await producer.stop()
        async with RunningWorker(settings) as worker:
            await worker.wait_for(len(events), timeout=120)
        changes = await read_topic(settings, "segments.changes")

    tiers = {c["customer_id"]: c for c in changes if c["dimension"] == "value_tier"}  # the last one per customer
    assert (tiers["alice"]["to"], tiers["alice"]["cause"]["event_id"]) == ("A", "tls-p2")
    assert tiers["bob"]["to"] == "C"
    assert secured.front.clients and set(secured.front.clients) == {"segengine test client"}


NO_TLS = {"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": None, "kafka_ssl_certfile": None}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}, id="no client certificate"),
        pytest.param({"kafka_ssl_cafile": None}, id="the system's CAs, which did not sign the broker's certificate"),
        pytest.param({**NO_TLS, "kafka_ssl_keyfile": None}, id="plaintext"),
    ],
)
async def test_a_client_without_the_right_tls_settings_is_refused(
    secured: SecuredBroker, overrides: dict[str, Any]
) -> None:
    """The other side of the test above: the front does require TLS with a client certificate of our CA."""
    admin = make_admin(secured.settings(**overrides), request_timeout_ms=10_000)
    try:
        with pytest.raises(KafkaConnectionError):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()
