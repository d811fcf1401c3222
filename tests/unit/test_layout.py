"""Where the keys live (segengine.layout): a customer's keys in one slot whatever its id holds,
the buckets spread evenly over the slot ranges a cluster's primaries own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from segengine.layout import SLOTS, Layout, bucket_tags, customer_of

IDS = st.text(min_size=1, max_size=128)  # a customer id is 1 to 128 characters, any of them


def slot(key: str) -> int:
    return key_slot(key.encode("utf-8", "surrogatepass"))


@given(IDS, st.sampled_from([1, 7, 64, 256]))
def test_every_key_of_a_customer_is_in_its_buckets_slot(customer: str, buckets: int) -> None:
    layout = Layout(buckets)
    bucket = layout.bucket(customer)
    slots = {
        slot(layout.state(customer)),
        slot(layout.changes(customer)),
        slot(layout.timers(bucket, 5)),
        slot(layout.population(bucket)),
        slot(layout.erasing(bucket)),
    }
    assert len(slots) == 1


@pytest.mark.parametrize("customer", ["}x", "{a}", "a}:c:b", "{", "}{", "{}", "seg:{0.1}:c:x", "客户"])
def test_braces_in_an_id_do_not_move_its_keys(customer: str) -> None:
    layout = Layout(64)
    assert (
        slot(layout.state(customer))
        == slot(layout.changes(customer))
        == slot(layout.population(layout.bucket(customer)))
    )


@given(IDS)
def test_the_id_is_read_back_from_the_customer_key_and_from_no_other(customer: str) -> None:
    layout = Layout(64)
    assert customer_of(layout.state(customer)) == customer
    assert customer_of(layout.state(customer).encode("utf-8", "surrogatepass")) == customer
    assert customer_of(layout.changes(customer)) is None
    assert customer_of(layout.timers(3, 1)) is None and customer_of("seg:{ledger}:committed") is None


@pytest.mark.parametrize("buckets", [1, 3, 64, 1000])
def test_bucket_k_hashes_into_the_kth_slot_range(buckets: int) -> None:
    for k, tag in enumerate(bucket_tags(buckets)):
        assert k * SLOTS // buckets <= key_slot(tag.encode()) < (k + 1) * SLOTS // buckets
        assert "{" not in tag and "}" not in tag


def test_customers_spread_evenly_over_three_primaries() -> None:
    layout = Layout(64)
    per_primary = [0, 0, 0]
    for n in range(30_000):
        per_primary[slot(layout.state(f"customer-{n}")) * 3 // SLOTS] += 1
    assert max(per_primary) / min(per_primary) < 1.1, per_primary


def test_the_bucket_count_is_bounded() -> None:
    with pytest.raises(ValueError):
        Layout(0)
    with pytest.raises(ValueError):
        Layout(SLOTS + 1)
