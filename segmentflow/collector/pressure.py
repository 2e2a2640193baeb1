"""Bounds on what the collector holds at once: an in-flight byte budget shared by all requests.

Each request reserves the bytes it holds (its body as it arrives, then the decompressed body)
and gives them back when it is answered. A request that would take the total over the budget is
answered 503 at once (SDKs retry later) instead of growing the process's memory without bound;
one larger than the per-request limit gets 413.
"""

from __future__ import annotations

import threading

from segmentflow.collector.requests import RequestError


class InflightBudget:
    """A byte budget shared by concurrent requests (thread-safe: bodies are decoded in threads).

    Parameters
    ----------
    limit
        Most bytes held by all requests at once.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the in-flight byte limit must be > 0")
        self.limit = limit
        self.used = 0
        self.refused = 0
        self.lock = threading.Lock()

    def reservation(self) -> Reservation:
        """A new, empty reservation (release it when the request is answered)."""
        return Reservation(self)


class Reservation:
    """The bytes one request holds from an :class:`InflightBudget`."""

    def __init__(self, budget: InflightBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise a 503 :class:`RequestError` if the budget is full."""
        if size <= 0:
            return
        budget = self.budget
        with budget.lock:
            if budget.used + size > budget.limit:
                budget.refused += 1
                raise RequestError(
                    503,
                    "overloaded",
                    f"the collector holds {budget.used} of its {budget.limit} in-flight bytes; "
                    "retry shortly",
                )
            budget.used += size
            self.held += size

    def release(self) -> None:
        """Give every held byte back (idempotent)."""
        with self.budget.lock:
            self.budget.used -= self.held
            self.held = 0
