"""Home partitions in a real Redis (issue 11, finding 2): race-free claims, the due shard follows
the home, states from before homes keep their shard, and an undecodable state is quarantined by
the processor's load path without stopping the other customers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import orjson
import pytest

from segmentflow.config import config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.base import StateQuarantined
from segmentflow.state.redis_store import RedisStore, kafka_partition

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000_000
TOPIC = "purchase-events"


@pytest.fixture
def stores(redis_url: str, namespace: str) -> Iterator[list[RedisStore]]:
    made = [RedisStore(redis_url, namespace, shards=4) for _ in range(2)]
    yield made
    for store in made:
        store.close()


def record(cid: str, eid: str, partition: int, offset: int) -> InputRecord:
    body = {
        "event_id": eid,
        "customer_id": cid,
        "type": "order_completed",
        "timestamp": format_us(T0 + offset),
        "properties": {"order_id": eid, "revenue": 5, "currency": "EUR"},
    }
    return InputRecord(TOPIC, "purchase", partition, offset, cid.encode(), orjson.dumps(body))


def test_concurrent_claims_agree_on_one_home(stores: list[RedisStore]) -> None:
    customers = [f"c-{n}" for n in range(300)]
    results: list[dict[str, int]] = [{}, {}]

    def claim(i: int) -> None:
        for start in range(0, len(customers), 50):  # batch by batch, interleaved
            part = customers[start : start + 50]
            results[i].update(stores[i].claim_homes(dict.fromkeys(part, i + 1)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]
    assert set(results[0].values()) <= {1, 2}


def test_two_workers_one_customer_two_partitions_one_owner(stores: list[RedisStore]) -> None:
    config = config_from_dict({"rfm": {"enabled": False}})
    a, b = (Processor(config, store) for store in stores)
    a.process([record("c-1", "e1", 1, 0)])  # first seen on partition 1 (worker a)
    b.process([record("c-1", "e2", 3, 0)])  # another partitioner put this one on 3
    assert [(i.event.event_id, home) for i, home in b.take_forwards()] == [("e2", 1)]
    assert b.counters.forwarded[TOPIC] == 1 and b.counters.applied.total() == 0
    state = stores[1].get("c-1")
    assert state is not None and state.home == 1 and stores[1].shard_of("c-1") == 1
    client = stores[0].client
    keys = stores[0].keys
    assert client.zscore(keys.due(1), "c-1") is not None
    assert all(client.zscore(keys.due(s), "c-1") is None for s in (0, 2, 3))
    assert client.exists(keys.state("c-1", 1))  # its data lives under its home's hash tag
    assert client.hget(keys.directory("c-1"), "c-1") == b"1"  # found from the id alone


def test_a_state_from_before_homes_keeps_its_murmur2_shard(stores: list[RedisStore]) -> None:
    from array import array

    from segmentflow.engine.state import _codec

    state = CustomerState("old-customer", first_seen=T0, last_seen=T0, clock=T0, next_due=T0 + 1)
    fields = orjson.loads(state.body())[:16]
    v2 = b"\x02\x00\x00" + array("Q").tobytes() + _codec()[0].compress(orjson.dumps(fields))
    store = stores[0]
    legacy = kafka_partition("old-customer", 4)  # where the migration put it
    store.client.set(store.keys.state("old-customer", legacy), v2)
    loaded = store.get("old-customer")
    assert loaded is not None and loaded.home == kafka_partition("old-customer", 4)
    store.commit({"old-customer": loaded}, [])
    due = store.client.zscore(store.keys.due(loaded.home), "old-customer")
    assert due == T0 + 1


def test_an_undecodable_state_is_quarantined_not_a_crash(stores: list[RedisStore]) -> None:
    store = stores[0]
    store.client.set(store.keys.state("broken", store.shard_of("broken")), b"\x03\x05garbage")
    proc = Processor(config_from_dict({"rfm": {"enabled": False}}), store)
    with pytest.raises(StateQuarantined, match="broken"):
        proc.process([record("fine", "e1", 0, 0), record("broken", "e2", 0, 1)])
    assert store.is_quarantined("broken")
    proc.process([record("fine", "e1", 0, 0)])  # the others go on (one by one in the worker)
    assert proc.counters.applied[TOPIC] == 1
    assert "broken" in store.quarantined()
