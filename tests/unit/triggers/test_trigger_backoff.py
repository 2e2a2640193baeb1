"""Retry schedule: exponential, capped, jittered within bounds, Retry-After honoured."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.triggers.backoff import Backoff, parse_retry_after


def test_raw_schedule_doubles_then_caps() -> None:
    b = Backoff(base=0.5, factor=2, cap=3, jitter=0)
    assert b.schedule(6) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.delay(2) == 1.0


def test_attempt_is_one_based_and_huge_attempts_do_not_overflow() -> None:
    with pytest.raises(ValueError):
        Backoff().raw(0)
    assert Backoff(cap=7).raw(10_000) == 7


@given(
    attempt=st.integers(1, 40),
    base=st.floats(0.01, 5),
    factor=st.floats(1, 4),
    cap=st.floats(0.1, 60),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_jitter_stays_within_bounds(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    b = Backoff(base=base, factor=factor, cap=cap, jitter=jitter)
    raw = b.raw(attempt)
    d = b.delay(attempt, random.Random(seed))
    assert raw * (1 - jitter) - 1e-9 <= d <= raw <= cap


def test_jitter_actually_spreads_delays() -> None:
    b = Backoff(base=1, cap=10, jitter=0.5)
    rng = random.Random(7)
    assert len({round(b.delay(3, rng), 6) for _ in range(20)}) > 10


def test_retry_after_raises_the_delay_but_not_past_the_cap() -> None:
    b = Backoff(base=0.1, cap=5, jitter=0)
    assert b.delay(1, retry_after=2) == 2
    assert b.delay(1, retry_after=100) == 5
    assert b.delay(1, retry_after=0) == pytest.approx(0.1)


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("later") is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(future) or 0) <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert parse_retry_after(past) == 0.0
