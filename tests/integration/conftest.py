"""Fixtures on the real embedded stack: a tansu broker and a redis-server on free
loopback ports, fresh for each test so that tests cannot see each other's records or
keys (a start takes well under a second).

``produce`` and ``consume_all`` live in ``tests/integration/support.py``; the fixtures
of the same names hand them to tests too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from segengine.devcluster import DevCluster
from segengine.devstack import DevStack
from tests.integration.support import Key, Value, consume_all, produce

log = logging.getLogger(__name__)


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    s = DevStack()
    started = time.monotonic()
    try:
        await s.start()
    except Exception as exc:  # a stack that cannot start is a failure, never a skip
        pytest.fail(f"the embedded stack (tansu + redis-server) did not start: {exc}", pytrace=False)
    log.info("embedded stack started in %.3f s", time.monotonic() - started)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def kafka() -> AsyncIterator[DevStack]:
    """The embedded broker alone (for tests that bring their own Redis)."""
    async with DevStack(redis=False) as started:
        yield started


@pytest.fixture
async def cluster() -> AsyncIterator[DevCluster]:
    """A real Redis Cluster: three primaries on free loopback ports (segengine.devcluster)."""
    try:
        started = DevCluster(primaries=3)
        await started.start()
    except Exception as exc:  # a cluster that cannot start is a failure, never a skip
        pytest.fail(f"the Redis Cluster did not start: {exc}", pytrace=False)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def redis_client(stack: DevStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(name="produce")
def produce_fixture() -> Callable[[DevStack, str, list[tuple[Key, Value]]], Awaitable[None]]:
    return produce


@pytest.fixture(name="consume_all")
def consume_all_fixture() -> Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]:
    return consume_all
