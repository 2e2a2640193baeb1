"""Pure logic of the worker's start and fetch path: the fetch guard (errors retried, never
fatal), the status it feeds, the partition-count check, waiting for dependencies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import ConsumerStoppedError, UnsupportedCodecError

from segmentflow import bootstrap
from segmentflow.config import Settings, config_from_dict
from segmentflow.service.processor import Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams import kafka_clients, worker
from segmentflow.streams.faust_patches import _fetch_listeners, guard_fetch
from segmentflow.streams.runtime import SegmentWorker, deliveries


class FakeThread:
    def __init__(self) -> None:
        self.consumer = type("C", (), {"app": object()})()


def test_a_failing_fetch_returns_nothing_after_backoff_and_reports_once_recovered() -> None:
    outcomes: list[Any] = [UnsupportedCodecError("no snappy"), OSError("reset"), {"tp": [1]}]
    sleeps: list[float] = []
    heard: list[Any] = []

    async def original(self: Any) -> Any:
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    thread = FakeThread()
    _fetch_listeners[id(thread.consumer.app)] = heard.append
    fetch = guard_fetch(original, sleep)
    got: list[Any] = [asyncio.run(fetch(thread)) for _ in range(3)]
    assert got == [{}, {}, {"tp": [1]}]
    assert sleeps == [0.1, 0.2]  # doubling, capped at FETCH_MAX_BACKOFF
    assert [type(h).__name__ for h in heard] == ["UnsupportedCodecError", "OSError", "NoneType"]


def test_a_stopped_consumer_still_stops() -> None:
    async def original(self: Any) -> Any:
        raise ConsumerStoppedError()

    with pytest.raises(ConsumerStoppedError):
        asyncio.run(guard_fetch(original)(FakeThread()))


async def _send(topic: str, key: bytes | None, value: bytes) -> object:
    return None


async def _ack(token: Any) -> object:
    return None


def _worker() -> SegmentWorker:
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})
    return SegmentWorker(Settings(), Processor(config, MemoryStore(outbox=True)), _send, _ack)


def test_fetch_errors_are_counted_logged_once_and_cleared(caplog: pytest.LogCaptureFixture) -> None:
    w = _worker()
    listen = worker.fetch_listener(w)
    for _ in range(3):
        listen(UnsupportedCodecError("Libraries for snappy compression codec not found"))
    assert w.status.fetch_errors == {"UnsupportedCodecError": 3}
    assert "snappy" in (w.status.fetch_error or "")
    assert sum("fetching input failed" in r.message for r in caplog.records) == 1
    listen(None)
    assert w.status.fetch_error is None


def test_change_records_are_cloudevents_dead_letters_json() -> None:
    s = Settings()
    assert worker.headers_for(s, s.topic_segment_changes) == [
        ("content-type", b"application/cloudevents+json")
    ]
    assert worker.headers_for(s, s.topic_segmentflow_deadletter) == [
        ("content-type", b"application/json")
    ]
    assert worker.headers_for(s, s.topic_segmentflow_metrics) is None


def _counts(monkeypatch: pytest.MonkeyPatch, counts: dict[str, int | None]) -> list[Any]:
    created: list[Any] = []
    monkeypatch.setattr(kafka_clients, "topic_partition_counts", lambda settings, topics: counts)
    monkeypatch.setattr(
        kafka_clients, "create_topics", lambda settings, names, n: created.append((names, n))
    )
    return created


def test_partition_count_is_the_brokers_and_missing_topics_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Settings(partitions=4)
    counts: dict[str, int | None] = {"website-events": 6, "email-events": None}
    counts |= {"purchase-events": 6, "segment-changes": 6}
    counts |= {"segmentflow-deadletter": None, "segmentflow-metrics": 1}
    created = _counts(monkeypatch, counts)
    assert kafka_clients.input_partition_count(s) == 6
    assert created == [(["email-events", "segmentflow-deadletter"], 6)]
    created = _counts(monkeypatch, dict.fromkeys(counts))
    assert kafka_clients.input_partition_count(s) == 4  # none exists: SEGMENTFLOW_PARTITIONS
    assert created == [(list(counts), 4)]


def test_unequal_partition_counts_say_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _counts(monkeypatch, {"website-events": 4, "email-events": 4, "purchase-events": 6})
    with pytest.raises(kafka_clients.PartitionMismatch) as err:
        kafka_clients.input_partition_count(Settings())
    text = str(err.value)
    assert "website-events=4, email-events=4, purchase-events=6" in text
    assert "Add partitions to website-events, email-events" in text
    assert "--partitions 6" in text


def test_prepare_waits_for_redis_then_kafka_with_capped_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tries = {"redis": 3, "kafka": 6}

    def redis_client(settings: Settings) -> Any:
        if tries["redis"]:
            tries["redis"] -= 1
            raise bootstrap.RedisUnavailable("cannot reach Redis at redis://x")
        return type("R", (), {"close": lambda self: None})()

    def count(settings: Settings) -> int:
        if tries["kafka"]:
            tries["kafka"] -= 1
            raise kafka_clients.BrokerUnavailable("cannot reach Kafka at kafka://x")
        return 6

    monkeypatch.setattr(bootstrap, "redis_client", redis_client)
    monkeypatch.setattr(worker, "input_partition_count", count)
    lines: list[str] = []
    sleeps: list[float] = []
    settings = Settings(partitions=4)
    status = worker.StartupStatus()
    assert worker.prepare(settings, status, say=lines.append, sleep=sleeps.append) == 6
    assert settings.input_partitions == 6
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert sum("waiting for redis" in line for line in lines) == 3
    assert sum("waiting for kafka" in line for line in lines) == 6
    assert "redis is reachable" in lines and "kafka is reachable" in lines


class _Records:
    """aiokafka PartitionRecords stand-in: yields offsets 5, 6, then fails to decode."""

    def __init__(self) -> None:
        self.next_fetch_offset = 5
        self._it = self._gen()

    def _gen(self) -> Any:
        for offset in (5, 6):
            self.next_fetch_offset = offset + 1
            yield offset
        raise UnsupportedCodecError("Libraries for lz4 compression codec not found")

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._it)


class _State:
    paused = False

    def __init__(self) -> None:
        self.position = 5

    def consumed_to(self, offset: int) -> None:
        self.position = offset


class _Assignment:
    active = True

    def __init__(self) -> None:
        self.state = _State()

    def state_value(self, tp: Any) -> _State:
        return self.state


def test_an_undecodable_partition_keeps_its_position_and_is_fetched_again() -> None:
    from aiokafka.consumer.fetcher import FetchResult

    from segmentflow.streams import faust_patches as app

    assignment = _Assignment()
    result = FetchResult("tp", assignment=assignment, partition_records=_Records(), backoff=0)
    getall = app.guard_getall(FetchResult.getall)
    app._decode_errors.clear()
    assert getall(result) == []  # offsets 5 and 6 are not delivered half-way...
    assert assignment.state.position == 5  # ...and not skipped: fetched again from 5
    assert not result.has_more()  # dropped, so the fetcher asks for the partition again
    assert [type(e).__name__ for e in app._decode_errors] == ["UnsupportedCodecError"]
    app._decode_errors.clear()


def test_a_held_back_clock_is_measured() -> None:
    import orjson

    from segmentflow.service.processor import InputRecord

    w = _worker()
    w.assign([("website-events", 0), ("purchase-events", 0)])
    w.watermark.set_end(("website-events", 0), 5)  # unread data the fetch reports: holds
    w.watermark.set_end(("purchase-events", 0), 1)
    body: dict[str, object] = {"event_id": "o1", "customer_id": "c-1", "type": "order_completed"}
    body |= {"timestamp": "2026-01-02T00:00:00Z"}
    body["properties"] = {"order_id": "o", "revenue": 5, "currency": "EUR"}
    record = InputRecord("purchase-events", "purchase", 0, 0, b"c-1", orjson.dumps(body))
    asyncio.run(w.handle_batch(deliveries([record], ["t"])))
    assert w.clock_held()[0] == 1
    assert w.watermark.holding() == [("website-events", 0)]
    assert w.held_since is not None
    w.held_since -= 200  # as if 200 s had passed without the clock moving
    w.watermark.moved_at -= 200
    held, seconds = w.clock_held()
    assert held == 1 and seconds >= 200
    w.watermark.set_end(("website-events", 0), 0)  # the fetch says: nothing unread after all
    asyncio.run(w.tick())
    assert w.clock_held() == (0, 0.0) and w.held_since is None
