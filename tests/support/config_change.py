"""An old and a new config for the config-change tests (CONTRACT §6): changed lifecycle
thresholds, an unchanged rule, a changed one, one reading a changed dimension, a new
time-dependent one and a removed one (``browsers``). For the worker's own config-change tests:
a worker over :class:`~support.fakes.FakeKafka` on one purchase partition, its orders and the
``rule:big`` changes it sent."""

from __future__ import annotations

from typing import Any

import orjson

from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.runtime import SegmentWorker
from support.fakes import FakeKafka

OLD: dict[str, Any] = {
    "persona": {"enabled": False},
    "rules": [
        {"name": "buyer", "when": "orders >= 1"},
        {"name": "big", "when": "revenue >= 300.0"},
        {"name": "browsers", "when": "page_views >= 3"},
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},
    ],
}
NEW: dict[str, Any] = {
    "persona": {"enabled": False},
    "lifecycle": {"at_risk_days": 40, "churned_days": 120},  # changed thresholds
    "rules": [
        {"name": "buyer", "when": "orders >= 1"},  # unchanged
        {"name": "big", "when": "revenue >= 100.0"},  # changed threshold
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},  # reads a changed dimension
        {"name": "idle", "when": "days_since_last_seen >= 20"},  # new, time-dependent
    ],  # "browsers" removed
}

BUY = "purchase-events"
#: no population-wide dimension: every change is one customer's
BASE: dict[str, Any] = {"rfm": {"enabled": False}, "persona": {"enabled": False}}


def order(n: int, cid: str, revenue: int, timestamp: str | None = None) -> InputRecord:
    """Order ``n`` of ``cid`` at offset ``n`` of partition 0, at ``timestamp`` (by default
    January ``n``, 2026, 10:00)."""
    body = {
        "event_id": f"o{n}",
        "customer_id": cid,
        "type": "order_completed",
        "timestamp": timestamp or f"2026-01-0{n}T10:00:00Z",
        "properties": {"order_id": f"o{n}", "revenue": revenue, "currency": "EUR"},
    }
    return InputRecord(BUY, "purchase", 0, n, cid.encode(), orjson.dumps(body))


def worker(config: dict[str, Any], store: MemoryStore) -> tuple[SegmentWorker, FakeKafka]:
    """A worker under ``config`` over ``store``, assigned purchase partition 0."""
    kafka = FakeKafka()
    w = SegmentWorker(Settings(), Processor(config_from_dict(config), store), kafka.send, kafka.ack)
    w.assign([(BUY, 0)])
    return w, kafka


def big(kafka: FakeKafka) -> list[dict[str, Any]]:
    """The ``rule:big`` changes sent (their ``data``)."""
    changes = (c["data"] for c in kafka.on("segment-changes"))
    return [d for d in changes if d["dimension"] == "rule:big"]
