"""Findings 1 and 6 of issue 11. Input compressed with every codec by two foreign clients
(librdkafka via confluent-kafka ``compression.type``, kafka-python ``compression_type``) is
consumed by a running worker: its changes equal ``replay`` of the same events. The worker writes
with the configured codec (``SEGMENTFLOW_KAFKA_COMPRESSION``), and every change record carries
``content-type: application/cloudevents+json``, read with the ``cloudevents`` SDK's Kafka
binding; dead letters carry ``content-type: application/json``."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.v1 import kafka as ce_v1_kafka
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    metric_sum,
    produce_confluent,
    produce_kafka_python,
    purchases,
    write_config,
)

from segmentflow.devstack import DevStack
from segmentflow.streams.kafka_clients import producer

pytestmark = pytest.mark.integration

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CLIENTS = ["librdkafka", "kafka-python"]


def test_every_codec_from_two_clients_equals_replay(tmp_path: Path, redis_url: str) -> None:
    started = time.monotonic()
    config = write_config(tmp_path)
    batches = {
        (client, codec): purchases(100, seed=100 + i)
        for i, (client, codec) in enumerate((c, k) for c in CLIENTS for k in CODECS)
    }
    events = [e for batch in batches.values() for e in batch]
    expected = expected_changes(events, config)
    env = {"SEGMENTFLOW_KAFKA_COMPRESSION": "lz4"}
    with DevStack(workers=0, config=str(config), redis_url=redis_url, extra_env=env) as stack:
        settings = stack.settings
        for (client, codec), batch in batches.items():
            if client == "librdkafka":
                produce_confluent(settings, batch, codec)
            else:
                produce_kafka_python(settings, batch, None if codec == "none" else codec)
        bad = producer(settings)
        bad.send(settings.topic_purchase_events, key=b"cd-bad", value=b"{not json")
        bad.flush()
        bad.close()
        reader = ChangeReader(settings)
        stack.start_worker()
        stack.wait_healthy(90)
        reader.wait_complete(expected, timeout=60)
        reader.close()
        letters = ChangeReader(settings, settings.topic_segmentflow_deadletter)
        while not letters.records and time.monotonic() - letters.last_new < 30:
            letters.poll(0.5)
        letters.close()
        text = stack.get("/metrics").decode()
        health = orjson.loads(stack.get("/health"))

    outcome = compare(reader.values, expected)
    by_codec = {
        f"{client}/{codec}": (
            len(batch),
            sum(1 for c in expected if c["subject"].startswith(f"cd-{100 + i}-")),
        )
        for i, ((client, codec), batch) in enumerate(batches.items())
    }
    print(
        f"\n[codecs] events={len(events)} changes={len(expected)} delivered={outcome.deliveries} "
        f"(events, changes) per client/codec={by_codec} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert not outcome.problems, "\n".join(outcome.problems)
    assert metric_sum(text, "segmentflow_events_applied_total") == len(events)
    assert metric_sum(text, "segmentflow_fetch_errors_total") == 0
    assert health["status"] == "ok" and health["fetch"] == "ok"

    # CloudEvents Kafka protocol binding, structured mode: every change record
    headers = Counter(tuple(r.headers) for r in reader.records)
    assert headers == {(("content-type", b"application/cloudevents+json"),): len(reader.records)}
    for record in reader.records[:200]:
        message = ce_kafka.KafkaMessage(dict(record.headers), record.key, record.value)
        event = ce_kafka.from_kafka_event(message)  # auto-detects the mode, as consumers do
        body = orjson.loads(record.value)
        assert event.get_id() == body["id"] and event.get_type() == body["type"]
        assert event.get_data() == body["data"]
        legacy = ce_v1_kafka.from_structured(
            ce_v1_kafka.KafkaMessage(dict(record.headers), record.key, record.value)
        )
        assert legacy["id"] == body["id"] and legacy["subject"] == body["subject"]
    assert len(letters.records) == 1
    assert letters.records[0].headers == [("content-type", b"application/json")]
    assert orjson.loads(letters.records[0].value)["reason"] == "invalid_json"
