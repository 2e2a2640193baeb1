"""A real ``segmentflow collect`` process on a real (embedded Tansu) broker, for the session,
and the real tracking SDKs pointed at it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from collector_harness import (
    WRITE_KEY,
    Collector,
    launch,
    topic_names,
    unique_settings,
    wait_health,
)

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


@pytest.fixture
def segment(collector: Collector) -> Iterator[Any]:
    """segment-analytics-python's module API pointed at the collector (sync mode)."""
    segment_analytics.default_client = None
    segment_analytics.write_key = WRITE_KEY
    segment_analytics.host = collector.url
    segment_analytics.sync_mode = True
    segment_analytics.max_retries = 0
    yield segment_analytics
    segment_analytics.default_client = None


@pytest.fixture
def rudder(collector: Collector) -> Iterator[Any]:
    """rudder-sdk-python's module API pointed at the collector (sync mode, gzip by default)."""
    rudder_analytics.default_client = None
    rudder_analytics.write_key = WRITE_KEY
    rudder_analytics.dataPlaneUrl = collector.url
    rudder_analytics.sync_mode = True
    yield rudder_analytics
    rudder_analytics.default_client = None
