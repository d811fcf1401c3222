"""The embedded stack: starts, creates the topics, stops on exit and on Ctrl-C; with
addresses configured, nothing is started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from engine.devstack import DevStack
from engine.topics import load_topics


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


async def refuses(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return True
    writer.close()
    return False


async def test_stack_creates_every_declared_topic(stack: DevStack) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh metadata for every topic
        declared = {t.name: t.partitions for t in load_topics()}
        assert {name: len(consumer.partitions_for_topic(name) or ()) for name in declared} == declared
    finally:
        await consumer.stop()
    client = Redis.from_url(stack.redis_url)
    assert await client.ping()
    await client.aclose()


async def test_stop_ends_both_servers() -> None:
    stack = DevStack()
    await stack.start()
    pids = stack.pids
    stack.stop()
    assert await refuses(stack.kafka_bootstrap) and await refuses(stack.redis_url.removeprefix("redis://").split("/")[0])
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in pids)


async def test_dev_command_serves_until_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "dev", stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    text = b""
    while b"Ctrl-C" not in text:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert line, f"segengine dev ended early: {text.decode()}"
        text += line
    kafka = re.search(rb"SEGENGINE_KAFKA_BOOTSTRAP=(\S+)", text).group(1).decode()  # type: ignore[union-attr]
    redis_url = re.search(rb"SEGENGINE_REDIS_URL=(\S+)", text).group(1).decode()  # type: ignore[union-attr]
    assert await Redis.from_url(redis_url).ping()
    assert not await refuses(kafka)
    servers = children(proc.pid)
    assert len(servers) == 2
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert await refuses(kafka)
    assert not any(Path(f"/proc/{pid}").exists() for pid in servers)


async def test_configured_addresses_start_nothing(stack: DevStack) -> None:
    env = {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "engine.cli", "run", env=env, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"worker starting" in line, line
        assert children(proc.pid) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
