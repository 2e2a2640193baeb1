"""A worker started with a changed config re-evaluates the stored customers from its tick and
publishes the changes (``cause.kind`` ``config``) through the outbox (CONTRACT §6)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from support.fakes import FakeKafka

from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import SegmentWorker, deliveries

BUY = "purchase-events"
BASE: dict[str, Any] = {"rfm": {"enabled": False}, "persona": {"enabled": False}}


def order(n: int, cid: str, revenue: int) -> InputRecord:
    body = {
        "event_id": f"o{n}",
        "customer_id": cid,
        "type": "order_completed",
        "timestamp": f"2026-01-0{n}T10:00:00Z",
        "properties": {"order_id": f"o{n}", "revenue": revenue, "currency": "EUR"},
    }
    return InputRecord(BUY, "purchase", 0, n, cid.encode(), orjson.dumps(body))


def worker(config: dict[str, Any], store: MemoryStore) -> tuple[SegmentWorker, FakeKafka]:
    kafka = FakeKafka()
    w = SegmentWorker(Settings(), Processor(config_from_dict(config), store), kafka.send, kafka.ack)
    w.assign([(BUY, 0)])
    return w, kafka


def big(kafka: FakeKafka) -> list[dict[str, Any]]:
    changes = (c["data"] for c in kafka.on("segment-changes"))
    return [d for d in changes if d["dimension"] == "rule:big"]


def test_a_restart_with_a_new_rule_fills_it_for_the_stored_customers() -> None:
    store = MemoryStore(outbox=True)
    old, _ = worker(BASE, store)
    old.watermark.set_end((BUY, 0), 3)
    records = [order(1, "a", 50), order(2, "b", 500), order(3, "c", 900)]
    asyncio.run(old.handle_batch(deliveries(records, ["1", "2", "3"])))
    asyncio.run(old.tick())  # records the config the state follows
    rules = [{"name": "big", "when": "revenue >= 400.0"}]
    new, kafka = worker(BASE | {"rules": rules}, store)  # restarted, idle input
    asyncio.run(new.tick())
    got = big(kafka)
    assert sorted((d["customer_id"], d["current"]) for d in got) == [("b", "in"), ("c", "in")]
    assert {d["cause"]["kind"] for d in got} == {"config"}
    assert new.config_walk.done and new.config_walk.progress.customers == 3
    assert store.populations()["rule:big"] == {"in": 2}
    text = render(registry_for(new)).decode()
    assert "segmentflow_config_reevaluated_customers_total 3.0" in text
    assert "segmentflow_config_reevaluation_running 0.0" in text
    asyncio.run(new.tick())  # done: nothing twice
    assert (
        len([c for c in kafka.on("segment-changes") if c["data"]["dimension"] == "rule:big"]) == 2
    )
