"""A real ``segmentflow collect`` process on a real (embedded Tansu) broker, for the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from collector_harness import Collector, launch, topic_names, unique_settings, wait_health

from segmentflow.embedded import EmbeddedBroker, stop_pid
from segmentflow.streams.kafka_clients import create_topics


@pytest.fixture(scope="session")
def collector(broker: EmbeddedBroker) -> Iterator[Collector]:
    settings = unique_settings(broker.url)
    create_topics(broker.bootstrap, topic_names(settings), partitions=2)
    process = launch(settings)
    try:
        wait_health(process, 200, timeout=30)
        yield Collector(process.url, settings, process.log)
    finally:
        stop_pid(process.proc)
        process.log.unlink(missing_ok=True)


@pytest.fixture
def tag() -> str:
    """A prefix making this test's customer ids (and so its Kafka keys) unique."""
    return f"t{uuid.uuid4().hex[:8]}-"
