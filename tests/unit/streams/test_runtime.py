"""The worker runtime with fakes for Kafka (send/ack) and the in-memory store: event-time
alignment across partitions, acks only after effects, dead letters, and quarantine of an event
that makes the engine fail."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from support.fakes import FakeKafka

from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker, deliveries

WEB, BUY = "website-events", "purchase-events"


def event(eid: str, cid: str, kind: str, ts: str, **props: Any) -> bytes:
    body = {"event_id": eid, "customer_id": cid, "type": kind, "timestamp": ts}
    return orjson.dumps(body | {"properties": props})


def first_order() -> bytes:
    """Customer ``c-1``'s first order (January 2, 2026), as its JSON value."""
    return event(
        "o1",
        "c-1",
        "order_completed",
        "2026-01-02T00:00:00Z",
        order_id="o",
        revenue=5,
        currency="EUR",
    )


def record(topic: str, partition: int, offset: int, value: bytes, key: str = "c-1") -> InputRecord:
    kind = "website" if topic == WEB else "purchase"
    return InputRecord(topic, kind, partition, offset, key.encode(), value)


def worker() -> tuple[SegmentWorker, FakeKafka]:
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})
    kafka = FakeKafka()
    w = SegmentWorker(
        Settings(), Processor(config, MemoryStore(outbox=True)), kafka.send, kafka.ack
    )
    w.assign([(WEB, 0), (BUY, 0)])
    return w, kafka


def test_events_wait_for_the_slower_partition_then_apply_in_time_order() -> None:
    w, kafka = worker()
    w.watermark.set_end((WEB, 0), 1)
    w.watermark.set_end((BUY, 0), 1)
    order = first_order()
    view = event("v1", "c-1", "page_view", "2026-01-01T00:00:00Z", url="/")
    asyncio.run(w.handle_batch(deliveries([record(BUY, 0, 0, order)], ["t-order"])))
    # the website partition still lags and has not been read: nothing may be applied yet
    assert kafka.on("segment-changes") == [] and kafka.acked == []
    asyncio.run(w.handle_batch(deliveries([record(WEB, 0, 0, view)], ["t-view"])))
    changes = [(c["data"]["previous"], c["data"]["current"]) for c in kafka.on("segment-changes")]
    assert changes == [(None, "prospect"), ("prospect", "new")]  # as replay would see them
    assert kafka.acked == ["t-view", "t-order"]


def test_bad_message_is_dead_lettered_and_acked_valid_neighbours_applied() -> None:
    w, kafka = worker()
    w.watermark.set_end((WEB, 0), 3)
    w.watermark.set_end((BUY, 0), 0)
    good = event("v1", "c-1", "page_view", "2026-01-01T00:00:00Z", url="/")
    later = event("v2", "c-1", "page_view", "2026-01-01T00:00:01Z", url="/")
    asyncio.run(
        w.handle_batch(
            deliveries(
                [record(WEB, 0, 0, good), record(WEB, 0, 1, b"{nope"), record(WEB, 0, 2, later)],
                ["a", "b", "c"],
            )
        )
    )
    letters = kafka.on("segmentflow-deadletter")
    assert [(d["reason"], d["offset"]) for d in letters] == [("invalid_json", 1)]
    assert sorted(kafka.acked) == ["a", "b", "c"]
    counters = w.processor.counters
    assert counters.received[WEB] == 3 == counters.applied[WEB] + counters.deadlettered[WEB]


def test_an_event_that_breaks_the_engine_is_quarantined_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, kafka = worker()
    w.watermark.set_end((WEB, 0), 2)
    w.watermark.set_end((BUY, 0), 0)
    real_apply = w.processor.engine.apply

    def apply(state: Any, ev: Any) -> Any:
        if ev.event_id == "boom":
            raise RuntimeError("engine bug")
        return real_apply(state, ev)

    monkeypatch.setattr(w.processor.engine, "apply", apply)
    ok = event("ok", "c-2", "page_view", "2026-01-01T00:00:00Z", url="/")
    boom = event("boom", "c-1", "page_view", "2026-01-01T00:00:01Z", url="/")
    asyncio.run(
        w.handle_batch(
            deliveries([record(WEB, 0, 0, ok, "c-2"), record(WEB, 0, 1, boom)], ["ok", "boom"])
        )
    )
    letters = kafka.on("segmentflow-deadletter")
    assert [(d["reason"], d["offset"]) for d in letters] == [("processing_error", 1)]
    assert [c["subject"] for c in kafka.on("segment-changes")] == ["c-2"]
    assert sorted(kafka.acked) == ["boom", "ok"]
    counters = w.processor.counters
    assert counters.received[WEB] == counters.applied[WEB] + counters.deadlettered[WEB] == 2


def test_a_large_release_publishes_and_acks_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backlog the clock releases at once is applied, published and acked in chunks (each
    chunk's changes are on the broker before its events are acked, and before the next chunk
    is applied), and the outcome is the one of a single release."""
    from segmentflow.streams import runtime

    views = [
        record(
            WEB,
            0,
            n,
            event(f"v{n}", f"c-{n}", "page_view", f"2026-01-01T00:00:{n:02d}Z", url="/"),
            f"c-{n}",
        )
        for n in range(10)
    ]
    tokens = [f"t{n}" for n in range(10)]

    def run(chunk: int) -> tuple[list[dict[str, Any]], list[Any], list[int]]:
        monkeypatch.setattr(runtime, "RELEASE_CHUNK", chunk)
        w, kafka = worker()
        w.watermark.set_end((WEB, 0), 10)
        w.watermark.set_end((BUY, 0), 0)
        published_at_ack: list[int] = []
        real_ack = kafka.ack

        async def ack(token: Any) -> object:
            published_at_ack.append(len(kafka.on("segment-changes")))
            return await real_ack(token)

        w.ack = ack
        asyncio.run(w.handle_batch(deliveries(views, tokens)))
        return kafka.on("segment-changes"), kafka.acked, published_at_ack

    whole, acked, _ = run(1000)
    chunked, acked_chunked, published = run(3)
    assert chunked == whole and acked_chunked == acked == tokens
    # the first chunk's three events were acked once their own changes were out, not all
    assert published[:3] == [published[0]] * 3 and 0 < published[0] < len(whole)


def test_refreshed_end_offsets_release_held_events_between_ticks() -> None:
    w, kafka = worker()
    w.watermark.set_end((WEB, 0), 1)  # the website partition seemed to hold one record
    w.watermark.set_end((BUY, 0), 1)
    order = first_order()
    asyncio.run(w.handle_batch(deliveries([record(BUY, 0, 0, order)], ["t-order"])))
    assert kafka.acked == []  # held: the website partition lags
    asyncio.run(w.refresh_ends({("elsewhere", 3): 9}))  # not owned: ignored, still held
    assert kafka.acked == [] and ("elsewhere", 3) not in w.watermark.lag()
    asyncio.run(w.refresh_ends({(WEB, 0): 0}))  # its latest fetch: nothing to read there
    assert kafka.acked == ["t-order"]
    assert [c["data"]["current"] for c in kafka.on("segment-changes")] == ["new"]
