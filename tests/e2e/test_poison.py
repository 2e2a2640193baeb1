"""Poison through Kafka (issue 12, finding 1) against a worker process, Tansu and Redis: two
orders of 1.7e308 (and a refund of as much), an event in 2099, a stored state that no codec
reads and RFM metrics that are ``null``. Each poison is dead-lettered with its reason, the
worker starts, stays healthy and restarts, and every valid neighbour is applied exactly as
``replay`` applies the valid events."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.streams import write_config
from support.worker_e2e import TopicReader, check, event, expected, metrics, produce

from segmentflow.devstack import DevStack
from segmentflow.state.keys import Keys
from segmentflow.state.redis_store import kafka_partition
from segmentflow.synthetic import generate

pytestmark = pytest.mark.e2e

#: rfm on (its start-up load of the metrics is what broke), compared without its dimension
#: (population scores agree with replay only statistically); a rule that reads the totals
CONFIG = """\
persona: {enabled: false}
rules:
  - name: big_spender
    when: 'revenue >= 100.0'
"""
START = datetime(2025, 3, 1, tzinfo=UTC)


def _order(cid: str, eid: str, at: datetime, revenue: Any) -> dict[str, Any]:
    return event(cid, eid, "order_completed", at, order_id=eid, revenue=revenue, currency="EUR")


def test_overflow_future_and_corrupt_state_are_quarantined(
    tmp_path: Path,
    redis_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    config_file = write_config(tmp_path, CONFIG)
    messages = generate(80, seed=121, start=START, days=60)
    day = timedelta(days=1)
    good = [
        _order("poison-1", "p1-a", START + 3 * day, 120),
        event("poison-1", "p1-d", "page_view", START + 9 * day, url="https://shop.example/"),
    ]
    poison = [  # (event, expected reason)
        (_order("poison-1", "p1-b", START + 5 * day, 1.7e308), "invalid_money"),
        (_order("poison-1", "p1-c", START + 6 * day, 1.7e308), "invalid_money"),
        (
            event(
                "poison-1", "p1-r", "order_refunded", START + 7 * day, order_id="x", amount=1.7e308
            ),
            "invalid_money",
        ),
        (
            _order("poison-2", "p2-a", datetime(2099, 1, 1, tzinfo=UTC), 10),
            "timestamp_out_of_range",
        ),
    ]
    corrupt = [
        event("corrupt-1", f"k-{i}", "page_view", START + i * day, url="https://shop.example/")
        for i in range(1, 4)
    ]
    with DevStack(workers=0, config=str(config_file), redis_url=redis_url) as stack:
        s = stack.settings
        topics = s.input_topics
        ns = stack.namespace
        client = redis.Redis.from_url(stack.redis.url)
        keys = Keys(ns)
        # stored data no codec reads: a state, two RFM metrics (null revenue: what inf became),
        # written raw where the store finds ids with no directory entry (the legacy shard)
        home = kafka_partition("corrupt-1", stack.partitions)
        client.set(keys.state("corrupt-1", home), b"\x03\xff\xff garbage")
        for shard in range(stack.partitions):  # a due entry at the start of event time
            client.zadd(keys.due(shard), {"corrupt-1": int(START.timestamp() * 1e6) + 1})
        for cid, packed in {"rfmbad-1": b"null", "rfmbad-2": b"[1,2,null]"}.items():
            client.hset(keys.part(kafka_partition(cid, stack.partitions)).rfm, cid, packed)
        valid_events = [m.event for m in messages if m.event] + good
        out = [(topics[m.topic_kind], m.key, m.value) for m in messages]
        out += [(topics["purchase"], e["customer_id"].encode(), orjson.dumps(e)) for e in good[:1]]
        out += [(topics["website"], e["customer_id"].encode(), orjson.dumps(e)) for e in good[1:]]
        kinds = {"order_completed": "purchase", "order_refunded": "purchase"}
        for e, _ in poison:
            out.append((topics[kinds[e["type"]]], e["customer_id"].encode(), orjson.dumps(e)))
        out += [(topics["website"], b"corrupt-1", orjson.dumps(e)) for e in corrupt]
        produce(s, out)
        want = [c for c in expected(valid_events, config_file) if c["data"]["dimension"] != "rfm"]

        changes = TopicReader(s, s.topic_segment_changes)
        letters = TopicReader(s, s.topic_segmentflow_deadletter)
        stack.start_worker()
        stack.wait_healthy(60)  # before the fix: `float(None)` in attach_ranks, every start
        n_letters = len(poison) + len(corrupt)
        letters.wait_until(lambda: len(letters.values) >= n_letters, 90, "dead letters")
        ids = {c["id"] for c in want}
        changes.wait_quiet(lambda: ids <= {orjson.loads(v)["id"] for v in changes.values}, 90)
        assert stack.health() == 200
        first_metrics = metrics(stack)
        # a restart loads the same metrics and state again
        stack.kill_worker(0)
        stack.start_worker()
        stack.wait_healthy(60)
        restarted = metrics(stack)
        letters.poll(2.0)
        changes.poll(1.0)
        assert stack.health() == 200 and stack.workers[0].poll() is None
        left = client.get(keys.state("corrupt-1", home))
        quarantine: dict[bytes, bytes] = {}
        for p in range(stack.partitions):
            quarantine |= client.hgetall(keys.part(p).quarantine)
        client.close()
        changes.close()
        letters.close()

    dead = [orjson.loads(v) for v in letters.values]
    reasons = Counter(d["reason"] for d in dead)
    by_id = {orjson.loads(base64.b64decode(d["payload"]))["event_id"]: d["reason"] for d in dead}
    delivered = [v for v in changes.values if orjson.loads(v)["data"]["dimension"] != "rfm"]
    outcome = check(delivered, want)
    values: dict[str, Any] = {
        "events": len(out),
        "deadletters": dict(reasons),
        "expected_changes": len(want),
        "delivered": outcome.deliveries,
        "corrupt_states": first_metrics["segmentflow_corrupt_states_total"][""],
        "corrupt_metrics_after_restart": restarted["segmentflow_corrupt_metrics_total"][""],
        "seconds": round(time.monotonic() - started, 1),
    }
    record_property("poison", orjson.dumps(values).decode())
    print(f"\n[poison] {values}")
    assert by_id == {e["event_id"]: r for e, r in poison} | {
        e["event_id"]: "corrupt_state" for e in corrupt
    }
    assert len(dead) == n_letters, "one dead letter per poison message"
    assert not outcome.problems, "\n".join(outcome.problems)
    assert left == b"\x03\xff\xff garbage", "the unreadable state is left for repair"
    assert set(quarantine) == {b"corrupt-1"}
    assert values["corrupt_states"] >= 1 and values["corrupt_metrics_after_restart"] == 2


def test_clock_jump_of_decades_costs_only_its_changes(
    tmp_path: Path,
    redis_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    """With ``max_future_skew`` opened up, an event in 2099 is valid: the watermark jumps 74
    years. The worker keeps answering ``/health`` during the advance, and the changes equal
    ``replay``'s (every customer churns once; nothing per day of the gap)."""
    started = time.monotonic()
    config_file = write_config(tmp_path, "persona: {enabled: false}\nmax_future_skew: 40000d\n")
    messages = generate(60, seed=123, start=START, days=60)
    jump = event("jumper", "j-1", "page_view", datetime(2099, 1, 1, tzinfo=UTC), url="/")
    events = [m.event for m in messages if m.event] + [jump]
    want = [c for c in expected(events, config_file) if c["data"]["dimension"] != "rfm"]
    with DevStack(workers=0, config=str(config_file), redis_url=redis_url) as stack:
        s = stack.settings
        out = [(s.input_topics[m.topic_kind], m.key, m.value) for m in messages]
        out.append((s.input_topics["website"], b"jumper", orjson.dumps(jump)))
        produce(s, out)
        changes = TopicReader(s, s.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        ids = {c["id"] for c in want}
        codes: Counter[int] = Counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            codes[stack.health()] += 1
            changes.poll(0.2)
            got = {orjson.loads(v)["id"] for v in changes.values}
            if ids <= got:
                break
        changes.wait_quiet(lambda: True, 10, quiet=2.0)
        changes.close()
        assert stack.health() == 200
    delivered = [v for v in changes.values if orjson.loads(v)["data"]["dimension"] != "rfm"]
    outcome = check(delivered, want)
    values = {
        "expected_changes": len(want),
        "health_codes": {str(k): n for k, n in codes.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    record_property("clock_jump", orjson.dumps(values).decode())
    print(f"\n[clock_jump] {values}")
    assert not outcome.problems, "\n".join(outcome.problems)
    assert codes[0] == 0, "/health answered throughout"
