"""The dispatcher against a real Tansu broker and a local receiver that fails on purpose:
every matching change is delivered (at least once, same Idempotency-Key on every retry), nothing
else is, failures are dead-lettered with their details, the rate limit holds, and the offsets are
committed only once everything is settled."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import generate_latest
from support.metrics import parse

from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker
from segmentflow.streams.kafka_clients import create_topics, producer
from segmentflow.triggers.config import triggers_from_dict
from segmentflow.triggers.dispatcher import Dispatcher

pytestmark = pytest.mark.integration

RATE = 8.0


def _ids(changes: list[dict[str, Any]], dimension: str, previous: Any, current: str) -> set[str]:
    return {
        c["id"]
        for c in changes
        if c["data"]["dimension"] == dimension
        and c["data"]["current"] == current
        and (previous == "*" or c["data"]["previous"] == previous)
    }


async def _read_topic(settings: Settings, topic: str, expect: int, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            out.extend(orjson.loads(r.value) for rs in batch.values() for r in rs)
        await asyncio.sleep(0.5)  # anything beyond the expected count?
        batch = await consumer.getmany(timeout_ms=300)
        out.extend(orjson.loads(r.value) for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return out


def test_delivery_retries_deadletters_and_rate_limit(
    broker: EmbeddedBroker, receiver: Any, real_changes: list[dict[str, Any]]
) -> None:
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_url=broker.url,
        namespace=f"trg-{run}",
        topic_segment_changes=f"changes-{run}",
        partitions=4,
    )
    dl_topic = f"trg-dl-{run}"
    create_topics(broker.bootstrap, [settings.topic_segment_changes], 4)

    # 500 twice, then 200 / always 503 / first attempt too slow / rate-limited
    receiver.behaviour["/flaky"] = lambda n: (500 if n <= 2 else 200, 0.0)
    receiver.behaviour["/dead"] = lambda n: (503, 0.0)
    receiver.behaviour["/slow"] = lambda n: (200, 1.0 if n == 1 else 0.0)
    receiver.behaviour["/gone"] = lambda n: (410, 0.0)
    fast = {"base_s": 0.05, "max_s": 0.3, "jitter": 0.5}
    config = triggers_from_dict(
        {
            "deadletter_topic": dl_topic,
            "targets": [
                {
                    "name": "flaky",
                    "url": receiver.url + "/flaky",
                    "max_attempts": 4,
                    "match": {"dimension": "lifecycle", "to": "at_risk"},
                    "backoff": fast,
                },
                {
                    "name": "vip",
                    "url": receiver.url + "/binary",
                    "mode": "binary",
                    "match": {"dimension": "rule:big", "to": "in"},
                },
                {
                    "name": "dead",
                    "url": receiver.url + "/dead",
                    "max_attempts": 3,
                    "match": {"dimension": "lifecycle", "from": "at_risk", "to": "churned"},
                    "backoff": fast,
                },
                {
                    "name": "slow",
                    "url": receiver.url + "/slow",
                    "timeout_s": 0.3,
                    "max_in_flight": 16,
                    "backoff": fast,
                    "match": {"dimension": "lifecycle", "from": "prospect", "to": "new"},
                },
                {
                    "name": "gone",
                    "url": receiver.url + "/gone",
                    "max_attempts": 5,
                    "match": {"dimension": "rfm", "from": [None], "to": "hibernating"},
                },
                {
                    "name": "limited",
                    "url": receiver.url + "/limited",
                    "rate_limit_per_s": RATE,
                    "burst": 1,
                    "match": {"dimension": "lifecycle", "from": "new", "to": "active"},
                },
            ],
        },
        env={},
    )
    expect = {
        "/flaky": _ids(real_changes, "lifecycle", "*", "at_risk"),
        "/binary": _ids(real_changes, "rule:big", "*", "in"),
        "/dead": _ids(real_changes, "lifecycle", "at_risk", "churned"),
        "/slow": _ids(real_changes, "lifecycle", "prospect", "new"),
        "/gone": _ids(real_changes, "rfm", None, "hibernating"),
        "/limited": _ids(real_changes, "lifecycle", "new", "active"),
    }
    assert all(expect.values()), {k: len(v) for k, v in expect.items()}

    kafka = producer(settings)
    futures = [
        kafka.send(
            settings.topic_segment_changes,
            key=change["subject"].encode(),
            value=orjson.dumps(change),
        )
        for change in real_changes
    ]
    futures.append(kafka.send(settings.topic_segment_changes, key=b"junk", value=b"not a change"))
    kafka.flush()
    kafka.close()
    # (Tansu's ListOffsets answers the last batch's base offset, so take ends from the sends)
    ends: dict[TopicPartition, int] = {}
    for future in futures:
        meta = future.get(timeout=10)
        tp = TopicPartition(settings.topic_segment_changes, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)

    granted: list[float] = []  # the moments the /limited bucket let each attempt go

    async def main() -> tuple[list[Any], dict[TopicPartition, int | None], Dispatcher]:
        dispatcher = Dispatcher(settings, config)
        bucket = next(t for t in dispatcher.targets if t.name == "limited").bucket
        reserve = bucket.reserve

        def recorded(now: float | None = None) -> float:
            at = bucket.clock() if now is None else now
            wait = reserve(at)
            granted.append(at + wait)
            return wait

        bucket.reserve = recorded  # type: ignore[method-assign]
        await dispatcher.start()
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        deadline = time.monotonic() + 45  # moved on while the dispatcher makes progress
        tps = sorted(ends)
        committed: dict[TopicPartition, int | None] = {}
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                assert not task.done(), task.exception()
                before = committed
                committed = {tp: await dispatcher.consumer.committed(tp) for tp in tps}
                if all(committed[tp] == ends[tp] for tp in tps):
                    break
                if committed != before:
                    deadline = time.monotonic() + 45
        finally:
            stop.set()
            await task
            await dispatcher.stop()
        assert committed == ends, "offsets not committed up to the end"
        letters = await _read_topic(
            settings, dl_topic, 1 + len(expect["/dead"]) + len(expect["/gone"]), 15
        )
        return letters, committed, dispatcher

    letters, _, dispatcher = asyncio.run(main())

    # every matching change delivered; nothing that does not match
    for path in ("/flaky", "/binary", "/slow", "/limited"):
        assert receiver.delivered_keys(path) == expect[path], path
        assert {h.key for h in receiver.on(path)} == expect[path], path
    # each delivered request carries the event (structured or binary) with id == key
    for path in ("/flaky", "/binary", "/slow", "/limited"):
        for hit in receiver.on(path):
            assert hit.event["id"] == hit.key
    assert all(
        h.headers["Content-Type"] == "application/cloudevents+json" for h in receiver.on("/flaky")
    )
    assert all(h.headers["ce-specversion"] == "1.0" for h in receiver.on("/binary"))

    # retries: exactly 3 attempts per flaky change, all with the same key and the same body
    flaky = receiver.on("/flaky")
    for key in expect["/flaky"]:
        attempts = [h for h in flaky if h.key == key]
        assert [h.status for h in attempts] == [500, 500, 200]
        assert len({h.body for h in attempts}) == 1
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= 0.05 * 0.5 * 0.9  # backoff (with jitter) between attempts
    # a timeout is retried too
    slow = receiver.on("/slow")
    assert all(sum(h.key == k for h in slow) == 2 for k in expect["/slow"])

    # dead letters: always-failing target after max_attempts, 410 at once, the junk record
    by_target: dict[Any, list[Any]] = {}
    for letter in letters:
        by_target.setdefault(letter["target"], []).append(letter)
    assert {d["change_id"] for d in by_target["dead"]} == expect["/dead"]
    assert len(by_target["dead"]) == len(expect["/dead"])
    for letter in by_target["dead"]:
        assert letter["attempts"] == 3 and letter["last_status"] == 503
        assert "503" in letter["last_error"]
        assert letter["change"]["id"] == letter["change_id"]
        assert letter["url"].endswith("/dead")
    assert len(receiver.on("/dead")) == 3 * len(expect["/dead"])
    assert {d["change_id"] for d in by_target["gone"]} == expect["/gone"]
    assert all(d["attempts"] == 1 and d["last_status"] == 410 for d in by_target["gone"])
    assert len(by_target[None]) == 1 and by_target[None][0]["change"] is None
    assert len(letters) == 1 + len(expect["/dead"]) + len(expect["/gone"])

    # rate limit: every attempt took a token, and the moments the bucket let them go (its own
    # clock) never exceed the rate plus the burst in any window; at the receiver the typical
    # gap is the rate's (arrival times carry loop and network jitter: on a busy machine a
    # stalled receiver takes a dozen requests within one second, so windows are not checked)
    stamps = sorted(h.at for h in receiver.on("/limited"))
    assert len(granted) == len(stamps), "each request to /limited took a token"
    for i, start in enumerate(granted):
        for j in range(i + 1, len(granted)):
            assert j - i <= RATE * (granted[j] - start) + 1 + 1e-6, (i, j, granted[j] - start)
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    assert gaps[len(gaps) // 2] >= 0.95 / RATE, gaps

    metrics = parse(generate_latest(dispatcher.metrics.registry).decode())
    family = "segmentflow_triggers_deliveries_total"
    assert metrics.total(family, outcome="deadlettered", target="dead") == len(expect["/dead"])
    assert metrics.total(family, outcome="delivered", target="flaky") == len(expect["/flaky"])
