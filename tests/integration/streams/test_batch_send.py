"""streams/batch_send.py against a real broker (Tansu) and a real aiokafka producer: every
message arrives once, in the partition ``AIOKafkaProducer.send`` picks for its key (Kafka's
murmur2), in the order given per key, with its headers, also when a partition's messages fill
many record batches and the producer compresses."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from segmentflow.embedded import EmbeddedBroker
from segmentflow.state.redis_store import kafka_partition
from segmentflow.streams.batch_send import send_batches
from segmentflow.streams.kafka_clients import create_topics

pytestmark = pytest.mark.integration

PARTITIONS = 6
HEADERS = [("content-type", b"application/cloudevents+json")]


async def produce(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=4096, compression_type="lz4", acks="all"
    )
    await producer.start()
    try:
        acked = await send_batches(producer, topic, keys, values, HEADERS)
        one = await (await producer.send(topic, b"last", key=keys[0]))
        assert one.partition == kafka_partition(keys[0].decode(), PARTITIONS)  # send agrees
        return len(acked)
    finally:
        await producer.stop()


def read_all(
    bootstrap: str, topic: str, expected: int
) -> list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=2000)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]] = []
    idle = 0
    while len(out) < expected and idle < 30:  # 30 quiet polls of 2 s: generous on a busy CI
        batch = consumer.poll(timeout_ms=2000, max_records=5000)
        idle = 0 if batch else idle + 1
        for records in batch.values():
            out.extend((r.partition, r.key, r.value, list(r.headers)) for r in records)
    consumer.close()
    return out


def test_messages_land_once_in_order_where_send_puts_them(broker: EmbeddedBroker) -> None:
    topic = f"batch-send-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"c-{i % 97}".encode() for i in range(3000)]
    values = [b"%s:%06d:" % (key, i) + b"x" * (i % 300) for i, key in enumerate(keys)]
    batches = asyncio.run(produce(broker.bootstrap, topic, keys, values))
    assert batches > PARTITIONS  # 4 KB batches: each partition needed several
    got = [row for row in read_all(broker.bootstrap, topic, 3001) if row[2] != b"last"]
    assert sorted(value for _, _, value, _ in got) == sorted(values)  # each exactly once
    order: dict[bytes, list[bytes]] = defaultdict(list)
    for partition, key, value, headers in got:
        assert partition == kafka_partition(key.decode(), PARTITIONS)
        assert headers == HEADERS
        order[key].append(value)
    assert all(seen == [v for v in values if v.startswith(k + b":")] for k, seen in order.items())


def test_nothing_to_send_is_no_request(broker: EmbeddedBroker) -> None:
    async def empty() -> list[object]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            return await send_batches(producer, "never-created", [], [])
        finally:
            await producer.stop()

    assert asyncio.run(empty()) == []
