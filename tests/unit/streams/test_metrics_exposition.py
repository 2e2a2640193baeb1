"""streams/metrics.py: what ``/metrics`` exports for a worker over the in-memory store (no Kafka,
no Redis): per-topic counters, reasons, clock and lag per partition, status gauges, populations;
a store that fails to answer populations costs only that family."""

from __future__ import annotations

import redis
from support.metrics import Metrics, parse

from segmentflow.config import Settings, config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.service.processor import Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.redis_health import MemorySample, MemoryWatch, OutOfMemoryError
from segmentflow.streams.runtime import SegmentWorker

WEB, BUY = "website-events", "purchase-events"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


async def _send(topic: str, key: bytes | None, value: bytes) -> object:
    raise AssertionError("rendering metrics sends nothing")


async def _ack(token: object) -> object:
    raise AssertionError("rendering metrics acks nothing")


class DownStore(MemoryStore):
    """A store whose populations cannot be read (Redis down)."""

    def populations(self) -> dict[str, dict[str, int]]:
        raise redis.ConnectionError("Connection refused")


def worker(store: MemoryStore | None = None) -> SegmentWorker:
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})
    return SegmentWorker(
        Settings(), Processor(config, store or MemoryStore(outbox=True)), _send, _ack
    )


def scrape(w: SegmentWorker) -> Metrics:
    return parse(render(registry_for(w)).decode())


def test_counters_are_exported_per_topic_and_reason() -> None:
    w = worker()
    counters = w.processor.counters
    counters.received.update({WEB: 5, BUY: 3})
    counters.applied.update({WEB: 4, BUY: 2})
    counters.deadlettered.update({WEB: 1, BUY: 1})
    counters.reasons.update({"invalid_json": 2})
    counters.changes.update({"lifecycle": 7})
    m = scrape(w)
    assert m.by_label("segmentflow_events_received_total", "topic") == {WEB: 5.0, BUY: 3.0}
    assert m.total("segmentflow_events_applied_total") == 6
    assert m.total("segmentflow_events_deadlettered_total", topic=BUY) == 1
    assert m.by_label("segmentflow_deadletter_reasons_total", "reason") == {"invalid_json": 2.0}
    assert m.by_label("segmentflow_changes_total", "dimension") == {"lifecycle": 7.0}
    for name in ("duplicates", "forwarded", "late"):
        assert f"segmentflow_events_{name}_total" not in m  # families without samples yet


def test_clock_and_lag_per_input_partition() -> None:
    w = worker()
    assert scrape(w).total("segmentflow_watermark_seconds") == 0  # unknown before any event
    w.watermark.assign([(WEB, 0), (BUY, 1)])
    w.watermark.set_end((WEB, 0), 4)
    w.watermark.set_end((BUY, 1), 1)
    w.watermark.observe((WEB, 0), 0, T0 + 2_000_000)
    w.watermark.observe((BUY, 1), 0, T0)
    m = scrape(w)
    assert m.total("segmentflow_watermark_seconds") == (T0 + 2_000_000) / 1e6
    assert m.by_label("segmentflow_consumer_lag", "tp") == {f"{WEB}/0": 3.0, f"{BUY}/1": 0.0}
    assert m.label_values("segmentflow_clock_holding", "tp") == {f"{WEB}/0"}
    assert m.total("segmentflow_clock_held_events") == 0
    assert m.total("segmentflow_watermark_lag_seconds") > 0


def test_status_gauges_follow_the_worker_status() -> None:
    w = worker()
    m = scrape(w)
    assert m.total("segmentflow_ready") == 0
    assert m.total("segmentflow_fetch_ok") == 1
    w.status.ready = True
    w.status.redis_ok = False
    w.status.retries = 3
    w.status.fetch_error = "CorruptRecordError: crc"
    w.status.fetch_errors["CorruptRecordError"] += 2
    m = scrape(w)
    assert m.total("segmentflow_ready") == 1
    assert m.total("segmentflow_redis_ok") == 0
    assert m.total("segmentflow_broker_ok") == 1
    assert m.total("segmentflow_retries_total") == 3
    assert m.total("segmentflow_fetch_ok") == 0
    assert m.by_label("segmentflow_fetch_errors_total") == {"CorruptRecordError": 2.0}


def test_populations_come_from_the_store() -> None:
    store = MemoryStore(outbox=True)
    store.commit(
        {"a": CustomerState("a"), "b": CustomerState("b")},
        [
            Change("a", "lifecycle", None, "new", 1, T0, "e1"),
            Change("b", "lifecycle", None, "prospect", 1, T0, "e2"),
            Change("a", "rule:big", None, "in", 1, T0, "e1"),
        ],
    )
    m = scrape(worker(store))
    got = {
        (s.labels["dimension"], s.labels["segment"]): s.value
        for s in m.named("segmentflow_segment_population")
    }
    assert got == {("lifecycle", "new"): 1, ("lifecycle", "prospect"): 1, ("rule:big", "in"): 1}
    assert m.total("segmentflow_corrupt_states_total") == 0
    assert "segmentflow_redis_used_memory_bytes" not in m  # no Redis: no memory figures
    assert "segmentflow_persona_model_version" not in m  # personas off


def test_a_store_that_cannot_answer_costs_only_the_populations() -> None:
    w = worker(DownStore(outbox=True))
    w.processor.counters.received[WEB] = 2
    m = scrape(w)
    assert "segmentflow_segment_population" not in m
    assert m.total("segmentflow_events_received_total") == 2
    assert "segmentflow_ready" in m


def test_the_memory_warning_is_on_while_redis_refuses_writes_for_memory() -> None:
    """At the limit ``used_memory`` falls back below it between refused writes (the sample
    reads 72% of maxmemory during a stall): the OOM refusal itself raises the warning."""
    w = worker()
    w.memory = MemoryWatch(every=float("inf"))  # sampled once: never due again by time
    w.memory.sample, w.memory._at = MemorySample(used_memory=720, maxmemory=1000), 0.0
    assert not w.memory.due()
    assert scrape(w).total("segmentflow_redis_memory_warning") == 0
    w.report_failure("redis", OutOfMemoryError("command not allowed"))
    assert w.memory.due(), "an OOM refusal makes the memory sample due at once"
    assert scrape(w).total("segmentflow_redis_memory_warning") == 1
    w.report_recovery("redis")
    assert scrape(w).total("segmentflow_redis_memory_warning") == 0
    w.report_failure("redis", redis.ConnectionError("Connection refused"))  # not memory
    assert scrape(w).total("segmentflow_redis_memory_warning") == 0
