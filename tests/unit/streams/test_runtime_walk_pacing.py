"""The worker's tick gives the config re-evaluation walk a short budget while events wait and a
long one while the input is idle (CONTRACT §6; a fake clock: each reading advances 0.1 s)."""

from __future__ import annotations

import asyncio

from support.config_change import BASE, BUY, order, worker

from segmentflow.config import config_from_dict
from segmentflow.service.processor import InputRecord
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker, deliveries

CUSTOMERS = 40


def purchase(n: int, revenue: int) -> InputRecord:
    """Customer ``n``'s order, ``n`` seconds after 10:00 on January 1."""
    return order(n, f"c{n:03d}", revenue, f"2026-01-01T10:{n // 60:02d}:{n % 60:02d}Z")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def walking() -> SegmentWorker:
    """A worker over stored customers, just reloaded with a new rule: one page per customer."""
    w, _ = worker(BASE, MemoryStore(outbox=True))
    w.watermark.set_end((BUY, 0), CUSTOMERS)
    records = [purchase(n, 100 * n) for n in range(CUSTOMERS)]
    asyncio.run(w.handle_batch(deliveries(records, list(range(CUSTOMERS)))))
    asyncio.run(w.tick())
    rules = [{"name": "big", "when": "revenue >= 1000.0"}]
    assert asyncio.run(w.reload(config_from_dict(BASE | {"rules": rules}))) is None
    w.config_walk.batch = 1
    w.config_walk.clock = Clock()
    return w


def test_an_idle_tick_walks_for_the_long_budget() -> None:
    w = walking()
    asyncio.run(w.tick())
    assert w.config_walk.done and w.config_walk.progress.customers == CUSTOMERS


def test_a_tick_with_a_batch_waiting_keeps_to_the_short_budget() -> None:
    w = walking()
    w.batches_waiting = 1  # a consumed batch waits for the worker lock
    asyncio.run(w.tick())
    # pages until 0.25 s passed: readings at 0.1 (start), 0.2, 0.3, 0.4 -> three pages
    assert not w.config_walk.done and w.config_walk.progress.customers == 3
    w.batches_waiting = 0
    asyncio.run(w.tick())
    assert w.config_walk.done and w.config_walk.progress.customers == CUSTOMERS
