"""Issue 12 in the runtime (fakes for Kafka, the in-memory store): a clock jump of years is
advanced in slices that let the event loop run between them (same changes as one advance), and a
forget command erases the customer's held events with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from support.fakes import FakeKafka

from segmentflow.config import Settings, config_from_dict
from segmentflow.schemas.decode import validate_event
from segmentflow.service.processor import InputRecord, Item, Processor, is_tombstone
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker, deliveries

WEB = "website-events"
CONFIG = {
    "rfm": {"enabled": False},
    "persona": {"enabled": False},
    "rules": [{"name": "quiet", "when": "days_since_last_seen >= 14"}],  # due every midnight
}
T0 = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_US = 365 * 86_400_000_000


def body(eid: str, cid: str, kind: str, at: datetime) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    props = {"url": "/"} if kind == "page_view" else {}
    return {"event_id": eid, "customer_id": cid, "type": kind, "timestamp": stamp} | {
        "properties": props
    }


def processor_with_customers(n: int) -> Processor:
    proc = Processor(config_from_dict(CONFIG), MemoryStore(outbox=True))
    items = []
    for i in range(n):
        event = validate_event(body(f"e{i}", f"c-{i}", "page_view", T0), "website")
        assert not hasattr(event, "reason")
        items.append(Item(WEB, event))  # type: ignore[arg-type]
    proc.apply(items)
    return proc


def test_a_jump_of_years_is_advanced_in_slices_the_loop_runs_between() -> None:
    now = int(T0.timestamp() * 1_000_000) + 3 * YEAR_US
    reference = processor_with_customers(5).advance(now)
    kafka = FakeKafka()
    w = SegmentWorker(Settings(), processor_with_customers(5), kafka.send, kafka.ack)
    ticks = 0

    async def scenario() -> list[Any]:
        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        changes = await w._advance(now)
        task.cancel()
        return changes

    changes = asyncio.run(scenario())
    assert [c.to_json() for c in changes] == [c.to_json() for c in reference]
    assert ticks > 300, "the loop ran between slices (one slice = one day of event time)"


def test_forget_erases_held_events_and_leaves_a_tombstone() -> None:
    kafka = FakeKafka()
    proc = processor_with_customers(0)
    w = SegmentWorker(Settings(), proc, kafka.send, kafka.ack)
    w.assign([(WEB, 0)])
    w.watermark.set_end((WEB, 0), 10)  # more to read: events are held by the clock

    def rec(offset: int, data: dict[str, Any]) -> InputRecord:
        return InputRecord(WEB, "website", 0, offset, b"c-1", orjson.dumps(data))

    first = rec(0, body("a", "c-1", "page_view", T0))
    asyncio.run(w.handle_batch(deliveries([first], ["t0"])))
    w.watermark.set_end((WEB, 0), 1)
    asyncio.run(w.tick())  # caught up: applied
    held = rec(1, body("b", "c-1", "identify", T0) | {"properties": {"traits": {"email": "x"}}})
    w.watermark.set_end((WEB, 0), 10)
    forget = rec(2, body("forget-1", "c-1", "forget", datetime.now(UTC)))
    asyncio.run(w.handle_batch(deliveries([held, forget], ["t1", "t2"])))
    state = proc.store.get("c-1")
    assert is_tombstone(state) and state is not None and not state.traits
    assert state.seqs == {"lifecycle": 2} and sorted(kafka.acked) == ["t0", "t1", "t2"]
    nulls = [orjson.loads(v)["data"] for t, _, v in kafka.sent if t == "segment-changes"]
    assert [(d["dimension"], d["current"], d["sequence"]) for d in nulls][-1] == (
        "lifecycle",
        None,
        2,
    )
    mark = w.current_watermark()
    assert mark is not None and mark <= int(T0.timestamp() * 1e6)  # the forget moved no clock
    # a redelivery of what was read before the forget changes nothing
    asyncio.run(w.handle_batch(deliveries([held, forget], ["t1", "t2"])))
    assert is_tombstone(proc.store.get("c-1"))


def test_forget_on_another_partition_than_the_home_is_forwarded_there() -> None:
    kafka = FakeKafka()
    forwarded: list[tuple[str, int, bytes | None, bytes]] = []

    async def send_to(topic: str, partition: int, key: bytes | None, value: bytes) -> object:
        forwarded.append((topic, partition, key, value))
        return None

    proc = processor_with_customers(0)
    w = SegmentWorker(Settings(), proc, kafka.send, kafka.ack, send_to=send_to)
    w.assign([(WEB, 0), (WEB, 1)])
    for p in (0, 1):
        w.watermark.set_end((WEB, p), 0)
    home = InputRecord(
        WEB, "website", 1, 0, b"c-1", orjson.dumps(body("a", "c-1", "page_view", T0))
    )
    asyncio.run(w.handle_batch(deliveries([home], ["t0"])))
    state = proc.store.get("c-1")
    assert state is not None and state.home == 1
    raw = orjson.dumps(body("forget-1", "c-1", "forget", datetime.now(UTC)))
    misrouted = InputRecord(WEB, "website", 0, 0, b"c-1", raw)
    asyncio.run(w.handle_batch(deliveries([misrouted], ["t1"])))
    assert forwarded == [(WEB, 1, b"c-1", raw)], "the owner applies it, in order"
    assert not is_tombstone(proc.store.get("c-1")) and "t1" in kafka.acked
