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
    "forwarded": "Records forwarded to their customer's home partition (another partitioner)",
    "late": "Events older than the customer's clock (applied, stamped with the clock)",
    "merged": "Profiles merged away into another by identity events (alias, anonymous_id)",
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
        held, held_seconds = self.worker.clock_held()
        yield GaugeMetricFamily(
            "segmentflow_clock_held_events", "Events waiting for the event-time clock", value=held
        )
        yield GaugeMetricFamily(
            "segmentflow_clock_held_seconds",
            "Seconds the clock has not moved while events wait for it (0 when none wait)",
            value=held_seconds,
        )
        holding = GaugeMetricFamily(
            "segmentflow_clock_holding",
            "1 per input partition holding the clock back (lagging, not idle)",
            labels=["tp"],
        )
        for tp in sorted(self.worker.watermark.holding(), key=str):
            holding.add_metric(["/".join(map(str, tp))], 1)  # type: ignore[call-overload]
        yield holding
        yield GaugeMetricFamily(
            "segmentflow_input_partitions",
            "Partitions per input topic (read from the broker at start)",
            value=self.worker.settings.input_partitions,
        )
        status = self.worker.status
        fetch = CounterMetricFamily(
            "segmentflow_fetch_errors",
            "Failed fetches/decodes of input records (retried; nothing skipped)",
            labels=["error"],
        )
        for error, value in sorted(status.fetch_errors.items()):
            fetch.add_metric([error], value)
        yield fetch
        yield GaugeMetricFamily(
            "segmentflow_fetch_ok",
            "1 when the last fetch of input records worked",
            value=int(status.fetch_error is None),
        )
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
        yield from config_walk_metrics(self.worker)
        yield from redis_memory_metrics(self.worker)
        yield from persona_metrics(self.worker)
        with contextlib.suppress(Exception):  # Redis down: the other metrics still matter
            yield from population_metrics(self.worker)


def config_walk_metrics(worker: SegmentWorker) -> Iterator[Metric]:
    """Progress of the re-evaluation after a config change (CONTRACT §6)."""
    progress = worker.config_walk.progress
    yield GaugeMetricFamily(
        "segmentflow_config_reevaluation_running",
        "1 while stored customers are re-evaluated for a changed config",
        value=int(progress.running),
    )
    yield GaugeMetricFamily(
        "segmentflow_config_reevaluation_pending_shards",
        "Owned shards whose state follows an older config",
        value=progress.pending_shards,
    )
    yield CounterMetricFamily(
        "segmentflow_config_reevaluated_customers",
        "Customers re-evaluated for a changed config",
        value=progress.customers,
    )
    yield CounterMetricFamily(
        "segmentflow_config_reevaluation_changes",
        "Changes a config re-evaluation emitted",
        value=progress.changes,
    )


def redis_memory_metrics(worker: SegmentWorker) -> Iterator[Metric]:
    """Redis memory against its limit (sampled by the worker's tick) and unreadable stored
    data (issue 12)."""
    yield CounterMetricFamily(
        "segmentflow_corrupt_states",
        "Customers whose stored state could not be decoded (quarantined)",
        value=worker.processor.store.corrupt_states,
    )
    yield CounterMetricFamily(
        "segmentflow_corrupt_metrics",
        "Stored RFM metrics that could not be decoded (skipped)",
        value=0 if worker.ranks is None else worker.ranks.corrupt_metrics,
    )
    client = worker.redis
    last = worker.memory.sample
    # the tick may wait behind a stalled batch; not while a cluster primary does not answer
    # (this runs on the event loop: the tick samples off it, a silent node costs a timeout)
    if client is not None and worker.memory.due() and not (last is not None and last.degraded):
        with contextlib.suppress(Exception):
            worker.memory.poll(client)
    sample = worker.memory.sample
    if sample is None:
        return
    yield GaugeMetricFamily(
        "segmentflow_redis_used_memory_bytes",
        "Redis used_memory (a cluster: of the primary nearest its maxmemory)",
        value=sample.used_memory,
    )
    yield GaugeMetricFamily(
        "segmentflow_redis_maxmemory_bytes",
        "Redis maxmemory (0: no limit; a cluster: of the primary nearest it)",
        value=sample.maxmemory,
    )
    yield CounterMetricFamily(
        "segmentflow_redis_evicted_keys",
        "Redis evicted_keys (server-wide; a cluster: summed over the primaries)",
        value=sample.evicted_keys,
    )
    yield GaugeMetricFamily(
        "segmentflow_redis_primaries_unreachable",
        "Redis Cluster primaries that did not answer the last sample (0 on one Redis)",
        value=len(sample.unreachable),
    )
    yield GaugeMetricFamily(
        "segmentflow_redis_memory_warning",
        "1 when used_memory > 90% of maxmemory, Redis refuses writes for memory (OOM), keys "
        "were evicted or the policy is unsafe",
        # at the limit used_memory falls back below it between refused writes: the sample
        # alone would miss a stall the worker is in
        value=int(sample.warning or (worker.status.redis_oom and not worker.status.redis_ok)),
    )


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
