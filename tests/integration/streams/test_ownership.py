"""Issue 11, findings 2-4, with real Tansu, Redis and worker processes:

- ownership follows the data whatever the producer: librdkafka's default partitioner (CRC32), a
  custom one, 6 partitions without ``SEGMENTFLOW_PARTITIONS``; two producers with two
  partitioners for the same customers (exactly one owner: records off a customer's home are
  forwarded);
- a fresh broker under existing Redis state: every new event applied;
- a batch produced 3 times (a retried collector batch): applied once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.ownership import (
    due_shards,
    produce_custom,
    produce_librdkafka,
    replay_totals,
    stored_totals,
    wait_applied,
    worker_metrics,
)
from support.stack import Stack
from support.streams import (
    ChangeReader,
    Event,
    compare,
    expected_changes,
    expected_per_owner,
    mixed,
    partitions_of,
    produce_kafka_python,
    purchases,
    worker_clock,
    write_config,
)

from segmentflow.embedded import EmbeddedBroker
from segmentflow.schemas.timefmt import format_us, parse_rfc3339

pytestmark = pytest.mark.integration


class NoPartitionsEnv(Stack):
    """A stack whose workers get no ``SEGMENTFLOW_PARTITIONS``: they read the real count."""

    def env(self, web_port: int | None = None) -> dict[str, str]:
        env = super().env(web_port)
        env.pop("SEGMENTFLOW_PARTITIONS", None)
        return env


@pytest.mark.parametrize(
    ("producer", "partitions", "env_var"),
    [("librdkafka", 4, True), ("custom", 4, True), ("librdkafka", 6, False)],
)
def test_any_partitioner_two_workers_equal_replay(
    producer: str, partitions: int, env_var: bool, tmp_path: Path, redis_url: str
) -> None:
    started = time.monotonic()
    config = write_config(tmp_path)
    # 600 customers (~1,800 orders, ~300 customers per worker) on every partition; the worker
    # applies purchases of fresh customers slowly (each batch is cut at every customer's due
    # moment), so more would only lengthen the run
    events = purchases(600, seed=900 + partitions)
    stack_type = Stack if env_var else NoPartitionsEnv
    with stack_type(
        workers=0, partitions=partitions, config=str(config), redis_url=redis_url
    ) as stack:
        topic = stack.settings.topic_purchase_events
        if producer == "librdkafka":
            produce_librdkafka(stack.settings, events, "consistent_random")
        else:
            produce_custom(stack.settings, events)
        where = partitions_of(stack.settings, topic, len(events))
        reader = ChangeReader(stack.settings)
        stack.start_worker()
        stack.start_worker()
        full = expected_changes(events, config)  # while the workers start
        stack.wait_healthy(90)
        sums = wait_applied(stack, 2, len(events), reader)
        clocks = [worker_clock(worker_metrics(stack, i)) for i in range(2)]
        owner_clock = {p: mark for mark, owned in clocks for t, p in owned if t == topic}
        expected = expected_per_owner(full, lambda cid: owner_clock[where[cid]])
        reader.wait_complete(expected, timeout=30)
        reader.close()
        shards = due_shards(stack.settings, partitions)
    outcome = compare(reader.values, expected)
    print(
        f"\n[{producer} x{partitions} env={env_var}] events={len(events)} "
        f"expected={len(expected)} delivered={outcome.deliveries} distinct={outcome.distinct} "
        f"counters={sums} seconds={time.monotonic() - started:.1f}"
    )
    assert len(set(where.values())) == partitions  # every partition has customers
    assert sorted(owner_clock) == list(range(partitions))
    assert sums["applied"] == len(events) and sums["forwarded"] == 0
    assert all(len(s) == 1 for s in shards.values()), "a customer is in two due shards"
    assert all(shards[cid] == [where[cid]] for cid in shards), "due shard = the real partition"
    assert not outcome.problems, "\n".join(outcome.problems)


def test_two_producers_two_partitioners_one_owner(tmp_path: Path, redis_url: str) -> None:
    """website/email via kafka-python (murmur2), purchases via librdkafka (CRC32): a customer's
    records arrive on two partition numbers; one worker owns each, the other forwards."""
    started = time.monotonic()
    config = write_config(tmp_path)
    events = mixed(150, seed=77)  # ~12k events; most customers get two partition numbers
    with Stack(workers=0, config=str(config), redis_url=redis_url) as stack:
        produce_kafka_python(stack.settings, [e for e in events if e.kind != "purchase"])
        produce_librdkafka(
            stack.settings, [e for e in events if e.kind == "purchase"], "consistent_random"
        )
        reader = ChangeReader(stack.settings)
        stack.start_worker()
        stack.start_worker()
        want = replay_totals(events)  # while the workers start
        stack.wait_healthy(90)
        sums = wait_applied(stack, 2, len(events), reader)
        reader.wait_complete([], timeout=30)
        reader.close()
        totals = stored_totals(stack.settings, {e.event["customer_id"] for e in events})
        shards = due_shards(stack.settings, stack.partitions)
    outcome = compare(reader.values, [orjson.loads(v) for v in reader.values])
    print(
        f"\n[two producers] events={len(events)} changes={outcome.distinct} counters={sums} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert sums["forwarded"] > 0, "the two partitioners disagree for some customers"
    assert sums["applied"] == len(events) and sums["duplicates"] == 0
    assert sums["received"] == len(events) + sums["forwarded"]  # forwarded ones come back
    assert totals == want
    assert all(len(s) == 1 for s in shards.values()), "a customer is in two due shards"
    assert not outcome.problems, "\n".join(outcome.problems)  # no conflicting id, no gap


def _later_orders(events: list[Event], hours: int = 1) -> list[Event]:
    """One new order per customer, ``hours`` after its last event (new event ids)."""
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        last[e.event["customer_id"]] = e.event
    out = []
    for cid, event in last.items():
        at = parse_rfc3339(event["timestamp"]) + hours * 3_600_000_000
        body = {
            **event,
            "event_id": f"{event['event_id']}-after",
            "timestamp": format_us(at),
            "properties": {"order_id": f"{cid}-after", "revenue": 7, "currency": "USD"},
        }
        out.append(Event("purchase", cid.encode(), orjson.dumps(body), body))
    out.sort(key=lambda e: e.event["timestamp"])
    return out


def test_fresh_broker_under_existing_state_applies_every_new_event(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    """Finding 3: a new in-memory broker (offsets restart, new cluster id), same Redis."""
    started = time.monotonic()
    config = write_config(tmp_path)
    # the second broker's offsets (one order per customer) stay below the first one's (1-5
    # each), so an offset hint kept from the old incarnation would skip every new event
    first = purchases(400, seed=31)
    second = _later_orders(first)
    with EmbeddedBroker() as old, Stack(
        namespace, workers=1, config=str(config), redis_url=redis_url, kafka_url=old.url,
        drop_state=False,
    ) as stack:  # fmt: skip
        produce_kafka_python(stack.settings, first)
        reader = ChangeReader(stack.settings)
        before = wait_applied(stack, 1, len(first), reader)
        reader.close()
    with EmbeddedBroker() as new, Stack(
        namespace, workers=1, config=str(config), redis_url=redis_url, kafka_url=new.url,
        drop_state=False,
    ) as stack:  # fmt: skip
        produce_kafka_python(stack.settings, second)
        reader = ChangeReader(stack.settings)
        after = wait_applied(stack, 1, len(second), reader)
        reader.close()
        totals = stored_totals(stack.settings, {e.event["customer_id"] for e in first})
        client = redis.Redis.from_url(redis_url)
        records = client.hgetall(f"{namespace}:partitions")
        client.close()
    epochs = {k.decode(): orjson.loads(v)["epoch"] for k, v in records.items()}
    print(
        f"\n[fresh broker] first={before} second={after} epochs={epochs} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert before["applied"] == len(first)
    assert after["applied"] == len(second) == 400 and after["duplicates"] == 0
    assert totals == replay_totals(first + second)
    purchase = [e for k, e in epochs.items() if k.startswith("purchase-events:")]
    assert purchase and all(e == 1 for e in purchase), "the new cluster id is a new incarnation"


def test_a_batch_produced_three_times_is_applied_once(tmp_path: Path, redis_url: str) -> None:
    """Finding 4: one customer's 200 orders (and 40 other customers' few), re-sent twice more as
    a retried SDK batch would be (its events lie within ``dedup_horizon`` of each other)."""
    started = time.monotonic()
    config = write_config(tmp_path)
    t0 = parse_rfc3339("2025-06-01T00:00:00Z")
    events: list[Event] = []
    for cid, n in [("big", 200), *((f"small-{c}", 5) for c in range(40))]:
        for i in range(n):
            body = {
                "event_id": f"{cid}-{i}",
                "customer_id": cid,
                "type": "order_completed",
                "timestamp": format_us(t0 + i * 60_000_000 + len(cid) * 7_000_000),
                "properties": {"order_id": f"{cid}-{i}", "revenue": 10, "currency": "USD"},
            }
            events.append(Event("purchase", cid.encode(), orjson.dumps(body), body))
    events.sort(key=lambda e: e.event["timestamp"])
    expected = expected_changes(events, config)
    with Stack(workers=1, config=str(config), redis_url=redis_url) as stack:
        for _ in range(3):
            produce_kafka_python(stack.settings, events)
        reader = ChangeReader(stack.settings)
        sums = wait_applied(stack, 1, len(events), reader)
        reader.wait_complete(expected, timeout=30)
        reader.close()
        totals = stored_totals(stack.settings, {e.event["customer_id"] for e in events})
    outcome = compare(reader.values, expected)
    print(f"\n[3x batch] counters={sums} seconds={time.monotonic() - started:.1f}")
    assert sums["applied"] == len(events) and sums["duplicates"] == 2 * len(events)
    assert totals["big"] == (200, 2000.0)
    assert totals == replay_totals(events)
    assert not outcome.problems, "\n".join(outcome.problems)
