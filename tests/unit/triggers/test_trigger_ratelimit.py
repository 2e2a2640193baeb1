"""Token bucket: spacing with burst 1, bursts, refill, unlimited, and real async waiting."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from segmentflow.triggers.ratelimit import TokenBucket


def test_burst_one_spaces_reservations_at_one_over_rate() -> None:
    bucket = TokenBucket(rate=4, burst=1, clock=lambda: 0.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_burst_allows_that_many_at_once_then_refills() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.reserve(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(10.0) == pytest.approx(0.5)
    # after a long idle period the bucket is full again, never more than burst
    assert [bucket.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(100.0) == pytest.approx(0.5)


def test_waiting_for_the_token_means_no_extra_wait_later() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.2) == pytest.approx(0.0)


def test_unlimited_and_invalid() -> None:
    bucket = TokenBucket(rate=0)
    assert bucket.unlimited
    assert all(bucket.reserve(0.0) == 0.0 for _ in range(100))
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)


def test_acquire_paces_concurrent_callers() -> None:
    async def main() -> list[float]:
        bucket = TokenBucket(rate=20, burst=1)
        stamps: list[float] = []

        async def one() -> None:
            await bucket.acquire()
            stamps.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(6)))
        return sorted(stamps)

    stamps = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.045
    assert stamps[-1] - stamps[0] >= 0.24
