"""The tutorial baseline: a faust agent that awaits Redis once per event.

Run as its own process by the benchmark:
    python -m bench.naive_faust KAFKA_BOOTSTRAP REDIS_URL
It counts processed events in the Redis key ``naive:done``.
"""

from __future__ import annotations

import sys

import faust
import orjson
from redis.asyncio import Redis


def main() -> None:
    bootstrap, redis_url = sys.argv[1], sys.argv[2]
    app = faust.App(
        "segengine-bench-naive",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=6,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=1,
    )
    redis = Redis.from_url(redis_url)
    topic = app.topic("events.browse", "events.purchase", value_serializer="raw", key_serializer="raw")

    @app.agent(topic)
    async def naive(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            event = orjson.loads(value)
            await redis.hincrby(f"naive:{event['customer_id']}", "n", 1)
            await redis.incr("naive:done")

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
