"""RedisStore against a real Redis: round trips, the sharded due index, populations, delete, and
replay equivalence with the MemoryStore."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain

import pytest
import redis

from segmentflow.config import config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import SEP, RedisStore, kafka_partition
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration

DAY = 86_400_000_000
SHARDS = 4


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, namespace, shards=SHARDS)
    yield s
    s.close()


def make(cid: str, due: int | None, **kw: object) -> CustomerState:
    return CustomerState(cid, clock=0, next_due=due, **kw)  # type: ignore[arg-type]


def ids_by_shard(count: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n in range(count):
        cid = f"c-{n:04d}"
        out.setdefault(kafka_partition(cid, SHARDS), []).append(cid)
    return out


# murmur2 values from the Java client's UtilsTest (signed 32-bit)
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 7, 12])
def test_kafka_partition_matches_the_java_default_partitioner(partitions: int) -> None:
    for key, hashed in JAVA_MURMUR2.items():
        assert kafka_partition(key, partitions) == (hashed & 0x7FFFFFFF) % partitions
    assert {kafka_partition(f"c-{n}", SHARDS) for n in range(100)} == set(range(SHARDS))


def test_iter_ids_lists_every_customer_with_state(store: RedisStore) -> None:
    """(The round trip of every field is in test_store_contract.py, over every backend.)"""
    assert list(store.iter_ids()) == []
    store.commit({"c-ü/1": make("c-ü/1", 7), "c-2": make("c-2", None)}, [])
    assert sorted(store.iter_ids()) == ["c-2", "c-ü/1"]


def test_due_across_shards_ordered_by_due(store: RedisStore) -> None:
    shards = ids_by_shard(40)
    assert len(shards) == SHARDS
    # one customer per shard with descending due moments, so shard order != due order
    picks = [shards[s][0] for s in range(SHARDS)]
    dues = {cid: 1_000 - 100 * n for n, cid in enumerate(picks)}
    states = {cid: make(cid, due) for cid, due in dues.items()}
    states["never"] = make("never", None)
    store.commit(states, [])
    by_due = sorted(picks, key=lambda c: dues[c])
    assert store.due(10_000, 100) == by_due
    assert store.due(10_000, 2) == by_due[:2]
    assert store.due(min(dues.values()) - 1, 100) == []
    assert store.due(min(dues.values()), 100) == by_due[:1]  # inclusive bound
    assert store.next_due() == min(dues.values())
    # moving a due moment and clearing one
    first = by_due[0]
    store.commit({first: make(first, 5_000), by_due[1]: make(by_due[1], None)}, [])
    assert store.due(10_000, 100) == [*by_due[2:], first]


def test_due_ties_are_ordered_by_customer_id(store: RedisStore) -> None:
    cids = [f"t-{n}" for n in range(12)]
    store.commit({cid: make(cid, 42) for cid in reversed(cids)}, [])
    assert store.due(42, 100) == sorted(cids)


def test_assigned_partitions_filter_due(store: RedisStore) -> None:
    shards = ids_by_shard(40)
    states = {cid: make(cid, 10 + n) for n, cid in enumerate(chain.from_iterable(shards.values()))}
    store.commit(states, [])
    assert store.owned_partitions is None  # before an assignment: every shard
    store.assign_partitions({1, 3})
    owned = set(shards[1]) | set(shards[3])
    got = store.due(10_000, 1000)
    assert set(got) == owned
    assert got == sorted(got, key=lambda c: states[c].next_due)  # type: ignore[arg-type, return-value]
    assert store.next_due() == min(states[c].next_due for c in owned)  # type: ignore[type-var]
    assert {c for c in states if store.owns(c)} == owned
    store.revoke_partitions()  # a rebalance starts: nothing fires here
    assert store.due(10_000, 1000) == [] and store.next_due() is None
    assert not any(store.owns(c) for c in states)
    store.assign_partitions(range(SHARDS))
    assert len(store.due(10_000, 1000)) == 40


def test_due_keys_are_per_shard(store: RedisStore, redis_url: str, namespace: str) -> None:
    shards = ids_by_shard(20)
    store.commit({cid: make(cid, 1) for ids in shards.values() for cid in ids}, [])
    client = redis.Redis.from_url(redis_url)
    try:
        for shard, ids in shards.items():
            members = {m.decode() for m in client.zrange(store.keys.due(shard), 0, -1)}
            assert members == set(ids)
    finally:
        client.close()


def change(cid: str, dim: str, previous: str | None, current: str | None) -> Change:
    return Change(cid, dim, previous, current, 1, 0, None)


def test_populations_via_hincrby(store: RedisStore, redis_url: str, namespace: str) -> None:
    second = RedisStore(redis_url, namespace, shards=SHARDS)  # another worker, same namespace
    try:
        store.commit(
            {}, [change("a", "lifecycle", None, "new"), change("a", "rule:x", "out", "in")]
        )
        second.commit(
            {}, [change("b", "lifecycle", None, "new"), change("b", "rule:x", "out", "in")]
        )
        store.commit({}, [change("a", "lifecycle", "new", "active")])
        second.commit({}, [change("b", "rule:x", "in", "out")])
        expected = {"lifecycle": {"new": 1, "active": 1}, "rule:x": {"in": 1}}
        assert store.populations() == expected == second.populations()
        client = redis.Redis.from_url(redis_url)
        try:
            raw: dict[bytes, bytes] = {}
            for p in store.partitions:  # per home partition, summed by populations()
                for fld, count in client.hgetall(store.part(p).pop).items():
                    raw[fld] = str(int(raw.get(fld, 0)) + int(count)).encode()
        finally:
            client.close()
        assert int(raw[f"lifecycle{SEP}new".encode()]) == 1
        assert int(raw[f"rule:x{SEP}in".encode()]) == 1
        # values that dropped to zero are not reported
        store.commit({}, [change("a", "lifecycle", "active", None)])
        assert store.populations()["lifecycle"] == {"new": 1}
    finally:
        second.close()


def test_delete(store: RedisStore) -> None:
    store.commit({"a": make("a", 5), "b": make("b", 6)}, [])
    removed = store.delete("a")
    assert removed is not None and removed.customer_id == "a"
    assert store.get("a") is None
    assert store.due(100, 10) == ["b"]
    assert store.delete("a") is None
    assert store.customer_count() == 1


# --------------------------------------------------------------------------- replay equivalence
def _events() -> list[Event]:
    start = datetime(2025, 9, 1, tzinfo=UTC)
    messages = generate(customers=200, seed=23, start=start, days=75, scale=0.25)
    events = []
    for message in messages:
        if message.event is None or message.duplicate:
            continue
        event = validate_event(message.event, None)
        assert isinstance(event, Event)
        events.append(event)
    return events


def test_replay_with_redis_store_equals_memory_store(redis_url: str, namespace: str) -> None:
    config = config_from_dict(
        {
            "rules": [
                {"name": "repeat", "when": "orders_30d >= 2"},
                {"name": "idle", "when": "days_since_last_seen >= 21"},
                {"name": "big", "when": "revenue > 200.0"},
            ]
        }
    )
    events = _events()
    assert len({e.customer_id for e in events}) == 200
    until = events[-1].ts + 200 * DAY
    in_memory: list[dict[str, object]] = []
    memory = MemoryStore()
    run(events, config, until, lambda c: in_memory.append(c.to_cloudevent()), store=memory)
    in_redis: list[dict[str, object]] = []
    store = RedisStore(redis_url, namespace, shards=SHARDS)
    try:
        run(
            events,
            config_from_dict(config.model_dump()),
            until,
            lambda c: in_redis.append(c.to_cloudevent()),
            store=store,
        )
        assert len(in_memory) > 500
        assert in_redis == in_memory
        assert store.populations() == memory.populations()
        assert store.customer_count() == 200
    finally:
        store.close()


def test_replay_until_midway_leaves_due_entries(redis_url: str, namespace: str) -> None:
    events = _events()
    cutoff = events[len(events) // 2].ts
    store = RedisStore(redis_url, namespace, shards=SHARDS)
    try:
        run(
            [e for e in events if e.ts <= cutoff],
            config_from_dict({}),
            cutoff,
            lambda c: None,
            store,
        )
        due = store.next_due()
        assert due is not None and due > cutoff  # everything due up to the cutoff fired
        assert store.due(cutoff, 10_000) == []
        later = store.due(cutoff + 365 * DAY, 10_000)
        assert later and all(store.get(cid) is not None for cid in later)
    finally:
        store.close()
