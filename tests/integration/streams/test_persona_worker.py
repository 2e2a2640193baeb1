"""Personas on real workers: the trainer publishes versioned models to Redis, every worker uses
them, persona changes carry a label and features, and a restarted worker restores the model."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.metrics import fetch

from segmentflow.devstack import DevStack
from segmentflow.state.keys import Keys
from segmentflow.streams.kafka_clients import consumer, producer
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration

CONFIG = "persona: {clusters: 4, snapshot_every: 300}\nrfm: {enabled: false}\n"


def _metric(stack: DevStack, name: str) -> float | None:
    found = fetch(stack).named(name)
    return float(found[0].value) if found else None


def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def test_shared_persona_model(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "persona.yaml"
    config.write_text(CONFIG)
    messages = generate(150, seed=5, start=datetime(2025, 2, 1, tzinfo=UTC), days=120)
    with DevStack(workers=1, config=str(config), redis_url=redis_url) as stack:
        kafka = producer(stack.settings)
        for m in messages:
            kafka.send(stack.settings.input_topics[m.topic_kind], key=m.key, value=m.value)
        kafka.flush()
        kafka.close()
        client = redis.Redis.from_url(stack.redis.url)
        version_key = Keys(stack.namespace).persona_version
        _wait(lambda: int(client.get(version_key) or 0) >= 1, 90)
        _wait(lambda: (_metric(stack, "segmentflow_persona_model_version") or 0) >= 1, 30)
        # more traffic after the first model: customers get personas
        kafka = producer(stack.settings)
        later = generate(150, seed=6, start=datetime(2025, 7, 1, tzinfo=UTC), days=20)
        for m in later:
            kafka.send(stack.settings.input_topics[m.topic_kind], key=m.key, value=m.value)
        kafka.flush()
        kafka.close()
        reader = consumer(
            stack.settings,
            stack.settings.topic_segment_changes,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=2000,
        )
        personas: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not personas and time.monotonic() < deadline:
            for message in reader:
                change = orjson.loads(message.value)
                if change["data"]["dimension"] == "persona":
                    personas.append(change)
        reader.close()
        assert personas, "persona changes must be emitted once a model exists"
        for change in personas:
            assert re.fullmatch(r"persona-\d+", change["data"]["current"])
            reason = change["data"]["reason"]
            assert reason["label"] and isinstance(reason["features"], dict)
            assert reason["model_version"] >= 1
        stored = int(client.get(version_key) or 0)
        # restart: the new worker starts from the stored model, without retraining
        stack.stop_workers()
        stack.start_worker()
        stack.wait_healthy(60)
        _wait(lambda: (_metric(stack, "segmentflow_persona_model_version") or 0) >= stored, 30)
        client.close()
