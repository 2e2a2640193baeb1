"""Issue 15 "Identity": the flow driven by the real ``segment-analytics-python`` SDK against a
running collector on a real broker. Anonymous page and product views, then
``identify(user_id, anonymous_id=...)``, then an order by the user; the records the collector
produced are read back from Kafka (topic, partition, offset, key, bytes) and applied by the
``Processor`` as the worker applies them (key checked, in timestamp order): the user's counters
include the anonymous views, a rule on ``product_views_30d`` enters for the user (cause
``merge``), the anonymous id exits everything. A later ``alias`` call repeats the merge and
changes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from collector_harness import Collector

from segmentflow.config import config_from_dict
from segmentflow.engine.state import T
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.kafka_clients import consumer

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {
    "persona": {"enabled": False},
    "rules": [{"name": "browsing", "when": "product_views_30d >= 2"}],
}


def _records(collector: Collector, tag: str, expect: int) -> list[InputRecord]:
    """The input records keyed by this test's ids, as the worker consumes them (progress-based
    wait, generous limit)."""
    kinds = {topic: kind for kind, topic in collector.settings.input_topics.items()}
    kafka = consumer(
        collector.settings,
        *kinds,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
        group_id=None,
    )
    out: list[InputRecord] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and len(out) < expect:
            for m in kafka:
                if m.key is not None and m.key.startswith(tag.encode()):
                    out.append(
                        InputRecord(m.topic, kinds[m.topic], m.partition, m.offset, m.key, m.value)
                    )
    finally:
        kafka.close()
    return out


def test_anonymous_views_count_for_the_identified_user(
    segment: Any, collector: Collector, tag: str
) -> None:
    user, anon = f"{tag}user", f"{tag}anon"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    segment.page(
        anonymous_id=anon, name="Home", properties={"url": "https://shop.example/"}, timestamp=at(0)
    )
    for n in range(3):
        segment.track(
            anonymous_id=anon,
            event="Product Viewed",
            properties={"product_id": f"p-{n}", "category": "shoes", "price": 59.9},
            timestamp=at(1 + n),
        )
    segment.identify(
        user_id=user, anonymous_id=anon, traits={"email": "ada@example.com"}, timestamp=at(10)
    )
    segment.track(
        user_id=user,
        event="Order Completed",
        properties={"order_id": "o-1", "total": 59.9, "currency": "EUR"},
        timestamp=at(20),
    )
    segment.alias(previous_id=anon, user_id=user, timestamp=at(30))  # the same person again

    records = _records(collector, tag, expect=7)
    assert len(records) == 7
    records.sort(key=lambda r: orjson.loads(r.value or b"{}")["timestamp"])
    store = MemoryStore()
    processor = Processor(config_from_dict(CONFIG), store)
    result = processor.process(records)
    assert result.deadletters == []
    changes = [c.to_cloudevent()["data"] for c in result.changes]

    state = store.get(user)
    assert state is not None
    assert state.totals[T["product_views"]] == 3 and state.totals[T["page_views"]] == 1
    assert state.totals[T["orders"]] == 1 and state.traits["email"] == "ada@example.com"
    mine = [d for d in changes if d["customer_id"] == user]
    entered = [d for d in mine if d["dimension"] == "rule:browsing" and d["current"] == "in"]
    assert len(entered) == 1 and entered[0]["cause"]["kind"] == "merge"
    lifecycle = [d["current"] for d in mine if d["dimension"] == "lifecycle"]
    assert lifecycle == ["prospect", "new"]

    theirs = [d for d in changes if d["customer_id"] == anon]
    held = {d["dimension"] for d in theirs if d["current"] is not None}
    final = {d["dimension"]: d for d in theirs if d["current"] is None}
    assert set(final) == held == {"lifecycle", "rule:browsing"}  # exits everything it held
    assert all(d["reason"] == {"merged_into": user} for d in final.values())
    assert all(d["cause"]["kind"] == "merge" for d in final.values())
    assert theirs[-1]["current"] is None and len(theirs) == 2 * len(final)  # nothing after
    assert store.resolve_aliases([anon]) == {anon: user}
    assert sum(processor.counters.applied.values()) == 7  # the alias too: it is an event
