"""Finding 8 of issue 11: two workers on a backlog that fills only ``purchase-events`` (the website
and email partitions stay empty, as with the CDNOW purchases). The empty partitions must never
hold a worker's clock back: every event is applied, each worker's clock reaches the latest event
of the partitions it owns, and the change topic equals ``replay`` every time (the freeze was
intermittent, so the run is repeated).

Each worker's clock is the watermark over its own partitions (CONTRACT §3), so a customer's
time-driven changes are emitted up to its owner's clock; the reference is ``replay`` up to the
last event, with each customer's time-driven changes cut at its owner's clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.stack import Stack
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    expected_per_owner,
    metric_sum,
    owner_clocks,
    partitions_of,
    produce_kafka_python,
    purchases,
    wait_applied,
    write_config,
)

from segmentflow.schemas.timefmt import parse_rfc3339

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("run", [1, 2, 3])
def test_two_workers_purchases_only_equal_replay(run: int, tmp_path: Path, redis_url: str) -> None:
    started = time.monotonic()
    config = write_config(tmp_path)
    # 500 customers (~1,450 orders) on the four purchase partitions; the worker applies
    # purchases of fresh customers slowly (a batch is cut at every customer's due moment)
    events = purchases(500, seed=800 + run)
    with Stack(workers=0, config=str(config), redis_url=redis_url) as stack:
        topic = stack.settings.topic_purchase_events
        produce_kafka_python(stack.settings, events)
        where = partitions_of(stack.settings, topic, len(events))
        last_in = {p: 0 for p in where.values()}
        for e in events:
            p = where[e.event["customer_id"]]
            last_in[p] = max(last_in[p], parse_rfc3339(e.event["timestamp"]))
        reader = ChangeReader(stack.settings)
        stack.start_worker()
        stack.start_worker()
        full = expected_changes(events, config)  # while the workers start
        stack.wait_healthy(90)
        # wait until both workers have applied everything and their clocks stand still
        texts = wait_applied(stack, len(events), reader)
        applied = [metric_sum(t, "segmentflow_events_applied_total") for t in texts]
        owner_clock = owner_clocks(texts, topic)
        expected = expected_per_owner(full, lambda cid: owner_clock[where[cid]])
        reader.wait_complete(expected, timeout=30)
        reader.close()
        health = [stack.health(i) for i in range(2)]
    outcome = compare(reader.values, expected)
    print(
        f"\n[two-workers run {run}] events={len(events)} replay={len(full)} "
        f"expected={len(expected)} delivered={outcome.deliveries} distinct={outcome.distinct} "
        f"applied={applied} seconds={time.monotonic() - started:.1f}"
    )
    assert sorted(owner_clock) == sorted(last_in), "every purchase partition is owned"
    for p, mark in owner_clock.items():  # no clock froze: each reached its partitions' end
        assert mark >= last_in[p], f"partition {p}: clock {mark} < last event {last_in[p]}"
    assert sum(applied) == len(events)
    assert not outcome.problems, "\n".join(outcome.problems)
    assert health == [200, 200]
