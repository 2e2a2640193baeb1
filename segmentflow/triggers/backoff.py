"""The one retry policy: capped exponential backoff with jitter, and the loop that applies it.

Attempt ``n`` (1-based: the delay *after* the n-th failed attempt) waits
``raw = min(cap, base * factor ** (n - 1))`` scaled down by up to ``jitter`` of itself:
``raw * (1 - jitter * u)`` with ``u`` uniform in [0, 1). ``jitter=0`` gives the plain schedule,
``jitter=1`` "full jitter". A ``Retry-After`` from the receiver raises the delay (still capped).
:func:`retry_async` retries an awaitable on this schedule (webhook deliveries, dead-letter
produces, the worker's Redis and Kafka calls); start-up waits iterate :meth:`Backoff.delays`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """A retry schedule.

    Parameters
    ----------
    base
        Seconds before the first retry (before jitter).
    factor
        Growth per attempt.
    cap
        Longest delay, in seconds.
    jitter
        Share of the delay (0..1) that is randomised away.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def raw(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based), before jitter.

        Examples
        --------
        >>> [Backoff(base=1, cap=5).raw(n) for n in range(1, 6)]
        [1.0, 2.0, 4.0, 5.0, 5.0]
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        exponent = min(attempt - 1, 64)  # no float overflow for huge attempt counts
        return float(min(self.cap, self.base * self.factor**exponent))

    def delay(
        self, attempt: int, rng: random.Random | None = None, retry_after: float | None = None
    ) -> float:
        """Jittered delay after failed attempt ``attempt``; at least ``retry_after`` (capped).

        Examples
        --------
        >>> b = Backoff(base=1, cap=8, jitter=0.5)
        >>> 2.0 <= b.delay(3, random.Random(1)) <= 4.0
        True
        >>> b.delay(1, retry_after=6)
        6
        """
        raw = self.raw(attempt)
        # no jitter draws no random number (the global generator is left alone)
        value = raw * (1.0 - self.jitter * (rng or random).random()) if self.jitter else raw
        if retry_after is not None and retry_after > value:
            return min(self.cap, retry_after)
        return value

    def delays(self) -> Iterator[float]:
        """Raw delays after each failed attempt, without end: ``raw(1)``, ``raw(2)``, ...

        Examples
        --------
        >>> list(itertools.islice(Backoff(base=0.5, cap=2).delays(), 4))
        [0.5, 1.0, 2.0, 2.0]
        """
        return (self.raw(n) for n in itertools.count(1))

    def schedule(self, attempts: int) -> list[float]:
        """Raw delays between ``attempts`` attempts (``attempts - 1`` waits)."""
        return [self.raw(n) for n in range(1, attempts)]


async def retry_async(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    attempts: int | None = None,
    on_failure: Callable[[int, Exception, float], object] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await ``call()`` until it succeeds, waiting ``backoff.delay(n)`` after failure ``n``.

    Parameters
    ----------
    call
        Makes a fresh awaitable per attempt.
    backoff
        The schedule (``jitter`` applies, with ``rng``).
    retry_on
        Errors that are retried; anything else propagates at once.
    attempts
        Most attempts; the last failure propagates. ``None`` retries without end.
    on_failure
        Called with (failed attempt, error, delay before the next) before each wait.
    sleep
        Waits the delay (a fake clock in tests).

    Examples
    --------
    >>> failures = iter([OSError("down"), OSError("down")])
    >>> async def call() -> str:
    ...     for exc in failures:
    ...         raise exc
    ...     return "ok"
    >>> waits: list[float] = []
    >>> async def fake_sleep(s: float) -> None:
    ...     waits.append(s)
    >>> asyncio.run(retry_async(call, Backoff(base=1, jitter=0), sleep=fake_sleep)), waits
    ('ok', [1.0, 2.0])
    """
    for attempt in itertools.count(1):
        try:
            return await call()
        except retry_on as exc:
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff.delay(attempt, rng)
            if on_failure is not None:
                on_failure(attempt, exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad.

    Examples
    --------
    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
