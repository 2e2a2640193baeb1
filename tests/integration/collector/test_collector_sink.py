"""The collector's Kafka sink on a real broker, configured by the shared Kafka options:
``SEGMENTFLOW_KAFKA_COMPRESSION`` reaches its producer and the records read back intact."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from segmentflow.collector.sink import KafkaSink, Record
from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker
from segmentflow.streams.kafka_clients import consumer, create_topics

pytestmark = pytest.mark.integration


async def _send(settings: Settings, records: list[Record]) -> int:
    sink = KafkaSink(settings)
    await sink.start()
    try:
        waited = 0.0
        while not sink.connected:  # progress-based: the broker is up, this is seconds
            assert waited < 60, f"collector sink never connected: {await sink.health()}"
            await asyncio.sleep(0.05)
            waited += 0.05
        expected = None if settings.kafka_compression == "none" else settings.kafka_compression
        assert sink._producer._compression_type == expected  # what the producer encodes with
        await sink.send(records)
        assert await sink.health() is None
        return sink.attempts
    finally:
        await sink.stop()


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd"])
def test_records_go_out_in_the_configured_codec(broker: EmbeddedBroker, codec: str) -> None:
    topic = f"sink-{codec}-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_url=broker.url, kafka_compression=codec)  # type: ignore[arg-type]
    create_topics(settings, [topic], 2)
    records = [Record(topic, f"c-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(50)]
    assert asyncio.run(_send(settings, records)) == 1

    reader = consumer(settings, topic, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(records) and time.monotonic() < deadline:
            for message in reader:
                got[message.key] = message.value
    finally:
        reader.close()
    assert got == {r.key: r.value for r in records}
