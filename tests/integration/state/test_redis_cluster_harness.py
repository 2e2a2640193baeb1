"""The embedded Redis Cluster (issue 17 groundwork) really forms, spreads keys over slots and
nodes, keeps a transaction to one slot, moves a slot with its keys, and promotes a killed
primary's replica."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis
from redis.cluster import RedisCluster

from segmentflow.embedded_cluster import ClusterNode, EmbeddedRedisCluster, slot_of
from segmentflow.triggers.backoff import Backoff

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie counts as gone
        return f.read().split(") ", 1)[1].startswith("Z")


def _retrying(call: Callable[[], T], limit: float = 120.0) -> T:
    """``call()`` again on Redis errors, with backoff, within a generous overall limit (what
    an application does while a primary is replaced)."""
    deadline = time.monotonic() + limit
    for delay in Backoff(base=0.05, cap=1.0).delays():
        try:
            return call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(primaries=3, replicas=1) as c:
        yield c


@pytest.fixture
def client(cluster: EmbeddedRedisCluster) -> RedisCluster[bytes]:
    return cluster.client()


def test_six_nodes_three_primaries_on_loopback(cluster: EmbeddedRedisCluster) -> None:
    assert len(cluster.nodes) == 6 and len({n.pid for n in cluster.nodes}) == 6
    assert all(seed.startswith("127.0.0.1:") for seed in cluster.seeds)
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert all(len(cluster.replicas_of(p)) == 1 for p in primaries)
    for node in cluster.nodes:
        assert "cluster_state:ok" in node.info("CLUSTER", "INFO")


def test_keys_spread_over_slots_and_nodes(
    cluster: EmbeddedRedisCluster, client: RedisCluster[bytes]
) -> None:
    keys = [f"harness:k{i}" for i in range(300)]
    for i, key in enumerate(keys):
        client.set(key, i)
    assert [client.get(k) for k in keys] == [str(i).encode() for i in range(len(keys))]
    assert len({slot_of(k) for k in keys}) > 250
    assert len({cluster.primary_for(k).port for k in keys}) == 3  # every primary holds some


def test_multi_within_one_hash_tag(client: RedisCluster[bytes]) -> None:
    tag = "{harness:p7}"
    pipe = client.pipeline(transaction=True)
    pipe.set(f"{tag}:s:c1", b"state")
    pipe.zadd(f"{tag}:due", {"c1": 5})
    pipe.hincrby(f"{tag}:pop", "lifecycle\x1fnew", 1)
    assert pipe.execute()[1:] == [1, 1]  # (SET's reply is b"OK" in a cluster transaction)
    assert client.get(f"{tag}:s:c1") == b"state"
    assert client.zscore(f"{tag}:due", "c1") == 5


def test_multi_across_slots_fails_with_crossslot(
    cluster: EmbeddedRedisCluster, client: RedisCluster[bytes]
) -> None:
    state, pop = "harness:s:c1", "harness:pop"
    assert slot_of(state) != slot_of(pop)
    # redis-py refuses a cluster transaction over two slots before sending anything
    pipe = client.pipeline(transaction=True)
    pipe.set(state, b"x")
    pipe.hincrby(pop, "f", 1)
    with pytest.raises(redis.exceptions.RedisClusterException, match="same slot") as refused:
        pipe.execute()
    assert type(refused.value).__name__ == "CrossSlotTransactionError"
    # and the server refuses it too, even when one node serves both slots
    node = cluster.primary_for(state)
    other = next(
        f"harness:o{i}"
        for i in range(10_000)
        if slot_of(f"harness:o{i}") != slot_of(state)
        and cluster.primary_for(f"harness:o{i}").port == node.port
    )
    direct = node.connect()
    try:
        raw = direct.pipeline(transaction=True)
        raw.set(state, b"x")
        raw.set(other, b"y")
        # the server's "CROSSSLOT Keys in request don't hash to the same slot"
        with pytest.raises(redis.exceptions.ClusterCrossSlotError, match="same slot"):
            raw.execute()
        assert direct.exists(state) == direct.exists(other) == 0  # EXECABORT: nothing written
    finally:
        direct.close()


def test_a_slot_moved_with_its_keys_is_followed_by_the_client(
    cluster: EmbeddedRedisCluster, client: RedisCluster[bytes]
) -> None:
    tag = "{harness:p3}"
    keys = [f"{tag}:s:c{i}" for i in range(250)]
    for i, key in enumerate(keys):
        client.set(key, i)
    slot = slot_of(keys[0])
    source = cluster.primary_for_slot(slot)
    target = next(p for p in cluster.primaries() if p.port != source.port)
    expected = [str(i).encode() for i in range(len(keys))]
    half_moved: list[tuple[int, int]] = []

    def count(node: ClusterNode) -> int:
        direct = node.connect()
        try:
            return int(direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        finally:
            direct.close()

    def read_all() -> None:  # while the slot is half moved: ASK redirections
        assert [client.get(k) for k in keys] == expected
        half_moved.append((count(source), count(target)))

    cluster.move_slot(slot, target, batch=100, between=read_all)
    assert half_moved == [(150, 100), (50, 200), (0, 250)]
    assert cluster.primary_for_slot(slot).port == target.port
    assert [client.get(k) for k in keys] == expected  # MOVED: the client follows the slot
    pipe = client.pipeline(transaction=True)
    pipe.incr(keys[0])
    pipe.incr(keys[1])
    assert pipe.execute() == [1, 2]  # one slot, one node: the new one


def test_killed_primary_is_replaced_by_its_replica() -> None:
    with EmbeddedRedisCluster(primaries=3, replicas=1) as cluster:
        client = cluster.client()
        keys = [f"failover:k{i}" for i in range(200)]
        for i, key in enumerate(keys):
            client.set(key, i)
        cluster.wait_replicated()  # replication is asynchronous: only acked copies survive
        victim = cluster.primary_for(keys[0])
        (replica,) = cluster.replicas_of(victim)
        lost_slots = {slot_of(k) for k in keys if cluster.primary_for(k).port == victim.port}
        pid = cluster.kill(victim)
        assert _gone(pid) and not victim.running()

        # the same client rides it out: reads and writes go on (retried with backoff) and
        # land on the promoted replica once it serves the dead primary's slots
        for i, key in enumerate(keys):

            def read(key: str = key) -> bytes | None:
                return client.get(key)

            def write(key: str = key, value: int = i + 1000) -> bool | None:
                return client.set(key, value)

            assert _retrying(read) == str(i).encode()
            _retrying(write)
        primaries = cluster.wait_failover()
        assert replica.port in {p.port for p in primaries} and victim not in primaries
        assert {cluster.primary_for(k).port for k in keys if slot_of(k) in lost_slots} == {
            replica.port
        }
        assert [client.get(k) for k in keys] == [str(i + 1000).encode() for i in range(200)]
        pids = [n.pid for n in cluster.nodes]
    assert all(_gone(p) for p in pids)  # stop() stopped every node by PID
