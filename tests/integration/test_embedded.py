"""The embedded broker and Redis really start, serve clients and stop by PID."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from segmentflow.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    free_port,
    wait_for_kafka,
)
from segmentflow.streams.kafka_clients import create_topics

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # still in the table: a zombie counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].startswith("Z")


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_broker_url_forms(broker: EmbeddedBroker) -> None:
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.running()
    wait_for_kafka(broker.bootstrap, timeout=5)


def test_round_trip_on_four_partitions(broker: EmbeddedBroker) -> None:
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], partitions=4)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    sent = {(p, i) for p in range(4) for i in range(25)}
    for p, i in sorted(sent):
        producer.send(topic, key=f"k{i}".encode(), value=f"{p}:{i}".encode(), partition=p)
    producer.flush()
    producer.close()

    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    assert set(consumer.partitions_for_topic(topic) or ()) == {0, 1, 2, 3}
    consumer.assign(tps)
    consumer.seek_to_beginning()
    got: set[tuple[int, int]] = set()
    offsets: dict[int, list[int]] = {p: [] for p in range(4)}
    deadline = time.monotonic() + 20
    while len(got) < len(sent) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                p, i = map(int, r.value.decode().split(":"))
                assert p == tp.partition
                got.add((p, i))
                offsets[tp.partition].append(r.offset)
    # the fetch high-water mark is exact (Tansu's ListOffsets "latest" may lag, see notes)
    for tp in tps:
        assert consumer.highwater(tp) == 25
    consumer.close()
    assert got == sent
    assert all(offs == list(range(25)) for offs in offsets.values())


def test_broker_stops_by_pid() -> None:
    b = EmbeddedBroker().start()
    pid, port = b.pid, b.port
    assert not _gone(pid)
    b.stop()
    assert _gone(pid)
    with pytest.raises(TimeoutError):
        wait_for_kafka(f"127.0.0.1:{port}", timeout=0.5)


def test_redis_reuses_reachable_url(redis_url: str) -> None:
    with EmbeddedRedis(redis_url) as r:
        assert not r.owned
        assert r.url == redis_url


def test_redis_memory_only_by_default() -> None:
    with EmbeddedRedis() as r:
        assert r.owned
        client = redis.Redis.from_url(r.url)
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
        pid = r.pid
    assert _gone(pid)


def test_aof_restart_keeps_data(aof_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(aof_redis.url)
    client.hset("c-1", mapping={"orders": 3})
    client.set("n", 42)
    client.close()
    pid, port = aof_redis.pid, aof_redis.port
    aof_redis.restart()
    assert _gone(pid)
    assert aof_redis.port == port and aof_redis.pid != pid
    client = redis.Redis.from_url(aof_redis.url)
    assert client.hget("c-1", "orders") == b"3"
    assert client.get("n") == b"42"
    client.close()
