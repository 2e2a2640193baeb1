"""streams/redis_health.py on a Redis Cluster, with a fake cluster client: a cluster error is a
Redis outage (retried by the worker, /health 503, never a crash or a 500), memory is sampled per
primary (the tightest node decides), a primary that does not answer makes the sample degraded,
and the start-up checks name the node and what to do."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

import faust
import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
)
from support.fakes import FakeApp, FakeKafka
from support.metrics import parse

from segmentflow import bootstrap
from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import Processor
from segmentflow.state.client import RedisClient
from segmentflow.state.memory import MemoryStore
from segmentflow.streams import web
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.redis_health import (
    REDIS_ERRORS,
    ClusterUnhealthy,
    MemoryWatch,
    RedisUnsafe,
    check_eviction_policy,
    check_reachable,
)
from segmentflow.streams.runtime import SegmentWorker

CLUSTER_ERRORS = [
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    ClusterError("TTL exhausted."),
    MovedError("3999 127.0.0.1:6381"),
    AskError("3999 127.0.0.1:6381"),
    redis.ConnectionError("Error 111 connecting to 127.0.0.1:7002. Connection refused."),
    SlotNotCoveredError('Slot "3999" is not covered by the cluster.'),
    RedisClusterException("Redis Cluster cannot be connected."),
]


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.host, port = name.rsplit(":", 1)
        self.port = int(port)


class FakeCluster(RedisCluster):  # type: ignore[type-arg]  # (not generic at run time)
    """Three primaries (and a replica each) answering ``INFO``/``PING``/``CLUSTER INFO`` from
    tables; a name in :attr:`down` raises a connection error like a killed node."""

    def __init__(self, memory: dict[str, tuple[int, int]], policy: str = "noeviction") -> None:
        # no RedisCluster.__init__: it would discover a real cluster
        self.primaries = [Node(name) for name in memory]
        self.replicas = [Node(f"10.0.1.{i}:7000") for i in range(len(memory))]
        self.memory = memory
        self.policies = {n.name: policy for n in self.primaries + self.replicas}
        self.evicted = {name: 0 for name in memory}
        self.down: set[str] = set()
        self.state = "ok"

    def get_primaries(self) -> Any:
        return list(self.primaries)

    def get_nodes(self) -> Any:
        return list(self.primaries) + list(self.replicas)

    def _node(self, target_nodes: Any) -> str:
        name = str(target_nodes.name)
        if name in self.down:
            raise redis.ConnectionError(f"Error 111 connecting to {name}. Connection refused.")
        return name

    def info(self, section: Any = None, *args: Any, **kwargs: Any) -> Any:
        name = self._node(kwargs["target_nodes"])
        used, limit = self.memory.get(name, (1000, 0))
        if section == "memory":
            return {
                "used_memory": used,
                "maxmemory": limit,
                "maxmemory_policy": self.policies[name],
            }
        return {"evicted_keys": self.evicted.get(name, 0)}

    def ping(self, **kwargs: Any) -> Any:
        self._node(kwargs["target_nodes"])
        return True

    def cluster_info(self, target_nodes: Any = None) -> Any:
        self._node(target_nodes)
        return {"cluster_state": self.state}

    def close(self) -> None:
        pass


def as_client(fake: FakeCluster) -> RedisClient:
    """The fake as the adapters' client type (``RedisClient`` is typed as ``redis.Redis``)."""
    return cast(RedisClient, fake)


def three(tight: str = "10.0.0.2:7000") -> FakeCluster:
    memory = {
        "10.0.0.1:7000": (400, 1000),
        "10.0.0.2:7000": (800, 1000),
        "10.0.0.3:7000": (9000, 0),
    }
    return FakeCluster({name: memory[name] if name != tight else (950, 1000) for name in memory})


@pytest.mark.parametrize("exc", CLUSTER_ERRORS, ids=lambda e: type(e).__name__)
def test_every_cluster_error_is_a_redis_outage(exc: Exception) -> None:
    assert isinstance(exc, REDIS_ERRORS)
    assert not isinstance(exc, redis.DataError)  # DataError alone is the event's fault


def worker(client: FakeCluster | None = None, store: MemoryStore | None = None) -> SegmentWorker:
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})
    kafka = FakeKafka()
    processor = Processor(config, store or MemoryStore(outbox=True))
    redis_client = None if client is None else as_client(client)
    w = SegmentWorker(Settings(), processor, kafka.send, kafka.ack, redis=redis_client)
    w.max_backoff = 0.01
    return w


@pytest.mark.parametrize("exc", CLUSTER_ERRORS, ids=lambda e: type(e).__name__)
def test_the_worker_retries_a_cluster_error_and_recovers(exc: Exception) -> None:
    w = worker()
    calls: list[int] = []
    seen: list[tuple[bool, str | None]] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise exc
        seen.append((w.status.redis_ok, w.status.last_error))
        return "done"

    assert asyncio.run(w._retry("redis", flaky)) == "done"
    assert len(calls) == 3 and w.status.retries == 2
    redis_ok, last_error = seen[0]
    assert not redis_ok and last_error is not None
    assert last_error.startswith(f"redis: {type(exc).__name__}")
    assert w.status.redis_ok  # recovered


def test_memory_per_primary_the_tightest_node_decides() -> None:
    client = three(tight="10.0.0.2:7000")
    client.evicted = {"10.0.0.1:7000": 2, "10.0.0.2:7000": 0, "10.0.0.3:7000": 3}
    sample = MemoryWatch().poll(as_client(client))
    assert (sample.node, sample.used_memory, sample.maxmemory) == ("10.0.0.2:7000", 950, 1000)
    assert sample.warning and not sample.degraded
    assert sample.nodes == 3 and sample.evicted_keys == 5
    client.memory["10.0.0.2:7000"] = (100, 1000)  # without a tight one: the highest ratio
    assert MemoryWatch().poll(as_client(client)).node == "10.0.0.1:7000"


def test_a_primary_that_does_not_answer_makes_the_sample_degraded() -> None:
    client = three()
    watch = MemoryWatch(every=60.0)
    watch.poll(as_client(client))
    assert not watch.due()
    client.down.add("10.0.0.2:7000")
    watch.expire()
    sample = watch.poll(as_client(client))
    assert sample.degraded and sample.unreachable == ("10.0.0.2:7000",)
    assert sample.nodes == 2 and sample.node == "10.0.0.1:7000"  # the others still sampled
    watch._at -= 1.5  # (fake clock) while degraded a sample is due every second
    assert watch.due()
    client.down.clear()
    assert not watch.poll(as_client(client)).degraded
    client.down.update(n.name for n in client.primaries)
    with pytest.raises(redis.ConnectionError):  # no primary answers: an outage
        watch.poll(as_client(client))


def test_reachability_names_the_primary_and_the_cluster_state() -> None:
    client = three()
    check_reachable(as_client(client))
    client.down.add("10.0.0.3:7000")
    with pytest.raises(ClusterUnhealthy, match=r"1 of 3 primaries .*10\.0\.0\.3:7000.*replicas"):
        check_reachable(as_client(client))
    client.down.clear()
    client.state = "fail"
    with pytest.raises(ClusterUnhealthy, match=r"cluster_state:fail.*--cluster fix"):
        check_reachable(as_client(client))
    assert isinstance(ClusterUnhealthy("x"), REDIS_ERRORS)


def test_the_eviction_policy_is_checked_on_every_node() -> None:
    client = three()
    assert check_eviction_policy(as_client(client)) == "noeviction"
    client.policies["10.0.1.1:7000"] = "allkeys-lru"  # a replica: a primary after a failover
    with pytest.raises(RedisUnsafe, match=r"node 10\.0\.1\.1:7000 has maxmemory-policy 'allkeys"):
        check_eviction_policy(as_client(client))
    client.policies["10.0.1.1:7000"] = "noeviction"
    client.down.add("10.0.1.2:7000")  # a replica down: the nodes that answer are checked
    assert check_eviction_policy(as_client(client)) == "noeviction"


def served(w: SegmentWorker) -> Callable[..., Any]:
    app = FakeApp()
    web.register(cast(faust.App, app), w)
    request = type("Request", (), {"headers": {}, "query": {}})()
    return lambda path, **kw: asyncio.run(app.pages[path](app.web, request, **kw))


def test_health_is_degraded_while_a_primary_does_not_answer_and_ok_after() -> None:
    client = three()
    w = worker(client)
    w.status.ready = True
    call = served(w)
    w.memory.poll(as_client(client))
    assert call("/health")[0] == 200
    client.down.add("10.0.0.1:7000")
    w.memory.poll(as_client(client))
    status, body = call("/health")
    assert status == 503 and body["status"] == "degraded" and body["redis"] == "degraded"
    assert body["redis_unreachable_nodes"] == ["10.0.0.1:7000"]
    assert "10.0.0.1:7000" in body["last_error"] and "replicas take over" in body["last_error"]
    metrics = parse(render(registry_for(w)).decode())
    assert metrics.total("segmentflow_redis_primaries_unreachable") == 1
    w.report_failure("redis", ClusterDownError("CLUSTERDOWN The cluster is down"))
    status, body = call("/health")
    assert (status, body["status"], body["redis"]) == (503, "unavailable", "unreachable")
    assert body["last_error"].startswith("redis: ClusterDownError")
    client.down.clear()  # the replica took over
    w.report_recovery("redis")
    w.memory.poll(as_client(client))
    status, body = call("/health")
    assert status == 200 and body["redis"] == "ok" and "redis_unreachable_nodes" not in body
    assert (
        parse(render(registry_for(w)).decode()).total("segmentflow_redis_primaries_unreachable")
        == 0
    )


class DownStore(MemoryStore):
    """A store whose node for this read is down (the cluster's retries exhausted)."""

    def populations(self) -> dict[str, dict[str, int]]:
        raise SlotNotCoveredError('Slot "12" is not covered by the cluster.')

    def get(self, customer_id: str) -> Any:
        raise ClusterDownError("CLUSTERDOWN Hash slot not served")


def test_reads_of_a_slot_that_is_down_answer_503_not_500() -> None:
    w = worker(store=DownStore(outbox=True))
    call = served(w)
    status, body = call("/segments")
    assert status == 503 and "SlotNotCoveredError" in body["error"]
    status, body = call("/customers/{customer_id}", customer_id="c-1")
    assert status == 503 and "retry shortly" in body["error"]
    metrics = parse(render(registry_for(w)).decode())  # /metrics still renders
    assert "segmentflow_segment_population" not in metrics and "segmentflow_ready" in metrics


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_cluster_is_reported_without_the_password() -> None:
    url = f"redis+cluster://app:s3cret@127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}/"
    with pytest.raises(bootstrap.RedisUnavailable) as failed:
        bootstrap.redis_client(Settings(redis_url=url))
    message = str(failed.value)
    assert "Redis Cluster" in message and "SEGMENTFLOW_REDIS_URL" in message
    assert "s3cret" not in message and "app:***@127.0.0.1" in message


def test_a_members_page_of_a_slot_that_is_down_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DownReader:
        def page(self, *args: Any, **kwargs: Any) -> Any:
            raise SlotNotCoveredError('Slot "12" is not covered by the cluster.')

        def count(self, *args: Any, **kwargs: Any) -> Any:
            raise SlotNotCoveredError('Slot "12" is not covered by the cluster.')

    monkeypatch.setattr(web, "reader_for", lambda store: DownReader())
    call = served(worker())
    status, body = call("/segments/{dimension}/{value}/members", dimension="rfm", value="x")
    assert status == 503 and "SlotNotCoveredError" in body["error"]


def test_a_scrape_does_not_sample_on_the_loop_while_a_primary_is_down() -> None:
    """The tick samples off the event loop; a scrape runs on it, where a silent node would
    cost a socket timeout: while degraded it shows the tick's figures."""
    client = three()
    w = worker(client)
    client.down.add("10.0.0.3:7000")
    w.memory.poll(as_client(client))
    asked: list[str] = []
    info = client.info

    def counting(section: Any = None, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(section))
        return info(section, *args, **kwargs)

    client.info = counting  # type: ignore[method-assign]
    w.memory.expire()
    metrics = parse(render(registry_for(w)).decode())
    assert asked == [] and metrics.total("segmentflow_redis_primaries_unreachable") == 1
    asyncio.run(w.tick())  # the tick does sample (off the loop)
    assert "memory" in asked
