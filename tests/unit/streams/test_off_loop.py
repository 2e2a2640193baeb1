"""The worker's engine and store work runs off the event loop (issue 13): while a batch is being
applied, other coroutines (``/health``, ``/metrics``, Faust's heartbeats) keep running."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker, deliveries

BUY = "purchase-events"


def test_a_batch_is_applied_while_the_event_loop_keeps_running() -> None:
    """The apply blocks until a coroutine on the loop releases it: on the loop it could never
    be released (the wait gives up after a generous limit and the test fails)."""
    config = config_from_dict({"persona": {"enabled": False}})
    processor = Processor(config, MemoryStore(outbox=True))
    sent: list[bytes] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> object:
        sent.append(value)
        return None

    async def ack(token: Any) -> object:
        return None

    worker = SegmentWorker(Settings(), processor, send, ack)
    worker.assign([(BUY, 0)])
    worker.watermark.set_end((BUY, 0), 1)
    inside, release = threading.Event(), threading.Event()
    released_by_loop: list[bool] = []
    apply = processor.apply

    def blocking_apply(items: Any) -> Any:
        if items:
            inside.set()
            released_by_loop.append(release.wait(timeout=60))
        return apply(items)

    processor.apply = blocking_apply  # type: ignore[method-assign]
    body = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "type": "order_completed",
        "timestamp": "2025-01-01T00:00:00Z",
        "properties": {"order_id": "o-1", "revenue": 10, "currency": "EUR"},
    }
    record = InputRecord(BUY, "purchase", 0, 0, b"c-1", orjson.dumps(body))

    async def health_probe() -> None:  # what a /health request does meanwhile
        while not inside.is_set():
            await asyncio.sleep(0.01)
        assert worker.status is not None
        release.set()

    async def main() -> None:
        await asyncio.gather(worker.handle_batch(deliveries([record], ["t"])), health_probe())

    asyncio.run(main())
    assert released_by_loop == [True]
    assert any(b'"lifecycle"' in value for value in sent)  # the batch was applied and published
