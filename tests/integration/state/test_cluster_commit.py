"""The RedisStore on a Redis Cluster (issue 17): layout 2 puts every key a home partition's
commit writes under its hash tag ``{ns:pP}``, so each partition's part of a commit is one
``MULTI`` on one node, and a commit on a 3-primary cluster writes exactly what it writes on a
single Redis; reads (loads by id, populations, members, due index, walks) agree too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from segmentflow.config import config_from_dict
from segmentflow.embedded_cluster import EmbeddedRedisCluster, slot_of
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.keys import Keys
from segmentflow.state.members import RedisMembers, iter_members, reader_for
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


def _every_key(client: Any, namespace: str) -> list[str]:
    return sorted(
        k.decode()
        for pattern in Keys(namespace).everything
        for k in client.scan_iter(match=pattern, count=1000)
    )


def _single_node_commit(redis_url: str, namespace: str, batch: Commit) -> dict[str, Any]:
    store = RedisStore(redis_url, namespace, shards=SHARDS, outbox=True)
    try:
        store.commit(*batch)
        return _dump(store.client, _every_key(store.client, namespace))
    finally:
        store.close()


def _cluster_keys(cluster: EmbeddedRedisCluster, namespace: str) -> list[str]:
    found: set[str] = set()
    for node in cluster.primaries():
        client = node.connect()
        try:
            found.update(_every_key(client, namespace))
        finally:
            client.close()
    return sorted(found)


def test_a_partitions_keys_share_its_slot(
    cluster: EmbeddedRedisCluster, batch: Commit, redis_url: str, namespace: str
) -> None:
    written = _single_node_commit(redis_url, namespace, batch)
    keys = Keys(namespace)
    tags = {keys.part(p).tag: slot_of(keys.part(p).due) for p in range(SHARDS)}
    by_tag: dict[str, set[int]] = {}
    for key in written:
        if key.startswith("{") and ":p" in key.split("}")[0]:
            by_tag.setdefault(key.split("}")[0] + "}", set()).add(slot_of(key))
    assert set(by_tag) == set(tags)  # the commit touched every partition ...
    assert all(slots == {tags[tag]} for tag, slots in by_tag.items())  # ... each in one slot
    assert len({cluster.primary_for(keys.part(p).due).port for p in range(SHARDS)}) > 1


def test_a_commit_on_the_cluster_equals_the_single_node_commit(
    cluster: EmbeddedRedisCluster, batch: Commit, redis_url: str, namespace: str
) -> None:
    expected = _single_node_commit(redis_url, namespace, batch)
    client = cluster.client()
    store = RedisStore(cast(Any, client), namespace, shards=SHARDS, outbox=True)
    store.commit(*batch)
    assert _cluster_keys(cluster, namespace) == sorted(expected)
    assert _dump(client, sorted(expected)) == expected

    single = RedisStore(redis_url, namespace, shards=SHARDS, outbox=True)
    fresh = RedisStore(cast(Any, cluster.client()), namespace, shards=SHARDS, outbox=True)
    try:  # a store that knows no home yet finds every state (directory, then the state)
        ids = sorted(batch[0])
        assert fresh.load_many(ids) == single.load_many(ids) == batch[0]
        assert fresh.populations() == single.populations()
        assert sorted(fresh.iter_ids()) == sorted(single.iter_ids()) == ids
        assert fresh.due(2**62, 1000) == single.due(2**62, 1000)
        assert fresh.next_due() == single.next_due()
        assert fresh.outbox_pending() == single.outbox_pending()
        segments = [(d, v) for d, values in single.populations().items() for v in values]
        on_cluster, on_single = reader_for(fresh), reader_for(single)
        fresh_members = RedisMembers(fresh.client, namespace, SHARDS)
        for dim, value in segments:
            pages = list(iter_members(on_cluster, dim, value, page_size=7))
            assert pages == list(iter_members(on_single, dim, value, page_size=7))
            assert fresh_members.count(dim, value) == len(pages)
        cursor, walked = 0, []
        while True:  # the resumable walk (config changes) visits every partition's node
            cursor, page = fresh.scan_ids(cursor, 5)
            walked.extend(page)
            if not cursor:
                break
        assert sorted(walked) == ids
    finally:
        single.close()
        fresh.close()
