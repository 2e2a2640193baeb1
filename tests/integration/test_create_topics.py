"""``kafka_clients.create_topics`` (the one topic-creation path) against a real Tansu broker."""

from __future__ import annotations

import uuid

import pytest

from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker, free_port
from segmentflow.streams.kafka_clients import (
    BrokerUnavailable,
    create_topics,
    topic_partition_counts,
)

pytestmark = pytest.mark.integration


def _names(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"ct-{run}-{i}" for i in range(n)]


def test_creates_only_missing_topics_with_the_count(broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_url=broker.url)
    first, second = _names(2)
    assert create_topics(settings, [first, first], 3) == [first]  # repeats ignored
    # the second call creates only the new one and leaves the existing count alone
    assert create_topics(settings, [first, second], 5) == [second]
    assert create_topics(settings, [first, second], 7) == []
    assert topic_partition_counts(settings, [first, second]) == {first: 3, second: 5}


def test_a_bare_bootstrap_works_like_settings(broker: EmbeddedBroker) -> None:
    (name,) = _names(1)
    assert create_topics(broker.bootstrap, [name], 2) == [name]
    assert topic_partition_counts(Settings(kafka_url=broker.url), [name]) == {name: 2}


def test_an_unreachable_broker_says_how_to_start_one() -> None:
    settings = Settings(kafka_url=f"kafka://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerUnavailable, match="segmentflow dev"):
        create_topics(settings, _names(1), 1, timeout=2.0)
