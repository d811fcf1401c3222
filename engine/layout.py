"""Where each of the engine's Redis keys lives, on a single primary and on Redis Cluster.

Customers are spread over a fixed number of *buckets*, chosen when the engine first writes
to a Redis and recorded there (``seg:layout``). A bucket's keys share one hash tag, so they
live in one Redis Cluster slot, and a script call that touches one bucket touches one slot:

    seg:{<tag>}:c:<customer id>    the customer's hash (version, state, outbox, ...)
    seg:{<tag>}:h:<customer id>    its last change records as versions before kept them (now field h of c:)
    seg:{<tag>}:t:<partition>      due times of the bucket's customers homed in that input partition
    seg:{<tag>}:pop                the bucket's share of the segment population counters
    seg:{<tag>}:erasing            its customers whose erase awaits its commit

and a few global keys: ``seg:layout`` (this layout), the commit ledger, the population samples,
and ``seg:reasons``, the rule texts the recent changes name by code (segengine.reasons).

A customer's bucket is the CRC-32 of its id (UTF-8) modulo the bucket count: its keys are
one slot whatever bytes the id holds, braces included, because the hash tag is the first
``{...}`` of the key and the tag never holds a brace. The tags are picked so that bucket k
hashes into the k-th of as many equal ranges of slots: ``redis-cli --cluster create`` hands
each primary a contiguous range, so the buckets, and the customers, spread evenly.

Why buckets and not one slot per customer, or one per Kafka partition: population counters,
the erasing set and the timer sets must be updated in the same atomic script as the customer
they count, so they have to share its slot; per customer that would be 16,384 counter shards
to add up, and a timer set per slot to poll. Per Kafka partition would tie the keys to the
partition count and to the producers' partitioner (a customer's records can arrive on two
partitions when producers hash keys differently), and a lookup by id could not find them.
A bucket count fixed at creation has neither problem: a batch's writes go out as one script
call per bucket (all at once), the counters are summed over the buckets on read, and the
due loop polls one timer set per bucket and partition it owns.

A single primary uses one bucket by default (one script call per batch, as before); a
cluster uses ``CLUSTER_BUCKETS`` (64: an even spread over up to 16 primaries, each bucket one
slot to move when resharding; ``SEGENGINE_REDIS_BUCKETS`` sets another count for a new Redis).
"""

from __future__ import annotations

import functools
import zlib

from redis.crc import key_slot

SLOTS = 16384
LAYOUT_KEY = "seg:layout"  # {"version": VERSION, "buckets": n}
VERSION = 2
CLUSTER_BUCKETS = 64
MAX_BUCKETS = SLOTS
OLD_LAYOUT_KEYS = ("seg:population", "seg:erasing", "seg:committed")  # written only by the layout before buckets
CUSTOMER_MATCH = "seg:{*}:c:*"  # SCAN pattern of the customer hashes (check each key with customer_of)


@functools.lru_cache(maxsize=8)
def bucket_tags(buckets: int) -> tuple[str, ...]:
    """One hash tag per bucket: bucket k's tag hashes into slot range k of ``buckets`` equal ones."""
    tags = []
    for k in range(buckets):
        low, high = k * SLOTS // buckets, (k + 1) * SLOTS // buckets
        j = 0
        while not low <= key_slot(f"{k}.{j}".encode()) < high:
            j += 1
        tags.append(f"{k}.{j}")
    return tuple(tags)


class Layout:
    """The key names of one Redis's engine data, for ``buckets`` buckets."""

    def __init__(self, buckets: int) -> None:
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, not {buckets}")
        self.buckets = buckets
        self.prefixes = [f"seg:{{{tag}}}:" for tag in bucket_tags(buckets)]

    def bucket(self, customer_id: str) -> int:
        if self.buckets == 1:
            return 0
        return zlib.crc32(customer_id.encode("utf-8", "surrogatepass")) % self.buckets

    def state(self, customer_id: str, bucket: int | None = None) -> str:
        return f"{self.prefixes[self.bucket(customer_id) if bucket is None else bucket]}c:{customer_id}"

    def changes(self, customer_id: str, bucket: int | None = None) -> str:
        return f"{self.prefixes[self.bucket(customer_id) if bucket is None else bucket]}h:{customer_id}"

    def timers(self, bucket: int, partition: int) -> str:
        return f"{self.prefixes[bucket]}t:{partition}"

    def population(self, bucket: int) -> str:
        return f"{self.prefixes[bucket]}pop"

    def erasing(self, bucket: int) -> str:
        return f"{self.prefixes[bucket]}erasing"


def customer_of(key: bytes | str) -> str | None:
    """The customer id of a customer hash's key, None for any other key."""
    text = key.decode("utf-8", "surrogatepass") if isinstance(key, bytes) else key
    close = text.find("}")
    if not text.startswith("seg:{") or close < 0 or text[close : close + 4] != "}:c:":
        return None
    return text[close + 4 :]
