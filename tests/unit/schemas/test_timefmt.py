"""Instants as epoch microseconds and their RFC 3339 text (PLAN "Time")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.schemas.timefmt import (
    DAY_US,
    MAX_US,
    MIN_US,
    TimestampError,
    day_of,
    format_us,
    from_datetime,
    parse_rfc3339,
    to_datetime,
)

OUT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")
instants = st.integers(min_value=MIN_US, max_value=MAX_US)


def test_range_constants_are_the_contract_years() -> None:
    assert to_datetime(MIN_US) == datetime(1970, 1, 1, tzinfo=UTC)
    assert to_datetime(MAX_US) == datetime(2100, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@given(instants)
def test_format_then_parse_round_trips(us: int) -> None:
    text = format_us(us)
    assert OUT.match(text), text
    assert parse_rfc3339(text) == us


@given(instants)
def test_fraction_only_when_needed(us: int) -> None:
    assert ("." in format_us(us)) == (us % 1_000_000 != 0)


@given(instants)
def test_datetime_round_trips(us: int) -> None:
    moment = to_datetime(us)
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert from_datetime(moment) == us


@given(instants, st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
def test_any_offset_denotes_the_same_instant(us: int, minutes: int) -> None:
    local = to_datetime(us).astimezone(timezone(timedelta(minutes=minutes)))
    assert parse_rfc3339(local.isoformat()) == us
    assert from_datetime(local) == us


@given(instants)
def test_day_of_is_the_utc_calendar_day(us: int) -> None:
    assert day_of(us) == (to_datetime(us).date() - datetime(1970, 1, 1).date()).days
    assert day_of(us) * DAY_US <= us < (day_of(us) + 1) * DAY_US


def test_examples() -> None:
    assert format_us(0) == "1970-01-01T00:00:00Z"
    assert format_us(1_500_000) == "1970-01-01T00:00:01.500000Z"
    assert format_us(DAY_US - 1) == "1970-01-01T23:59:59.999999Z"
    assert parse_rfc3339("1970-01-01T02:00:00+02:00") == 0
    assert parse_rfc3339("1970-01-02T00:00:00Z") == DAY_US


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        from_datetime(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("2026-03-01T10:15:00", "naive_timestamp"),
        ("2026-03-01", "invalid_timestamp"),
        ("", "invalid_timestamp"),
        ("2026-13-01T00:00:00Z", "invalid_timestamp"),
        ("1969-12-31T23:59:59.999999Z", "timestamp_out_of_range"),
        ("2101-01-01T00:00:00Z", "timestamp_out_of_range"),
        ("2100-12-31T23:00:00-01:00", "timestamp_out_of_range"),
        ("9999-12-31T23:59:59-23:59", "timestamp_out_of_range"),
    ],
)
def test_parse_errors_carry_a_reason_code(text: str, code: str) -> None:
    with pytest.raises(TimestampError) as info:
        parse_rfc3339(text)
    assert info.value.code == code
