"""A real 3x3 Redis Cluster (segmentflow/embedded_cluster.py) behind ``SEGMENTFLOW_REDIS_URL``
(``redis+cluster://``): the start-up checks pass on it, memory is sampled per primary (the
tightest decides); a primary killed makes the sample, ``/health`` and the start-up check report
it, the worker's retry rides out the failover on the same client, and everything is ok again once
the replica serves the slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import faust
import pytest
from support.fakes import FakeApp

from segmentflow import bootstrap
from segmentflow.config import ConfigError, Settings, config_from_dict
from segmentflow.embedded_cluster import EmbeddedRedisCluster
from segmentflow.service.processor import Processor
from segmentflow.state.client import RedisClient, connect, is_cluster
from segmentflow.state.memory import MemoryStore
from segmentflow.streams import web
from segmentflow.streams.redis_health import (
    MemorySample,
    MemoryWatch,
    check_eviction_policy,
    check_reachable,
)
from segmentflow.streams.runtime import SegmentWorker
from segmentflow.triggers.backoff import Backoff

pytestmark = pytest.mark.integration

LIMIT = 120.0  # overall seconds for a cluster to change state (busy machines are slow)


@pytest.fixture
def cluster() -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(primaries=3, replicas=1) as c:
        yield c


@pytest.fixture
def client(cluster: EmbeddedRedisCluster) -> Iterator[RedisClient]:
    c = connect(cluster.url, socket_timeout=10, socket_connect_timeout=2)
    yield c
    c.close()


def until(ready: Callable[[], bool], what: str) -> None:
    """Wait for ``ready()`` with backoff, within :data:`LIMIT` seconds overall."""
    deadline = time.monotonic() + LIMIT
    for delay in Backoff(base=0.05, cap=0.5, jitter=0).delays():
        if ready():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {LIMIT:.0f} s for {what}")
        time.sleep(delay)


def health(app: FakeApp) -> tuple[int, dict[str, Any]]:
    request = type("Request", (), {"headers": {}})()
    status, body = asyncio.run(app.pages["/health"](app.web, request))
    return int(status), dict(body)


def test_the_cluster_url_passes_the_start_checks(cluster: EmbeddedRedisCluster) -> None:
    assert cluster.url.startswith("redis+cluster://127.0.0.1:") and cluster.url.count(",") == 5
    client = bootstrap.redis_client(Settings(redis_url=cluster.url))
    try:
        assert is_cluster(client)
        check_reachable(client)
        assert check_eviction_policy(client, cluster.url) == "noeviction"
        # one node of it named as one Redis: refused with the URL to use instead
        with pytest.raises(ConfigError, match=r"Redis Cluster node.*redis\+cluster://"):
            bootstrap.redis_client(Settings(redis_url=cluster.nodes[0].url))
    finally:
        client.close()


def test_memory_is_sampled_per_primary_and_the_tightest_decides(
    cluster: EmbeddedRedisCluster, client: RedisClient
) -> None:
    sample = MemoryWatch().poll(client)
    primaries = {p.address for p in cluster.primaries()}
    assert sample.nodes == 3 and not sample.degraded and sample.node in primaries
    tight = cluster.primaries()[1]
    direct = tight.connect()
    try:
        used = int(direct.info("memory")["used_memory"])
        direct.config_set("maxmemory", used + 200_000)  # about 95% full: the tightest node
        sample = MemoryWatch().poll(client)
        assert sample.node == tight.address and sample.maxmemory == used + 200_000
        assert sample.warning and sample.ratio > 0.9
    finally:
        direct.config_set("maxmemory", 0)
        direct.close()


def test_a_killed_primary_is_reported_until_its_replica_serves_the_slots(
    cluster: EmbeddedRedisCluster, client: RedisClient
) -> None:
    key = "{health:p1}:s:c-1"
    client.set(key, b"before")
    cluster.wait_replicated()
    victim = cluster.primary_for(key)
    (replica,) = cluster.replicas_of(victim)
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})

    async def nothing(*args: Any) -> object:
        return None

    worker = SegmentWorker(
        Settings(), Processor(config, MemoryStore(outbox=True)), nothing, nothing, redis=client
    )
    worker.status.ready = True
    app = FakeApp()
    web.register(cast(faust.App, app), worker)
    worker.memory.poll(client)
    assert health(app)[0] == 200

    cluster.kill(victim)
    # the client's slot map still names the dead primary: the sample is degraded
    sample = worker.memory.poll(client)
    assert sample.degraded and sample.unreachable == (victim.address,) and sample.nodes == 2
    status, body = health(app)
    assert (status, body["status"], body["redis"]) == (503, "degraded", "degraded")
    assert body["redis_unreachable_nodes"] == [victim.address]
    with pytest.raises(bootstrap.RedisUnavailable, match=r"primaries do not answer|cluster_state"):
        bootstrap.redis_client(Settings(redis_url=cluster.url))

    # the worker's retry (backoff, /health 503 meanwhile) rides out the failover on this client
    # Whether the worker itself retries depends on timing: redis-py's cluster client retries a
    # few times by itself and follows the new slot map once the replica is promoted (it may be
    # already, after the slow steps above). Either way the write lands, and a retry the worker
    # made is counted with its reason.
    worker.max_backoff = 0.5
    assert asyncio.run(worker._retry("redis", lambda: client.set(key, b"after")))
    assert worker.status.redis_ok
    if worker.status.retries:
        last = worker.status.last_error
        assert last is not None and last.startswith("redis: ")

    def recovered() -> bool:
        sampled: MemorySample = worker.memory.poll(client)
        return not sampled.degraded and sampled.nodes == 3

    until(recovered, "the memory sample to reach three answering primaries")
    assert replica.address in {p.address for p in cluster.wait_failover()}
    assert worker.memory.sample is not None and victim.address not in (
        worker.memory.sample.unreachable
    )
    assert health(app)[0] == 200
    assert client.get(key) == b"after"
    check_reachable(client)
    fresh = connect(cluster.url)  # a fresh client too (one of its seeds is dead)
    try:
        check_reachable(fresh)
    finally:
        fresh.close()


def test_a_cluster_url_naming_one_redis_is_a_config_error(redis_url: str) -> None:
    """Waiting would not help: the worker stops with the URL form to use."""
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    with pytest.raises(ConfigError, match=r"without cluster mode.*redis://"):
        bootstrap.redis_client(Settings(redis_url=f"redis+cluster://{hostport}/"))
    one = bootstrap.redis_client(Settings(redis_url=redis_url))  # the right form works
    try:
        assert not is_cluster(one)
        check_reachable(one)
    finally:
        one.close()
