"""The ids a decision stamps are BLAKE2b digests of what they name, as every earlier version
made them: a replay after an upgrade must find the same change ids and event fingerprints."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.evaluate import change_id
from segengine.state import event_fingerprint

TEXT = st.text(max_size=40)
SEGMENT = st.one_of(st.none(), TEXT)


@settings(max_examples=200, deadline=None)
@given(customer=TEXT, dimension=TEXT, cause=TEXT, old=SEGMENT, new=SEGMENT)
def test_a_change_id_is_the_blake2b_of_what_it_names_each_time(
    customer: str, dimension: str, cause: str, old: str | None, new: str | None
) -> None:
    raw = f"{customer}\x1f{dimension}\x1f{cause}\x1f{old}\x1f{new}".encode()
    expected = hashlib.blake2b(raw, digest_size=16).hexdigest()
    assert change_id(customer, dimension, cause, old, new) == expected
    assert change_id(customer, dimension, cause, old, new) == expected  # asked again: the same


def test_a_known_change_id_and_fingerprint_stay_what_they_were() -> None:
    assert change_id("c-1", "value_tier", "purchases:0:7", None, "A") == "f04ba564a36b58d2575b0302823daacc"
    assert event_fingerprint("e-1") == hashlib.blake2b(b"e-1", digest_size=8).hexdigest()


@settings(max_examples=200, deadline=None)
@given(first=TEXT, second=TEXT)
def test_an_event_fingerprint_is_the_blake2b_of_its_id_whatever_came_before(first: str, second: str) -> None:
    event_fingerprint(first)
    assert event_fingerprint(second) == hashlib.blake2b(second.encode(), digest_size=8).hexdigest()
