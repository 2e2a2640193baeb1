"""Helpers for tests that run real workers and compare their change topic with ``replay``:
backlogs (CDNOW-like purchases), foreign producers (kafka-python, confluent-kafka), a change
topic reader that keeps headers, and the comparison with the clean reference."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from segmentflow.bootstrap import replay_events
from segmentflow.config import Settings, load_config
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.streams.kafka_clients import consumer, producer
from support.changes import Outcome as Outcome
from support.changes import compare as compare
from support.http import HasGet
from support.metrics import fetch_text
from support.metrics import parse as parse_metrics

#: lifecycle and rule segments are exact; rfm and persona depend on the whole population
EXACT_CONFIG = """\
rfm: {enabled: false}
persona: {enabled: false}
rules:
  - name: big_spender
    when: 'revenue >= 100'
"""


def write_config(tmp_path: Path, text: str = EXACT_CONFIG) -> Path:
    path = tmp_path / "segmentflow.yaml"
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Event:
    """One input message: its topic kind, key and JSON value (and the decoded event)."""

    kind: str
    key: bytes
    value: bytes
    event: dict[str, Any]


def purchases(
    customers: int, seed: int, days: int = 400, start: datetime | None = None
) -> list[Event]:
    """A CDNOW-like backlog: purchase-events only, each customer with 1-5 orders spread over
    ``days`` from ``start`` (2025-01-01 by default), so lifecycle changes fire by time as well
    as by event."""
    rng = random.Random(seed)
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    out: list[Event] = []
    for c in range(customers):
        cid = f"cd-{seed}-{c:05d}"
        first = start + timedelta(seconds=rng.uniform(0, days * 86400 / 3))
        t = first
        for k in range(rng.randint(1, 5)):
            if t > start + timedelta(days=days):
                break  # event times stay in the past (future ones are dead-lettered)
            body = {
                "event_id": f"{cid}-o{k}",
                "customer_id": cid,
                "type": "order_completed",
                "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "properties": {
                    "order_id": f"{cid}-{k}",
                    "revenue": round(rng.uniform(5, 120), 2),
                    "currency": "USD",
                },
            }
            out.append(Event("purchase", cid.encode(), orjson.dumps(body), body))
            t += timedelta(days=rng.expovariate(1 / 60))
    out.sort(key=lambda e: e.event["timestamp"])
    return out


def mixed(customers: int, seed: int) -> list[Event]:
    """Events on all three topics (from the synthetic generator; valid ones only)."""
    from segmentflow.synthetic import generate

    messages = generate(customers, seed=seed, start=datetime(2025, 3, 1, tzinfo=UTC), days=120)
    return [
        Event(m.topic_kind, m.key or b"", m.value, m.event) for m in messages if m.event is not None
    ]


def expected_changes(events: Iterable[Event], config_file: Path) -> list[dict[str, Any]]:
    """``replay`` of the events up to the last one's time (what a caught-up worker emits)."""
    valid = sorted((e.event for e in events), key=lambda e: parse_rfc3339(e["timestamp"]))
    until = parse_rfc3339(valid[-1]["timestamp"])
    return replay_events(valid, load_config(config_file), until)


def produce_kafka_python(
    settings: Settings,
    events: Iterable[Event],
    compression: str | None = None,
    partitioner: Any = None,
) -> int:
    """Send with kafka-python (its murmur2 partitioner, like Java's, unless ``partitioner``);
    return how many."""
    options: dict[str, Any] = {"partitioner": partitioner} if partitioner is not None else {}
    kafka = producer(settings, compression_type=compression, batch_size=16384, **options)
    n = 0
    for e in events:
        kafka.send(settings.input_topics[e.kind], key=e.key, value=e.value)
        n += 1
    kafka.flush()
    kafka.close()
    return n


def produce_confluent(
    settings: Settings,
    events: Iterable[Event],
    compression: str = "none",
    partitioner: str = "murmur2_random",
) -> int:
    """Send with librdkafka (confluent-kafka) using ``compression.type`` and ``partitioner``
    (default murmur2 like Java; librdkafka's own default is ``consistent_random``, CRC32 of
    the key); return how many."""
    from confluent_kafka import Producer

    kafka = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "compression.type": compression,
            "linger.ms": 20,
            "acks": "all",
            "partitioner": partitioner,
        }
    )
    failures: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    n = 0
    for e in events:
        kafka.produce(settings.input_topics[e.kind], key=e.key, value=e.value, on_delivery=report)
        kafka.poll(0)
        n += 1
    left = kafka.flush(60)
    assert left == 0 and not failures, f"confluent-kafka delivery failed: {failures[:3]}"
    return n


#: overall limit for a topic's partitions to appear in the broker's metadata (a busy machine)
METADATA_LIMIT_S = 60.0


def assigned_consumer(settings: Settings, *topics: str, **extra: Any) -> Any:
    """A group-less ``KafkaConsumer`` assigned every partition of ``topics`` explicitly.

    Subscribed by name, a group-less consumer assigns itself the partitions of the first
    metadata answer that lists them and otherwise only at the next refresh (5 min later): a
    reader that read nothing at all while the workers published everything. Here the
    partitions are looked up (retried) and assigned before the first poll."""
    from kafka import TopicPartition

    kafka = consumer(settings, **extra)
    wanted: list[Any] = []
    deadline = time.monotonic() + METADATA_LIMIT_S
    for topic in topics:
        while not (partitions := kafka.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                kafka.close()
                raise AssertionError(f"no partitions of {topic} in {METADATA_LIMIT_S} s")
            time.sleep(0.2)
        wanted += [TopicPartition(topic, p) for p in sorted(partitions)]
    kafka.assign(wanted)
    return kafka


class ChangeReader:
    """Reads a topic from its beginning, keeping values and headers (repeats included)."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.kafka = assigned_consumer(
            settings,
            topic or settings.topic_segment_changes,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.records: list[Any] = []
        self.ids: set[str] = set()
        self.last_new = time.monotonic()

    @property
    def values(self) -> list[bytes]:
        return [r.value for r in self.records]

    def poll(self, seconds: float = 0.5) -> int:
        n = 0
        for batch in self.kafka.poll(timeout_ms=int(seconds * 1000)).values():
            for record in batch:
                self.records.append(record)
                self.ids.add(orjson.loads(record.value).get("id", ""))
                n += 1
        if n:
            self.last_new = time.monotonic()
        return n

    def wait_complete(
        self,
        expected: Sequence[dict[str, Any]],
        timeout: float,
        quiet: float = 3.0,
        progress: Callable[[], object] | None = None,
    ) -> None:
        """Read until every expected id arrived and nothing new came for ``quiet`` s; gives up
        only when nothing new arrived for ``timeout`` s (the checks then fail)."""
        want = {c["id"] for c in expected}
        # the stall limit counts from this call at the earliest: a reader created long before
        # (e.g. before a fault phase) has an old `last_new` and must still read
        begun = time.monotonic()
        while time.monotonic() - max(self.last_new, begun) < timeout:
            self.poll(0.5)
            if progress is not None:
                progress()
            if want <= self.ids and time.monotonic() - self.last_new >= quiet:
                return

    def close(self) -> None:
        self.kafka.close()


def metric_sum(text: str, name: str) -> float:
    """Sum of a metric (sample name, e.g. ``..._total``) over its labels."""
    return parse_metrics(text).total(name)


def partitions_of(
    settings: Settings, topic: str, count: int, timeout: float = 60
) -> dict[str, int]:
    """Where each customer's messages of ``topic`` really are: {customer_id: partition}, read
    back from the broker (``count`` messages; whatever partitioner the producer used)."""
    kafka = assigned_consumer(
        settings, topic, auto_offset_reset="earliest", enable_auto_commit=False
    )
    out: dict[str, int] = {}
    seen = 0
    last = time.monotonic()
    while seen < count and time.monotonic() - last < timeout:
        for batch in kafka.poll(timeout_ms=500).values():
            for record in batch:
                out[record.key.decode()] = record.partition
                seen += 1
                last = time.monotonic()
    kafka.close()
    assert seen == count, f"read back {seen} of {count} messages of {topic}"
    return out


def worker_clock(text: str) -> tuple[int, set[tuple[str, int]]]:
    """A worker's watermark (µs) and owned input partitions, from its ``/metrics`` text."""
    parsed = parse_metrics(text)
    mark = round(parsed.total("segmentflow_watermark_seconds") * 1e6)
    owned = set()
    for tp in parsed.label_values("segmentflow_consumer_lag", "tp"):
        topic, _, partition = tp.rpartition("/")
        owned.add((topic, int(partition)))
    return mark, owned


#: the workers' ``segmentflow_events_<name>_total`` counters
EVENT_COUNTERS = ("received", "applied", "deadlettered", "duplicates", "forwarded")


def wait_applied(
    stack: HasGet,
    count: int,
    reader: ChangeReader,
    workers: int = 2,
    quiet: float = 3.0,
    stall: float = 120.0,
    counted: Sequence[str] = ("applied",),
) -> list[str]:
    """Wait until the ``workers`` together applied ``count`` events and no change arrived on
    ``reader`` for ``quiet`` s (progress-based: gives up only after ``stall`` s in which neither
    a worker's event counter moved nor a change arrived); return each worker's last
    ``/metrics`` text (the checks then say what is missing). ``counted``: the event counters
    that together must reach ``count`` (e.g. ``applied`` and ``duplicates`` where a retried
    batch whose commit had landed counts its events as duplicates)."""
    moved, counters = time.monotonic(), [-1.0]
    texts: list[str] = []
    while time.monotonic() - max(moved, reader.last_new) < stall:
        reader.poll(0.5)
        texts = [fetch_text(stack, i) for i in range(workers)]
        now = [value for t in texts for value in event_counters(t).values()]
        if now != counters:
            counters, moved = now, time.monotonic()
        applied = sum(
            metric_sum(t, f"segmentflow_events_{name}_total") for t in texts for name in counted
        )
        if applied >= count and time.monotonic() - reader.last_new > quiet:
            break
    return texts


def event_counters(text: str) -> dict[str, float]:
    """A worker's event counters (received, applied, deadlettered, duplicates, forwarded), from
    its ``/metrics`` text."""
    parsed = parse_metrics(text)
    return {name: parsed.total(f"segmentflow_events_{name}_total") for name in EVENT_COUNTERS}


def owner_clocks(texts: Iterable[str], topic: str) -> dict[int, int]:
    """Each partition of ``topic`` -> the clock (µs) of the worker that owns it, from the
    workers' ``/metrics`` texts."""
    return {p: mark for mark, owned in map(worker_clock, texts) for t, p in owned if t == topic}


def expected_per_owner(
    expected: Sequence[dict[str, Any]], until_of: Callable[[str], int]
) -> list[dict[str, Any]]:
    """The reference as a group of workers emits it: each worker's clock is over the partitions
    it owns, so a customer's time-driven changes are due up to the clock of the worker that owns
    it (``until_of(customer_id)``, µs); every event-driven change is emitted."""
    return [
        c
        for c in expected
        if c["data"]["cause"]["kind"] == "event"
        or parse_rfc3339(c["time"]) <= until_of(c["subject"])
    ]
