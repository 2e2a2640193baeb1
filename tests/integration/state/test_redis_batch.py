"""Batch sessions of the Redis store (``state/redis_batch.py``), on a real Redis: a processor
whose batches hold their commits until a flush gives the same changes, the same stored states
and due index and the same counters as a processor over the in-memory store; after a flush
that fails, the retried batch leaves the same changes in the outbox."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, Limits
from segmentflow.service import processor as processor_module
from segmentflow.service.processor import Item, Processor
from segmentflow.service.replay import events_from_dicts
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import WARM_STATES, RedisStore

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = config_from_dict({})
PARTITIONS = 4


def _events(customers: int, days: int, seed: int) -> list[Event]:
    """Many customers with few events each (a CDNOW shape): most batch parts end at some
    customer's due moment."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(customers):
        for k in range(rng.choice([1, 1, 2, 3, 6])):
            at = START + timedelta(seconds=rng.randrange(days * 86_400))
            kind = rng.choice(["order_completed", "order_completed", "page_view"])
            props: dict[str, Any] = {"url": "/p"}
            if kind == "order_completed":
                revenue = round(rng.lognormvariate(3.5, 1.0), 2)
                props = {"order_id": f"o-{n}-{k}", "revenue": revenue, "currency": "EUR"}
            events.append(
                {
                    "event_id": f"e-{n}-{k}",
                    "customer_id": f"c-{n}",
                    "type": kind,
                    "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": props,
                }
            )
    events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    return list(events_from_dicts(events, Limits()))


def _items(events: list[Event]) -> list[Item]:
    offsets = [0] * PARTITIONS
    items = []
    for event in events:
        p = int(event.customer_id[2:]) % PARTITIONS
        items.append(Item("purchase-events", event, p, offsets[p]))
        offsets[p] += 1
    return items


def _run(processor: Processor, items: list[Item], batch: int) -> list[Change]:
    changes: list[Change] = []
    for i in range(0, len(items), batch):
        changes += processor.apply(items[i : i + batch])
    return changes + processor.advance(items[-1].event.ts)


def _redis_processor(
    redis_url: str, namespace: str, warm_states: int = WARM_STATES
) -> tuple[Processor, RedisStore]:
    store = RedisStore(
        redis_url, namespace, shards=PARTITIONS, outbox=True, warm_states=warm_states
    )
    processor = Processor(CONFIG, store, check_key=False)
    store.attach_ranks(processor.engine.ranks)
    return processor, store


@pytest.mark.parametrize("warm_states", [WARM_STATES, 7, 0])
def test_batches_over_redis_equal_the_memory_store(
    redis_url: str, namespace: str, warm_states: int
) -> None:
    """Whatever number of states the store keeps warm between sessions (at most that many)."""
    items = _items(_events(300, 90, seed=3))
    memory = Processor(CONFIG, MemoryStore(), check_key=False)
    expected = _run(memory, items, 400)
    processor, store = _redis_processor(redis_url, namespace, warm_states)
    got = _run(processor, items, 400)
    assert len(store._warm) == min(warm_states, 300)  # every customer was owned and seen
    assert [c.to_json() for c in got] == [c.to_json() for c in expected]
    assert processor.counters.snapshot() == memory.counters.snapshot()
    ids = sorted({item.event.customer_id for item in items})
    stored = store.load_many(ids, sync_ranks=False)
    for cid in ids:
        assert stored[cid].encode() == memory.store.load_many([cid])[cid].encode(), cid
    far = items[-1].event.ts + 10 * 365 * 86_400_000_000
    assert store.due(far, 10_000) == memory.store.due(far, 10_000)
    assert store.next_due() == memory.store.next_due()
    assert store.populations() == memory.store.populations()
    # every change is in the outbox once, in order per shard
    assert sorted(_boxed(store)) == sorted(c.to_json() for c in got)


def _boxed(store: RedisStore) -> list[bytes]:
    return [row for _, rows in store.outbox_pending() for row in rows]


@pytest.mark.parametrize("held_at_most", [processor_module.HELD_AT_MOST, 1])
def test_a_failed_flush_at_the_end_of_a_batch_is_retried_to_the_same_result(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, held_at_most: int
) -> None:
    """The batch's last flush fails (what it held is lost; what sweeps wrote before it, when
    the session held more than ``HELD_AT_MOST``, is not; the rank index forgets what was
    lost): after the retry the outbox holds exactly the changes of a run without failure, and
    every change is counted once."""
    monkeypatch.setattr(processor_module, "HELD_AT_MOST", held_at_most)
    items = _items(_events(120, 40, seed=5))
    memory = Processor(CONFIG, MemoryStore(), check_key=False)
    expected = [c.to_json() for c in _run(memory, items, 250)]
    processor, store = _redis_processor(redis_url, namespace)
    processor.apply(items[:250])
    armed: list[bool] = []
    real_end, real_queue = RedisStore.end_batch, RedisStore.queue_part

    def end_batch(self: RedisStore, ok: bool) -> None:
        armed.append(ok)
        real_end(self, ok)

    def queue_part(self: RedisStore, pipe: Any, home: int, write: Any) -> None:
        real_queue(self, pipe, home, write)
        if armed == [True]:  # the end-of-batch MULTI fails (Redis refuses the transaction)
            armed.append(False)
            pipe.execute_command("NO-SUCH-COMMAND")

    monkeypatch.setattr(RedisStore, "end_batch", end_batch)
    monkeypatch.setattr(RedisStore, "queue_part", queue_part)
    batch = items[250:500]
    with pytest.raises(redis.ResponseError):
        processor.apply(batch)
    failed = len(_boxed(store))
    processor.apply(batch)  # the retry (states reloaded from Redis)
    assert len(_boxed(store)) > failed, "the failed flush wrote nothing: the retry does"
    rest = items[500:]
    for i in range(0, len(rest), 250):
        processor.apply(rest[i : i + 250])
    processor.advance(items[-1].event.ts)
    # the retry repeats nothing the failed attempt's sweeps wrote (those are durable): the
    # outbox, the truth the worker publishes, holds every change once
    assert sorted(_boxed(store)) == sorted(expected)
    # every event applied once; the retry skips what the failed attempt's sweeps made
    # durable as duplicates (a redelivery, as without sessions); with the whole batch held,
    # nothing was durable and nothing is a duplicate
    counts, want = processor.counters.snapshot(), memory.counters.snapshot()
    assert counts["changes"] == want["changes"]
    assert counts["applied"] == want["applied"]
    duplicates = sum(counts["duplicates"].values())
    if held_at_most == 1:
        assert 0 < duplicates < 250
    else:
        assert duplicates == 0


def test_a_due_customer_whose_state_cannot_be_decoded_does_not_stop_the_advance(
    redis_url: str, namespace: str
) -> None:
    """Loading a due customer quarantines it and removes its due entries from Redis; the
    session's due windows must follow (they kept answering it as due: the advance loaded it
    again and again, forever, and the worker applied nothing more)."""
    client = redis.Redis.from_url(redis_url)
    at = int(START.timestamp() * 1_000_000)
    store = RedisStore(client, namespace, shards=PARTITIONS, outbox=True)
    corrupt_key = store.keys.state("corrupt-1", store.shard_of("corrupt-1"))
    client.set(corrupt_key, b"\x03\xff\xff garbage")
    for shard in range(PARTITIONS):
        client.zadd(store.keys.due(shard), {"corrupt-1": at + 1})
    processor = Processor(config_from_dict({"persona": {"enabled": False}}), store)
    assert processor.next_work() == at + 1
    later = _items(_events(1, 2, seed=5))  # another customer's events, after the due moment
    assert later and all(item.event.ts > at + 1 for item in later)
    changes = processor.apply(later)  # cut at the due moment, advanced, then applied
    assert {c.customer_id for c in changes} == {"c-0"}
    assert store.is_quarantined("corrupt-1")
    assert processor.next_work() != at + 1
    assert client.get(corrupt_key) == b"\x03\xff\xff garbage", "left for repair"
    client.close()


def test_a_due_entry_without_a_state_is_dropped_not_due_forever(
    redis_url: str, namespace: str
) -> None:
    """A state deleted outside segmentflow (``DEL ns:s:<id>``) leaves its due entry: due and
    never loadable, it cut every batch at that moment forever (with or without a session)."""
    client = redis.Redis.from_url(redis_url)
    at = int(START.timestamp() * 1_000_000)
    store = RedisStore(client, namespace, shards=PARTITIONS, outbox=True)
    client.zadd(store.keys.due(1), {"deleted-1": at + 1})
    processor = Processor(config_from_dict({"persona": {"enabled": False}}), store)
    later = _items(_events(1, 2, seed=5))
    changes = processor.apply(later)
    assert {c.customer_id for c in changes} == {"c-0"}
    assert client.zscore(store.keys.due(1), "deleted-1") is None
    assert not store.is_quarantined("deleted-1")
    client.close()
