"""Change records' times by whole-number calendar arithmetic give what datetime gives.

``rfc3339`` formats every time a change record carries and ``writes._at_ms`` reads it back
for the compact recent-change entries; both used datetime, and now do the arithmetic
themselves between 1970 and ``EXACT_MS`` (2242). A changed character would change published
records and stored entries, so the two ways are held equal on random times, on the calendar's
edges, and on strings that only look like times."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from segengine.evaluate import (
    DAY_MS,
    EXACT_MS,
    FoldResult,
    civil_from_days,
    days_from_civil,
    rfc3339,
    rfc3339_datetime,
    rfc3339_ms,
    stamp,
)
from segengine.writes import _at_ms


def at_ms_by_datetime(at: str) -> int | str:
    """``_at_ms`` as it was written before: datetime both ways."""
    try:
        ms = round(datetime.fromisoformat(at).timestamp() * 1000)
    except (TypeError, ValueError):
        return at
    return ms if rfc3339_datetime(ms) == at else at


EDGES = [
    0,
    1,
    999,
    DAY_MS - 1,
    DAY_MS,
    951_782_400_000,  # 2000-02-29
    951_868_799_999,  # 2000-02-29T23:59:59.999
    1_709_164_800_000,  # 2024-02-29
    4_107_456_000_000,  # 2100-02-28 (2100 is no leap year)
    4_107_542_400_000,  # 2100-03-01
    4_102_444_799_999,  # 2099-12-31T23:59:59.999
    EXACT_MS - 1,
]


@given(st.integers(min_value=0, max_value=EXACT_MS - 1))
@example(EDGES[0])
def test_rfc3339_is_what_datetime_writes_and_reads_back(ms: int) -> None:
    text = rfc3339(ms)
    assert text == rfc3339_datetime(ms)
    assert rfc3339_ms(text) == ms
    assert _at_ms(text) == ms == at_ms_by_datetime(text)


def test_the_calendar_edges() -> None:
    for ms in EDGES:
        text = rfc3339(ms)
        assert text == rfc3339_datetime(ms), ms
        assert rfc3339_ms(text) == ms
    assert rfc3339(951_782_400_000) == "2000-02-29T00:00:00.000Z"
    assert rfc3339(4_107_542_400_000) == "2100-03-01T00:00:00.000Z"


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))  # the years 1-9999
def test_outside_the_exact_range_datetime_still_decides(ms: int) -> None:
    text = rfc3339(ms)
    assert text == rfc3339_datetime(ms)
    assert _at_ms(text) == at_ms_by_datetime(text)


@given(st.integers(min_value=-800_000, max_value=2_000_000))
def test_the_day_arithmetic_is_the_proleptic_gregorian_calendar(days: int) -> None:
    year, month, day = civil_from_days(days)
    if 1 <= year <= 9999:
        assert datetime(year, month, day, tzinfo=UTC).timestamp() == days * 86_400
    assert days_from_civil(year, month, day) == days


@given(st.integers(min_value=0, max_value=EXACT_MS - 1), st.integers(min_value=0, max_value=23), st.characters())
@example(1_709_164_800_000, 9, "1")  # "2024-02-29" -> "2024-02-19"
def test_a_string_that_only_looks_like_a_time_is_read_as_before(ms: int, at: int, char: str) -> None:
    text = rfc3339(ms)
    changed = text[:at] + char + text[at + 1 :]
    assert _at_ms(changed) == at_ms_by_datetime(changed)
    expected = at_ms_by_datetime(changed)
    assert rfc3339_ms(changed) == (expected if isinstance(expected, int) and 0 <= expected < EXACT_MS else None)


def test_what_is_not_a_time_of_the_form() -> None:
    for text in [
        "2024-02-30T00:00:00.000Z",  # no such day
        "2024-13-01T00:00:00.000Z",
        "2024-02-01T24:00:00.000Z",
        "2024-02-01T00:00:00.000+00:00",
        "2024-02-01T00:00:00Z",
        "２０２４-02-01T00:00:00.000Z",  # digits, not ASCII ones
        "",
    ]:
        assert rfc3339_ms(text) is None, text
        assert _at_ms(text) == at_ms_by_datetime(text), text


@given(st.integers(-(2**40), EXACT_MS + 2**40))
@example(0)
@example(EXACT_MS - 1)
@example(EXACT_MS)
@example(-1)
def test_a_time_a_decision_stamps_is_kept_as_its_text_reads_back(ms: int) -> None:
    """What ``stamp`` keeps of a decision's time is what ``_at_ms`` reads back from the text
    the change record carries (the recent-change entries take it instead of parsing it)."""
    result = FoldResult()
    at = stamp(ms, result)
    assert at == rfc3339(ms)
    if 0 <= ms < EXACT_MS:
        assert result.stamps == {at: ms} == {at: _at_ms(at)}
    else:
        assert not result.stamps
