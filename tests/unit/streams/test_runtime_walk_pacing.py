"""The worker's tick gives the config re-evaluation walk a short budget while events wait and a
long one while the input is idle (CONTRACT §6; a fake clock: each reading advances 0.1 s)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from support.fakes import FakeKafka

from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker, deliveries

BUY = "purchase-events"
BASE: dict[str, Any] = {"rfm": {"enabled": False}, "persona": {"enabled": False}}
CUSTOMERS = 40


def order(n: int, revenue: int) -> InputRecord:
    cid = f"c{n:03d}"
    body = {
        "event_id": f"o{n}",
        "customer_id": cid,
        "type": "order_completed",
        "timestamp": f"2026-01-01T10:{n // 60:02d}:{n % 60:02d}Z",
        "properties": {"order_id": f"o{n}", "revenue": revenue, "currency": "EUR"},
    }
    return InputRecord(BUY, "purchase", 0, n, cid.encode(), orjson.dumps(body))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def walking() -> SegmentWorker:
    """A worker over stored customers, just reloaded with a new rule: one page per customer."""
    store = MemoryStore(outbox=True)
    kafka = FakeKafka()
    w = SegmentWorker(Settings(), Processor(config_from_dict(BASE), store), kafka.send, kafka.ack)
    w.assign([(BUY, 0)])
    w.watermark.set_end((BUY, 0), CUSTOMERS)
    records = [order(n, 100 * n) for n in range(CUSTOMERS)]
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
