"""Helpers for the ownership / dedup / incarnation tests (issue 11, findings 2-4): producers with
other partitioners, waiting on the workers' accounting, per-customer totals from Redis."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import redis

from segmentflow.config import Settings
from segmentflow.devstack import DevStack
from segmentflow.engine.state import CustomerState, T
from segmentflow.state.keys import Keys
from segmentflow.state.redis_store import RedisStore
from support import streams
from support.metrics import fetch_text
from support.streams import (
    EVENT_COUNTERS,
    ChangeReader,
    Event,
    event_counters,
    produce_confluent,
    produce_kafka_python,
)


def produce_librdkafka(settings: Settings, events: Iterable[Event], partitioner: str) -> int:
    """Send with confluent-kafka (librdkafka) and its ``partitioner`` (``consistent_random``
    is its default: CRC32 of the key); return how many."""
    return produce_confluent(settings, events, partitioner=partitioner)


class AdlerPartitioner:
    """A custom partitioner (kafka-python's ``partitioner=`` hook): Adler-32 of the key."""

    def partition(
        self, topic: str, key: Any, serialized_key: bytes, value: Any, serialized: Any, cluster: Any
    ) -> int:
        partitions = sorted(cluster.partitions_for_topic(topic))
        return int(partitions[zlib.adler32(serialized_key) % len(partitions)])


def produce_custom(settings: Settings, events: Iterable[Event]) -> int:
    """Send with kafka-python and :class:`AdlerPartitioner`; return how many."""
    from kafka.partitioner import Partitioner

    custom = type("Adler", (AdlerPartitioner, Partitioner), {})()
    return produce_kafka_python(settings, events, partitioner=custom)


def worker_metrics(stack: DevStack, index: int) -> str:
    """``/metrics`` of a worker (it answers between batches: retried, generous limit)."""
    return fetch_text(stack, index)


def wait_applied(
    stack: DevStack, workers: int, applied: int, reader: ChangeReader, timeout: float = 150
) -> dict[str, float]:
    """:func:`support.streams.wait_applied` (``applied`` events, no change for 3 s, gives up
    only after ``timeout`` s without progress); return the workers' summed event counters."""
    texts = streams.wait_applied(stack, applied, reader, workers=workers, stall=timeout)
    counters = [event_counters(t) for t in texts]
    return {name: sum(c[name] for c in counters) for name in EVENT_COUNTERS}


def stored_totals(settings: Settings, customers: Iterable[str]) -> dict[str, tuple[int, float]]:
    """(orders, revenue) per customer from the workers' Redis state."""
    store = RedisStore(redis.Redis.from_url(settings.redis_url), settings.namespace)
    try:
        states = store.load_many(customers)
        return {cid: _totals(s) for cid, s in states.items()}
    finally:
        store.close()


def replay_totals(events: Iterable[Event]) -> dict[str, tuple[int, float]]:
    """(orders, revenue) per customer after ``replay`` of the events."""
    from segmentflow.config import load_config
    from segmentflow.schemas.decode import Limits
    from segmentflow.service.replay import events_from_dicts, run
    from segmentflow.state.memory import MemoryStore

    config = load_config(None)
    valid = sorted((e.event for e in events), key=lambda e: e["timestamp"])
    store = MemoryStore()
    run(events_from_dicts(valid, Limits.of(config)), config, None, lambda c: None, store)
    states = store.load_many({e["customer_id"]: None for e in valid})
    return {cid: _totals(s) for cid, s in states.items()}


def _totals(state: CustomerState) -> tuple[int, float]:
    return int(state.totals[T["orders"]]), round(float(state.totals[T["revenue"]]), 2)


def due_shards(settings: Settings, partitions: int) -> dict[str, list[int]]:
    """Customer -> the due-index shards it is in (exactly one owner: at most one each)."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.namespace)
    out: dict[str, list[int]] = {}
    try:
        for shard in range(partitions):
            for member in client.zrange(keys.due(shard), 0, -1):
                out.setdefault(member.decode(), []).append(shard)
    finally:
        client.close()
    return out
