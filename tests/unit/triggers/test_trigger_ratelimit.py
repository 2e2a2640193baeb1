"""Token bucket on fake clocks only: spacing with burst 1, bursts, refill, unlimited, and the
async waiting of concurrent callers (a fake sleep; nothing here reads the wall clock)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from segmentflow.triggers.ratelimit import TokenBucket


def no_clock() -> float:
    """The clock of buckets whose callers pass ``now``: reading it is a test bug."""
    raise AssertionError("the bucket read a clock although the test passed `now`")


def test_burst_one_spaces_reservations_at_one_over_rate() -> None:
    bucket = TokenBucket(rate=4, burst=1, clock=lambda: 0.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_burst_allows_that_many_at_once_then_refills() -> None:
    bucket = TokenBucket(rate=2, burst=3, clock=no_clock)
    assert [bucket.reserve(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(10.0) == pytest.approx(0.5)
    # after a long idle period the bucket is full again, never more than burst
    assert [bucket.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(100.0) == pytest.approx(0.5)


def test_waiting_for_the_token_means_no_extra_wait_later() -> None:
    bucket = TokenBucket(rate=10, burst=1, clock=no_clock)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.2) == pytest.approx(0.0)


def test_unlimited_and_invalid() -> None:
    bucket = TokenBucket(rate=0, clock=no_clock)
    assert bucket.unlimited
    assert all(bucket.reserve(0.0) == 0.0 for _ in range(100))
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)


def test_acquire_paces_concurrent_callers() -> None:
    """Six concurrent callers on a fake clock: each wakes exactly ``1 / rate`` after the
    previous one (no wall-clock timing)."""
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)  # yield, as a real sleep would

    async def main() -> list[float]:
        bucket = TokenBucket(rate=20, burst=1, clock=lambda: now[0], sleep=fake_sleep)
        wakes: list[float] = []

        async def one() -> None:
            waited = await bucket.acquire()
            wakes.append(now[0] + waited)

        await asyncio.gather(*(one() for _ in range(6)))
        return sorted(wakes)

    wakes = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(wakes)]
    assert gaps == pytest.approx([0.05] * 5)
    assert slept == pytest.approx([0.05 * n for n in range(1, 6)])  # the first needs no wait
