"""Prometheus metrics, read from the processor's counters at scrape time (one source of truth)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from segmentflow.streams.runtime import SegmentWorker

_PER_TOPIC = {
    "received": "Input messages read",
    "applied": "Events applied to customer state",
    "deadlettered": "Messages sent to the dead-letter topic",
    "duplicates": "Events skipped as duplicates (event_id seen before)",
    "late": "Events older than the customer's clock (applied, stamped with the clock)",
}


class WorkerCollector(Collector):
    """Exports a worker's counters, clock and status."""

    def __init__(self, worker: SegmentWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        counters = self.worker.processor.counters
        for name, doc in _PER_TOPIC.items():
            family = CounterMetricFamily(f"segmentflow_events_{name}", doc, labels=["topic"])
            for topic, value in sorted(getattr(counters, name).items()):
                family.add_metric([topic], value)
            yield family
        reasons = CounterMetricFamily(
            "segmentflow_deadletter_reasons", "Dead letters per reason code", labels=["reason"]
        )
        for reason, value in sorted(counters.reasons.items()):
            reasons.add_metric([reason], value)
        yield reasons
        changes = CounterMetricFamily(
            "segmentflow_changes", "Segment changes emitted per dimension", labels=["dimension"]
        )
        for dim, value in sorted(counters.changes.items()):
            changes.add_metric([dim], value)
        yield changes
        errors = CounterMetricFamily(
            "segmentflow_rule_errors",
            "Rule evaluations that errored (counted false)",
            labels=["rule"],
        )
        for rule, value in sorted(self.worker.processor.engine.rule_errors.items()):
            errors.add_metric([rule], value)
        yield errors
        mark = self.worker.current_watermark()
        yield GaugeMetricFamily(
            "segmentflow_watermark_seconds",
            "Event-time watermark (Unix seconds; 0 before known)",
            value=(mark or 0) / 1e6,
        )
        lag = GaugeMetricFamily(
            "segmentflow_watermark_lag_seconds",
            "Wall clock minus the event-time watermark",
            value=(time.time() - mark / 1e6) if mark else 0.0,
        )
        yield lag
        consumer = GaugeMetricFamily(
            "segmentflow_consumer_lag", "Unread messages per input partition", labels=["tp"]
        )
        for tp, value in sorted(self.worker.watermark.lag().items(), key=str):
            consumer.add_metric([f"{tp[0]}/{tp[1]}"], value)  # type: ignore[index]
        yield consumer
        status = self.worker.status
        yield GaugeMetricFamily(
            "segmentflow_ready", "1 when partitions are assigned", value=int(status.ready)
        )
        yield GaugeMetricFamily(
            "segmentflow_broker_ok", "1 when the broker answers", value=int(status.broker_ok)
        )
        yield GaugeMetricFamily(
            "segmentflow_redis_ok", "1 when Redis answers", value=int(status.redis_ok)
        )
        yield CounterMetricFamily(
            "segmentflow_retries", "Redis/broker operations retried", value=status.retries
        )
        yield GaugeMetricFamily(
            "segmentflow_last_batch_seconds",
            "Duration of the last batch",
            value=status.last_batch_seconds,
        )
        yield from persona_metrics(self.worker)
        with contextlib.suppress(Exception):  # Redis down: the other metrics still matter
            yield from population_metrics(self.worker)


def persona_metrics(worker: SegmentWorker) -> Iterator[Metric]:
    """Persona model drift: version, center movement at the last snapshot, personas known."""
    model = worker.processor.engine.persona
    snapshot = model.current if model is not None else None
    if snapshot is None:
        return
    yield GaugeMetricFamily(
        "segmentflow_persona_model_version", "Persona model version in use", value=snapshot.version
    )
    yield GaugeMetricFamily(
        "segmentflow_persona_center_movement",
        "Mean distance the persona centers moved at the last snapshot (standardised units)",
        value=snapshot.movement,
    )
    labels = GaugeMetricFamily(
        "segmentflow_persona_info", "1 per persona id with its label", labels=["persona", "label"]
    )
    for pid, name in sorted(snapshot.labels.items()):
        labels.add_metric([f"persona-{pid}", name], 1)
    yield labels


def population_metrics(worker: SegmentWorker) -> Iterator[Metric]:
    """Customers per segment per dimension (cluster sizes included), read from the store."""
    family = GaugeMetricFamily(
        "segmentflow_segment_population", "Customers per segment", labels=["dimension", "segment"]
    )
    for dim, values in worker.processor.store.populations().items():
        for value, count in values.items():
            family.add_metric([dim, value], count)
    yield family


def registry_for(worker: SegmentWorker) -> CollectorRegistry:
    """A registry exporting ``worker``'s metrics."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(worker))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text exposition."""
    return generate_latest(registry)
