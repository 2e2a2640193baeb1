"""A rebalance and the batch under way (the race of loaded run 2, notes/loaded-run-failure.md):
the revocation waits for the batch, and the batch stops at its next Redis or broker call, so
nothing it does after the revocation runs under the new assignment (no due changes fired up to
its old clock for partitions taken over, no outbox rows trimmed that the new owner publishes).
What it committed stays; its messages are read again after the rebalance, as after a crash."""

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


class Harness:
    """A worker over a MemoryStore whose ``apply`` blocks (in its thread) until released."""

    def __init__(self) -> None:
        config = config_from_dict({"persona": {"enabled": False}, "rfm": {"enabled": False}})
        self.processor = Processor(config, MemoryStore(outbox=True))
        self.sent: list[bytes] = []
        self.acked: list[Any] = []
        self.worker = SegmentWorker(Settings(), self.processor, self._send, self._ack)
        self.worker.assign([(BUY, 0), (BUY, 1)])
        self.worker.watermark.set_end((BUY, 0), 1)
        self.worker.watermark.set_end((BUY, 1), 0)  # empty: does not hold the clock
        self.inside, self.release = threading.Event(), threading.Event()
        self.calls: list[str] = []
        apply, next_work = self.processor.apply, self.processor.next_work

        def blocking_apply(items: Any) -> Any:
            if items and not self.release.is_set():
                self.inside.set()
                assert self.release.wait(timeout=120), "the test never released the apply"
            out = apply(items)
            self.calls.append("apply")
            return out

        def recorded_next_work() -> int | None:
            self.calls.append("next_work")
            return next_work()

        self.processor.apply = blocking_apply  # type: ignore[method-assign]
        self.processor.next_work = recorded_next_work  # type: ignore[method-assign]

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> object:
        self.sent.append(value)
        return None

    async def _ack(self, token: Any) -> object:
        self.acked.append(token)
        return None

    async def inside_apply(self) -> None:
        while not self.inside.is_set():
            await asyncio.sleep(0.01)


def _order(offset: int = 0) -> InputRecord:
    body = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "type": "order_completed",
        "timestamp": "2025-01-01T00:00:00Z",
        "properties": {"order_id": "o-1", "revenue": 10, "currency": "EUR"},
    }
    return InputRecord(BUY, "purchase", 0, offset, b"c-1", orjson.dumps(body))


def _lifecycle_changes(sent: list[bytes]) -> list[dict[str, Any]]:
    changes = [orjson.loads(v) for v in sent]
    return [c for c in changes if c["data"]["dimension"] == "lifecycle"]


def test_a_rebalance_waits_for_the_batch_under_way_which_then_stops() -> None:
    h = Harness()

    async def main() -> None:
        batch = asyncio.create_task(h.worker.handle_batch(deliveries([_order()], ["t1"])))
        await h.inside_apply()
        revoking = asyncio.create_task(h.worker.revoked())
        for _ in range(20):  # the apply is blocked: the revocation cannot get past it
            await asyncio.sleep(0.01)
            assert not revoking.done(), "revoked while the batch was still applying"
        h.release.set()
        await revoking
        assert batch.done(), "the batch stopped before the revocation went on"
        await batch
        assert h.calls == ["apply"], "nothing after the apply ran (no clock advance)"
        assert h.acked == [], "its message is read again after the rebalance"
        assert h.processor.store.get("c-1") is not None, "what it committed stays"
        assert h.sent == [], "its changes wait in the outbox"

        await h.worker.assigned([(BUY, 0)])
        h.worker.watermark.set_end((BUY, 0), 1)
        await h.worker.handle_batch(deliveries([_order()], ["t2"]))  # read again: a duplicate
        assert h.acked == ["t2"]

    asyncio.run(main())
    changes = _lifecycle_changes(h.sent)
    assert [c["data"]["sequence"] for c in changes] == [1], "published once, after the rebalance"


def test_a_revocation_that_cannot_wait_still_stops_the_batch_at_its_next_call() -> None:
    h = Harness()

    async def main() -> None:
        batch = asyncio.create_task(h.worker.handle_batch(deliveries([_order()], ["t1"])))
        await h.inside_apply()
        await h.worker.revoked(wait=0.01)  # gives up waiting: revokes with the apply running
        assert not batch.done()
        # partition 0 now belongs to another worker; the assignment waits for the late batch
        assigning = asyncio.create_task(h.worker.assigned([(BUY, 1)]))
        h.release.set()
        await asyncio.gather(batch, assigning)
        assert h.worker.owned == {(BUY, 1)}

    asyncio.run(main())
    assert h.calls == ["apply"], "the late batch fired nothing under the new assignment"
    assert h.acked == [] and h.sent == []


def test_a_batch_queued_behind_the_revocation_does_not_run() -> None:
    h = Harness()

    async def main() -> None:
        first = asyncio.create_task(h.worker.handle_batch(deliveries([_order()], ["t1"])))
        await h.inside_apply()
        queued = asyncio.create_task(h.worker.handle_batch(deliveries([_order(1)], ["t2"])))
        await asyncio.sleep(0.01)
        assert h.worker.batches_waiting == 1
        revoking = asyncio.create_task(h.worker.revoked())
        await asyncio.sleep(0.01)
        h.release.set()
        await asyncio.gather(first, queued, revoking)

    asyncio.run(main())
    assert h.calls == ["apply"], "the queued batch applied nothing"
    assert h.acked == [] and h.worker.batches_waiting == 0
