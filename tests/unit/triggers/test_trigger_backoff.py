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


class _Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"done"``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def _run_retry(flaky: _Flaky, backoff: Backoff, **kwargs: object) -> tuple[object, list[float]]:
    import asyncio

    from segmentflow.triggers.backoff import retry_async

    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> object:
        return await retry_async(flaky, backoff, sleep=fake_sleep, **kwargs)  # type: ignore[arg-type]

    try:
        return asyncio.run(main()), waits
    except Exception as exc:
        return exc, waits


def test_retry_async_waits_the_schedule_and_reports_each_failure() -> None:
    seen: list[tuple[int, str, float]] = []
    result, waits = _run_retry(
        _Flaky(4, OSError("down")),
        Backoff(base=0.1, cap=0.5, jitter=0),
        on_failure=lambda n, exc, d: seen.append((n, str(exc), d)),
    )
    assert result == "done"
    assert waits == [0.1, 0.2, 0.4, 0.5]
    assert seen == [(1, "down", 0.1), (2, "down", 0.2), (3, "down", 0.4), (4, "down", 0.5)]


def test_retry_async_gives_up_after_the_last_attempt() -> None:
    flaky = _Flaky(10, OSError("still down"))
    result, waits = _run_retry(flaky, Backoff(base=0.5, cap=4, jitter=0), attempts=5)
    assert isinstance(result, OSError) and str(result) == "still down"
    assert flaky.calls == 5 and waits == [0.5, 1.0, 2.0, 4.0]


def test_retry_async_does_not_retry_other_errors() -> None:
    flaky = _Flaky(1, ValueError("bad event"))
    result, waits = _run_retry(flaky, Backoff(), retry_on=(OSError,))
    assert isinstance(result, ValueError) and flaky.calls == 1 and waits == []


def test_retry_async_jitter_uses_the_given_rng_only() -> None:
    state = random.getstate()
    result, waits = _run_retry(
        _Flaky(3, OSError()), Backoff(base=1, cap=8, jitter=0.5), rng=random.Random(7)
    )
    assert result == "done" and len(waits) == 3
    assert all(raw / 2 <= w <= raw for w, raw in zip(waits, [1, 2, 4], strict=True))
    assert random.getstate() == state


def test_no_jitter_leaves_the_global_random_generator_alone() -> None:
    state = random.getstate()
    assert [Backoff(base=1, jitter=0).delay(n) for n in (1, 2, 3)] == [1, 2, 4]
    assert random.getstate() == state
