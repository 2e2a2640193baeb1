"""Per-target token bucket.

The bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second; every
delivery attempt (retries included) takes one. :meth:`TokenBucket.reserve` is pure arithmetic on
a caller-supplied clock, so it is unit-testable; :meth:`TokenBucket.acquire` sleeps for it.
With ``burst=1`` attempts are spaced at least ``1 / rate`` seconds apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """A token bucket; ``rate <= 0`` means unlimited.

    Parameters
    ----------
    rate
        Tokens per second.
    burst
        Capacity (tokens available at once); the bucket starts full.
    clock
        Monotonic clock in seconds.
    sleep
        Coroutine function waiting that many seconds (``asyncio.sleep``; a fake in tests).

    Examples
    --------
    >>> bucket = TokenBucket(rate=2, burst=1, clock=lambda: 0.0)
    >>> bucket.reserve(0.0), bucket.reserve(0.0), bucket.reserve(0.0)
    (0.0, 0.5, 1.0)
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(burst)
        self._updated: float | None = None

    @property
    def unlimited(self) -> bool:
        """True when the bucket never waits."""
        return self.rate <= 0

    def reserve(self, now: float | None = None) -> float:
        """Take one token; return how long to wait (seconds) before using it.

        Reservations queue up: the token may be borrowed from the future, so concurrent callers
        are spaced out rather than all woken at once.
        """
        if self.unlimited:
            return 0.0
        now = self.clock() if now is None else now
        if self._updated is None:
            self._updated = now
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    async def acquire(self) -> float:
        """Wait for a token; return the seconds waited."""
        if self.unlimited:
            return 0.0
        wait = self.reserve()  # synchronous: atomic under asyncio
        if wait > 0:
            await self.sleep(wait)
        return wait
