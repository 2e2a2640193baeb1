"""Today's RedisStore on a Redis Cluster (issue 17): the blocker, documented exactly.

A commit is one ``MULTI`` over the customers' state keys, the due index, the populations, the
membership index and the outbox: keys in many slots (notes/cluster-design.md). redis-py refuses
such a transaction on a cluster, and so does the server. The xfail test states the goal: once
the partition-aligned layout lands, a commit on the cluster writes exactly what it writes on a
single Redis; then it passes, ``strict`` turns that into a failure, and the mark goes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis

from segmentflow.config import config_from_dict
from segmentflow.embedded_cluster import EmbeddedRedisCluster, slot_of
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.keys import Keys
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration

SHARDS = 4
#: redis-py's cluster pipeline refuses multi-key MSET/MGET outright (the commit's first command)
MSET_BLOCKED = (
    "ERROR: Calling pipelined function mset is blocked when running redis in cluster mode..."
)
CROSSSLOT_SERVER = "Keys in request don't hash to the same slot"  # the server's CROSSSLOT reply

Commit = tuple[dict[str, CustomerState], list[Change]]


@pytest.fixture(scope="module")
def batch() -> Commit:
    """A commit a fresh store could get: 40 synthetic customers' states after a month of
    events, with every change they went through (due moments, lifecycle, RFM, a rule)."""
    start = datetime(2025, 9, 1, tzinfo=UTC)
    events = []
    for message in generate(customers=40, seed=5, start=start, days=30, scale=0.25):
        if message.event is not None and not message.duplicate:
            event = validate_event(message.event, None)
            assert isinstance(event, Event)
            events.append(event)
    config = config_from_dict({"rules": [{"name": "repeat", "when": "orders_30d >= 2"}]})
    memory = MemoryStore()
    changes: list[Change] = []
    run(events, config, None, changes.append, memory)
    states = memory.load_many({e.customer_id for e in events})
    assert len(states) == 40 and len(changes) >= 80
    return states, changes


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(primaries=3, replicas=0) as c:
        yield c


def _dump(client: Any, keys: Sequence[str]) -> dict[str, Any]:
    """Every key's type and value (one command per key: routed to its node on a cluster)."""
    out: dict[str, Any] = {}
    for key in keys:
        kind = client.type(key).decode()
        if kind == "string":
            out[key] = client.get(key)
        elif kind == "hash":
            out[key] = dict(client.hgetall(key))
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        else:
            out[key] = kind
    return out


def _single_node_commit(redis_url: str, namespace: str, batch: Commit) -> dict[str, Any]:
    store = RedisStore(redis_url, namespace, shards=SHARDS, outbox=True)
    try:
        store.commit(*batch)
        pattern = Keys(namespace).everything
        keys = sorted(k.decode() for k in store.client.scan_iter(match=pattern, count=1000))
        return _dump(store.client, keys)
    finally:
        store.close()


def _cluster_keys(cluster: EmbeddedRedisCluster, namespace: str) -> list[str]:
    found: set[str] = set()
    for node in cluster.primaries():
        client = node.connect()
        try:
            pattern = Keys(namespace).everything
            found.update(k.decode() for k in client.scan_iter(match=pattern, count=1000))
        finally:
            client.close()
    return sorted(found)


def test_todays_commit_spans_slots_and_the_cluster_refuses_it(
    cluster: EmbeddedRedisCluster, batch: Commit, redis_url: str, namespace: str
) -> None:
    written = _single_node_commit(redis_url, namespace, batch)
    # what one commit touches: every customer's state key, due shards, pop, members, outboxes
    slots = {slot_of(k) for k in written}
    assert len(slots) > len(batch[0])  # a slot per customer at least, and the shared keys'
    assert len({cluster.primary_for(k).port for k in written}) == 3  # on every primary

    # redis-py's cluster client refuses the commit before sending anything (its states' MSET;
    # with one SET per key the MULTI would still span slots: CrossSlotTransactionError) ...
    store = RedisStore(cast(Any, cluster.client()), namespace, shards=SHARDS, outbox=True)
    with pytest.raises(redis.exceptions.RedisClusterException) as refused:
        store.commit(*batch)
    assert str(refused.value) == MSET_BLOCKED

    # ... and the server refuses it too (its first multi-key command, the states' MSET, gets
    # CROSSSLOT; EXEC then aborts the whole transaction)
    node = cluster.primary_for(Keys(namespace).state(next(iter(batch[0]))))
    direct = RedisStore(node.connect(), namespace, shards=SHARDS, outbox=True)
    with pytest.raises(redis.exceptions.ClusterCrossSlotError) as crossslot:
        direct.commit(*batch)
    message = str(crossslot.value)  # redis-py names the command that got the reply
    assert message.startswith("Command # 1 (MSET ") and message.endswith(
        f"of pipeline caused error: {CROSSSLOT_SERVER}"
    )
    direct.close()
    assert _cluster_keys(cluster, namespace) == []  # nothing half-written anywhere


@pytest.mark.xfail(
    strict=True,
    raises=redis.exceptions.RedisClusterException,
    reason="issue 17: a commit spans many slots (CROSSSLOT) until the partition-aligned key "
    "layout of notes/cluster-design.md lands; remove this mark then",
)
def test_a_commit_on_the_cluster_equals_the_single_node_commit(
    cluster: EmbeddedRedisCluster, batch: Commit, redis_url: str, namespace: str
) -> None:
    expected = _single_node_commit(redis_url, namespace, batch)
    client = cluster.client()
    store = RedisStore(cast(Any, client), namespace, shards=SHARDS, outbox=True)
    store.commit(*batch)
    assert _cluster_keys(cluster, namespace) == sorted(expected)
    assert _dump(client, sorted(expected)) == expected
