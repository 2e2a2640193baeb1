"""Helpers for end-to-end tests of a worker process (issue 12 tests): produce, read a topic from
its beginning, compare delivered changes with ``replay``. Same checks as tests/e2e/test_faults.py.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from segmentflow.bootstrap import replay_events
from segmentflow.config import Settings, load_config
from segmentflow.devstack import DevStack
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.streams.kafka_clients import producer
from segmentflow.synthetic import GeneratedMessage
from support.changes import compare
from support.metrics import FETCH_LIMIT_S, fetch
from support.streams import assigned_consumer

#: rfm and persona are off (their values depend on the whole population and an online model,
#: so they agree with replay only statistically); lifecycle and two rule segments (one
#: time-driven at midnights) are exact and exercise event- and time-driven changes
EXACT_CONFIG = """\
rfm: {enabled: false}
persona: {enabled: false}
rules:
  - name: de_buyers
    when: 'traits.country == "DE" && orders_90d >= 1'
  - name: quiet
    when: 'days_since_last_seen >= 14'
"""


def stamp(at: datetime) -> str:
    """``at`` as an event's ``timestamp`` (RFC 3339, UTC, to the second)."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def event(cid: str, eid: str, etype: str, at: datetime, **props: Any) -> dict[str, Any]:
    """An event as a tracking client sends it: ``etype`` with ``props`` at ``at``."""
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": etype,
        "timestamp": stamp(at),
        "properties": props,
    }


def expected(events: Iterable[dict[str, Any]], config_file: Path) -> list[dict[str, Any]]:
    """The clean reference: replay of the valid events (sorted by time) up to the last one."""
    valid = sorted(events, key=lambda e: parse_rfc3339(e["timestamp"]))
    return replay_events(valid, load_config(config_file), parse_rfc3339(valid[-1]["timestamp"]))


def produce(
    settings: Settings, messages: Iterable[GeneratedMessage | tuple[str, bytes | None, bytes]]
) -> Counter[str]:
    """Send messages (each generated one to the topic of its kind, or (topic, key, value));
    return how many went to each topic."""
    kafka = producer(settings, max_request_size=4 * 1024 * 1024)
    topics = settings.input_topics
    sent: Counter[str] = Counter()
    for m in messages:
        topic, key, value = (
            (topics[m.topic_kind], m.key, m.value) if isinstance(m, GeneratedMessage) else m
        )
        kafka.send(topic, key=key, value=value)
        sent[topic] += 1
    kafka.flush()
    kafka.close()
    return sent


class TopicReader:
    """Reads a topic from its beginning, keeping every message value (repeats included) and
    the set of change ids seen."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.kafka = assigned_consumer(
            settings,
            topic,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        self.values: list[bytes] = []
        self.ids: set[str] = set()
        self.last_new = time.monotonic()

    def poll(self, seconds: float = 0.2) -> int:
        """Read what arrives within ``seconds``; return how many new messages."""
        deadline = time.monotonic() + seconds
        n = 0
        while True:
            left = deadline - time.monotonic()
            for records in self.kafka.poll(timeout_ms=max(1, int(left * 1000))).values():
                for record in records:
                    self.values.append(record.value)
                    self.ids.add(_id_of(record.value))
                n += len(records)
            if n:
                self.last_new = time.monotonic()
            if time.monotonic() >= deadline:
                return n

    def decoded(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for v in self.values]

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Read until ``condition()``; fail after ``timeout`` seconds (an overall limit)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached in {timeout}s ({len(self.values)} read)")
            self.poll(0.2)

    def wait_quiet(self, condition: Callable[[], bool], timeout: float, quiet: float = 3.0) -> None:
        """Read until ``condition()`` holds and nothing new came for ``quiet`` seconds (late
        repeats are seen too); on timeout return (the caller's checks then fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.5)
            if condition() and time.monotonic() - self.last_new >= quiet:
                return

    def wait_complete(
        self, expected: Sequence[dict[str, Any]], timeout: float, quiet: float = 3.0
    ) -> None:
        """Read until every expected id arrived and nothing new came for ``quiet`` seconds;
        gives up only when nothing new arrived for ``timeout`` s (the checks then fail)."""
        want = {c["id"] for c in expected}
        # the stall limit counts from this call at the earliest: a reader created long before
        # (e.g. before a fault phase) has an old `last_new` and must still read
        begun = time.monotonic()
        while time.monotonic() - max(self.last_new, begun) < timeout:
            self.poll(0.5)
            if want <= self.ids and time.monotonic() - self.last_new >= quiet:
                return

    def close(self) -> None:
        self.kafka.close()


def _id_of(value: bytes) -> str:
    """The ``id`` of a change event ("" for other JSON and for values that are not JSON)."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    return str(decoded.get("id", "")) if isinstance(decoded, dict) else ""


#: the comparison with the reference (same as the integration tests')
check = compare


def metrics(
    stack: DevStack, index: int = 0, limit: float = FETCH_LIMIT_S
) -> dict[str, dict[str, float]]:
    """``/metrics`` as {sample name: {first label value or "": value}} (retried while busy, up
    to ``limit`` s; ``0``: one try)."""
    parsed = fetch(stack, index, limit=limit)
    return defaultdict(dict, {s.name: parsed.by_label(s.name) for s in parsed})


def wait_status(stack: DevStack, want: int, timeout: float, index: int = 0) -> float:
    """Poll ``/health`` until it answers ``want``; return how long that took."""
    started = time.monotonic()
    while (code := stack.health(index)) != want:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"/health stayed {code}, expected {want} within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started
