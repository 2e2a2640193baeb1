"""A real worker (process) on a real Tansu broker and real Redis: a backlog produced across three
topics and four partitions gives exactly the change events that ``replay`` gives, dead letters
carry their reasons, and the accounting identity holds."""

from __future__ import annotations

import base64
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.metrics import fetch
from support.streams import assigned_consumer

from segmentflow.bootstrap import replay_events
from segmentflow.config import load_config
from segmentflow.devstack import DevStack
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.streams.kafka_clients import producer
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration

#: overall limit of one wait (each wait ends earlier once nothing moves for its stall limit)
LIMIT_S = 300

RULES = """\
persona: {enabled: false}  # the worker trains from samples; replay inline (own tests)
rules:
  - name: de_buyers
    when: 'traits.country == "DE" && orders_90d >= 1'
  - name: quiet
    when: 'days_since_last_seen >= 14'
"""


def _read_all(stack: DevStack, expect: dict[str, int], timeout: float) -> dict[str, list[Any]]:
    """Every message of the topics of ``expect`` (one consumer): read until each has its
    expected count and nothing new came for 3 s (late repeats are seen too)."""
    kafka = assigned_consumer(
        stack.settings,
        *expect,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    out: dict[str, list[Any]] = {topic: [] for topic in expect}
    deadline = time.monotonic() + LIMIT_S
    quiet_since = time.monotonic()
    # progress-based: gives up only after ``timeout`` s without a new message (or LIMIT_S)
    while time.monotonic() < deadline and time.monotonic() - quiet_since < timeout:
        for m in kafka:
            out[m.topic].append(orjson.loads(m.value))
            quiet_since = time.monotonic()
        done = all(len(out[topic]) >= n for topic, n in expect.items())
        if done and time.monotonic() - quiet_since > 3:
            break
    kafka.close()
    return out


def _metric(stack: DevStack, name: str) -> float:
    return fetch(stack).total(name)


def test_backlog_catch_up_equals_replay(tmp_path: Path, redis_url: str) -> None:
    config_file = tmp_path / "rules.yaml"
    config_file.write_text(RULES)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    messages = generate(120, seed=11, start=start, days=150, bad_ratio=0.02)
    valid = [m.event for m in messages if m.event is not None]
    bad = [m for m in messages if m.event is None]
    assert bad, "the generator must produce bad messages for this test"

    with DevStack(workers=0, config=str(config_file), redis_url=redis_url) as stack:
        kafka = producer(stack.settings)
        topics = stack.settings.input_topics
        for m in messages:
            kafka.send(topics[m.topic_kind], key=m.key, value=m.value)
        kafka.flush()
        kafka.close()
        # the backlog is all there before the worker starts: it must catch up in event time
        stack.start_worker()
        # the reference, while the worker starts
        last = max(m.event["timestamp"] for m in messages if m.event is not None)
        expected = [
            c
            for c in replay_events(valid, load_config(config_file), parse_rfc3339(last))
            # replay ends with an extra RFM sweep at --until; a live worker has no end
            if not (
                c["data"]["dimension"] == "rfm"
                and c["time"] == last
                and c["data"]["cause"]["kind"] == "time"
            )
        ]
        stack.wait_healthy(60)
        deadline = time.monotonic() + LIMIT_S
        seen, moved = -1.0, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - moved < 60:
            received = _metric(stack, "segmentflow_events_received_total")
            if received >= len(messages):
                break
            if received > seen:  # progress: keep waiting
                seen, moved = received, time.monotonic()
            time.sleep(0.5)
        changes_topic = stack.settings.topic_segment_changes
        letters_topic = stack.settings.topic_segmentflow_deadletter
        read = _read_all(stack, {changes_topic: len(expected), letters_topic: len(bad)}, 60)
        changes, letters = read[changes_topic], read[letters_topic]
        received = _metric(stack, "segmentflow_events_received_total")
        applied = _metric(stack, "segmentflow_events_applied_total")
        dead = _metric(stack, "segmentflow_events_deadlettered_total")
        dups = _metric(stack, "segmentflow_events_duplicates_total")

    by_id = {c["id"]: c for c in changes}
    assert len(by_id) == len(changes), "no change id may be emitted twice"
    want = {c["id"]: c for c in expected}
    diff = sorted(set(by_id) ^ set(want))
    wrong = [
        (
            i,
            by_id.get(i, {}).get("data"),
            by_id.get(i, {}).get("time"),
            want.get(i, {}).get("data"),
            want.get(i, {}).get("time"),
        )
        for i in sorted(set(by_id) | set(want))
        if by_id.get(i) != want.get(i)
    ]
    assert not wrong, (
        "\n".join(map(str, wrong[:6])) + f"\n{len(wrong)} differ, {len(diff)} missing/extra"
    )

    assert len(letters) == len(bad)
    reasons = Counter(letter["reason"] for letter in letters)
    assert reasons == Counter(m.expected_reason for m in bad)
    sent = {m.value[:100] for m in bad}
    for letter in letters:
        assert {
            "reason",
            "detail",
            "topic",
            "partition",
            "offset",
            "received_at",
            "payload",
        } <= set(letter)
        payload = base64.b64decode(letter["payload"])
        assert payload[:100] in sent
        assert letter.get("truncated", False) == (letter["reason"] == "oversized")

    assert received == len(messages)
    assert received == applied + dead + dups
    assert dead == len(bad)
