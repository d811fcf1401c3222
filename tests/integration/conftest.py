"""Fixtures on the real embedded stack: a tansu broker and a redis-server on free
loopback ports, fresh for each test (starting one takes a fraction of a second)."""

from __future__ import annotations

import logging
from typing import AsyncIterator

import pytest
from redis.asyncio import Redis

from engine.devstack import DevStack

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    s = DevStack()
    try:
        await s.start()
    except Exception as exc:  # a stack that cannot start is a failure, never a skip
        pytest.fail(f"the embedded stack did not start: {exc}")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def redis_client(stack: DevStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


