"""Helpers for end-to-end tests of a worker process (issue 12 tests): produce, read a topic from
its beginning, compare delivered changes with ``replay``. Same checks as tests/e2e/test_faults.py.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from segmentflow.bootstrap import replay_events
from segmentflow.config import Settings, load_config
from segmentflow.devstack import DevStack
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.streams.kafka_clients import consumer, producer
from support.metrics import FETCH_LIMIT_S, fetch


def expected(events: Iterable[dict[str, Any]], config_file: Path) -> list[dict[str, Any]]:
    """The clean reference: replay of the valid events (sorted by time) up to the last one."""
    valid = sorted(events, key=lambda e: parse_rfc3339(e["timestamp"]))
    return replay_events(valid, load_config(config_file), parse_rfc3339(valid[-1]["timestamp"]))


def produce(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Send (topic, key, value) messages; return how many."""
    kafka = producer(settings, max_request_size=4 * 1024 * 1024)
    n = 0
    for topic, key, value in messages:
        kafka.send(topic, key=key, value=value)
        n += 1
    kafka.flush()
    kafka.close()
    return n


class TopicReader:
    """Reads a topic from its beginning, keeping every message value (repeats included)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.kafka = consumer(
            settings,
            topic,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.values: list[bytes] = []
        self.last_new = time.monotonic()

    def poll(self, seconds: float = 0.2) -> int:
        deadline = time.monotonic() + seconds
        n = 0
        while True:
            left = deadline - time.monotonic()
            for records in self.kafka.poll(timeout_ms=max(1, int(left * 1000))).values():
                self.values.extend(r.value for r in records)
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

    def close(self) -> None:
        self.kafka.close()


@dataclass
class Outcome:
    deliveries: int = 0
    distinct: int = 0
    problems: list[str] = field(default_factory=list)


def check(values: Sequence[bytes], want: Sequence[dict[str, Any]]) -> Outcome:
    """Delivered change events vs the reference: a repeated id only with identical bytes, the
    same ids, each equal to its reference, sequences 1..n per customer and dimension."""
    out = Outcome(deliveries=len(values))
    first: dict[str, bytes] = {}
    order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for value in values:
        change = orjson.loads(value)
        seen = first.get(change["id"])
        if seen is None:
            first[change["id"]] = value
            order[(change["subject"], change["data"]["dimension"])].append(
                change["data"]["sequence"]
            )
        elif seen != value:
            out.problems.append(f"id {change['id']} repeated with other content")
    out.distinct = len(first)
    got = {i: orjson.loads(v) for i, v in first.items()}
    ref = {c["id"]: c for c in want}
    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    if missing:
        out.problems.append(f"{len(missing)} missing, e.g. {[ref[i] for i in missing[:2]]}")
    if extra:
        out.problems.append(f"{len(extra)} unexpected, e.g. {[got[i] for i in extra[:2]]}")
    wrong = sorted(i for i in set(got) & set(ref) if got[i] != ref[i])
    if wrong:
        out.problems.append(f"{len(wrong)} differ, e.g. {got[wrong[0]]} != {ref[wrong[0]]}")
    for (cid, dim), seqs in order.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            out.problems.append(f"{cid}/{dim}: sequences {sorted(seqs)[:20]} have a gap")
    return out


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
