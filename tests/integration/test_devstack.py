"""The embedded stack: starts, creates the declared topics, carries records, stops
cleanly (also after a failed start and at interpreter exit); with addresses
configured, nothing is started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

import segengine.devstack
from segengine.devstack import DevStack, DevStackError, stack_for
from segengine.settings import Settings
from segengine.topics import load_topics
from tests.integration.support import REPO_ROOT

Produce = Callable[..., Awaitable[None]]
ConsumeAll = Callable[..., Awaitable[list[Any]]]


def children(pid: int) -> set[int]:
    """Live (non-zombie) child processes of ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def refuses(address: str) -> bool:
    host, port = address.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_stack_creates_every_declared_topic_with_its_partitions_and_policy(stack: DevStack) -> None:
    declared = load_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in declared])
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name) for t in declared])
    finally:
        await admin.close()
    assert {d["topic"]: len(d["partitions"]) for d in described} == {t.name: t.partitions for t in declared}
    policies = {name: dict((e[0], e[1]) for e in entries) for _, _, _, name, entries in configs.resources}
    assert {name: cfg["cleanup.policy"] for name, cfg in policies.items()} == {
        t.name: t.cleanup_policy for t in declared
    }
    assert policies["segments.members"]["cleanup.policy"] == "compact"
    assert policies["events.purchase"]["retention.ms"] == "604800000"


async def test_records_come_back_and_one_customer_lands_on_one_partition_number(
    stack: DevStack, produce: Produce, consume_all: ConsumeAll
) -> None:
    await produce(stack, "events.purchase", [("alice", {"event_id": "p1", "amount": 12.5}), (b"bob", b"raw bytes")])
    await produce(stack, "events.browse", [("alice", {"event_id": "b1"})])
    purchases = await consume_all(stack, "events.purchase")
    assert sorted((r.key, r.value) for r in purchases) == [
        (b"alice", b'{"event_id":"p1","amount":12.5}'),
        (b"bob", b"raw bytes"),
    ]
    (browse,) = await consume_all(stack, "events.browse", expect=1)
    assert browse.partition == next(r.partition for r in purchases if r.key == b"alice")  # co-partitioned
    assert await consume_all(stack, "events.feedback") == []


async def test_redis_answers(redis_client: Redis) -> None:
    assert await redis_client.ping()
    await redis_client.set("k", "v")
    assert await redis_client.get("k") == b"v"


async def test_stop_ends_both_servers_and_removes_their_directory() -> None:
    stack = DevStack()
    await stack.start()
    pids, workdir = stack.pids, stack._workdir  # checking the cleanup
    assert len(pids) == 2 and all(alive(p) for p in pids) and workdir is not None and workdir.is_dir()
    await stack.stop()
    assert await refuses(stack.kafka_bootstrap)
    assert await refuses(stack.redis_url)
    assert not any(alive(p) for p in pids)
    assert not workdir.exists()
    await stack.stop()  # a second stop is harmless


async def test_a_server_that_dies_while_starting_fails_clearly_and_stops_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(segengine.devstack, "tansu_binary", lambda: "/bin/false")
    before = children(os.getpid())
    stack = DevStack()
    with pytest.raises(DevStackError, match=r"tansu exited with code 1 while starting on 127\.0\.0\.1:\d+"):
        await stack.start()
    assert children(os.getpid()) == before  # the redis-server that did start is gone
    assert stack.pids == []


async def test_a_server_that_never_answers_times_out_with_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake broker: listening nowhere'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(segengine.devstack, "tansu_binary", lambda: str(fake))
    before = children(os.getpid())
    stack = DevStack(redis=False, start_timeout=0.5)
    with pytest.raises(
        DevStackError, match=r"(?s)tansu on 127\.0\.0\.1:\d+ did not answer within .*fake broker: listening nowhere"
    ):
        await stack.start()
    assert children(os.getpid()) == before


async def test_servers_do_not_outlive_a_process_that_forgot_to_stop_them(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from segengine.devstack import DevStack

        async def main():
            stack = DevStack()
            await stack.start()
            print(*stack.pids, flush=True)  # and exit without stop(): the atexit hook must stop them

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    pids = [int(p) for p in out.split()]
    assert len(pids) == 2
    assert not any(alive(p) for p in pids)


async def test_stack_for_with_both_addresses_starts_nothing(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stack(*args: object, **kwargs: object) -> DevStack:
        raise AssertionError("stack_for started an embedded stack although both addresses were configured")

    monkeypatch.setattr(segengine.devstack, "DevStack", no_stack)
    before = children(os.getpid())
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    async with stack_for(settings) as (bootstrap, redis_url):
        assert (bootstrap, redis_url) == (stack.kafka_bootstrap, stack.redis_url)
        assert children(os.getpid()) == before


async def test_stack_for_starts_only_what_is_not_configured(stack: DevStack) -> None:
    before = children(os.getpid())
    async with stack_for(Settings(kafka_bootstrap=stack.kafka_bootstrap)) as (bootstrap, redis_url):
        assert bootstrap == stack.kafka_bootstrap
        assert redis_url != stack.redis_url
        started = children(os.getpid()) - before
        assert len(started) == 1
        argv0 = Path(f"/proc/{started.pop()}/cmdline").read_bytes().split(b"\0")[0]
        assert Path(argv0.decode().split()[0]).name == "redis-server"  # it retitles itself "redis-server host:port"
        client = Redis.from_url(redis_url)
        assert await client.ping()
        await client.aclose()
    assert children(os.getpid()) == before


async def test_stack_for_creates_missing_topics_on_a_configured_broker() -> None:
    async with DevStack(redis=False, topics_file=None) as bare:
        admin = AIOKafkaAdminClient(bootstrap_servers=bare.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(["segments.members"])
            assert "segments.members" not in await admin.list_topics()
            async with stack_for(Settings(kafka_bootstrap=bare.kafka_bootstrap, redis_url="redis://127.0.0.1:1/0")):
                assert "segments.members" in await admin.list_topics()
        finally:
            await admin.close()


async def test_dev_command_serves_until_ctrl_c(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", "dev", "--env-file", str(env_file), cwd=REPO_ROOT, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"}, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        text = b""
        while b"Ctrl-C" not in text:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, f"segengine dev ended early: {text.decode()}"
            text += line
        kafka = re.search(rb"SEGENGINE_KAFKA_BOOTSTRAP=(\S+)", text)
        redis_url = re.search(rb"SEGENGINE_REDIS_URL=(\S+)", text)
        assert kafka and redis_url, text.decode()
        assert not await refuses(kafka.group(1).decode()) and not await refuses(redis_url.group(1).decode())
        assert env_file.read_text().splitlines() == [
            f"SEGENGINE_KAFKA_BOOTSTRAP={kafka.group(1).decode()}",
            f"SEGENGINE_REDIS_URL={redis_url.group(1).decode()}",
        ]
        servers = children(proc.pid)
        assert len(servers) == 2
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 130  # interrupted (as a shell reports Ctrl-C)
        assert await refuses(kafka.group(1).decode())
        assert not any(alive(p) for p in servers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
